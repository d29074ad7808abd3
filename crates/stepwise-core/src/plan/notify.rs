//! Notifications due: the transitions this plan records that the Rollout subscribes to
//! (`notifications.stepwise.dev/subscribe.<trigger>.<service>` annotations), one per destination,
//! queued in the status written with the transition itself. What is recorded is due exactly when
//! the transition is; the leader sends it later, outside the reconcile, so no receiver slows a
//! release. A key (revision, trigger, step, destination) already queued or delivered is not queued
//! again: a transition a later plan tells again notifies once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::notifications::{NotificationsStatus, PendingNotification, Subscription, subscriptions};
use stepwise_api::{AnalysisPhase, RolloutPhase, RolloutStatus};

use super::action::Action;
use super::context::Ctx;
use super::desired::Draft;

/// A transition that may notify: its trigger, the step it belongs to and what happened.
struct Transition {
    trigger: &'static str,
    step: Option<i32>,
    message: String,
}

/// The trigger a decision event tells of, named as Argo names it.
fn trigger_of(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "RolloutUpdated" => "on-rollout-updated",
        "RolloutStepCompleted" => "on-rollout-step-completed",
        "RolloutPaused" => "on-rollout-paused",
        "RolloutCompleted" => "on-rollout-completed",
        "RolloutAborted" => "on-rollout-aborted",
        "ProgressDeadlineExceeded" => "on-progress-deadline-exceeded",
        _ => return None,
    })
}

/// Queues the notifications due for the transitions of this plan.
pub(crate) fn queue(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, draft: &Draft) {
    let Some(annotations) = &ctx.rollout.metadata.annotations else { return };
    let subscribed = subscriptions(annotations);
    if subscribed.is_empty() {
        return;
    }
    let revision = status.current_revision.unwrap_or(0);
    for transition in transitions(ctx, prev, status, draft) {
        for destination in subscribed.iter().filter(|s| s.trigger == transition.trigger) {
            let outbox = status.notifications.get_or_insert_with(NotificationsStatus::default);
            enqueue(outbox, destination, &transition, revision, ctx.now);
        }
    }
}

/// Every transition of this plan: its decision events, a phase that became Degraded, the runs it
/// starts, and the runs it saw fail.
fn transitions(ctx: &Ctx, prev: &RolloutStatus, now: &RolloutStatus, draft: &Draft) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut completed = prev.current_step_index.unwrap_or(0);
    for event in &draft.events {
        let Action::Event { reason, message, .. } = event else { continue };
        let Some(trigger) = trigger_of(reason) else { continue };
        let step = match trigger {
            "on-rollout-step-completed" => {
                completed += 1;
                Some(completed - 1)
            }
            // A release starts at its first step, whatever the same plan goes on to do.
            "on-rollout-updated" => Some(0),
            // Where the transition leaves the Rollout, whichever plan makes it.
            "on-rollout-paused" | "on-rollout-completed" => now.current_step_index,
            // An abort goes back to the first step: it happened at the step before.
            _ => prev.current_step_index,
        };
        out.push(Transition { trigger, step, message: message.clone() });
    }
    if now.phase == Some(RolloutPhase::Degraded) && prev.phase != Some(RolloutPhase::Degraded) {
        let message = now.message.clone().unwrap_or_default();
        out.push(Transition { trigger: "on-rollout-degraded", step: prev.current_step_index, message });
    }
    for (_, run) in &draft.desired.new_runs {
        let name = run.metadata.name.clone().unwrap_or_default();
        out.push(Transition {
            trigger: "on-analysis-run-running",
            step: now.current_step_index,
            message: format!("{name} started"),
        });
    }
    for (name, phase, message) in runs_that_ended_badly(ctx, prev) {
        let trigger = if phase == AnalysisPhase::Failed { "on-analysis-run-failed" } else { "on-analysis-run-error" };
        out.push(Transition { trigger, step: prev.current_step_index, message: format!("{name}: {message}") });
    }
    out
}

/// The runs the last status recorded as not failed that are seen Failed or Error now.
fn runs_that_ended_badly(ctx: &Ctx, prev: &RolloutStatus) -> Vec<(String, AnalysisPhase, String)> {
    let canary = prev.canary.as_ref();
    let blue_green = prev.blue_green.as_ref();
    let recorded = [
        canary.and_then(|c| c.current_step_analysis_run_status.as_ref()),
        canary.and_then(|c| c.current_background_analysis_run_status.as_ref()),
        blue_green.and_then(|b| b.pre_promotion_analysis_run_status.as_ref()),
        blue_green.and_then(|b| b.post_promotion_analysis_run_status.as_ref()),
    ];
    let bad = |phase: AnalysisPhase| matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error);
    recorded
        .into_iter()
        .flatten()
        .filter(|r| !bad(r.status))
        .filter_map(|r| ctx.observed.analysis_runs.iter().find(|o| o.name == r.name && bad(o.phase)))
        .map(|run| (run.name.clone(), run.phase, run.message.clone().unwrap_or_default()))
        .collect()
}

/// Adds the notification of `transition` to `destination`, unless its key was queued or
/// delivered already.
fn enqueue(
    outbox: &mut NotificationsStatus,
    destination: &Subscription,
    transition: &Transition,
    revision: i64,
    now: &Time,
) {
    let step = transition.step.map_or("-".to_string(), |s| s.to_string());
    let key = format!("{revision}/{}/{step}/{}/{}", transition.trigger, destination.service, destination.recipient);
    if outbox.pending.iter().any(|p| p.key == key) || outbox.delivered.iter().any(|d| d.key == key) {
        return;
    }
    outbox.pending.push(PendingNotification {
        key,
        trigger: transition.trigger.to_string(),
        service: destination.service.clone(),
        recipient: destination.recipient.clone(),
        revision,
        step: transition.step,
        message: transition.message.clone(),
        due_since: now.clone(),
        attempts: 0,
        next_attempt: None,
        last_error: None,
    });
}
