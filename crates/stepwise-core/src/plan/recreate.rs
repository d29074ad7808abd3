//! The recreate strategy, as a Deployment's: every other version is scaled to zero, and the
//! version that is to run (the newest; the stable one after an abort) is scaled up only once no
//! pod of any other version is left, terminating pods included. Two versions never run at once;
//! in between, nothing runs. Decided first, then the desired state.
//!
//! There are no steps, pauses of the controller's own, Services or analyses, and maxSurge and
//! maxUnavailable do not apply. `spec.paused` holds every ReplicaSet where it is.

use stepwise_api::RolloutStatus;

use super::abort::aborted;
use super::action::EventType;
use super::context::Ctx;
use super::desired::Draft;

/// Where a recreate stands, from what was observed.
pub(crate) struct Stage {
    /// The version that is to run: the newest, or the stable one after an abort.
    pub target: String,
    /// Pods of the other versions that have not stopped yet, terminating ones included.
    pub old_pods: i32,
    /// Whether every other version is gone: its ReplicaSet at zero, with no pod left, and a
    /// status that has caught up with that spec (a status older than the scale may not count
    /// the pods the ReplicaSet controller has just created or is deleting).
    pub old_gone: bool,
}

/// The version that is to run and whether the others are gone.
pub(crate) fn stage(ctx: &Ctx, status: &RolloutStatus) -> Stage {
    let target = match ctx.older_stable(status) {
        Some(stable) if aborted(status) => stable,
        _ => ctx.hash.clone(),
    };
    let others = || ctx.observed.replica_sets.iter().filter(|rs| rs.hash != target);
    let old_pods = others().map(|rs| rs.replicas + rs.terminating).sum();
    let old_gone =
        others().all(|rs| rs.spec_replicas == 0 && rs.replicas == 0 && rs.terminating == 0 && !rs.status_stale);
    Stage { target, old_pods, old_gone }
}

pub(crate) fn plan(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft) {
    // Promote full has nothing to skip: the new version starts as soon as it may.
    status.promote_full = None;
    if ctx.user_paused() {
        return;
    }
    let stage = stage(ctx, status);
    if !stage.old_gone && stage.old_pods > 0 && stage.old_pods == terminating(ctx, &stage) {
        // Only stopping pods are left: their ReplicaSets no longer change as they go, so
        // nothing else would wake the controller.
        draft.requeue_in(TERMINATING_POLL_SECONDS);
    }
    desire(ctx, &stage, draft);
    promote_when_up(ctx, status, &stage, draft);
}

/// How often a recreate that waits on stopping pods looks again.
const TERMINATING_POLL_SECONDS: f64 = 2.0;

/// Pods of the other versions that are stopping: counted by the controller from the pods, as a
/// ReplicaSet no longer counts a pod that is being deleted.
fn terminating(ctx: &Ctx, stage: &Stage) -> i32 {
    ctx.observed.replica_sets.iter().filter(|rs| rs.hash != stage.target).map(|rs| rs.terminating).sum()
}

/// The other versions go to zero at once; the target keeps what it has (never more) until they
/// are gone, then gets every pod.
fn desire(ctx: &Ctx, stage: &Stage, draft: &mut Draft) {
    let r = ctx.replicas;
    let mut scaled_down = Vec::new();
    for rs in ctx.observed.replica_sets.iter().filter(|rs| rs.hash != stage.target) {
        draft.desired.scale(ctx, &rs.hash, 0);
        if rs.spec_replicas > 0 {
            scaled_down.push(rs.name.clone());
        }
    }
    let current = ctx.counts(&stage.target).spec;
    let target = if stage.old_gone { r } else { current.min(r) };
    draft.desired.scale(ctx, &stage.target, target);
    for rs in ctx.observed.replica_sets.iter().filter(|rs| rs.scale_down_deadline.is_some()) {
        draft.desired.clear_deadline(&rs.hash);
    }
    let name = ctx.rs_name(&stage.target);
    if !scaled_down.is_empty() {
        let message = format!(
            "Recreate: scaling {} to 0; ReplicaSet {name} starts once all their pods are gone",
            scaled_down.join(", ")
        );
        draft.event(EventType::Normal, "RecreateScaledDown", message);
    }
    let first_deploy = ctx.observed.replica_sets.iter().all(|rs| rs.hash == stage.target);
    if stage.old_gone && current == 0 && draft.desired.spec(ctx, &stage.target) > 0 && !first_deploy {
        let message = format!("Recreate: no pod of an older version is left; scaling up ReplicaSet {name} to {r}");
        draft.event(EventType::Normal, "RecreateScaledUp", message);
    }
}

/// The newest version becomes stable once the others are gone and all its pods are available.
fn promote_when_up(ctx: &Ctx, status: &mut RolloutStatus, stage: &Stage, draft: &mut Draft) {
    let r = ctx.replicas;
    if aborted(status) || ctx.promoted(status) || stage.target != ctx.hash || !stage.old_gone {
        return;
    }
    if draft.desired.spec(ctx, &ctx.hash) == r && draft.desired.available(ctx, &ctx.hash) >= r {
        status.stable_rs = Some(ctx.hash.clone());
        let revision = status.current_revision.unwrap_or(1);
        let message =
            format!("Rollout completed update to revision {revision} ({}): Completed recreate update", ctx.hash);
        draft.event(EventType::Normal, "RolloutCompleted", message);
    }
}

fn pods(n: i32) -> String {
    if n == 1 { "1 pod".into() } else { format!("{n} pods") }
}

/// Where a recreate that is not done stands, in words: `Recreating: waiting for 3 pods of the
/// old version to stop`, `Recreating: 2 of 4 pods of the new version available`.
pub(crate) fn progress_message(ctx: &Ctx, status: &RolloutStatus) -> String {
    let stage = stage(ctx, status);
    // A ReplicaSet whose status has not caught up yet holds the new version back, but is not
    // told: the message would change with nothing else changing, and planning again must not.
    if !stage.old_gone && stage.old_pods > 0 {
        return format!("Recreating: waiting for {} of the old version to stop", pods(stage.old_pods));
    }
    let available = ctx.rs(&stage.target).map(|rs| rs.available).unwrap_or(0);
    format!("Recreating: {available} of {} of the new version available", pods(ctx.replicas))
}

/// After an abort, how far the stable version is back, to follow the abort message:
/// `; recreating the stable version: waiting for 2 pods of the new version to stop`. Empty once
/// the stable version has all its pods available.
pub(crate) fn abort_progress(ctx: &Ctx, status: &RolloutStatus) -> String {
    let stage = stage(ctx, status);
    let r = ctx.replicas;
    let available = ctx.rs(&stage.target).map(|rs| rs.available).unwrap_or(0);
    if !stage.old_gone && stage.old_pods > 0 {
        format!("; recreating the stable version: waiting for {} of the new version to stop", pods(stage.old_pods))
    } else if available < r {
        format!("; recreating the stable version: {available} of {} available", pods(r))
    } else {
        String::new()
    }
}
