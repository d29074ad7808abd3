//! What a plan asks the controller to do: the actions, in the order they must be carried out.

use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use stepwise_api::{AnalysisRun, RolloutStatus};

use crate::observed::{AnalysisKind, RoleMetadata};
use crate::traffic::Traffic;

/// Whether an event reports normal progress or something a person should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Normal progress.
    Normal,
    /// Something went wrong.
    Warning,
}

/// One thing the controller must do. The plan lists them in a safe order: pods are added before
/// traffic moves to them, and traffic moves away before pods are removed.
// A plan holds a handful of actions, so the size of CreateReplicaSet's pod template costs
// nothing that matters; boxing it would change the type the controller matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create a ReplicaSet for a new version, owned by the Rollout.
    CreateReplicaSet {
        /// `<rollout>-<hash>`.
        name: String,
        /// The pod template hash.
        hash: String,
        /// Revision number.
        revision: i64,
        /// Initial spec.replicas.
        replicas: i32,
        /// The pod template, with the hash label.
        template: PodTemplateSpec,
        /// The selector, with the hash label.
        selector: LabelSelector,
        /// minReadySeconds of the Rollout.
        min_ready_seconds: i32,
    },
    /// Change a ReplicaSet's spec.replicas.
    ScaleReplicaSet {
        /// Name of the ReplicaSet.
        name: String,
        /// New spec.replicas.
        replicas: i32,
    },
    /// Change the revision annotation of a ReplicaSet (an old template became new again).
    SetRevision {
        /// Name of the ReplicaSet.
        name: String,
        /// New revision.
        revision: i64,
    },
    /// Set or clear the time at which a ReplicaSet is scaled to zero.
    SetScaleDownDeadline {
        /// Name of the ReplicaSet.
        name: String,
        /// The deadline, or none to clear it.
        deadline: Option<Time>,
    },
    /// Record on a ReplicaSet that its version became the stable one, and has not stopped being
    /// it since (an end recorded before goes).
    SetStableSince {
        /// Name of the ReplicaSet.
        name: String,
        /// When.
        since: Time,
    },
    /// Record on a ReplicaSet that its version stopped being the stable one.
    SetStableUntil {
        /// Name of the ReplicaSet.
        name: String,
        /// When.
        until: Time,
    },
    /// Delete an old ReplicaSet beyond the revision history limit.
    DeleteReplicaSet {
        /// Name of the ReplicaSet.
        name: String,
    },
    /// Point a Service's selector at a version.
    SetServiceSelector {
        /// Name of the Service.
        service: String,
        /// Pod template hash to select.
        hash: String,
    },
    /// Bring every router the Rollout names to this traffic state: the weight, the versions it
    /// splits between, and exactly these managed routes (the others named in `managedRoutes`
    /// are removed).
    SetTraffic(Traffic),
    /// Start an AnalysisRun.
    CreateAnalysisRun {
        /// What it judges.
        kind: AnalysisKind,
        /// The run, complete: metrics, arguments, labels and owner.
        run: Box<AnalysisRun>,
    },
    /// Delete a completed AnalysisRun beyond the Rollout's run history limits.
    DeleteAnalysisRun {
        /// Name of the run.
        name: String,
    },
    /// Ask an AnalysisRun to stop measuring.
    TerminateAnalysisRun {
        /// Name of the run.
        name: String,
    },
    /// Replace a pod created before spec.restartAt: evict it, so that its ReplicaSet makes a
    /// new one (a disruption budget may refuse; the next plan asks again).
    RestartPod {
        /// Name of the pod.
        name: String,
    },
    /// Put the labels and annotations of the role a version now holds on its ReplicaSet's pod
    /// template and on its pods, in place (no pod restarts), and take off those of a role it no
    /// longer has. Then record `labels` and `annotations` on the ReplicaSet
    /// ([`crate::objects::ROLE_METADATA_ANNOTATION`]).
    SetRoleMetadata {
        /// Name of the ReplicaSet.
        name: String,
        /// Pod template hash of the version.
        hash: String,
        /// The pods of the version, as a label selector in the API server's syntax (the
        /// Rollout's selector and the hash label).
        pods: String,
        /// Labels and annotations of its role; empty when it has none.
        metadata: RoleMetadata,
        /// Labels and annotations stepwise put there for a role it no longer has, with the
        /// values it gave them: taken off where they still have those values.
        remove: RoleMetadata,
    },
    /// Change the spec.replicas of the Deployment a workloadRef names (`workloadRef.scaleDown`).
    ScaleWorkload {
        /// Name of the Deployment.
        name: String,
        /// New spec.replicas.
        replicas: i32,
    },
    /// Add [`crate::traffic::TRAFFIC_FINALIZER`] to the Rollout, keeping the finalizers it has.
    /// Always the first action: it changes the Rollout's resourceVersion, on which the rest of
    /// the plan and its status are written.
    AddTrafficFinalizer,
    /// Record a Kubernetes Event on the Rollout.
    Event {
        /// Normal or Warning.
        type_: EventType,
        /// CamelCase reason.
        reason: String,
        /// What happened.
        message: String,
    },
}

/// The reasons of the events that tell of an action being carried out (a ReplicaSet created or
/// scaled, a Service switched, a weight set, a run started), as opposed to a decision.
pub mod action_event {
    /// A ReplicaSet was created.
    pub const REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
    /// A ReplicaSet was scaled.
    pub const SCALED: &str = "ScalingReplicaSet";
    /// A Service selector was switched.
    pub const SERVICE_SWITCHED: &str = "SwitchService";
    /// The traffic weight was set.
    pub const WEIGHT_SET: &str = "TrafficWeightUpdated";
    /// An AnalysisRun was started.
    pub const RUN_STARTED: &str = "AnalysisRunCreated";
    /// All of them.
    pub const ALL: [&str; 5] = [REPLICA_SET_CREATED, SCALED, SERVICE_SWITCHED, WEIGHT_SET, RUN_STARTED];
}

/// What `plan` decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Actions, in the order they must be carried out.
    pub actions: Vec<Action>,
    /// The status to write once the actions are done.
    pub status: RolloutStatus,
    /// When to plan again even if nothing changes.
    pub requeue_after: Option<StdDuration>,
}
