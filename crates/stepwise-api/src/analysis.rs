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
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.metrics) && size(self.metrics) > 0) || (has(self.templates) && size(self.templates) > 0)", "message": "a template needs metrics, templates, or both"}
]))]
pub struct AnalysisTemplateSpec {
    /// The metrics to measure and how to judge them. May be left out when `templates` brings
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub metrics: Vec<Metric>,
    /// Other templates whose metrics, arguments, dryRun and measurementRetention are added to
    /// this one's, resolved recursively when a run is created (as Argo Rollouts does). A metric
    /// name found in two templates, a template that names itself through others, or one that
    /// does not exist stops the analysis with a message naming them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub templates: Option<Vec<crate::rollout::AnalysisTemplateRef>>,
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
    {"rule": "(has(self.prometheus) ? 1 : 0) + (has(self.web) ? 1 : 0) + (has(self.job) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) + (has(self.plugin) ? 1 : 0) + (has(self.datadog) ? 1 : 0) + (has(self.newRelic) ? 1 : 0) + (has(self.wavefront) ? 1 : 0) + (has(self.cloudWatch) ? 1 : 0) + (has(self.graphite) ? 1 : 0) + (has(self.influxdb) ? 1 : 0) + (has(self.kayenta) ? 1 : 0) + (has(self.skywalking) ? 1 : 0) == 1", "message": "a metric provider sets exactly one of prometheus, web, job, kubernetes, plugin, datadog, newRelic, wavefront, cloudWatch, graphite, influxdb, kayenta and skywalking"}
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
    /// Argo Rollouts' Datadog provider (v1 queries, v2 queries and formulas), kept as written and
    /// read by the provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub datadog: Option<serde_json::Value>,
    /// Argo Rollouts' New Relic provider (NRQL over NerdGraph), kept as written and read by the
    /// provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub new_relic: Option<serde_json::Value>,
    /// Argo Rollouts' Wavefront provider, kept as written and read by the provider, which names a
    /// field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub wavefront: Option<serde_json::Value>,
    /// Argo Rollouts' CloudWatch provider (GetMetricData with `metricDataQueries`, the
    /// credentials of the environment or a web identity), kept as written and read by the
    /// provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub cloud_watch: Option<serde_json::Value>,
    /// Argo Rollouts' Graphite provider (the render API), kept as written and read by the
    /// provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub graphite: Option<serde_json::Value>,
    /// Argo Rollouts' InfluxDB provider (Flux over the v2 query API), kept as written and read by
    /// the provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub influxdb: Option<serde_json::Value>,
    /// Argo Rollouts' Kayenta provider (a canary analysis judged by a Kayenta server), kept as
    /// written and read by the provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub kayenta: Option<serde_json::Value>,
    /// Argo Rollouts' SkyWalking provider (a GraphQL query), kept as written and read by the
    /// provider, which names a field it cannot use (docs/analysis.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub skywalking: Option<serde_json::Value>,
}

impl MetricProvider {
    /// The provider's kind: the field that is set (the first, were several).
    pub fn kind(&self) -> Option<String> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) else { return None };
        fields.keys().next().cloned()
    }
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
    /// Skip TLS certificate verification of the Prometheus server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Run the query over a time range (`/api/v1/query_range`) instead of at one instant; the
    /// result is then the flattened list of every value of every series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_query: Option<PrometheusRangeQuery>,
    /// Argo Rollouts' sigv4, oauth2 and basicAuth settings: accepted and kept as written so that
    /// Argo manifests apply, but not supported; a run using them ends in Error at once (send
    /// credentials with `headers` and a `secretKeyRef` argument instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub authentication: Option<serde_json::Value>,
}

/// The time range of a Prometheus range query, relative to the moment of the measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRangeQuery {
    /// Start of the range, as Argo writes it: `now()` or `now() - duration('10m')` (single or
    /// double quotes, any Go-style duration). Other expressions are refused.
    pub start: String,
    /// End of the range, in the same forms as `start`; usually `now()`.
    pub end: String,
    /// Time between two points of the range, a Go-style duration such as `1m`.
    pub step: String,
}

/// A range query's times, read from their expressions: how long before the measurement the
/// range starts and ends, and the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeOffsets {
    /// How long before the measurement the range starts.
    pub start_before_now: std::time::Duration,
    /// How long before the measurement the range ends.
    pub end_before_now: std::time::Duration,
    /// Time between two points.
    pub step: std::time::Duration,
}

impl PrometheusRangeQuery {
    /// The range as offsets from the moment of measurement, or a message naming the field
    /// (`rangeQuery.start`, `rangeQuery.end`, `rangeQuery.step`) that cannot be read.
    pub fn offsets(&self) -> Result<RangeOffsets, String> {
        let start_before_now = time_before_now(&self.start).map_err(|e| format!("rangeQuery.start: {e}"))?;
        let end_before_now = time_before_now(&self.end).map_err(|e| format!("rangeQuery.end: {e}"))?;
        let step = crate::duration::parse_go_duration(self.step.trim())
            .map_err(|e| format!("rangeQuery.step: {e} (write a duration such as 1m)"))?;
        if step.is_zero() {
            return Err("rangeQuery.step must be longer than zero".into());
        }
        if start_before_now < end_before_now {
            return Err(format!(
                "rangeQuery.start ({}) is after rangeQuery.end ({})",
                self.start.trim(),
                self.end.trim()
            ));
        }
        Ok(RangeOffsets { start_before_now, end_before_now, step })
    }
}

/// `now()` is zero; `now() - duration('10m')` is ten minutes. Argo evaluates these as expr-lang
/// expressions; stepwise reads only these two forms, the ones Argo documents, and names anything
/// else rather than guessing.
fn time_before_now(expression: &str) -> Result<std::time::Duration, String> {
    let refused =
        || format!("{expression:?} is not supported: write now() or now() - duration('10m') (any Go-style duration)");
    let compact: String = expression.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(rest) = compact.strip_prefix("now()") else { return Err(refused()) };
    if rest.is_empty() {
        return Ok(std::time::Duration::ZERO);
    }
    let quoted = rest.strip_prefix("-duration(").and_then(|r| r.strip_suffix(')')).ok_or_else(refused)?;
    let text = ['\'', '"']
        .iter()
        .find_map(|q| quoted.strip_prefix(*q).and_then(|t| t.strip_suffix(*q)))
        .ok_or_else(refused)?;
    crate::duration::parse_go_duration(text).map_err(|e| format!("{expression:?}: {e}"))
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
    /// Request body as JSON, sent with `Content-Type: application/json` (unless a header sets
    /// it). Not with `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub json_body: Option<serde_json::Value>,
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
    /// Argo Rollouts' oauth2 and basicAuth settings: accepted and kept as written so that Argo
    /// manifests apply, but not supported; a run using them ends in Error at once (send
    /// credentials with `headers` and a `secretKeyRef` argument instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub authentication: Option<serde_json::Value>,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn range(start: &str, end: &str, step: &str) -> Result<RangeOffsets, String> {
        PrometheusRangeQuery { start: start.into(), end: end.into(), step: step.into() }.offsets()
    }

    #[test]
    fn a_range_reads_argos_documented_forms_of_now_and_now_minus_a_duration() {
        let offsets = range("now() - duration('10m')", "now()", "1m").unwrap();
        assert_eq!(
            offsets,
            RangeOffsets {
                start_before_now: Duration::from_secs(600),
                end_before_now: Duration::ZERO,
                step: Duration::from_secs(60)
            }
        );
        let offsets = range(r#"now()-duration("1h30m")"#, r#" now() - duration("5m") "#, "30s").unwrap();
        assert_eq!(
            (offsets.start_before_now, offsets.end_before_now),
            (Duration::from_secs(5400), Duration::from_secs(300))
        );
    }

    #[test]
    fn any_other_range_expression_is_refused_naming_its_field() {
        for (start, end, step, field) in [
            ("now() - 600", "now()", "1m", "rangeQuery.start"),
            ("date('2024-01-01')", "now()", "1m", "rangeQuery.start"),
            ("now() + duration('1m')", "now()", "1m", "rangeQuery.start"),
            ("now() - duration('10 minutes')", "now()", "1m", "rangeQuery.start"),
            ("now() - duration('10m')", "now() - duration(5m)", "1m", "rangeQuery.end"),
            ("now() - duration('10m')", "now()", "one minute", "rangeQuery.step"),
            ("now() - duration('10m')", "now()", "0s", "rangeQuery.step"),
            ("now()", "now() - duration('10m')", "1m", "rangeQuery.start"),
        ] {
            let err = range(start, end, step).unwrap_err();
            assert!(err.starts_with(field), "{start} {end} {step}: {err}");
        }
        let err = range("now() - 600", "now()", "1m").unwrap_err();
        assert!(err.contains("write now() or now() - duration('10m')"), "{err}");
    }
}
