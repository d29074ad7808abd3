//! Pauses: the ones the controller sets (a pause step, the blue-green pause, an inconclusive
//! analysis) and how a promote ends them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{CanaryStep, PauseCondition, PauseReason, RolloutStatus};

use super::action::EventType;
use super::context::Ctx;
use super::desired::Draft;

/// Pauses for `reason`, once: the event is told when the pause starts.
pub(crate) fn add_pause(
    ctx: &Ctx,
    status: &mut RolloutStatus,
    draft: &mut Draft,
    reason: PauseReason,
    message: String,
) {
    if !status.pause_conditions.iter().any(|p| p.reason == reason) {
        status.pause_conditions.push(PauseCondition { reason, start_time: ctx.now.clone() });
        status.controller_pause = Some(true);
        draft.event(EventType::Normal, "RolloutPaused", message);
    }
}

pub(crate) fn end_pause(status: &mut RolloutStatus, reason: PauseReason) {
    status.pause_conditions.retain(|p| p.reason != reason);
    if status.pause_conditions.is_empty() {
        status.controller_pause = None;
    }
}

/// Ends every pause the controller set (an abort, a promotion, promote full).
pub(crate) fn end_all_pauses(status: &mut RolloutStatus) {
    status.pause_conditions.clear();
    status.controller_pause = None;
}

pub(crate) fn pause_started(status: &RolloutStatus, reason: PauseReason) -> Option<&Time> {
    status.pause_conditions.iter().find(|p| p.reason == reason).map(|p| &p.start_time)
}

/// A person promoted: every pause condition the controller set is gone while `controllerPause`
/// still says the controller paused. One promote moves past whatever held the rollout.
pub(crate) fn unpausing(status: &RolloutStatus) -> bool {
    status.controller_pause == Some(true) && status.pause_conditions.is_empty()
}

pub(crate) fn held_by_inconclusive_analysis(status: &RolloutStatus) -> bool {
    status.pause_conditions.iter().any(|p| p.reason == PauseReason::InconclusiveAnalysisRun)
}

/// The pause length of a step: None when it is not a pause, Some(None) for a pause that waits
/// for promote.
pub(crate) fn pause_seconds(step: &CanaryStep) -> Option<Option<f64>> {
    let pause = step.pause.as_ref()?;
    Some(pause.duration.as_ref().map(|d| d.to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)))
}
