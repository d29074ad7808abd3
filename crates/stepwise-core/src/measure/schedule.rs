//! When each metric is next measured: the first measurement after the initial delay, the next one
//! an interval after the last (10 s after an error), an in-flight one resumed at its resumeAt, and
//! none once the count is reached, the metric completed or the run is ending.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, MetricResult};

use super::assess::decisive;
use super::resolve::{MetricSpec, resolve};
use super::{Due, Resolution, SecretValues, Step, Task};

/// How long Argo waits before measuring again after an error (`DefaultErrorRetryInterval`),
/// whatever the interval.
pub(crate) const ERROR_RETRY: StdDuration = StdDuration::from_secs(10);

/// What to measure now. Pure. A run whose arguments or metrics cannot be resolved yields no
/// tasks, and [`record`](super::record) ends it in Error with a message naming the argument or
/// field. A completed run yields nothing.
pub fn due(run: &AnalysisRun, secrets: &SecretValues, now: &Time) -> Due {
    let status = run.status.clone().unwrap_or_default();
    if run_completed(&status) {
        return Due { tasks: Vec::new(), state: Resolution::Completed, redactor: Default::default() };
    }
    let (resolved, redactor) = resolve(&run.spec, secrets);
    let specs = match resolved {
        Ok(specs) => specs,
        Err(message) => return Due { tasks: Vec::new(), state: Resolution::Broken(message), redactor },
    };
    // Before the first record() the run has not started: it starts now.
    let started = status.started_at.clone().unwrap_or_else(|| now.clone());
    let terminating = terminating(run, &status.metric_results, &specs);
    let tasks = specs
        .iter()
        .filter_map(|spec| {
            let next = next(spec, result_of(&status, &spec.metric.name), &started, terminating)?;
            reached(&next.at, now).then(|| Task { metric: spec.metric.clone(), step: next.step })
        })
        .collect();
    Due { tasks, state: Resolution::Ready(specs), redactor }
}

/// Whether the run has its verdict; a completed run never changes again.
pub(crate) fn run_completed(status: &AnalysisRunStatus) -> bool {
    status.completed_at.is_some() || status.phase.is_some_and(AnalysisPhase::is_completed)
}

/// Whether the run is ending: terminated by a person (or the Rollout), or a metric that counts
/// has failed, errored or is inconclusive, which decides the run whatever the others say.
pub(crate) fn terminating(run: &AnalysisRun, results: &[MetricResult], specs: &[MetricSpec]) -> bool {
    run.spec.terminate == Some(true)
        || results.iter().any(|r| {
            let dry_run = specs.iter().find(|s| s.metric.name == r.name).map_or(r.dry_run == Some(true), |s| s.dry_run);
            !dry_run && decisive(r.phase)
        })
}

pub(crate) fn result_of<'a>(status: &'a AnalysisRunStatus, name: &str) -> Option<&'a MetricResult> {
    status.metric_results.iter().find(|r| r.name == name)
}

/// The next step of a metric and when it is due (`at: None` is now).
pub(crate) struct Next {
    pub at: Option<Time>,
    pub step: Step,
}

/// The metric's next step, or `None` when it has nothing more to do.
pub(crate) fn next(
    spec: &MetricSpec,
    result: Option<&MetricResult>,
    started: &Time,
    terminating: bool,
) -> Option<Next> {
    if result.is_some_and(|r| r.phase.is_completed()) {
        return None;
    }
    let last = result.and_then(|r| r.measurements.last());
    if let Some(m) = last.filter(|m| m.finished_at.is_none()) {
        return Some(if terminating {
            Next { at: None, step: Step::Terminate(m.clone()) }
        } else {
            Next { at: m.resume_at.clone(), step: Step::Resume(m.clone()) }
        });
    }
    let count = result.map_or(0, |r| r.count);
    if terminating || spec.count.is_some_and(|c| count >= c) {
        return None;
    }
    let at = match last {
        None => after(started, spec.initial_delay),
        Some(m) => {
            let wait = if m.phase == AnalysisPhase::Error { ERROR_RETRY } else { spec.interval.unwrap_or_default() };
            after(m.finished_at.as_ref().unwrap_or(started), wait)
        }
    };
    Some(Next { at: Some(at), step: Step::Run })
}

/// Whether a step due at `at` is due at `now`.
pub(crate) fn reached(at: &Option<Time>, now: &Time) -> bool {
    at.as_ref().is_none_or(|t| t.0 <= now.0)
}

/// How long from `now` until `at`; zero when it has passed.
pub(crate) fn wait_until(at: &Option<Time>, now: &Time) -> StdDuration {
    match at {
        Some(t) if t.0 > now.0 => now.0.duration_until(t.0).unsigned_abs(),
        _ => StdDuration::ZERO,
    }
}

fn after(t: &Time, d: StdDuration) -> Time {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    Time(t.0.checked_add(d).unwrap_or(Timestamp::MAX))
}
