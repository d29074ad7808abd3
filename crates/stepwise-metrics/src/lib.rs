//! Metric providers: the [`MetricProvider`] seam between the analysis controller and Prometheus,
//! web, Job and the Kubernetes metrics APIs. Each provider lives in its own module (added by the
//! analysis issue); [`fake::FakeProvider`] returns scripted values for tests.

use stepwise_api::Metric;

pub mod fake;

/// One value measured by a provider, before conditions are evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum MeasuredValue {
    /// A single number.
    Scalar(f64),
    /// A vector of numbers (for example one per Prometheus series).
    Vector(Vec<f64>),
}

/// What the analysis controller asks of a provider.
pub trait MetricProvider {
    /// The provider's name (`prometheus`, `web`, ...).
    fn kind(&self) -> &'static str;
    /// Takes one measurement of `metric`.
    fn measure(&mut self, metric: &Metric) -> Result<MeasuredValue, Error>;
}

/// Errors of the providers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The provider returned no data.
    #[error("metric {metric} returned no data")]
    NoData {
        /// Name of the metric.
        metric: String,
    },
}
