//! The words of the status: how a step, a pause and a wait are described to people.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, CanaryStep, PauseCondition, PauseReason, RolloutAnalysisRunStatus, RolloutStatus};

use super::analysis::analysis_verdict;
use super::context::Ctx;
use super::pause::pause_seconds;
use crate::time::add_seconds;

/// A step as people read it; the parts of a step that does several things, in the order they
/// are carried out.
pub(crate) fn describe_step(step: &CanaryStep) -> String {
    let mut parts = Vec::new();
    if let Some(w) = step.set_weight {
        parts.push(format!("setWeight {w}"));
    }
    if let Some(s) = &step.set_canary_scale {
        parts.push(match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale {r} pods"),
            (None, Some(w)) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        });
    }
    if let Some(p) = &step.pause {
        parts.push(match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause".into(),
        });
    }
    if let Some(a) = &step.analysis {
        let names: Vec<&str> = a.templates.iter().map(|t| t.template_name.as_str()).collect();
        parts.push(format!("analysis {}", names.join(",")));
    }
    if let Some(h) = &step.set_header_route {
        parts.push(format!("setHeaderRoute {}", h.name));
    }
    if let Some(m) = &step.set_mirror_route {
        parts.push(format!("setMirrorRoute {}", m.name));
    }
    if parts.is_empty() { "empty step".into() } else { parts.join(" + ") }
}

fn steps<'a>(ctx: &Ctx<'a>) -> &'a [CanaryStep] {
    ctx.spec.strategy.canary.as_ref().and_then(|c| c.steps.as_deref()).unwrap_or_default()
}

/// Where the rollout is: `At step 2/4: setWeight 50`, or the strategy when there are no steps.
pub(crate) fn step_label(ctx: &Ctx, status: &RolloutStatus) -> String {
    if ctx.spec.strategy.recreate.is_some() {
        return "Recreate".into();
    }
    if ctx.spec.strategy.canary.is_none() {
        return "Blue-green".into();
    }
    let steps = steps(ctx);
    let idx = status.current_step_index.unwrap_or(0);
    match steps.get(idx.max(0) as usize) {
        Some(step) => format!("At step {}/{}: {}", idx + 1, steps.len(), describe_step(step)),
        None if steps.is_empty() => "Canary".into(),
        None => format!("All {} steps done", steps.len()),
    }
}

/// A time as people read it in `kubectl get`: UTC, to the second.
pub(crate) fn clock(t: &Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The run the rollout waits on, if it waits on one: the current analysis step's, or a
/// blue-green pre- or post-promotion run.
pub(crate) fn waiting_run(ctx: &Ctx, status: &RolloutStatus) -> Option<(String, RolloutAnalysisRunStatus)> {
    let unfinished =
        |r: &&RolloutAnalysisRunStatus| matches!(r.status, AnalysisPhase::Pending | AnalysisPhase::Running);
    // Records of runs that no longer judge anything stay in the status as history.
    if ctx.promoted(status) || status.promote_full == Some(true) || status.abort == Some(true) {
        return None;
    }
    if ctx.spec.strategy.canary.is_some() {
        let idx = status.current_step_index.unwrap_or(0);
        steps(ctx).get(idx.max(0) as usize).filter(|s| s.analysis.is_some())?;
        let run = status.canary.as_ref()?.current_step_analysis_run_status.as_ref().filter(unfinished)?;
        return Some((step_label(ctx, status), run.clone()));
    }
    let bg = status.blue_green.as_ref()?;
    if let Some(run) = bg.pre_promotion_analysis_run_status.as_ref().filter(unfinished) {
        return Some(("Blue-green, before the switch".into(), run.clone()));
    }
    let run = bg.post_promotion_analysis_run_status.as_ref().filter(unfinished)?;
    Some(("Blue-green, after the switch".into(), run.clone()))
}

pub(crate) fn pause_message(ctx: &Ctx, status: &RolloutStatus, pause: &PauseCondition) -> String {
    match pause.reason {
        PauseReason::CanaryPauseStep => {
            let steps = steps(ctx);
            let idx = status.current_step_index.unwrap_or(0);
            let step = steps.get(idx.max(0) as usize);
            // An absolute time, not "Ns left": the status is written only when something changes,
            // so a countdown would be stale the moment it was read.
            let resumes_at =
                step.and_then(pause_seconds).flatten().map(|secs| add_seconds(&pause.start_time, secs.ceil() as i64));
            let what = step.map(describe_step).unwrap_or_else(|| "pause".into());
            match resumes_at {
                Some(at) => format!("Paused at step {}/{}: {what}, resumes at {}", idx + 1, steps.len(), clock(&at)),
                None => format!("Paused at step {}/{}: {what}, waiting for promote", idx + 1, steps.len()),
            }
        }
        PauseReason::BlueGreenPause => blue_green_pause_message(ctx, Some(&pause.start_time)),
        PauseReason::InconclusiveAnalysisRun => {
            let run = status
                .canary
                .as_ref()
                .and_then(|c| {
                    c.current_step_analysis_run_status.clone().or(c.current_background_analysis_run_status.clone())
                })
                .or_else(|| {
                    status.blue_green.as_ref().and_then(|b| {
                        b.pre_promotion_analysis_run_status.clone().or(b.post_promotion_analysis_run_status.clone())
                    })
                });
            match run {
                Some(run) => {
                    format!("Paused: {}; promote to accept, abort to roll back", analysis_verdict(&run, "the"))
                }
                None => "Paused: an analysis was inconclusive; promote to accept, abort to roll back".into(),
            }
        }
    }
}

/// The blue-green pause, with the time it ends when it ends by itself.
pub(crate) fn blue_green_pause_message(ctx: &Ctx, started: Option<&Time>) -> String {
    let bg = ctx.spec.strategy.blue_green.as_ref();
    let auto = bg.and_then(|b| b.auto_promotion_enabled).unwrap_or(true);
    match bg.and_then(|b| b.auto_promotion_seconds).filter(|s| *s > 0 && auto) {
        Some(secs) => format!(
            "Paused before switching the active Service: promotes automatically at {}",
            clock(&add_seconds(started.unwrap_or(ctx.now), i64::from(secs)))
        ),
        None => "Paused before switching the active Service: waiting for promote".into(),
    }
}
