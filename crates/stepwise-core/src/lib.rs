//! The stepwise step machine: one pure function decides everything.
//!
//! [`plan`] takes a Rollout (spec and last status), what the controller observed, and the current
//! time, and returns the actions to take, the next status and when to look again. It has no
//! client, no runtime and no clock, so every decision is table-tested and property-tested.
//!
//! User requests arrive through the Rollout itself, so that any client can make them: promote
//! clears `status.pauseConditions` (or, when nothing is paused, advances `status.currentStepIndex`),
//! promote full sets `status.promoteFull`, abort sets `status.abort`, retry clears it, pause sets
//! `spec.paused`. `docs/operations.md` lists the exact patches.

pub mod analysis_run;
pub mod failure;
pub mod hash;
pub mod measure;
pub mod objects;
mod observed;
mod plan;
mod readiness;
pub mod replicas;
mod time;
pub mod traffic;

pub use observed::{AnalysisKind, Observed, ObservedAnalysisRun, ObservedReplicaSet, RoleMetadata};
pub use plan::{Action, EventType, Plan, action_event, plan, weight_text};
pub use time::{add_seconds, seconds_between};

/// Condition types written by the step machine.
pub mod condition {
    /// The rollout has at least the minimum number of available pods.
    pub const AVAILABLE: &str = "Available";
    /// The rollout is making progress, or why not.
    pub const PROGRESSING: &str = "Progressing";
    /// The rollout is paused by the controller or the user.
    pub const PAUSED: &str = "Paused";
    /// The newest version is the stable version.
    pub const COMPLETED: &str = "Completed";
    /// The rollout is fully promoted and available.
    pub const HEALTHY: &str = "Healthy";
    /// The spec cannot be carried out; the message says why.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// An action of the last plan failed; the message is the error. Written by the controller.
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    /// The rollout is Healthy: the newest version is released (kstatus and Kubernetes' API
    /// conventions; the reason is the phase).
    pub const READY: &str = "Ready";
    /// Present while a release is under way or waits (kstatus: InProgress).
    pub const RECONCILING: &str = "Reconciling";
    /// Present while the rollout is Degraded: aborted, past its progress deadline or invalid
    /// (kstatus: Failed).
    pub const STALLED: &str = "Stalled";
}
