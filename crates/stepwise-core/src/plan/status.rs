//! The status a plan writes: replica counts, conditions, the phase and a message that says why.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{RolloutCondition, RolloutPhase, RolloutStatus};

use super::action::EventType;
use super::context::Ctx;
use super::desired::{Desired, Draft};
use super::message::{pause_message, step_label, waiting_run};
use super::recreate;
use crate::condition;

pub(crate) fn set_condition(
    status: &mut RolloutStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    match status.conditions.iter_mut().find(|c| c.r#type == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            if c.status != value || c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(message) {
                c.last_update_time = Some(now.clone());
            }
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
        }
        None => status.conditions.push(RolloutCondition {
            r#type: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now.clone()),
        }),
    }
}

pub(crate) fn remove_condition(status: &mut RolloutStatus, type_: &str) {
    status.conditions.retain(|c| c.r#type != type_);
}

pub(crate) fn condition<'s>(status: &'s RolloutStatus, type_: &str) -> Option<&'s RolloutCondition> {
    status.conditions.iter().find(|c| c.r#type == type_)
}

/// A spec that cannot be carried out: nothing moves, and the status says which field is wrong.
pub(crate) fn invalid_spec(
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    draft: &mut Draft,
    message: &str,
    now: &Time,
) {
    set_condition(status, condition::INVALID_SPEC, "True", "InvalidSpec", message, now);
    status.phase = Some(RolloutPhase::Degraded);
    status.message = Some(format!("InvalidSpec: {message}"));
    if condition(prev, condition::INVALID_SPEC).and_then(|c| c.message.as_deref()) != Some(message) {
        draft.event(EventType::Warning, "InvalidSpec", message);
    }
}

/// Replica counts, from the observed ReplicaSets.
pub(crate) fn count_replicas(ctx: &Ctx, status: &mut RolloutStatus) {
    let rss = &ctx.observed.replica_sets;
    status.replicas = Some(rss.iter().map(|rs| rs.replicas).sum());
    status.updated_replicas = Some(ctx.new_rs().map(|rs| rs.replicas).unwrap_or(0));
    status.ready_replicas = Some(rss.iter().map(|rs| rs.ready).sum());
    status.available_replicas = Some(rss.iter().map(|rs| rs.available).sum());
}

/// The pods the scale subresource reports (for an HPA): all of a canary's; for blue-green, the
/// version the active Service selects once the plan is carried out, so that a switch in this
/// plan is reported by this plan.
pub(crate) fn report_scale_selector(ctx: &Ctx, desired: &Desired, status: &mut RolloutStatus) {
    if let Some(bg) = &ctx.spec.strategy.blue_green {
        let active = desired.selected(ctx, &bg.active_service).or(status.stable_rs.clone());
        status.hpa_replicas = Some(active.as_deref().and_then(|h| ctx.rs(h)).map(|rs| rs.replicas).unwrap_or(0));
        status.selector = Some(ctx.selector_string(active.as_deref()));
    } else {
        status.hpa_replicas = status.replicas;
        status.selector = Some(ctx.selector_string(None));
    }
}

/// Whether the ReplicaSets moved since the last status: new pods, ready pods, a new version.
pub(crate) fn replicas_moved(prev: &RolloutStatus, status: &RolloutStatus) -> bool {
    prev.current_pod_hash != status.current_pod_hash
        || prev.updated_replicas != status.updated_replicas
        || prev.available_replicas != status.available_replicas
        || prev.ready_replicas != status.ready_replicas
        || prev.replicas != status.replicas
}

/// Whether the rollout is done: promoted, nothing paused, every pod of the new version available
/// and no other pod left.
fn healthy(ctx: &Ctx, status: &RolloutStatus) -> bool {
    let r = ctx.replicas;
    let new_available = ctx.new_rs().map(|rs| rs.available).unwrap_or(0);
    let paused = ctx.user_paused() || !status.pause_conditions.is_empty();
    ctx.promoted(status)
        && !paused
        && new_available >= r
        && status.updated_replicas == Some(r)
        && status.replicas == Some(r)
}

/// Conditions, phase and message.
pub(crate) fn summarize(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, draft: &mut Draft) {
    let healthy = healthy(ctx, status);
    update_progressing(ctx, prev, status, healthy);
    let r = ctx.replicas;
    let paused = ctx.user_paused() || !status.pause_conditions.is_empty();
    let two_state = [
        (
            condition::AVAILABLE,
            status.available_replicas.unwrap_or(0) >= r,
            "AvailableReason",
            "Rollout has minimum availability",
            "Rollout does not have minimum availability",
        ),
        (condition::PAUSED, paused, "RolloutPaused", "Rollout is paused", "Rollout is not paused"),
        (
            condition::COMPLETED,
            ctx.promoted(status),
            "RolloutCompleted",
            "Rollout is completed",
            "Rollout is not completed",
        ),
        (condition::HEALTHY, healthy, "RolloutHealthy", "Rollout is healthy", "Rollout is not healthy"),
    ];
    for (kind, holds, reason, yes, no) in two_state {
        let (value, message) = if holds { ("True", yes) } else { ("False", no) };
        set_condition(status, kind, value, reason, message, ctx.now);
    }
    let (phase, message) = phase_and_message(ctx, status, healthy);
    // A pause is told once, by the event that started it.
    let told = phase == RolloutPhase::Paused && draft.has_event("RolloutPaused");
    if prev.phase != Some(phase) && prev.phase.is_some() && !told {
        let type_ = if phase == RolloutPhase::Degraded { EventType::Warning } else { EventType::Normal };
        draft.event(type_, &format!("Rollout{phase}"), message.clone());
    }
    status.phase = Some(phase);
    status.message = Some(message);
}

/// The Progressing condition. Progress is anything that moved since the last status; the end of
/// a wait that does not count against the deadline (a pause, an analysis) is progress too, so
/// the clock starts again there.
fn update_progressing(ctx: &Ctx, prev: &RolloutStatus, status: &mut RolloutStatus, healthy: bool) {
    let moved = replicas_moved(prev, status)
        || prev.current_step_index != status.current_step_index
        || prev.stable_rs != status.stable_rs
        || prev.pause_conditions != status.pause_conditions
        || prev.controller_pause != status.controller_pause
        || prev.blue_green != status.blue_green;
    let progressing = condition(status, condition::PROGRESSING).cloned();
    let rs_name = ctx.rs_name(&ctx.hash);
    let timed_out = progressing.as_ref().is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let paused = ctx.user_paused() || !status.pause_conditions.is_empty();
    if status.abort == Some(true) {
        // The abort set the condition.
    } else if healthy {
        let message = format!("ReplicaSet {rs_name} has successfully progressed.");
        set_condition(status, condition::PROGRESSING, "True", "NewReplicaSetAvailable", &message, ctx.now);
    } else if paused {
        set_condition(status, condition::PROGRESSING, "Unknown", "RolloutPaused", "Rollout is paused", ctx.now);
    } else if moved || progressing.as_ref().is_none_or(|c| c.status != "True" && !timed_out) {
        let mut c = progressing.unwrap_or_default();
        c.r#type = condition::PROGRESSING.into();
        if c.status != "True" {
            c.last_transition_time = Some(ctx.now.clone());
        }
        c.status = "True".into();
        c.reason = Some("ReplicaSetUpdated".into());
        c.message = Some(format!("ReplicaSet {rs_name} is progressing."));
        c.last_update_time = Some(ctx.now.clone());
        remove_condition(status, condition::PROGRESSING);
        status.conditions.push(c);
    }
}

fn phase_and_message(ctx: &Ctx, status: &RolloutStatus, healthy: bool) -> (RolloutPhase, String) {
    let r = ctx.replicas;
    let progressing = condition(status, condition::PROGRESSING);
    let progress_reason = progressing.and_then(|c| c.reason.clone()).unwrap_or_default();
    let progress_message = progressing.and_then(|c| c.message.clone()).unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    // The status reports what the ReplicaSets report, whatever this plan changes in their spec.
    let new_available = ctx.new_rs().map(|rs| rs.available).unwrap_or(0);
    let old_pods: i32 = ctx.observed.replica_sets.iter().filter(|rs| rs.hash != ctx.hash).map(|rs| rs.replicas).sum();
    let progressing = RolloutPhase::Progressing;
    let recreate = ctx.spec.strategy.recreate.is_some();
    if status.abort == Some(true) {
        let back = if recreate { recreate::abort_progress(ctx, status) } else { String::new() };
        (RolloutPhase::Degraded, format!("Aborted: {progress_message}{back}"))
    } else if progress_reason == "ProgressDeadlineExceeded" {
        (RolloutPhase::Degraded, format!("ProgressDeadlineExceeded: {progress_message}"))
    } else if ctx.user_paused() {
        (RolloutPhase::Paused, "Paused by the user (spec.paused): promote or set spec.paused to false to resume".into())
    } else if let Some(p) = status.pause_conditions.first() {
        (RolloutPhase::Paused, pause_message(ctx, status, p))
    } else if let Some((at, run)) = waiting_run(ctx, status) {
        (progressing, format!("{at}: waiting for AnalysisRun {} ({})", run.name, run.status))
    } else if recreate && !healthy {
        (progressing, recreate::progress_message(ctx, status))
    } else if let Some(why) = weight_not_in_effect(ctx, status) {
        (progressing, format!("{}: {why}", step_label(ctx, status)))
    } else if updated < r {
        (progressing, format!("{}: {updated} of {r} pods updated", step_label(ctx, status)))
    } else if new_available < updated {
        (progressing, format!("{}: {new_available} of {updated} updated pods available", step_label(ctx, status)))
    } else if !ctx.promoted(status) {
        (progressing, format!("{}: waiting for the step to complete", step_label(ctx, status)))
    } else if old_pods > 0 {
        (progressing, format!("Promoted; {old_pods} old pods pending termination"))
    } else if !healthy {
        (progressing, format!("Promoted; {new_available} of {r} pods available"))
    } else {
        (RolloutPhase::Healthy, format!("Healthy at revision {}", status.current_revision.unwrap_or(1)))
    }
}

/// While the routers do not carry the weight last set: what it waits for, and what carries
/// another weight. Steps and the promotion wait for it.
pub(crate) fn weight_not_in_effect(ctx: &Ctx, status: &RolloutStatus) -> Option<String> {
    if ctx.observed.weight_verified != Some(false) || status.abort == Some(true) {
        return None;
    }
    let weights = status.canary.as_ref()?.weights.as_ref()?;
    let max = crate::traffic::max_weight(ctx.spec.strategy.canary.as_ref()?);
    let wanted = weight_text(weights.canary.weight, max);
    let why = ctx.observed.weight_not_in_effect.as_deref().unwrap_or("a router does not report it");
    Some(format!("waiting for the routers to send {wanted} to the canary: {why}"))
}

/// A weight for people: `25 %` out of 100, `250/1000` out of another maxTrafficWeight.
pub fn weight_text(weight: i32, max_weight: i32) -> String {
    if max_weight == 100 { format!("{weight} %") } else { format!("{weight}/{max_weight}") }
}
