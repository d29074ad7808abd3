//! `spec.analysis`: the completed AnalysisRuns a Rollout keeps. Beyond
//! `successfulRunHistoryLimit` Successful runs and `unsuccessfulRunHistoryLimit` Failed, Error or
//! Inconclusive ones, the oldest go, as old ReplicaSets go beyond `revisionHistoryLimit`. A run
//! the status still names, or one still measuring, is never deleted.

use stepwise_api::{AnalysisPhase, DEFAULT_RUN_HISTORY_LIMIT, RolloutStatus};

use super::analysis::recorded_runs;
use super::context::Ctx;
use crate::observed::ObservedAnalysisRun;

/// The names of the completed runs beyond the history limits, oldest first. `live` are the runs
/// that go on measuring; every other unfinished run is being stopped.
pub(crate) fn runs_beyond_limits(ctx: &Ctx, status: &RolloutStatus, live: &[String]) -> Vec<String> {
    let limits = ctx.spec.analysis.as_ref();
    let limit = |l: Option<i32>| l.unwrap_or(DEFAULT_RUN_HISTORY_LIMIT).max(0) as usize;
    let successful = limit(limits.and_then(|a| a.successful_run_history_limit));
    let unsuccessful = limit(limits.and_then(|a| a.unsuccessful_run_history_limit));
    // Whatever their phase, the Rollout still reads the runs its status records (a verdict shown,
    // a promote that accepts an inconclusive one).
    let current = recorded_runs(status);
    let mut history: Vec<&ObservedAnalysisRun> = ctx
        .observed
        .analysis_runs
        .iter()
        .filter(|run| (run.phase.is_completed() || stopping(run, live)) && !current.contains(&run.name.as_str()))
        .collect();
    // Newest first; equal creation times (one-second resolution) fall back to the name, so
    // that planning again picks the same runs.
    history.sort_by(|a, b| (b.created.as_ref().map(|t| t.0), &b.name).cmp(&(a.created.as_ref().map(|t| t.0), &a.name)));
    let order: Vec<String> = history.iter().map(|run| run.name.clone()).collect();
    // A run being stopped takes its place in the history now, as the Successful run a stop
    // usually makes it, but cannot go before it has ended: the oldest completed runs go in its
    // stead, so that its ending does not push another run out only at the next plan.
    let (ok, bad): (Vec<_>, Vec<_>) =
        history.into_iter().partition(|run| run.phase == AnalysisPhase::Successful || !run.phase.is_completed());
    let mut deleted: Vec<String> = Vec::new();
    for (runs, limit) in [(ok, successful), (bad, unsuccessful)] {
        let excess = runs.len().saturating_sub(limit);
        let oldest_completed = runs.iter().rev().filter(|run| run.phase.is_completed()).take(excess);
        deleted.extend(oldest_completed.map(|run| run.name.clone()));
    }
    // Oldest first, in the order of the history.
    deleted.sort_by_key(|name| std::cmp::Reverse(order.iter().position(|n| n == name)));
    deleted
}

/// Whether an unfinished run is being stopped: asked to already, or by this plan.
fn stopping(run: &ObservedAnalysisRun, live: &[String]) -> bool {
    !run.phase.is_completed() && (run.terminating || !live.contains(&run.name))
}
