//! `status.runSummary` and `status.dryRunSummary`: how many metrics ended in each phase, the
//! metrics that count and the dry-run ones apart (Argo's `kubectl get analysisrun` columns).

use stepwise_api::{AnalysisPhase, AnalysisRunStatus, MetricResult, RunSummary};

/// The summary of the metrics that count, and of the dry-run ones when the run has any.
pub fn summaries(status: &AnalysisRunStatus) -> (RunSummary, Option<RunSummary>) {
    let dry = |r: &&MetricResult| r.dry_run == Some(true);
    let counted = summary(status.metric_results.iter().filter(|r| !dry(r)));
    let has_dry_run = status.metric_results.iter().any(|r| dry(&r));
    let dry_run = has_dry_run.then(|| summary(status.metric_results.iter().filter(dry)));
    (counted, dry_run)
}

fn summary<'a>(results: impl Iterator<Item = &'a MetricResult>) -> RunSummary {
    let mut s = RunSummary::default();
    for r in results {
        s.count += 1;
        match r.phase {
            AnalysisPhase::Successful => s.successful += 1,
            AnalysisPhase::Failed => s.failed += 1,
            AnalysisPhase::Inconclusive => s.inconclusive += 1,
            AnalysisPhase::Error => s.error += 1,
            AnalysisPhase::Pending | AnalysisPhase::Running => {}
        }
    }
    s
}
