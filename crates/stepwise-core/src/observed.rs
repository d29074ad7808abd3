use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use stepwise_api::{AnalysisPhase, AnalysisTemplateSpec};

/// What the controller saw of the world, gathered from its caches before planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The ReplicaSets owned by the Rollout.
    pub replica_sets: Vec<ObservedReplicaSet>,
    /// The AnalysisRuns owned by the Rollout.
    pub analysis_runs: Vec<ObservedAnalysisRun>,
    /// With a workloadRef: the referenced Deployment's template and selector, once found.
    pub workload: Option<(PodTemplateSpec, Option<LabelSelector>)>,
    /// With a workloadRef: the referenced Deployment's spec.replicas (for `workloadRef.scaleDown`).
    pub workload_replicas: Option<i32>,
    /// The Services the Rollout manages, by name: the pod template hash their selector holds
    /// (None when it holds none). A Service missing from the map does not exist.
    pub services: BTreeMap<String, Option<String>>,
    /// The Services the Rollout names that another Rollout manages and names too, with that
    /// Rollout's name.
    pub services_of_others: BTreeMap<String, String>,
    /// Whether the controller reads the weight back from the Rollout's routers (a router whose
    /// objects carry it, or a router plugin): steps and the promotion then wait until
    /// `weight_verified` says the weight last set is in effect, not only until it is written.
    pub weight_checkable: bool,
    /// Whether the routers carry the weight last set, as read back from their objects (and a
    /// router plugin's `verified`); `None` when none can tell or nothing was read yet.
    pub weight_verified: Option<bool>,
    /// With `weight_verified` false: what does not carry it, for people
    /// (`VirtualService shop/app sends 0 % to the canary`).
    pub weight_not_in_effect: Option<String>,
    /// The names of the pods created before `spec.restartAt`, by pod template hash, the stable
    /// version's first (its pods carry the traffic the longest).
    pub pods_to_restart: Vec<(String, Vec<String>)>,
    /// The AnalysisTemplates in the Rollout's namespace that it names, by name. A name missing
    /// from the map does not exist.
    pub analysis_templates: BTreeMap<String, AnalysisTemplateSpec>,
    /// The ClusterAnalysisTemplates the Rollout names, by name.
    pub cluster_analysis_templates: BTreeMap<String, AnalysisTemplateSpec>,
    /// The traffic routers this build of stepwise can drive, by their field name under
    /// `trafficRouting` (`istio`, `nginx`, …). A Rollout naming another one is refused.
    pub router_kinds: BTreeSet<String>,
    /// The routers, among `router_kinds`, that make header routes (`setHeaderRoute`).
    pub header_route_kinds: BTreeSet<String>,
    /// The routers, among `router_kinds`, that make mirror routes (`setMirrorRoute`).
    pub mirror_route_kinds: BTreeSet<String>,
    /// The routers, among `router_kinds`, that follow a pingPong swap of the Services.
    pub ping_pong_kinds: BTreeSet<String>,
}

/// One ReplicaSet owned by the Rollout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedReplicaSet {
    /// Name of the ReplicaSet.
    pub name: String,
    /// Its pod template hash label.
    pub hash: String,
    /// Its revision annotation.
    pub revision: i64,
    /// spec.replicas.
    pub spec_replicas: i32,
    /// status.replicas: pods that exist and are not terminating.
    pub replicas: i32,
    /// status.terminatingReplicas: pods being deleted that have not stopped yet. The API server
    /// reports it only with the DeploymentReplicaSetTerminatingReplicas feature (alpha in
    /// Kubernetes 1.33 and 1.34); 0 where it does not.
    pub terminating: i32,
    /// Whether its status predates its spec (status.observedGeneration below
    /// metadata.generation): its pod counts may not show the latest scale yet.
    pub status_stale: bool,
    /// status.readyReplicas.
    pub ready: i32,
    /// status.availableReplicas.
    pub available: i32,
    /// Its pod template, with the hash label, without the role metadata stepwise put on it
    /// (see [`ObservedReplicaSet::role_metadata`]): the version's own template.
    pub template: PodTemplateSpec,
    /// The labels and annotations of a role (`canaryMetadata`, `stableMetadata`,
    /// `activeMetadata`, `previewMetadata`) that stepwise put on its pod template and its pods,
    /// as it recorded them once they were all in place.
    pub role_metadata: RoleMetadata,
    /// When it is to be scaled to zero, if a delay was set.
    pub scale_down_deadline: Option<Time>,
    /// When its version last became the stable one, as recorded on it; None when it never was
    /// since stepwise records it.
    pub stable_since: Option<Time>,
    /// When its version then stopped being the stable one, as recorded on it.
    pub stable_until: Option<Time>,
    /// Its creation time.
    pub created: Option<Time>,
}

/// The labels and annotations a version's pods carry for the role the version holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleMetadata {
    /// Labels, by key.
    pub labels: BTreeMap<String, String>,
    /// Annotations, by key.
    pub annotations: BTreeMap<String, String>,
}

impl RoleMetadata {
    /// Whether there is nothing to put on the pods.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// The role metadata a Rollout field asks for.
    pub fn from_spec(metadata: Option<&stepwise_api::PodMetadata>) -> RoleMetadata {
        RoleMetadata {
            labels: metadata.and_then(|m| m.labels.clone()).unwrap_or_default(),
            annotations: metadata.and_then(|m| m.annotations.clone()).unwrap_or_default(),
        }
    }
}

/// Which part of a rollout an AnalysisRun judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnalysisKind {
    /// An analysis step; the index of the step.
    Step(i32),
    /// Background analysis of a canary.
    Background,
    /// Blue-green, before the switch.
    PrePromotion,
    /// Blue-green, after the switch.
    PostPromotion,
}

impl AnalysisKind {
    /// The kind of a run from the labels core gave it (see `analysis_run::run_labels`); None
    /// for a run without them.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<AnalysisKind> {
        match labels.get(stepwise_api::ANALYSIS_KIND_LABEL)?.as_str() {
            "Background" => Some(AnalysisKind::Background),
            "PrePromotion" => Some(AnalysisKind::PrePromotion),
            "PostPromotion" => Some(AnalysisKind::PostPromotion),
            "Step" => Some(AnalysisKind::Step(labels.get(stepwise_api::STEP_INDEX_LABEL)?.parse().ok()?)),
            _ => None,
        }
    }

    /// The value of the kind label on the run.
    pub fn label(self) -> &'static str {
        match self {
            AnalysisKind::Step(_) => "Step",
            AnalysisKind::Background => "Background",
            AnalysisKind::PrePromotion => "PrePromotion",
            AnalysisKind::PostPromotion => "PostPromotion",
        }
    }

    /// The suffix of the run's name after `<rollout>-<hash>-<revision>`.
    pub fn name_suffix(self) -> String {
        match self {
            AnalysisKind::Step(i) => format!("-{i}"),
            AnalysisKind::Background => String::new(),
            AnalysisKind::PrePromotion => "-pre".into(),
            AnalysisKind::PostPromotion => "-post".into(),
        }
    }
}

/// One AnalysisRun owned by the Rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedAnalysisRun {
    /// Name of the run.
    pub name: String,
    /// Pod template hash of the version it judges.
    pub hash: String,
    /// What it judges.
    pub kind: AnalysisKind,
    /// Its phase; Pending until the analysis controller starts it.
    pub phase: AnalysisPhase,
    /// Its message.
    pub message: Option<String>,
    /// Whether it was asked to terminate.
    pub terminating: bool,
    /// Its creation time: the history limits delete the oldest completed runs first.
    pub created: Option<Time>,
}
