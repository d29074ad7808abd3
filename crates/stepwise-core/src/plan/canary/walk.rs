//! The step walk: from the current step, as far as the observations allow.

use stepwise_api::{AnalysisPhase, CanaryStatus, CanaryStep, PauseReason, RolloutStatus};

use super::pods::{Canary, Others};
use crate::observed::AnalysisKind;
use crate::plan::action::EventType;
use crate::plan::analysis::{Verdict, analysis_verdict, ensure_run, judge};
use crate::plan::desired::Draft;
use crate::plan::message::describe_step;
use crate::plan::pause::{
    add_pause, end_pause, held_by_inconclusive_analysis, pause_seconds, pause_started, unpausing,
};
use crate::time::seconds_between;

/// How far the current step has got.
pub(crate) enum StepProgress {
    Done,
    Waiting,
    /// Its analysis failed: abort with this message.
    Failed(String),
}

/// Where the walk ended.
pub(crate) struct Walked {
    pub idx: i32,
    /// The weight of a setWeight step this plan completed because its pods carry it: the plan
    /// must then set that weight, even if the steps went on to a weight the pods cannot carry yet.
    pub completed_weight: Option<i32>,
    /// An analysis failed at this step.
    pub failure: Option<String>,
}

/// Walks the steps from `idx`. Nothing moves while the rollout is held by an inconclusive
/// background analysis (or a background verdict that arrives in this plan, acted on after the
/// walk), except an analysis step, so that a failure there still aborts.
pub(crate) fn walk(
    c: &Canary,
    mut idx: i32,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) -> Walked {
    let held = held_by_inconclusive_analysis(status) || background_verdict_arrives(c, canary_status);
    let others = c.others(status);
    let mut completed_weight = None;
    while idx < c.n {
        let step = &c.steps[idx as usize];
        if held && step.analysis.is_none() {
            break;
        }
        match step_progress(c, idx, step, &others, prev, status, canary_status, draft) {
            StepProgress::Waiting => break,
            StepProgress::Failed(message) => return Walked { idx, completed_weight, failure: Some(message) },
            StepProgress::Done if held => break,
            StepProgress::Done => {
                if c.routed && step.set_weight.is_some() {
                    completed_weight = Some(c.weight_at(idx));
                }
                end_pause(status, PauseReason::CanaryPauseStep);
                canary_status.current_step_analysis_run_status = None;
                let message = format!("Rollout step {}/{} completed ({})", idx + 1, c.n, describe_step(step));
                draft.event(EventType::Normal, "RolloutStepCompleted", message);
                idx += 1;
            }
        }
    }
    Walked { idx, completed_weight, failure: None }
}

fn background_verdict_arrives(c: &Canary, canary_status: &CanaryStatus) -> bool {
    let verdict = |phase: AnalysisPhase| {
        matches!(phase, AnalysisPhase::Inconclusive | AnalysisPhase::Failed | AnalysisPhase::Error)
    };
    c.spec.analysis.is_some()
        && canary_status
            .current_background_analysis_run_status
            .as_ref()
            .is_some_and(|rec| !verdict(rec.status) && c.ctx.run(&rec.name).is_some_and(|run| verdict(run.phase)))
}

#[allow(clippy::too_many_arguments)]
fn step_progress(
    c: &Canary,
    idx: i32,
    step: &CanaryStep,
    others: &Others,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) -> StepProgress {
    // A step may size the canary and also pause or run an analysis (as in Argo): the pods come
    // first, so that the pause or the analysis sees them.
    if step.set_weight.is_some() || step.set_canary_scale.is_some() {
        let counts_ok = c.pods_ready_for(idx, others);
        let weight_ok = !c.routed || step.set_weight.is_none() || c.weight_reached(c.weight_at(idx), counts_ok);
        if !(counts_ok && weight_ok) {
            return StepProgress::Waiting;
        }
    }
    if let Some(pause) = pause_seconds(step) {
        return pause_progress(c, idx, step, pause, status, draft);
    }
    if step.analysis.is_some() {
        return analysis_progress(c, idx, step, prev, status, canary_status, draft);
    }
    // A header or mirror step is done once planned: the routes wanted follow from the steps done
    // (`routes::managed_routes`), and a failed write takes the step back.
    StepProgress::Done
}

fn pause_progress(
    c: &Canary,
    idx: i32,
    step: &CanaryStep,
    pause: Option<f64>,
    status: &mut RolloutStatus,
    draft: &mut Draft,
) -> StepProgress {
    if unpausing(status) {
        return StepProgress::Done;
    }
    match (pause, pause_started(status, PauseReason::CanaryPauseStep).cloned()) {
        (Some(secs), _) if secs <= 0.0 => StepProgress::Done,
        (Some(secs), Some(start)) => {
            let left = secs - seconds_between(&start, c.ctx.now);
            if left <= 0.0 {
                return StepProgress::Done;
            }
            draft.requeue_in(left);
            StepProgress::Waiting
        }
        (None, Some(_)) => StepProgress::Waiting,
        (secs, None) => {
            let what = format!("Paused at step {}/{}: {}", idx + 1, c.n, describe_step(step));
            add_pause(c.ctx, status, draft, PauseReason::CanaryPauseStep, what);
            if let Some(secs) = secs {
                draft.requeue_in(secs);
            }
            StepProgress::Waiting
        }
    }
}

fn analysis_progress(
    c: &Canary,
    idx: i32,
    step: &CanaryStep,
    prev: &RolloutStatus,
    status: &mut RolloutStatus,
    canary_status: &mut CanaryStatus,
    draft: &mut Draft,
) -> StepProgress {
    let Some(analysis) = &step.analysis else { return StepProgress::Done };
    // A run recorded for another step (the steps were edited, or a person skipped a step) does
    // not judge this one; no longer recorded, it is stopped.
    let own = canary_status
        .current_step_analysis_run_status
        .take()
        .filter(|rec| c.ctx.run(&rec.name).is_none_or(|r| r.kind == AnalysisKind::Step(idx)));
    let revision = status.current_revision.unwrap_or(1);
    let mut run = ensure_run(c.ctx, draft, own.as_ref(), AnalysisKind::Step(idx), analysis, revision);
    let seen = prev.canary.as_ref().and_then(|c| c.current_step_analysis_run_status.as_ref());
    let verdict = judge(&mut run, prev, seen, status);
    canary_status.current_step_analysis_run_status = Some(run.clone());
    match verdict {
        Verdict::Pass => StepProgress::Done,
        Verdict::Fail => StepProgress::Failed(analysis_verdict(&run, "Step")),
        Verdict::Hold => {
            add_pause(c.ctx, status, draft, PauseReason::InconclusiveAnalysisRun, analysis_verdict(&run, "Step"));
            StepProgress::Waiting
        }
        Verdict::Waiting => StepProgress::Waiting,
    }
}
