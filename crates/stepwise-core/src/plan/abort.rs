//! Abort and retry: asked for by a person, or decided by the machine (a failed analysis, the
//! progress deadline).

use stepwise_api::RolloutStatus;

use super::action::EventType;
use super::context::Ctx;
use super::desired::Draft;
use super::pause::end_all_pauses;
use crate::condition;
use crate::plan::status::set_condition;

/// Takes in a person's abort (status.abort set) or retry (status.abort cleared after an abort).
/// An abort of a version that is already stable is dropped: there is nothing to go back to.
pub(crate) fn take_abort_or_retry(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft) {
    let requested = status.abort == Some(true);
    if requested && ctx.promoted(status) {
        status.abort = None;
        status.aborted_at = None;
    } else if requested && status.aborted_at.is_none() {
        // The machine's own aborts set abortedAt with their reason (see `abort`); this one was
        // asked for, and status.message still holds the phase message from before the request.
        abort(ctx, status, draft, "Rollout aborted by request".into());
    } else if !requested && status.aborted_at.is_some() {
        retry(ctx, status, draft);
    }
}

/// Aborts the rollout: traffic and pods go back to the stable version, managed routes go, and
/// every run stops (see `analysis::live_runs`).
pub(crate) fn abort(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft, message: String) {
    status.abort = Some(true);
    status.aborted_at = Some(ctx.now.clone());
    end_all_pauses(status);
    status.promote_full = None;
    if ctx.spec.strategy.canary.is_some() {
        status.current_step_index = Some(0);
    }
    set_condition(status, condition::PROGRESSING, "False", "RolloutAborted", &message, ctx.now);
    draft.event(EventType::Warning, "RolloutAborted", message);
}

fn retry(ctx: &Ctx, status: &mut RolloutStatus, draft: &mut Draft) {
    status.aborted_at = None;
    status.abort = None;
    if let Some(c) = status.canary.as_mut() {
        c.current_step_analysis_run_status = None;
        c.current_background_analysis_run_status = None;
    }
    if let Some(bg) = status.blue_green.as_mut() {
        bg.pre_promotion_analysis_run_status = None;
        bg.post_promotion_analysis_run_status = None;
    }
    if ctx.spec.strategy.canary.is_some() {
        status.current_step_index = Some(0);
    }
    let message = "Retrying Rollout after abort";
    set_condition(status, condition::PROGRESSING, "Unknown", "RolloutRetry", message, ctx.now);
    draft.event(EventType::Normal, "RolloutRetry", message);
}

/// Whether the rollout is aborted.
pub(crate) fn aborted(status: &RolloutStatus) -> bool {
    status.abort == Some(true)
}
