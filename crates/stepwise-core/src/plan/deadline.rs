//! The progress deadline: a rollout that makes no progress for progressDeadlineSeconds is
//! marked ProgressDeadlineExceeded (and aborted with progressDeadlineAbort). Waiting for a
//! person, a timer or an analysis does not count.

use stepwise_api::RolloutStatus;

use super::abort::abort;
use super::action::EventType;
use super::blue_green;
use super::context::Ctx;
use super::desired::Draft;
use super::status::{condition, replicas_moved, set_condition};
use crate::condition;
use crate::time::seconds_between;

/// Decided before the strategy, so that an abort takes effect in the same plan. It runs on wall
/// time: the clock starts at the last progress recorded in the Progressing condition, whatever
/// the reconciles in between did.
pub(crate) fn check_progress_deadline(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, draft: &mut Draft) {
    let Some(progressing) = condition(status, condition::PROGRESSING).cloned() else { return };
    // progressDeadlineAbort set (or a plan's abort lost) after the deadline was exceeded: the
    // timed-out update is aborted now, as Argo Rollouts does.
    if progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")
        && ctx.spec.progress_deadline_abort == Some(true)
        && status.abort != Some(true)
        && !ctx.promoted(status)
    {
        let message = progressing.message.unwrap_or_else(|| "Progress deadline exceeded".into());
        abort(ctx, status, draft, message);
        return;
    }
    if waiting_on_person_or_timer(ctx, status)
        || replicas_moved(prev, status)
        || progressing.status != "True"
        || progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return;
    }
    let deadline = ctx.spec.progress_deadline_seconds.unwrap_or(stepwise_api::DEFAULT_PROGRESS_DEADLINE_SECONDS);
    // Time spent waiting for a scale-down delay does not count either: the clock runs from the
    // last progress or from the end of the latest such wait, whichever is later.
    let last = ctx
        .observed
        .replica_sets
        .iter()
        .filter_map(|rs| rs.scale_down_deadline.clone())
        .chain(progressing.last_update_time.clone())
        .filter(|t| seconds_between(t, ctx.now) >= 0.0)
        .reduce(|a, b| if seconds_between(&a, &b) > 0.0 { b } else { a })
        .unwrap_or_else(|| ctx.now.clone());
    let left = f64::from(deadline) - seconds_between(&last, ctx.now);
    if left > 0.0 {
        draft.requeue_in(left);
        return;
    }
    let mut message = format!("ReplicaSet {} has timed out progressing.", ctx.rs_name(&ctx.hash));
    if let Some(why) = super::status::weight_not_in_effect(ctx, status) {
        message = format!("{message} It was {why}.");
    }
    set_condition(status, condition::PROGRESSING, "False", "ProgressDeadlineExceeded", &message, ctx.now);
    draft.event(EventType::Warning, "ProgressDeadlineExceeded", message.clone());
    // A promoted rollout has nothing to go back to (and an abort of it is dropped at once).
    if ctx.spec.progress_deadline_abort == Some(true) && !ctx.promoted(status) {
        abort(ctx, status, draft, message);
    }
}

fn waiting_on_person_or_timer(ctx: &Ctx, status: &RolloutStatus) -> bool {
    let paused = ctx.user_paused() || !status.pause_conditions.is_empty();
    let new_available = ctx.new_rs().map(|rs| rs.available).unwrap_or(0);
    let complete = ctx.promoted(status) && new_available >= ctx.replicas && status.replicas == Some(ctx.replicas);
    let scale_down_delay = ctx
        .observed
        .replica_sets
        .iter()
        .any(|rs| rs.scale_down_deadline.as_ref().is_some_and(|d| seconds_between(ctx.now, d) > 0.0));
    paused || status.abort == Some(true) || complete || at_analysis(ctx, status) || scale_down_delay
}

/// Whether the rollout waits on an analysis, which has deadlines of its own.
fn at_analysis(ctx: &Ctx, status: &RolloutStatus) -> bool {
    if let Some(canary) = &ctx.spec.strategy.canary {
        let steps = canary.steps.as_deref().unwrap_or_default();
        let idx = status.current_step_index.unwrap_or(0);
        return steps.get(idx.max(0) as usize).is_some_and(|s| s.analysis.is_some());
    }
    // Blue-green waits on its analyses only while the new pods are ready: a run recorded
    // earlier does not hold the deadline off while pods are missing.
    let Some(bg) = &ctx.spec.strategy.blue_green else { return false };
    blue_green::new_version(ctx, bg, status).ready
        && status.blue_green.as_ref().is_some_and(|b| {
            [&b.pre_promotion_analysis_run_status, &b.post_promotion_analysis_run_status]
                .iter()
                .any(|r| r.as_ref().is_some_and(|r| !r.status.is_completed()))
        })
}
