//! Analysis resources: templates of metrics, and runs that take measurements of them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::schema;

/// Default number of consecutive errors a metric tolerates before it is in Error.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Default number of measurements kept per metric.
pub const DEFAULT_MEASUREMENT_RETENTION: i32 = 10;
/// Default number of completed AnalysisRuns a Rollout keeps of each kind (successful,
/// unsuccessful) besides its current ones.
pub const DEFAULT_RUN_HISTORY_LIMIT: i32 = 5;

/// Metrics, arguments and options shared by AnalysisTemplate and ClusterAnalysisTemplate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stepwise.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    namespaced,
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// The metrics to measure and how to judge them.
    #[schemars(length(min = 1, max = 50))]
    pub metrics: Vec<Metric>,
    /// Arguments the metrics refer to as {{args.name}}; an argument without a value must be
    /// given by the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Argument>>,
    /// Metrics whose results are recorded but never fail the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<DryRun>>,
    /// How many measurements are kept per metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Vec<MeasurementRetention>>,
}

/// The cluster-scoped twin of AnalysisTemplate, usable from every namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stepwise.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    /// The metrics, arguments and options, as in an AnalysisTemplate.
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// One execution of an analysis: measurements taken over time and a verdict.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "stepwise.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    namespaced,
    status = "AnalysisRunStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// The metrics to measure, with arguments already substituted where known.
    #[schemars(length(min = 1, max = 50))]
    pub metrics: Vec<Metric>,
    /// Argument values for the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<Argument>>,
    /// Set to true to stop taking measurements and end the run with what it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate: Option<bool>,
    /// Metrics whose results are recorded but never fail the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Vec<DryRun>>,
    /// How many measurements are kept per metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_retention: Option<Vec<MeasurementRetention>>,
    /// When the completed run is deleted. Without it, the run stays (a Rollout's history limits
    /// still apply to the runs it owns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_strategy: Option<TtlStrategy>,
}

/// How long a completed AnalysisRun is kept before the controller deletes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtlStrategy {
    /// Seconds after completion, whatever the phase, unless a more specific field below applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seconds_after_completion: Option<i32>,
    /// Seconds after the run completed Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seconds_after_failure: Option<i32>,
    /// Seconds after the run completed Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seconds_after_success: Option<i32>,
}

/// How many completed AnalysisRuns a Rollout keeps besides the ones it currently uses; older
/// ones are deleted, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStrategy {
    /// Successful runs kept. Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub successful_run_history_limit: Option<i32>,
    /// Failed, Error and Inconclusive runs kept. Defaults to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub unsuccessful_run_history_limit: Option<i32>,
}

/// A metric: what to measure, how often, and how to judge each measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.count) || type(self.count) == string || self.count <= 1 || has(self.interval)", "message": "a metric with count greater than 1 needs an interval"},
    {"rule": "!has(self.failureLimit) || type(self.failureLimit) == string || self.failureLimit != -1 || (has(self.consecutiveSuccessLimit) && (type(self.consecutiveSuccessLimit) == string || self.consecutiveSuccessLimit > 0))", "message": "failureLimit -1 (no limit) needs a consecutiveSuccessLimit greater than 0", "fieldPath": ".failureLimit"}
]))]
pub struct Metric {
    /// Name of the metric, unique within the analysis.
    pub name: String,
    /// Time between measurements. Without it, one measurement is taken (unless count says more).
    /// May be `{{args.name}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::templatable_duration_schema")]
    pub interval: Option<Duration>,
    /// Time to wait after the run starts before the first measurement. May be `{{args.name}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::duration::templatable_duration_schema")]
    pub initial_delay: Option<Duration>,
    /// Number of measurements. Defaults to 1 without an interval and to unlimited with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub count: Option<IntOrString>,
    /// A CEL expression over `result` that must be true for a measurement to succeed, e.g.
    /// `result[0] >= 0.95`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// A CEL expression over `result` that, when true, fails the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated; the metric fails when there are more. Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub failure_limit: Option<IntOrString>,
    /// Inconclusive measurements tolerated; the metric is Inconclusive when there are more.
    /// Defaults to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Consecutive errors tolerated; the metric is in Error when there are more. Defaults to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// Successful measurements in a row after which the metric ends Successful. When count is
    /// reached first, the metric is Inconclusive (Failed with failureLimit -1). Defaults to 0:
    /// off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub consecutive_success_limit: Option<IntOrString>,
    /// Where the measurement comes from. Exactly one provider is set.
    pub provider: MetricProvider,
}

/// The source of a metric's measurements. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.prometheus) ? 1 : 0) + (has(self.web) ? 1 : 0) + (has(self.job) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) + (has(self.plugin) ? 1 : 0) == 1", "message": "a metric provider sets exactly one of prometheus, web, job, kubernetes and plugin"}
]))]
pub struct MetricProvider {
    /// A PromQL query against a Prometheus server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    /// An HTTP request whose JSON answer is the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebMetric>,
    /// A Kubernetes Job: success if it succeeds, failure if it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobMetric>,
    /// A value from the API server's custom or external metrics API, as an autoscaler sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesMetric>,
    /// An out-of-process metric plugin, by name, with its configuration (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::plugin_configs")]
    pub plugin: Option<BTreeMap<String, serde_json::Value>>,
}

/// A Prometheus query.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// Base URL of the Prometheus server.
    pub address: String,
    /// The PromQL query; {{args.name}} is replaced by argument values.
    pub query: String,
    /// Seconds before the query times out. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<i64>,
    /// HTTP headers sent with the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<WebMetricHeader>>,
}

/// An HTTP request whose JSON answer is the measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetric {
    /// URL to request.
    pub url: String,
    /// HTTP method. Defaults to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<WebMetricHeader>>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Seconds before the request times out. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
    /// A JSONPath into the answer that selects the result, e.g. {$.data.ok}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Skip TLS certificate verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// An HTTP header.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetricHeader {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: String,
}

/// A Job whose outcome is the measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetric {
    /// Labels and annotations for the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<crate::rollout::PodMetadata>,
    /// The Job's spec.
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub spec: serde_json::Value,
}

/// A value from the API server's custom or external metrics API (custom.metrics.k8s.io,
/// external.metrics.k8s.io), as a HorizontalPodAutoscaler reads it, in the run's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.api != 'custom' || has(self.objectKind)", "message": "kubernetes.objectKind is required with api: custom (the kind of the object whose metric is read, e.g. Service)"},
    {"rule": "self.api != 'custom' || has(self.objectName)", "message": "kubernetes.objectName is required with api: custom (the object whose metric is read, or * with a selector for every matching object)"}
]))]
pub struct KubernetesMetric {
    /// custom: a metric of one Kubernetes object (custom.metrics.k8s.io/v1beta2); external: a
    /// metric of nothing in the cluster (external.metrics.k8s.io/v1beta1).
    pub api: KubernetesMetricApi,
    /// Name of the metric, as the metrics adapter serves it.
    pub metric_name: String,
    /// api custom: the kind of the described object: Pod, Service, Deployment, ReplicaSet,
    /// StatefulSet, DaemonSet, Job, Ingress, Rollout or Namespace, or any other as its resource
    /// (plural, lowercase, with its API group, e.g. widgets.example.com).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_kind: Option<String>,
    /// api custom: the name of the described object (for a Namespace, the namespace's name), or *
    /// for every object of the kind that the selector matches; the value is then their list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// A label selector (app=api,version!=v1): with api external, or custom and a named object,
    /// it selects the metric's series (labelSelector, metricLabelSelector); with objectName *, the
    /// objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Which Kubernetes metrics API a metric reads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesMetricApi {
    /// custom.metrics.k8s.io: metrics describing Kubernetes objects.
    #[default]
    Custom,
    /// external.metrics.k8s.io: metrics from outside the cluster, chosen by labels.
    External,
}

/// An argument of an analysis template or run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    /// Name of the argument.
    pub name: String,
    /// Its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where its value comes from, when not literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// The source of an argument's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the run's namespace; read when measuring and never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A field of the object that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<crate::rollout::FieldRef>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// Metrics run in dry-run mode.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// A regular expression matched against metric names; `.*` for all.
    pub metric_name: String,
}

/// How many measurements are kept for some metrics.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    /// A regular expression matched against metric names.
    pub metric_name: String,
    /// Number of most recent measurements kept. Defaults to 10.
    #[schemars(range(min = 1))]
    pub limit: i32,
}

/// The phase of a run, a metric or a measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AnalysisPhase {
    /// Not started.
    #[default]
    Pending,
    /// Measuring.
    Running,
    /// All limits respected.
    Successful,
    /// Too many failed measurements.
    Failed,
    /// Too many consecutive errors.
    Error,
    /// Too many inconclusive measurements; a person decides.
    Inconclusive,
}

impl AnalysisPhase {
    /// Whether the phase is final.
    pub fn is_completed(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }
}

impl std::fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Observed state of an AnalysisRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// The run's verdict so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    /// Why the run is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Each metric's measurements and counters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// How many metrics ended in each phase (dry-run metrics excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_summary: Option<RunSummary>,
    /// How many dry-run metrics ended in each phase; set when the run has dry-run metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_summary: Option<RunSummary>,
}

/// How many metrics of a run ended in each phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Metrics in the run (dry-run metrics excluded).
    #[serde(default)]
    pub count: i32,
    /// Metrics that ended Successful.
    #[serde(default)]
    pub successful: i32,
    /// Metrics that ended Failed.
    #[serde(default)]
    pub failed: i32,
    /// Metrics that ended Inconclusive.
    #[serde(default)]
    pub inconclusive: i32,
    /// Metrics that ended in Error.
    #[serde(default)]
    pub error: i32,
}

/// The measurements and counters of one metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Name of the metric.
    pub name: String,
    /// The metric's verdict so far.
    pub phase: AnalysisPhase,
    /// The most recent measurements, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    /// Why the metric is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Measurements taken (errors excluded).
    #[serde(default)]
    pub count: i32,
    /// Successful measurements.
    #[serde(default)]
    pub successful: i32,
    /// Failed measurements.
    #[serde(default)]
    pub failed: i32,
    /// Inconclusive measurements.
    #[serde(default)]
    pub inconclusive: i32,
    /// Measurements that ended in error.
    #[serde(default)]
    pub error: i32,
    /// Errors since the last measurement that was not an error.
    #[serde(default)]
    pub consecutive_error: i32,
    /// Successful measurements since the last one that was not (an error breaks the run too).
    #[serde(default)]
    pub consecutive_success: i32,
    /// Whether this metric runs in dry-run mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Data about the metric as a whole, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// The measurement's verdict.
    pub phase: AnalysisPhase,
    /// The value the provider returned, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why the measurement has its verdict (error text, condition that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the measurement started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the measurement finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// When an unfinished measurement should be checked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<Time>,
    /// Provider-specific data about the measurement (e.g. the Job's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}
