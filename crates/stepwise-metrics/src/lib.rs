//! Metric providers: the [`MetricProvider`] seam between the AnalysisRun controller and
//! Prometheus, web, Job, Kubernetes metrics API, Datadog, New Relic, Wavefront, CloudWatch and
//! plugin measurements. Each provider lives in its own module; [`fake`] beside the trait returns
//! scripted readings for tests, and [`secrets`] is where providers read their credentials.
//!
//! A provider only fetches: it turns a metric (its arguments already substituted) into a
//! [`Reading`]. What the reading means (the metric's conditions, limits and phases) is decided in
//! pure code by `stepwise-core`, never here.

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::jiff::Timestamp;
use stepwise_api::{AnalysisPhase, Measurement, Metric};

pub mod cloudwatch;
pub mod datadog;
pub mod fake;
mod fields;
pub mod graphite;
pub mod influxdb;
pub mod job;
pub mod kayenta;
pub mod kubernetes;
pub mod newrelic;
pub mod plugin;
pub mod prometheus;
pub mod secrets;
pub mod skywalking;
pub mod wavefront;
pub mod web;

/// The run a measurement belongs to: providers that create objects (a Job) name and own them by
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRef {
    /// Namespace of the AnalysisRun.
    pub namespace: String,
    /// Name of the AnalysisRun.
    pub name: String,
    /// UID of the AnalysisRun, for owner references.
    pub uid: String,
}

/// What a provider saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// A value: the metric's conditions decide what it means. Prometheus vectors and matrices are
    /// JSON arrays of numbers, scalars are numbers, a web answer is the JSON its path selects.
    Value(serde_json::Value),
    /// The provider judged the measurement itself (a Job succeeded or failed).
    Verdict {
        /// Successful, Failed, Inconclusive or Error.
        phase: AnalysisPhase,
        /// Why.
        message: Option<String>,
    },
    /// The measurement is still going (a Job runs): ask again with `resume` at `resume_at`.
    InProgress {
        /// When to look again.
        resume_at: Timestamp,
    },
}

/// A reading with what the provider wants kept beside it (the query it ran, the Job's name,
/// Prometheus warnings).
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    /// What was seen.
    pub reading: Reading,
    /// Kept in the measurement's `metadata`.
    pub metadata: BTreeMap<String, String>,
}

impl Taken {
    /// A reading without metadata.
    pub fn new(reading: Reading) -> Self {
        Taken { reading, metadata: BTreeMap::new() }
    }
}

/// What the AnalysisRun controller asks of a provider. Shaped like Argo Rollouts' providers so
/// that their semantics carry over: a single-shot provider (Prometheus, web) only implements
/// [`run`](MetricProvider::run); a long one (Job) also resumes, terminates and cleans up.
pub trait MetricProvider: Send + Sync {
    /// The provider's field name in a metric (`prometheus`, `web`, `job`).
    fn kind(&self) -> &'static str;

    /// Starts (and for a single-shot provider, finishes) a measurement of `metric`.
    fn run(&self, run: &RunRef, metric: &Metric) -> impl Future<Output = Result<Taken, Error>> + Send;

    /// Looks again at an unfinished measurement (one that was [`Reading::InProgress`]).
    fn resume(
        &self,
        run: &RunRef,
        metric: &Metric,
        measurement: &Measurement,
    ) -> impl Future<Output = Result<Taken, Error>> + Send {
        let _ = (run, measurement);
        async move { Err(Error::NotResumable { metric: metric.name.clone() }) }
    }

    /// Stops an unfinished measurement because the run ends.
    fn terminate(
        &self,
        run: &RunRef,
        metric: &Metric,
        measurement: &Measurement,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (run, metric, measurement);
        async { Ok(()) }
    }

    /// Cleans up after measurements no longer kept (a Job of a measurement trimmed by
    /// `measurementRetention`, or of a run that ended).
    fn garbage_collect(
        &self,
        run: &RunRef,
        metric: &Metric,
        dropped: &[Measurement],
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (run, metric, dropped);
        async { Ok(()) }
    }
}

/// A boxed future of a provider's answer.
pub type Answer<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// [`MetricProvider`] as a trait object, so that providers of every kind sit in one
/// [`Providers`] registry; every `MetricProvider` is one.
pub trait DynMetricProvider: Send + Sync {
    /// As [`MetricProvider::run`].
    fn run<'a>(&'a self, run: &'a RunRef, metric: &'a Metric) -> Answer<'a, Taken>;
    /// As [`MetricProvider::resume`].
    fn resume<'a>(&'a self, run: &'a RunRef, metric: &'a Metric, measurement: &'a Measurement) -> Answer<'a, Taken>;
    /// As [`MetricProvider::terminate`].
    fn terminate<'a>(&'a self, run: &'a RunRef, metric: &'a Metric, measurement: &'a Measurement) -> Answer<'a, ()>;
    /// As [`MetricProvider::garbage_collect`].
    fn garbage_collect<'a>(&'a self, run: &'a RunRef, metric: &'a Metric, dropped: &'a [Measurement])
    -> Answer<'a, ()>;
}

impl<P: MetricProvider> DynMetricProvider for P {
    fn run<'a>(&'a self, run: &'a RunRef, metric: &'a Metric) -> Answer<'a, Taken> {
        Box::pin(MetricProvider::run(self, run, metric))
    }
    fn resume<'a>(&'a self, run: &'a RunRef, metric: &'a Metric, measurement: &'a Measurement) -> Answer<'a, Taken> {
        Box::pin(MetricProvider::resume(self, run, metric, measurement))
    }
    fn terminate<'a>(&'a self, run: &'a RunRef, metric: &'a Metric, measurement: &'a Measurement) -> Answer<'a, ()> {
        Box::pin(MetricProvider::terminate(self, run, metric, measurement))
    }
    fn garbage_collect<'a>(
        &'a self,
        run: &'a RunRef,
        metric: &'a Metric,
        dropped: &'a [Measurement],
    ) -> Answer<'a, ()> {
        Box::pin(MetricProvider::garbage_collect(self, run, metric, dropped))
    }
}

/// The metric providers by kind (their field under a metric's `provider`): the one place a
/// measurement finds its provider. A new provider is its module and one [`Providers::with`].
#[derive(Default)]
pub struct Providers {
    by_kind: std::collections::BTreeMap<&'static str, Box<dyn DynMetricProvider>>,
}

impl Providers {
    /// Adds `provider` under its kind.
    pub fn with<P: MetricProvider + 'static>(mut self, provider: P) -> Self {
        self.by_kind.insert(provider.kind(), Box::new(provider));
        self
    }

    /// The provider of `metric`; an error naming its kind when none measures it.
    pub fn of(&self, metric: &Metric) -> Result<&dyn DynMetricProvider, String> {
        let kind = metric.provider.kind();
        match kind.as_deref().and_then(|k| self.by_kind.get(k)) {
            Some(provider) => Ok(provider.as_ref()),
            None => {
                let known: Vec<&str> = self.by_kind.keys().copied().collect();
                let set = kind.map(|k| format!("provider.{k} is not one")).unwrap_or_else(|| "it sets none".into());
                Err(format!("the metric needs a provider this controller has ({}): {set}", known.join(", ")))
            }
        }
    }
}

/// Why a provider could not measure. Each becomes a measurement in Error with this text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metric's provider configuration is unusable (a bad address, a bad JSON path).
    #[error("{field}: {message}")]
    Config {
        /// The field, e.g. `provider.prometheus.address`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The request did not get an answer in time.
    #[error("no answer within {seconds} s from {target}")]
    Timeout {
        /// Seconds waited.
        seconds: u64,
        /// What was asked.
        target: String,
    },
    /// The source answered with an error or could not be reached.
    #[error("{target}: {message}")]
    Source {
        /// What was asked.
        target: String,
        /// The source's error.
        message: String,
    },
    /// The answer could not be turned into a value.
    #[error("{message}")]
    Answer {
        /// What was wrong with the answer.
        message: String,
    },
    /// The provider returned no data.
    #[error("metric {metric} returned no data")]
    NoData {
        /// Name of the metric.
        metric: String,
    },
    /// `resume` was called on a provider whose measurements always finish at once.
    #[error("metric {metric}: its provider does not resume measurements")]
    NotResumable {
        /// Name of the metric.
        metric: String,
    },
    /// The API server refused a request of the kubernetes provider: a metric, or the metrics API
    /// itself, that is not served (404), an adapter it cannot reach (503), no permission (403).
    #[error("GET {path}: HTTP {code}: {message}{}", metrics_api_hint(.code, .path))]
    MetricsApi {
        /// The path asked for, with its query string.
        path: String,
        /// The HTTP status of the answer.
        code: u16,
        /// The API server's (or the adapter's) message.
        message: String,
    },
    /// A Kubernetes metrics API answered, without a single value.
    #[error("no value was returned for metric {metric} {} (GET {path})", selector_text(.selector))]
    NoValue {
        /// Name of the metric in the metrics API.
        metric: String,
        /// The selector asked with, if any.
        selector: Option<String>,
        /// The path asked for.
        path: String,
    },
    /// A Kubernetes call of the Job provider failed.
    #[error("{action}: {message}")]
    Kubernetes {
        /// What was being done, e.g. `create Job run-1-success-1`.
        action: String,
        /// The API's error.
        message: String,
    },
}

/// What a person can look at when a metrics API refuses: the APIService behind the path, or the
/// controller's permissions.
fn metrics_api_hint(code: &u16, path: &str) -> String {
    let group_version = path.strip_prefix("/apis/").and_then(|rest| {
        let mut parts = rest.splitn(3, '/');
        Some((parts.next()?, parts.next()?))
    });
    let Some((group, version)) = group_version else { return String::new() };
    let api_service = format!("{version}.{group}");
    match code {
        404 => format!(
            " (the metric, or the API itself, is not served: `kubectl get apiservice {api_service}` and \
             `kubectl get --raw /apis/{group}/{version}` show what is)"
        ),
        503 => format!(" (the API server cannot reach the adapter: `kubectl get apiservice {api_service}` says why)"),
        401 | 403 => format!(
            " (the controller's ServiceAccount needs get on {group}; the chart grants it with \
             analysis.kubernetes.enabled=true)"
        ),
        _ => String::new(),
    }
}

/// The selector of a metric in messages.
fn selector_text(selector: &Option<String>) -> String {
    match selector {
        Some(s) => format!("with selector {s}"),
        None => "without a selector".into(),
    }
}
