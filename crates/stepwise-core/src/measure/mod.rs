//! The AnalysisRun machine: which measurements are due, and how their outcomes fold into the
//! run's status. Pure: no clock, no client, no runtime. The controller calls [`due`], asks the
//! metric providers for the [`Task`]s it lists, and hands their [`Outcome`]s to [`record`], which
//! returns the whole next status, the events, what to clean up and when to look again.
//!
//! Semantics are Argo Rollouts' (measurement, metric and run phases, limits, counters,
//! scheduling), with conditions in CEL instead of expr-lang and a few of Argo's defects fixed;
//! `docs/compatibility.md` lists the differences.

mod args;
mod assess;
mod condition;
mod explain;
mod fold;
mod record;
mod resolve;
mod schedule;
mod summary;
mod ttl;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, AnalysisRunStatus, Measurement, Metric};

pub use args::secrets_needed;
pub use condition::check_condition;
pub use record::record;
pub use resolve::check_provider;
pub use schedule::due;
pub use summary::summaries;
pub use ttl::{Expiry, expiry, ttl_seconds};

use crate::EventType;

/// Secret values the run's arguments read: (Secret name, key) → value.
pub type SecretValues = BTreeMap<(String, String), String>;

/// What to do for a metric now.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Take a new measurement.
    Run,
    /// Check again on a measurement still in flight (e.g. a Job still running).
    Resume(Measurement),
    /// Stop a measurement still in flight: the run is ending.
    Terminate(Measurement),
}

/// One metric to measure now.
#[derive(Clone, PartialEq)]
pub struct Task {
    /// The metric, with its arguments substituted (secret values included: never log it whole).
    pub metric: Metric,
    /// What to do.
    pub step: Step,
}

// By hand, so that logging a task cannot print a secret substituted into the metric.
impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("metric", &self.metric.name).field("step", &self.step).finish()
    }
}

/// What [`due`] found: the tasks to carry out now, and what [`record`] needs to judge them.
#[derive(Clone)]
pub struct Due {
    /// The measurements to take, resume or stop now, at most one per metric.
    pub tasks: Vec<Task>,
    state: Resolution,
    redactor: args::Redactor,
}

impl Due {
    /// Why the run cannot be measured (an argument or field that cannot be resolved), if so.
    /// [`record`] ends such a run in Error with this message.
    pub fn problem(&self) -> Option<&str> {
        match &self.state {
            Resolution::Broken(message) => Some(message),
            _ => None,
        }
    }
}

// By hand: the resolved metrics hold secret values.
impl std::fmt::Debug for Due {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let problem = self.problem().map(|p| self.redactor.text(p));
        f.debug_struct("Due").field("tasks", &self.tasks).field("problem", &problem).finish_non_exhaustive()
    }
}

/// The run's metrics as [`due`] resolved them.
#[derive(Clone)]
enum Resolution {
    /// The run had completed: nothing to resolve.
    Completed,
    /// An argument or field could not be resolved; the message names it.
    Broken(String),
    /// The metrics, in spec order.
    Ready(Vec<resolve::MetricSpec>),
}

/// What a provider reported, as core understands it.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A value; the metric's conditions decide.
    Value(serde_json::Value),
    /// The provider decided (e.g. a Job succeeded or failed).
    Verdict {
        /// The measurement's phase.
        phase: AnalysisPhase,
        /// Why.
        message: Option<String>,
    },
    /// Still going; look again at `resume_at`.
    InProgress {
        /// When to resume the measurement.
        resume_at: Time,
    },
    /// The provider failed; the text says why.
    Error(String),
    /// An in-flight measurement was stopped (after [`Step::Terminate`]).
    Terminated,
}

/// The result of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Name of the metric.
    pub metric: String,
    /// What the provider reported.
    pub reading: Reading,
    /// Provider data to keep on the measurement (e.g. the Job's name).
    pub metadata: BTreeMap<String, String>,
    /// When the task started.
    pub started_at: Time,
    /// When the task finished.
    pub finished_at: Time,
}

/// The next state of a run, as [`record`] decided it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpdate {
    /// The whole next status; equal to the current one when nothing changed.
    pub status: AnalysisRunStatus,
    /// When the next measurement, resume or initial delay is due; `None` once the run completed.
    pub requeue_after: Option<std::time::Duration>,
    /// Metric and run phase transitions, once each.
    pub events: Vec<RunEvent>,
    /// Measurements whose provider objects must be cleaned up: those trimmed by retention, and
    /// every measurement of a run that just completed.
    pub collect: Vec<(Metric, Vec<Measurement>)>,
}

/// An event about the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// `MetricFailed`, `AnalysisRunSuccessful`, ...
    pub reason: String,
    /// What happened, with values.
    pub message: String,
}
