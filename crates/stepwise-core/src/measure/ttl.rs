//! `spec.ttlStrategy`: when a completed run is deleted. Decided here from the run's completion
//! time and a "now" handed in; the controller deletes the run, or looks again at the deadline.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, AnalysisRun};

use super::schedule::wait_until;

/// What becomes of a run under its TTL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The run stays: it has not completed, has no TTL for its phase, or no completion time.
    Keep,
    /// Its TTL has passed: delete it now.
    Delete,
    /// Delete it once this much more time has passed.
    After(StdDuration),
}

/// The TTL of a completed run, as Argo picks it: `secondsAfterSuccess` for a Successful run,
/// `secondsAfterFailure` for a Failed one, else `secondsAfterCompletion` (which so also covers
/// Error and Inconclusive).
pub fn ttl_seconds(run: &AnalysisRun) -> Option<i32> {
    let ttl = run.spec.ttl_strategy.as_ref()?;
    let phase = run.status.as_ref()?.phase?;
    let specific = match phase {
        AnalysisPhase::Successful => ttl.seconds_after_success,
        AnalysisPhase::Failed => ttl.seconds_after_failure,
        _ => None,
    };
    specific.or(ttl.seconds_after_completion)
}

/// Whether a run is deleted now, later or never under its `ttlStrategy`. Pure.
pub fn expiry(run: &AnalysisRun, now: &Time) -> Expiry {
    let Some(status) = run.status.as_ref() else { return Expiry::Keep };
    if !status.phase.is_some_and(AnalysisPhase::is_completed) {
        return Expiry::Keep;
    }
    let (Some(completed), Some(seconds)) = (status.completed_at.as_ref(), ttl_seconds(run)) else {
        return Expiry::Keep;
    };
    let deadline = crate::add_seconds(completed, i64::from(seconds.max(0)));
    match wait_until(&Some(deadline), now) {
        StdDuration::ZERO => Expiry::Delete,
        wait => Expiry::After(wait),
    }
}
