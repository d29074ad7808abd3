//! The pure half of `kubectl stepwise`: what each command shows and what each operation decides
//! to patch (or refuses), from objects as read. `main.rs` only reads, patches and prints, so
//! everything a person sees can be tested from fixtures without a cluster.

pub mod complete;
pub mod convert;
pub mod dashboard;
pub mod decide;
pub mod expr;
pub mod lint;
pub mod manifest;
pub mod plugin_check;
pub mod render;
pub mod schema;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use stepwise_api::{AnalysisRun, Rollout};

/// A Rollout with the objects it owns, as `get rollout` shows them.
#[derive(Clone, Debug, Default)]
pub struct RolloutTree {
    /// The Rollout.
    pub rollout: Rollout,
    /// Its ReplicaSets, one per revision.
    pub replica_sets: Vec<ReplicaSet>,
    /// The pods of those ReplicaSets.
    pub pods: Vec<Pod>,
    /// Its AnalysisRuns.
    pub analysis_runs: Vec<AnalysisRun>,
}
