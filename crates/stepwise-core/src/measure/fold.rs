//! One outcome into a metric's result: the measurement it makes, where it goes (a new one, or in
//! place of the one in flight) and the counters it moves, as Argo counts them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, Measurement, MetricResult};

use super::args::Redactor;
use super::resolve::MetricSpec;
use super::schedule::ERROR_RETRY;
use super::{Outcome, Reading, Step};

/// Message of a measurement stopped because the run ended (Argo's wording).
pub(crate) const TERMINATED: &str = "Metric Terminated";

/// Folds `outcome` of `step` into `result`.
pub(crate) fn fold(result: &mut MetricResult, spec: &MetricSpec, step: &Step, outcome: Outcome, redactor: &Redactor) {
    let in_flight = result.measurements.last().is_some_and(|m| m.finished_at.is_none());
    let replaces = in_flight && matches!(step, Step::Resume(_) | Step::Terminate(_));
    if matches!(outcome.reading, Reading::Terminated) && !replaces {
        return; // nothing was in flight: nothing was stopped
    }
    let counted = !matches!(outcome.reading, Reading::Terminated);
    let mut m = measurement(spec, outcome, redactor);
    if replaces && let Some(old) = result.measurements.pop() {
        // The measurement started when it was first taken; what the provider kept stays.
        m.started_at = old.started_at.or(m.started_at);
        let mut metadata = old.metadata.unwrap_or_default();
        metadata.extend(m.metadata.take().unwrap_or_default());
        m.metadata = Some(metadata).filter(|md| !md.is_empty());
    }
    if counted && m.finished_at.is_some() {
        count(result, m.phase);
    }
    result.measurements.push(m);
}

/// The measurement an outcome makes, redacted.
fn measurement(spec: &MetricSpec, outcome: Outcome, redactor: &Redactor) -> Measurement {
    let Outcome { reading, metadata, started_at, finished_at, .. } = outcome;
    let mut m = Measurement {
        started_at: Some(started_at),
        metadata: Some(redact_map(metadata, redactor)).filter(|md| !md.is_empty()),
        ..Measurement::default()
    };
    let finished = Some(finished_at.clone());
    match reading {
        Reading::Value(value) => {
            let (phase, message) = spec.conditions.judge(&value);
            m.phase = phase;
            m.value = Some(redactor.text(&value.to_string()));
            m.message = redactor.opt(message);
            m.finished_at = finished;
        }
        Reading::Verdict { phase, message } if phase.is_completed() => {
            m.phase = phase;
            m.message = redactor.opt(message);
            m.finished_at = finished;
        }
        // A provider that has not decided yet: look again as after an error.
        Reading::Verdict { message, .. } => {
            in_flight(&mut m, crate::add_seconds(&finished_at, ERROR_RETRY.as_secs() as i64), redactor.opt(message))
        }
        Reading::InProgress { resume_at } => in_flight(&mut m, resume_at, None),
        Reading::Error(text) => {
            m.phase = AnalysisPhase::Error;
            m.message = Some(redactor.text(&text));
            m.finished_at = finished;
        }
        Reading::Terminated => {
            m.phase = AnalysisPhase::Successful;
            m.message = Some(TERMINATED.into());
            m.finished_at = finished;
        }
    }
    m
}

fn in_flight(m: &mut Measurement, resume_at: Time, message: Option<String>) {
    m.phase = AnalysisPhase::Running;
    m.resume_at = Some(resume_at);
    m.message = message;
}

fn redact_map(map: BTreeMap<String, String>, redactor: &Redactor) -> BTreeMap<String, String> {
    map.into_iter().map(|(k, v)| (k, redactor.text(&v))).collect()
}

/// Argo's counters: a judged measurement counts and clears the run of errors; an error does
/// not count, and extends it. Only a success extends the run of successes.
fn count(r: &mut MetricResult, phase: AnalysisPhase) {
    let judged = match phase {
        AnalysisPhase::Successful => &mut r.successful,
        AnalysisPhase::Failed => &mut r.failed,
        AnalysisPhase::Inconclusive => &mut r.inconclusive,
        AnalysisPhase::Error => {
            r.error = r.error.saturating_add(1);
            r.consecutive_error = r.consecutive_error.saturating_add(1);
            r.consecutive_success = 0;
            return;
        }
        AnalysisPhase::Pending | AnalysisPhase::Running => return,
    };
    *judged = judged.saturating_add(1);
    r.count = r.count.saturating_add(1);
    r.consecutive_error = 0;
    r.consecutive_success =
        if phase == AnalysisPhase::Successful { r.consecutive_success.saturating_add(1) } else { 0 };
}
