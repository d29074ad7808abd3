//! `spec.analysis`: the completed AnalysisRuns a Rollout keeps. Beyond
//! `successfulRunHistoryLimit` Successful runs and `unsuccessfulRunHistoryLimit` Failed, Error or
//! Inconclusive ones, the oldest go, as old ReplicaSets go beyond `revisionHistoryLimit`. A run
//! the status still names, or one still measuring, is never deleted.

use stepwise_api::{AnalysisPhase, DEFAULT_RUN_HISTORY_LIMIT, RolloutStatus};

use super::context::Ctx;
use crate::observed::ObservedAnalysisRun;

/// The names of the completed runs beyond the history limits, oldest first.
pub(crate) fn runs_beyond_limits(ctx: &Ctx, status: &RolloutStatus) -> Vec<String> {
    let limits = ctx.spec.analysis.as_ref();
    let limit = |l: Option<i32>| l.unwrap_or(DEFAULT_RUN_HISTORY_LIMIT).max(0) as usize;
    let successful = limit(limits.and_then(|a| a.successful_run_history_limit));
    let unsuccessful = limit(limits.and_then(|a| a.unsuccessful_run_history_limit));
    let current = current_runs(status);
    let mut history: Vec<&ObservedAnalysisRun> = ctx
        .observed
        .analysis_runs
        .iter()
        .filter(|run| run.phase.is_completed() && !current.contains(&run.name.as_str()))
        .collect();
    // Newest first; equal creation times (one-second resolution) fall back to the name, so
    // that planning again picks the same runs.
    history.sort_by(|a, b| (b.created.as_ref().map(|t| t.0), &b.name).cmp(&(a.created.as_ref().map(|t| t.0), &a.name)));
    let mut kept = (0usize, 0usize);
    let mut deleted: Vec<String> = Vec::new();
    for run in history {
        let (count, limit) = if run.phase == AnalysisPhase::Successful {
            (&mut kept.0, successful)
        } else {
            (&mut kept.1, unsuccessful)
        };
        if *count < limit {
            *count += 1;
        } else {
            deleted.push(run.name.clone());
        }
    }
    deleted.reverse();
    deleted
}

/// The runs the status records: whatever their phase, the Rollout still reads them (a verdict
/// shown, a promote that accepts an inconclusive one).
fn current_runs(status: &RolloutStatus) -> Vec<&str> {
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
