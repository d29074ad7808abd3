//! Folds the outcomes of [`due`](super::due)'s tasks into the run's next status: measurements and
//! counters, metric phases, the run's phase and message, retention, events and requeue.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunStatus, Measurement, Metric, MetricResult};

use super::args::Redactor;
use super::assess::{in_flight, metric_phase, run_phase};
use super::explain::{metric_message, run_message};
use super::fold::fold;
use super::resolve::MetricSpec;
use super::schedule::{next, result_of, run_completed, terminating, wait_until};
use super::{Due, Outcome, Resolution, RunEvent, RunUpdate, Task};
use crate::EventType;

type Collect = Vec<(Metric, Vec<Measurement>)>;

/// Folds the outcomes of `due`'s tasks into the next status. Pure; same inputs, same output.
/// A completed run is returned unchanged, with no requeue, events or clean-up. With no outcomes
/// and no phase change, the status returned equals the current one.
pub fn record(run: &AnalysisRun, due: &Due, outcomes: Vec<Outcome>, now: &Time) -> RunUpdate {
    let before = run.status.clone().unwrap_or_default();
    match &due.state {
        _ if run_completed(&before) => unchanged(before),
        // due() saw a completed run that this one is not: a mismatch, nothing to judge with.
        Resolution::Completed => unchanged(before),
        Resolution::Broken(message) => broken(run, before, &due.redactor.text(message), now),
        Resolution::Ready(specs) => measured(run, &before, specs, due, outcomes, now),
    }
}

fn unchanged(status: AnalysisRunStatus) -> RunUpdate {
    RunUpdate { status, requeue_after: None, events: Vec::new(), collect: Vec::new() }
}

/// A run whose arguments or metrics cannot be resolved ends in Error, naming what is wrong.
fn broken(run: &AnalysisRun, before: AnalysisRunStatus, message: &str, now: &Time) -> RunUpdate {
    let mut status = before;
    status.started_at.get_or_insert_with(|| now.clone());
    status.phase = Some(AnalysisPhase::Error);
    status.message = Some(message.to_string());
    status.completed_at = Some(now.clone());
    let collect = run
        .spec
        .metrics
        .iter()
        .filter_map(|m| result_of(&status, &m.name).map(|r| (m.clone(), r.measurements.clone())))
        .filter(|(_, ms)| !ms.is_empty())
        .collect();
    let events = vec![run_event(AnalysisPhase::Error, message)];
    RunUpdate { status, requeue_after: None, events, collect }
}

fn measured(
    run: &AnalysisRun,
    before: &AnalysisRunStatus,
    specs: &[MetricSpec],
    due: &Due,
    outcomes: Vec<Outcome>,
    now: &Time,
) -> RunUpdate {
    let mut status = before.clone();
    status.started_at.get_or_insert_with(|| now.clone());
    ensure_results(&mut status, specs);
    fold_outcomes(&mut status, specs, &due.tasks, outcomes, &due.redactor);
    let ending = assess(&mut status, run, specs, &due.redactor);
    let mut collect = trim(&mut status.metric_results, specs);
    let completed = specs.iter().all(|s| result_of(&status, &s.metric.name).is_some_and(|r| r.phase.is_completed()));
    if completed {
        complete(&mut status, run, specs, now, &mut collect, &due.redactor);
    } else {
        status.phase = Some(AnalysisPhase::Running);
        status.message = ending.then(|| stopping(&status));
    }
    let events = events(before, &status);
    let requeue_after = if completed { None } else { requeue(run, &status, specs, now) };
    RunUpdate { status, requeue_after, events, collect }
}

/// Every metric has a result from the start, Pending until measured, so users see them all.
fn ensure_results(status: &mut AnalysisRunStatus, specs: &[MetricSpec]) {
    for s in specs {
        let dry_run = s.dry_run.then_some(true);
        match status.metric_results.iter_mut().find(|r| r.name == s.metric.name) {
            Some(r) => r.dry_run = dry_run,
            None => status.metric_results.push(MetricResult {
                name: s.metric.name.clone(),
                phase: AnalysisPhase::Pending,
                dry_run,
                ..MetricResult::default()
            }),
        }
    }
}

/// Folds each outcome into its metric, once per task; an outcome no task asked for, or for a
/// metric that already completed, is ignored.
fn fold_outcomes(
    status: &mut AnalysisRunStatus,
    specs: &[MetricSpec],
    tasks: &[Task],
    outcomes: Vec<Outcome>,
    redactor: &Redactor,
) {
    let mut folded: Vec<String> = Vec::new();
    for outcome in outcomes {
        let name = outcome.metric.clone();
        let task = tasks.iter().find(|t| t.metric.name == name);
        let spec = specs.iter().find(|s| s.metric.name == name);
        let result = status.metric_results.iter_mut().find(|r| r.name == name && !r.phase.is_completed());
        if let (Some(task), Some(spec), Some(result), false) = (task, spec, result, folded.contains(&name)) {
            fold(result, spec, &task.step, outcome, redactor);
            folded.push(name);
        }
    }
}

/// Assesses every metric; in a run that is ending, a metric with nothing in flight ends too,
/// Successful unless its limits say otherwise (as in Argo). Returns whether the run is ending.
fn assess(status: &mut AnalysisRunStatus, run: &AnalysisRun, specs: &[MetricSpec], redactor: &Redactor) -> bool {
    for r in status.metric_results.iter_mut() {
        let Some(spec) = specs.iter().find(|s| s.metric.name == r.name) else { continue };
        let phase = metric_phase(r, spec);
        if phase != r.phase {
            r.phase = phase;
            r.message = redactor.opt(metric_message(r, spec, false));
        }
    }
    let ending = terminating(run, &status.metric_results, specs);
    if ending {
        for r in status.metric_results.iter_mut().filter(|r| !r.phase.is_completed() && !in_flight(r)) {
            let Some(spec) = specs.iter().find(|s| s.metric.name == r.name) else { continue };
            r.phase = AnalysisPhase::Successful;
            r.message = redactor.opt(metric_message(r, spec, true));
        }
    }
    ending
}

/// The run's message while it waits for in-flight measurements to stop.
fn stopping(status: &AnalysisRunStatus) -> String {
    let names: Vec<&str> = status.metric_results.iter().filter(|r| in_flight(r)).map(|r| r.name.as_str()).collect();
    format!("Run ending: stopping the measurements in flight of {}", names.join(", "))
}

/// Keeps each metric's newest measurements; the others go to clean-up.
fn trim(results: &mut [MetricResult], specs: &[MetricSpec]) -> Collect {
    let mut collect = Collect::new();
    for r in results.iter_mut() {
        let Some(spec) = specs.iter().find(|s| s.metric.name == r.name) else { continue };
        let excess = r.measurements.len().saturating_sub(spec.retention);
        if excess > 0 {
            collect.push((spec.metric.clone(), r.measurements.drain(..excess).collect()));
        }
    }
    collect
}

/// The run's verdict; every measurement it kept goes to clean-up.
fn complete(
    status: &mut AnalysisRunStatus,
    run: &AnalysisRun,
    specs: &[MetricSpec],
    now: &Time,
    collect: &mut Collect,
    redactor: &Redactor,
) {
    status.phase = Some(run_phase(&status.metric_results));
    status.message = redactor.opt(run_message(&status.metric_results, run.spec.terminate == Some(true)));
    status.completed_at = Some(now.clone());
    for r in status.metric_results.iter().filter(|r| !r.measurements.is_empty()) {
        let Some(spec) = specs.iter().find(|s| s.metric.name == r.name) else { continue };
        match collect.iter_mut().find(|(m, _)| m.name == r.name) {
            Some((_, ms)) => ms.extend(r.measurements.iter().cloned()),
            None => collect.push((spec.metric.clone(), r.measurements.clone())),
        }
    }
}

/// An event per metric that completed since `before`, then one if the run completed.
fn events(before: &AnalysisRunStatus, after: &AnalysisRunStatus) -> Vec<RunEvent> {
    let mut events = Vec::new();
    for r in &after.metric_results {
        let was = result_of(before, &r.name).map_or(AnalysisPhase::Pending, |b| b.phase);
        if r.phase != was && r.phase.is_completed() {
            events.push(RunEvent {
                type_: event_type(r.phase),
                reason: format!("Metric{}", r.phase),
                message: r.message.clone().unwrap_or_else(|| format!("{}: {}", r.name, r.phase)),
            });
        }
    }
    if let (false, true, Some(phase)) = (run_completed(before), run_completed(after), after.phase) {
        events.push(run_event(phase, after.message.as_deref().unwrap_or("all metrics successful")));
    }
    events
}

fn run_event(phase: AnalysisPhase, message: &str) -> RunEvent {
    RunEvent { type_: event_type(phase), reason: format!("AnalysisRun{phase}"), message: message.to_string() }
}

fn event_type(phase: AnalysisPhase) -> EventType {
    if phase == AnalysisPhase::Successful { EventType::Normal } else { EventType::Warning }
}

/// When the earliest next step of any metric is due.
fn requeue(run: &AnalysisRun, status: &AnalysisRunStatus, specs: &[MetricSpec], now: &Time) -> Option<StdDuration> {
    let started = status.started_at.clone().unwrap_or_else(|| now.clone());
    let ending = terminating(run, &status.metric_results, specs);
    specs
        .iter()
        .filter_map(|s| next(s, result_of(status, &s.metric.name), &started, ending))
        .map(|n| wait_until(&n.at, now))
        .min()
}
