//! The `stepwise.dev/v1alpha1` API: `Rollout`, `AnalysisTemplate`, `ClusterAnalysisTemplate` and
//! `AnalysisRun`.
//!
//! Field names and meanings follow Argo Rollouts `v1alpha1` wherever the concept is the same, so
//! that a user moves an Argo Rollout to stepwise by changing its `apiVersion`. Where stepwise
//! deliberately differs, `docs/compatibility.md` says so.

pub mod analysis;
pub mod anti_affinity;
pub mod crd;
pub mod duration;
pub mod notifications;
pub mod operations;
pub mod rollout;
mod schema;

pub use analysis::*;
pub use duration::Duration;
pub use rollout::*;

/// The API group of every stepwise resource.
pub const GROUP: &str = "stepwise.dev";
/// The API version of every stepwise resource.
pub const VERSION: &str = "v1alpha1";

/// Label on ReplicaSets, their pods and managed Service selectors: the hash of the pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "stepwise.dev/pod-template-hash";
/// Label on a Rollout (or a standalone AnalysisRun): the shard, that is the controller started
/// with the same `--shard`, that acts on it. Without it, the controller started without `--shard`
/// does.
pub const SHARD_LABEL: &str = "stepwise.dev/shard";
/// Annotation on a Rollout and its ReplicaSets: the revision number of that template.
pub const REVISION_ANNOTATION: &str = "stepwise.dev/revision";
/// Annotation on a Service whose selector stepwise manages: the name of the Rollout.
pub const MANAGED_BY_ANNOTATION: &str = "stepwise.dev/managed-by";
/// Label on AnalysisRuns: which part of a rollout started them (Step, Background, PrePromotion,
/// PostPromotion).
pub const ANALYSIS_KIND_LABEL: &str = "stepwise.dev/analysis-kind";
/// Annotation on a ReplicaSet: when it is to be scaled to zero (RFC 3339).
pub const SCALE_DOWN_DEADLINE_ANNOTATION: &str = "stepwise.dev/scale-down-deadline";
/// Label on step AnalysisRuns: the index of the step that started them.
pub const STEP_INDEX_LABEL: &str = "stepwise.dev/step-index";

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A duration string is not a Go-style duration nor an integer number of seconds.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The string as written by the user.
        value: String,
        /// Why it is not a duration.
        reason: &'static str,
    },
    /// The generated CRDs could not be rendered as YAML.
    #[error("cannot render CRD {name} as YAML: {source}")]
    RenderCrd {
        /// Name of the CRD.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_yaml::Error,
    },
}
