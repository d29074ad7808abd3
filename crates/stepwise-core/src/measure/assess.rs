//! Phases from counters, as Argo assesses them: a metric's phase from its limits and count, and
//! the run's phase from its metrics.

use stepwise_api::{AnalysisPhase, MetricResult};

use super::resolve::MetricSpec;

/// The metric's phase from its counters and last measurement. A completed metric keeps its
/// phase. Failed and Inconclusive are checked before Error, so Error wins when both apply.
pub(crate) fn metric_phase(r: &MetricResult, spec: &MetricSpec) -> AnalysisPhase {
    if r.phase.is_completed() {
        return r.phase;
    }
    let Some(last) = r.measurements.last() else { return AnalysisPhase::Pending };
    if last.finished_at.is_none() {
        return AnalysisPhase::Running;
    }
    let mut phase = AnalysisPhase::Running;
    if spec.failure_limit >= 0 && r.failed > spec.failure_limit {
        phase = AnalysisPhase::Failed;
    } else if r.inconclusive > spec.inconclusive_limit {
        phase = AnalysisPhase::Inconclusive;
    }
    if r.consecutive_error > spec.consecutive_error_limit {
        phase = AnalysisPhase::Error;
    }
    if phase != AnalysisPhase::Running {
        return phase;
    }
    let limit = spec.consecutive_success_limit;
    if limit > 0 && r.consecutive_success >= limit {
        return AnalysisPhase::Successful;
    }
    if spec.count.is_some_and(|c| r.count >= c) {
        return match (limit > 0, spec.failure_limit < 0) {
            (false, _) => AnalysisPhase::Successful,
            // The successes in a row never came: with a failure limit the failures stayed
            // within it, so a person decides; without one nothing else could fail the metric.
            (true, false) => AnalysisPhase::Inconclusive,
            (true, true) => AnalysisPhase::Failed,
        };
    }
    phase
}

/// Whether a completed metric ended because its count was reached before its consecutive
/// success limit.
pub(crate) fn short_of_consecutive_successes(r: &MetricResult, spec: &MetricSpec) -> bool {
    let limit = spec.consecutive_success_limit;
    limit > 0
        && r.consecutive_success < limit
        && spec.count.is_some_and(|c| r.count >= c)
        && match r.phase {
            AnalysisPhase::Failed => spec.failure_limit < 0,
            AnalysisPhase::Inconclusive => r.inconclusive <= spec.inconclusive_limit,
            _ => false,
        }
}

/// Whether a metric's last measurement is still in flight.
pub(crate) fn in_flight(r: &MetricResult) -> bool {
    r.measurements.last().is_some_and(|m| m.finished_at.is_none())
}

/// How bad a phase is for the run: Successful < Running < Pending < Inconclusive < Error < Failed.
fn rank(phase: AnalysisPhase) -> u8 {
    match phase {
        AnalysisPhase::Successful => 0,
        AnalysisPhase::Running => 1,
        AnalysisPhase::Pending => 2,
        AnalysisPhase::Inconclusive => 3,
        AnalysisPhase::Error => 4,
        AnalysisPhase::Failed => 5,
    }
}

/// The run's verdict once every metric completed: the worst phase of the metrics that count;
/// Successful when none does (all dry-run).
pub(crate) fn run_phase(results: &[MetricResult]) -> AnalysisPhase {
    results
        .iter()
        .filter(|r| r.dry_run != Some(true))
        .map(|r| r.phase)
        .max_by_key(|p| rank(*p))
        .unwrap_or(AnalysisPhase::Successful)
}

/// Whether a phase ends a run when a metric that counts reaches it.
pub(crate) fn decisive(phase: AnalysisPhase) -> bool {
    matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive)
}
