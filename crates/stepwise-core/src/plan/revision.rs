//! Versions and their history: a new pod template starts a rollout with a new revision, a return
//! to the stable template skips the steps, old ReplicaSets beyond the history limit go, and
//! `spec.restartAt` replaces pods.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use stepwise_api::{CanaryStatus, RolloutStatus};

use super::action::{Action, EventType};
use super::context::Ctx;
use super::desired::{Draft, new_replica_set};
use super::pause::end_all_pauses;
use crate::hash::steps_hash;
use crate::observed::ObservedReplicaSet;
use crate::replicas::resolve_fenceposts;
use crate::time::seconds_between;

/// A new pod template (or the first reconcile) resets the step state; a return to the stable
/// template skips the steps; edited steps start again from the first. The newest template's
/// ReplicaSet exists with the highest revision.
pub(crate) fn start_new_version_if_needed(
    ctx: &Ctx,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    draft: &mut Draft,
) {
    let steps = ctx.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_deref()).unwrap_or_default();
    let steps_h = steps_hash(steps);
    if prev.current_pod_hash.as_deref() != Some(ctx.hash.as_str()) {
        start_new_version(ctx, prev, status, draft, steps.len() as i32, steps_h);
    } else if prev.current_step_hash.as_deref() != Some(steps_h.as_str()) && ctx.spec.strategy.canary.is_some() {
        status.current_step_hash = Some(steps_h);
        let promoted = ctx.promoted(status);
        status.current_step_index = Some(if promoted { steps.len() as i32 } else { 0 });
        end_all_pauses(status);
        if !promoted {
            draft.event(EventType::Normal, "StepsChanged", "The steps changed: starting again from step 1");
        }
    }
    ensure_newest_revision(ctx, status, draft);
}

fn start_new_version(
    ctx: &Ctx,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    draft: &mut Draft,
    steps: i32,
    steps_h: String,
) {
    end_all_pauses(status);
    status.abort = None;
    status.aborted_at = None;
    status.promote_full = None;
    // The router keeps its weights and pingPong its roles from one version to the next.
    status.canary = status.canary.take().map(|c| CanaryStatus {
        weights: c.weights,
        stable_ping_pong: c.stable_ping_pong,
        ..Default::default()
    });
    if let Some(bg) = status.blue_green.as_mut() {
        bg.pre_promotion_analysis_run_status = None;
        bg.post_promotion_analysis_run_status = None;
        bg.scale_up_preview_check_point = None;
    }
    status.current_pod_hash = Some(ctx.hash.clone());
    status.current_step_hash = Some(steps_h);
    let first_deploy = prev.stable_rs.is_none();
    if first_deploy {
        status.stable_rs = Some(ctx.hash.clone());
    }
    let back_to_stable = ctx.promoted(status);
    status.current_step_index =
        if ctx.spec.strategy.canary.is_some() { Some(if back_to_stable { steps } else { 0 }) } else { None };
    if first_deploy {
        draft.event(
            EventType::Normal,
            "RolloutCompleted",
            format!("Initial deploy of revision with hash {}", ctx.hash),
        );
    } else if back_to_stable {
        draft.event(EventType::Normal, "SkipSteps", "Rollback to stable ReplicaSet: steps skipped");
    } else if let Some(between) = rollback_within_window(ctx, status) {
        // Carried out as a full promotion: no steps, pauses or analyses, promoted once its pods
        // are available (blue-green: once the active Service selects them).
        status.promote_full = Some(true);
        draft.event(
            EventType::Normal,
            "SkipSteps",
            format!(
                "Rollback within window: {} is {between} version(s) before the stable one: steps skipped",
                ctx.rs_name(&ctx.hash)
            ),
        );
    } else if prev.current_pod_hash.is_some() {
        draft.event(EventType::Normal, "RolloutUpdated", format!("Rollout updated to pod template hash {}", ctx.hash));
    }
}

/// `spec.rollbackWindow`: whether the newest template returns to a version created before the
/// stable one with fewer than `revisions` versions between them (counted among the ReplicaSets
/// that still exist, as Argo Rollouts does). Returns how many versions lie between.
///
/// Versions are ordered by creation, not by revision: an undo gives the old ReplicaSet a new
/// revision. Equal creation times (one-second resolution) fall back to the revision, which the
/// newest template's ReplicaSet still has from before when this is decided.
pub(crate) fn rollback_within_window(ctx: &Ctx, status: &RolloutStatus) -> Option<usize> {
    let window = ctx.spec.rollback_window.as_ref().map(|w| w.revisions).unwrap_or(0);
    if window <= 0 {
        return None;
    }
    let new = ctx.new_rs()?;
    let stable = ctx.rs(ctx.older_stable(status)?.as_str())?;
    let order = |rs: &ObservedReplicaSet| (rs.created.as_ref().map(|t| t.0), rs.revision);
    if order(new) >= order(stable) {
        return None;
    }
    let between =
        ctx.observed.replica_sets.iter().filter(|rs| order(rs) > order(new) && order(rs) < order(stable)).count();
    (between < window as usize).then_some(between)
}

/// The newest template always has the highest revision: an old template that became new again
/// gets a new one.
fn ensure_newest_revision(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft) {
    let max_rev = ctx.max_revision();
    let revision = match ctx.new_rs() {
        Some(rs) if rs.revision == max_rev && rs.revision > 0 => rs.revision,
        _ => max_rev + 1,
    };
    status.current_revision = Some(revision);
    match ctx.new_rs() {
        Some(rs) if rs.revision != revision => draft.desired.revision = Some((rs.name.clone(), revision)),
        Some(_) => {}
        None => draft.desired.new_replica_set = Some(new_replica_set(ctx, revision)),
    }
}

/// The plan that makes a version the stable one records the time on its ReplicaSet (or on the
/// one it creates, for the first version), and on the ReplicaSet of the version stable before it
/// as the end of its time: `kubectl stepwise history` shows them. Only then: a version stable
/// without a record (stable before the controller recorded it, or whose write failed) is left
/// without, for "not known" is true and a later time would not be. A version stable again after
/// others (an undo) records it anew. A time is never before another record, so that the records
/// keep the order of the versions even when clocks differ a little.
pub(crate) fn record_stable_period(ctx: &Ctx, prev: &RolloutStatus, status: &RolloutStatus, draft: &mut Draft) {
    let Some(stable) = status.stable_rs.as_deref() else { return };
    if prev.stable_rs.as_deref() == Some(stable) {
        return;
    }
    let latest = ctx.observed.replica_sets.iter().flat_map(|rs| [&rs.stable_since, &rs.stable_until]).flatten().max();
    let at = latest.map_or(ctx.now, |other| other.max(ctx.now)).clone();
    if let Some(before) = prev.stable_rs.as_deref().and_then(|hash| ctx.rs(hash)) {
        draft.desired.stable_until = Some((before.name.clone(), at.clone()));
    }
    match ctx.rs(stable) {
        Some(rs) => draft.desired.stable_since = Some((rs.name.clone(), at)),
        None if stable == ctx.hash && draft.desired.new_replica_set.is_some() => {
            draft.desired.stable_since = Some((ctx.rs_name(stable), at))
        }
        None => {}
    }
}

/// Old ReplicaSets with no pods, beyond revisionHistoryLimit, oldest first.
pub(crate) fn trim_history(ctx: &Ctx, status: &RolloutStatus, draft: &mut Draft) {
    let limit = ctx.spec.revision_history_limit.unwrap_or(stepwise_api::DEFAULT_REVISION_HISTORY_LIMIT).max(0) as usize;
    let mut old: Vec<&ObservedReplicaSet> = ctx
        .observed
        .replica_sets
        .iter()
        .filter(|rs| rs.hash != ctx.hash && Some(&rs.hash) != status.stable_rs.as_ref())
        // Not while pods of it are still stopping: they would be lost from sight (Recreate waits
        // for them).
        .filter(|rs| rs.spec_replicas == 0 && rs.replicas == 0 && rs.terminating == 0 && !rs.status_stale)
        .collect();
    if old.len() <= limit {
        return;
    }
    old.sort_by_key(|rs| rs.revision);
    let excess = old.len() - limit;
    draft.desired.deleted.extend(old.into_iter().take(excess).map(|rs| rs.name.clone()));
}

/// `spec.restartAt`: pods created before it are replaced one at a time, within maxUnavailable.
pub(crate) fn restart_pods(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft) {
    let Some(restart_at) = &ctx.spec.restart_at else { return };
    if status.restarted_at.as_ref() == Some(restart_at) {
        return;
    }
    let wait = seconds_between(ctx.now, restart_at);
    if wait > 0.0 {
        draft.requeue_in(wait);
        return;
    }
    let Some(pod) = ctx.observed.pods_to_restart.iter().find_map(|(_, pods)| pods.first()) else {
        status.restarted_at = Some(restart_at.clone());
        draft.event(EventType::Normal, "RolloutRestarted", "All pods created before spec.restartAt were replaced");
        return;
    };
    let r = ctx.replicas;
    let (_, unavailable) = match (&ctx.spec.strategy.canary, &ctx.spec.strategy.blue_green) {
        (Some(c), _) => resolve_fenceposts(c.max_surge.as_ref(), c.max_unavailable.as_ref(), r),
        (None, Some(b)) => resolve_fenceposts(Some(&IntOrString::Int(0)), b.max_unavailable.as_ref(), r),
        _ => (0, 1),
    };
    let budget = unavailable.max(1);
    let available: i32 = ctx.observed.replica_sets.iter().map(|rs| rs.available.min(rs.spec_replicas)).sum();
    let spec_total: i32 = ctx.observed.replica_sets.iter().map(|rs| rs.spec_replicas).sum();
    if available > r.max(spec_total) - budget {
        draft.desired.restart = Some(Action::RestartPod { name: pod.clone() });
    }
    draft.requeue_in(5.0);
}

/// `workloadRef.scaleDown`: what becomes of the referenced Deployment's own pods once the Rollout
/// runs the workload. `onsuccess`: scaled to zero once the Rollout is Healthy. `progressively`:
/// while the first version comes up, the Deployment keeps `spec.replicas` minus the Rollout's
/// available pods (so it grows back if they fail), and zero once the Rollout is Healthy. Later
/// versions never scale the Deployment up: its template is then the new version, whose pods
/// must come only through the steps. `never` (the default) leaves it alone.
pub(crate) fn scale_down_workload(ctx: &Ctx, status: &RolloutStatus, draft: &mut Draft) {
    use stepwise_api::{RolloutPhase, WorkloadScaleDown};
    let Some(mode) = ctx.spec.workload_ref.as_ref().and_then(|w| w.scale_down) else { return };
    let Some(current) = ctx.observed.workload_replicas else { return };
    let healthy = status.phase == Some(RolloutPhase::Healthy);
    let target = match mode {
        WorkloadScaleDown::Never => return,
        _ if healthy => 0,
        WorkloadScaleDown::Onsuccess => return,
        WorkloadScaleDown::Progressively if status.current_revision == Some(1) => {
            (ctx.replicas - status.available_replicas.unwrap_or(0)).max(0)
        }
        WorkloadScaleDown::Progressively => return,
    };
    if target != current {
        draft.desired.workload_replicas = Some(target);
    }
}
