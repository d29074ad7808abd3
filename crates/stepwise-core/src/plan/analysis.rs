//! The AnalysisRuns a rollout needs: which should exist, what their verdicts mean, and how a
//! promote accepts an inconclusive one.

use stepwise_api::{AnalysisPhase, PauseReason, RolloutAnalysis, RolloutAnalysisRunStatus, RolloutStatus};

use super::action::EventType;
use super::context::Ctx;
use super::desired::Draft;
use super::pause::{end_pause, unpausing};
use crate::analysis_run::{RunRequest, build_analysis_run};
use crate::observed::{AnalysisKind, ObservedAnalysisRun};

/// What a run decides for the part of the rollout it judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still measuring (or not started).
    Waiting,
    /// Go on.
    Pass,
    /// Inconclusive and not accepted: pause for a person.
    Hold,
    /// Failed or errored: abort.
    Fail,
}

/// The status record of the run of `kind` this rollout needs: the one recorded, an unrecorded
/// one this controller started, or a new one (started by the plan).
pub(crate) fn ensure_run(
    ctx: &Ctx,
    draft: &mut Draft,
    recorded: Option<&RolloutAnalysisRunStatus>,
    kind: AnalysisKind,
    analysis: &RolloutAnalysis,
    revision: i64,
) -> RolloutAnalysisRunStatus {
    if let Some(rec) = recorded {
        return match ctx.run(&rec.name) {
            Some(run) => run_status(run, rec.accepted),
            // Recorded but not yet in the cache: keep the record rather than start a second run.
            None => rec.clone(),
        };
    }
    // A run this controller created but could not record (its status write lost a conflict, or
    // it crashed in between) is adopted rather than started twice.
    let unrecorded = ctx
        .observed
        .analysis_runs
        .iter()
        .find(|run| run.kind == kind && run.hash == ctx.hash && !run.phase.is_completed() && !run.terminating);
    if let Some(run) = unrecorded {
        return run_status(run, None);
    }
    let base = format!("{}-{}-{}{}", ctx.name, ctx.hash, revision, kind.name_suffix());
    let name = ctx.unique_run_name(&base);
    let request = RunRequest { name: &name, kind, hash: &ctx.hash, revision };
    match build_analysis_run(ctx.rollout, ctx.observed, analysis, &request) {
        Ok(run) => draft.desired.new_runs.push((kind, run)),
        // validate() builds every analysis first, so this is not reached; were it reached, the
        // run stays Pending and the event says why.
        Err(e) => draft.event(EventType::Warning, "AnalysisRunNotCreated", format!("{name}: {e}")),
    }
    RolloutAnalysisRunStatus { name, status: AnalysisPhase::Pending, message: None, accepted: None }
}

/// What the Rollout's status records of an observed run.
pub(crate) fn run_status(run: &ObservedAnalysisRun, accepted: Option<bool>) -> RolloutAnalysisRunStatus {
    RolloutAnalysisRunStatus { name: run.name.clone(), status: run.phase, message: run.message.clone(), accepted }
}

/// Judges a run: `seen_before` is its record in the status a person last saw, which decides
/// whether a promote accepts an inconclusive result.
pub(crate) fn judge(
    run: &mut RolloutAnalysisRunStatus,
    prev: &RolloutStatus,
    seen_before: Option<&RolloutAnalysisRunStatus>,
    status: &mut RolloutStatus,
) -> Verdict {
    match run.status {
        AnalysisPhase::Successful => Verdict::Pass,
        AnalysisPhase::Failed | AnalysisPhase::Error => Verdict::Fail,
        AnalysisPhase::Inconclusive => {
            if accept_inconclusive(run, prev, seen_before, status) {
                Verdict::Pass
            } else {
                Verdict::Hold
            }
        }
        AnalysisPhase::Pending | AnalysisPhase::Running => Verdict::Waiting,
    }
}

/// Whether the run is Inconclusive and no longer holds the rollout: accepted by an earlier
/// promote, or by this one, when the run was already Inconclusive when the person promoted (so a
/// result that arrives together with a promote meant for something else still pauses).
fn accept_inconclusive(
    run: &mut RolloutAnalysisRunStatus,
    prev: &RolloutStatus,
    seen_before: Option<&RolloutAnalysisRunStatus>,
    status: &mut RolloutStatus,
) -> bool {
    if run.status != AnalysisPhase::Inconclusive {
        return false;
    }
    if run.accepted == Some(true) {
        return true;
    }
    let seen_inconclusive = seen_before.is_some_and(|r| r.name == run.name && r.status == AnalysisPhase::Inconclusive);
    // Judged on the status as the person left it: a step completed earlier in this plan may
    // already have consumed the promote.
    if seen_inconclusive && unpausing(prev) {
        run.accepted = Some(true);
        end_pause(status, PauseReason::InconclusiveAnalysisRun);
        return true;
    }
    false
}

/// `<What> analysis <name> <Phase>: <message>`.
pub(crate) fn analysis_verdict(run: &RolloutAnalysisRunStatus, what: &str) -> String {
    match &run.message {
        Some(m) if !m.is_empty() => format!("{what} analysis {} {}: {m}", run.name, run.status),
        _ => format!("{what} analysis {} {}", run.name, run.status),
    }
}

/// The runs that go on measuring: those the status records for the version being rolled out,
/// unless it was aborted or promoted. Every other unfinished run is stopped, so that no run
/// measures a version nobody judges any more.
pub(crate) fn live_runs(ctx: &Ctx, status: &RolloutStatus) -> Vec<String> {
    if status.abort == Some(true) || ctx.promoted(status) {
        return Vec::new();
    }
    recorded_runs(status).into_iter().map(str::to_string).collect()
}

/// The names of the runs the status records: the current step's, the background one and the
/// blue-green pre- and post-promotion ones.
pub(crate) fn recorded_runs(status: &RolloutStatus) -> Vec<&str> {
    let canary = status.canary.as_ref();
    let bg = status.blue_green.as_ref();
    [
        canary.and_then(|c| c.current_step_analysis_run_status.as_ref()),
        canary.and_then(|c| c.current_background_analysis_run_status.as_ref()),
        bg.and_then(|b| b.pre_promotion_analysis_run_status.as_ref()),
        bg.and_then(|b| b.post_promotion_analysis_run_status.as_ref()),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.as_str())
    .collect()
}
