//! The kubernetes provider: a value from the API server's aggregated metrics APIs, the ones a
//! HorizontalPodAutoscaler reads. `custom.metrics.k8s.io/v1beta2` describes Kubernetes objects (a
//! Service's success rate, each pod's request rate); `external.metrics.k8s.io/v1beta1` serves
//! metrics about nothing in the cluster, narrowed by a label selector. Whatever adapter serves
//! them (prometheus-adapter, KEDA, Datadog's cluster agent), the analysis sees the same numbers
//! the autoscaler does, through the controller's own client and credentials.
//!
//! Single-shot. Building the request ([`MetricRequest::of`]), reading quantities
//! ([`parse_quantity`]) and reading the answer ([`read_answer`]) are pure; only
//! [`KubernetesProvider`] talks to the API server.

use std::time::Duration;

use kube::Client;
use reqwest::Url;
use serde_json::Value;
use stepwise_api::{KubernetesMetric, KubernetesMetricApi, Metric};

use crate::web::{error_chain, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// Seconds a request may take. The API server proxies it to an adapter that often queries a
/// monitoring system in turn; a metric has no field for it, unlike Prometheus'.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

/// Measurement metadata key of the path requested (with its query string).
pub const PATH_KEY: &str = "path";

/// The custom metrics API as this provider asks for it.
pub const CUSTOM_API: &str = "custom.metrics.k8s.io/v1beta2";

/// The external metrics API as this provider asks for it.
pub const EXTERNAL_API: &str = "external.metrics.k8s.io/v1beta1";

/// Measures through the API server's custom and external metrics APIs.
#[derive(Clone)]
pub struct KubernetesProvider {
    client: Client,
    timeout: Duration,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// A provider reading the metrics APIs through `client`, waiting
    /// [`DEFAULT_TIMEOUT_SECONDS`] per request.
    ///
    /// A client made with kube's default retries retries a 503 for minutes, so an unavailable
    /// metrics API shows as a timeout rather than as what the API server said;
    /// [`from_config`](Self::from_config) makes a client without them.
    pub fn new(client: Client) -> Self {
        KubernetesProvider { client, timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS) }
    }

    /// A provider with a client of its own made from `config`, without kube's retries of 429, 503
    /// and 504: a metrics API that is unavailable (its adapter down, its APIService missing) is an
    /// Error measurement at once, with the API server's message, and the analysis measures again
    /// on its own schedule.
    pub fn from_config(mut config: kube::Config) -> Result<Self, Error> {
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| Error::Kubernetes {
            action: "build the client of the kubernetes metric provider".into(),
            message: error_chain(&e),
        })?;
        Ok(Self::new(client))
    }

    /// The same provider with another timeout per request.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        KubernetesProvider { timeout, ..self }
    }

    /// The body of a GET of `path` on the API server.
    async fn get(&self, path: &str) -> Result<String, Error> {
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| Error::Config {
            field: "provider.kubernetes",
            message: format!("cannot request {path}: {}", error_chain(&e)),
        })?;
        match tokio::time::timeout(self.timeout, self.client.request_text(request)).await {
            Err(_) => Err(Error::Timeout { seconds: self.timeout.as_secs().max(1), target: format!("GET {path}") }),
            Ok(Ok(body)) => Ok(body),
            Ok(Err(kube::Error::Api(status))) => {
                Err(Error::MetricsApi { path: path.into(), code: status.code, message: status.message.clone() })
            }
            Ok(Err(e)) => Err(Error::Source { target: format!("GET {path}"), message: error_chain(&e) }),
        }
    }
}

impl MetricProvider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn run(&self, run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = metric.provider.kubernetes.as_ref().ok_or_else(|| Error::Config {
            field: "provider.kubernetes",
            message: format!("metric {} has no kubernetes provider", metric.name),
        })?;
        let request = MetricRequest::of(&run.namespace, spec)?;
        let body = self.get(&request.path).await?;
        let value = read_answer(&request, &body)?;
        let mut taken = Taken::new(Reading::Value(value));
        taken.metadata.insert(PATH_KEY.into(), request.path);
        Ok(taken)
    }
}

/// What to ask the API server, and how to read its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricRequest {
    /// The path from the API server's root, with its query string, e.g.
    /// `/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate?labelSelector=app%3Dapi`.
    pub path: String,
    /// Whether the answer is a list by nature (every pod of a selector, the series of an external
    /// metric), so its value is an array however many items it has. A named object's value is a
    /// number.
    pub list: bool,
    /// The metric's name, for messages.
    pub metric: String,
    /// The selector as written, for messages.
    pub selector: Option<String>,
}

/// Where a kind's metrics live in the custom metrics API.
#[derive(Debug, PartialEq, Eq)]
enum Described {
    /// A namespaced resource: `namespaces/{ns}/{resource}/{name}/{metric}`.
    Namespaced(String),
    /// A Namespace itself: `namespaces/{name}/metrics/{metric}`.
    Namespace,
}

/// The kinds a metric may name, with the resource the custom metrics API knows them by. A kind
/// not listed here is written as its resource (`rollouts.stepwise.dev`).
const KINDS: &[(&str, &str)] = &[
    ("Pod", "pods"),
    ("Service", "services"),
    ("Deployment", "deployments.apps"),
    ("ReplicaSet", "replicasets.apps"),
    ("StatefulSet", "statefulsets.apps"),
    ("DaemonSet", "daemonsets.apps"),
    ("Job", "jobs.batch"),
    ("Ingress", "ingresses.networking.k8s.io"),
    ("Rollout", "rollouts.stepwise.dev"),
];

/// The place of `kind` in the custom metrics API: a known kind, `Namespace`, or a resource
/// written as such (lowercase, optionally with its group).
fn described(kind: &str) -> Result<Described, Error> {
    let kind = kind.trim();
    if kind == "Namespace" || kind == "namespaces" {
        return Ok(Described::Namespace);
    }
    if let Some((_, resource)) = KINDS.iter().find(|(k, _)| *k == kind) {
        return Ok(Described::Namespaced((*resource).to_string()));
    }
    let resource_like = !kind.is_empty()
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if resource_like {
        return Ok(Described::Namespaced(kind.to_string()));
    }
    let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).chain(["Namespace"]).collect();
    Err(Error::Config {
        field: "provider.kubernetes.objectKind",
        message: format!(
            "{kind:?} is not a kind stepwise knows ({}); write another kind as its resource, plural and \
             lowercase with its API group, e.g. rollouts.stepwise.dev",
            known.join(", ")
        ),
    })
}

/// A required field of the custom API, trimmed; its absence names the field.
fn required<'a>(value: &'a Option<String>, field: &'static str, why: &str) -> Result<&'a str, Error> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::Config { field, message: format!("required with api: custom ({why})") }),
    }
}

impl MetricRequest {
    /// The request for `spec`, measured in `namespace` (the AnalysisRun's).
    pub fn of(namespace: &str, spec: &KubernetesMetric) -> Result<MetricRequest, Error> {
        let metric_name = spec.metric_name.trim();
        if metric_name.is_empty() {
            return Err(Error::Config {
                field: "provider.kubernetes.metricName",
                message: "the metric to read is not named".into(),
            });
        }
        if namespace.is_empty() {
            return Err(Error::Config {
                field: "provider.kubernetes",
                message: "the metrics APIs are read in the AnalysisRun's namespace, and it has none".into(),
            });
        }
        let selector = spec.selector.as_deref().map(str::trim).filter(|s| !s.is_empty());
        // A URL only to borrow its encoding of path segments and query values; its host is never
        // used.
        let mut url = Url::parse("http://api-server/apis").expect("a constant URL");
        let mut list = true;
        let mut selector_param = "labelSelector";
        {
            let mut segments = url.path_segments_mut().expect("an http URL has path segments");
            match spec.api {
                KubernetesMetricApi::External => {
                    segments.extend(EXTERNAL_API.split('/')).extend(["namespaces", namespace, metric_name]);
                }
                KubernetesMetricApi::Custom => {
                    let kind = required(
                        &spec.object_kind,
                        "provider.kubernetes.objectKind",
                        "the kind of the object whose metric is read, e.g. Service",
                    )?;
                    let name = required(
                        &spec.object_name,
                        "provider.kubernetes.objectName",
                        "the object whose metric is read, or * with a selector for every matching object",
                    )?;
                    segments.extend(CUSTOM_API.split('/'));
                    match described(kind)? {
                        Described::Namespace if name == "*" => {
                            return Err(Error::Config {
                                field: "provider.kubernetes.objectName",
                                message: "* reads every object of a namespaced kind; a Namespace is read by its name"
                                    .into(),
                            });
                        }
                        Described::Namespace => {
                            segments.extend(["namespaces", name, "metrics", metric_name]);
                        }
                        Described::Namespaced(resource) => {
                            segments.extend(["namespaces", namespace, &resource, name, metric_name]);
                        }
                    }
                    // One object: the selector narrows the metric's series. Every object: the
                    // selector chooses the objects, as an HPA's pods metric does.
                    list = name == "*";
                    if !list {
                        selector_param = "metricLabelSelector";
                    }
                }
            }
        }
        if let Some(selector) = selector {
            url.query_pairs_mut().append_pair(selector_param, selector);
        }
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        Ok(MetricRequest { path, list, metric: metric_name.to_string(), selector: selector.map(str::to_string) })
    }
}

/// The value of a MetricValueList or ExternalMetricValueList answer: a number for a named
/// object's one value, an array of numbers (in the answer's order) for a list or for several
/// values; no value at all is an error that names the metric and the selector.
pub fn read_answer(request: &MetricRequest, body: &str) -> Result<Value, Error> {
    let answer: Value = serde_json::from_str(body).map_err(|_| Error::Answer {
        message: format!("the answer to GET {} is not JSON: {}", request.path, snippet(body)),
    })?;
    let items = answer.get("items").and_then(Value::as_array).ok_or_else(|| Error::Answer {
        message: format!("the answer to GET {} has no items: {}", request.path, snippet(body)),
    })?;
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        let value = match item.get("value") {
            Some(Value::String(text)) => parse_quantity(text),
            // Quantities are strings on the wire; a number is read as the number it is.
            Some(Value::Number(n)) => n.as_f64().ok_or_else(|| format!("{n} is out of range")),
            _ => Err("no value".to_string()),
        }
        .map_err(|why| Error::Answer {
            message: format!("an item of the answer to GET {} cannot be read: {why}: {}", request.path, item),
        })?;
        values.push(Value::from(value));
    }
    match values.len() {
        0 => Err(Error::NoValue {
            metric: request.metric.clone(),
            selector: request.selector.clone(),
            path: request.path.clone(),
        }),
        1 if !request.list => Ok(values.remove(0)),
        _ => Ok(Value::Array(values)),
    }
}

/// A Kubernetes quantity (`950m`, `12`, `1.5k`, `2Ki`, `1e3`, `-0.5`) as a number.
///
/// The grammar is Kubernetes' own (`resource.Quantity`): a signed decimal number, then one
/// suffix: binary `Ki Mi Gi Ti Pi Ei`, decimal `n u m k M G T P E` or none, or an exponent
/// `e3`/`E-2`. Decimal suffixes and exponents are applied in decimal, so `950m` is exactly the
/// double nearest 0.95, as a person would expect to compare it with. Whitespace and anything else
/// are refused, with the text quoted.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let refuse = |why: &str| format!("{text:?} is not a Kubernetes quantity: {why}");
    let bytes = text.as_bytes();
    let mut end = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let (mut digits, mut dot) = (0, false);
    while let Some(&b) = bytes.get(end) {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' if !dot => dot = true,
            _ => break,
        }
        end += 1;
    }
    if digits == 0 {
        return Err(refuse("it does not start with a number"));
    }
    let (number, suffix) = text.split_at(end);
    let binary = |power: i32| -> Result<f64, String> {
        // The number's digits are plain decimal; a power of two scales it exactly.
        let n: f64 = number.parse().map_err(|_| refuse("the number cannot be read"))?;
        Ok(n * 2f64.powi(power))
    };
    let decimal = |exponent: i64| -> Result<f64, String> {
        // One decimal parse of "<number>e<exponent>": rounded once, as the text means.
        format!("{number}e{exponent}").parse::<f64>().map_err(|_| refuse("the number cannot be read"))
    };
    let value = match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).unwrap_or_default();
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse(&format!("unknown suffix {suffix:?}")));
            }
            decimal(exponent.parse().map_err(|_| refuse("the exponent is out of range"))?)
        }
    }?;
    if value.is_finite() { Ok(value) } else { Err(refuse("out of range")) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(text: &str) -> f64 {
        parse_quantity(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn plain_numbers_are_read_as_written() {
        assert_eq!(q("12"), 12.0);
        assert_eq!(q("0"), 0.0);
        assert_eq!(q("0.5"), 0.5);
        assert_eq!(q("1."), 1.0);
        assert_eq!(q(".5"), 0.5);
        assert_eq!(q("+3"), 3.0);
        assert_eq!(q("-3"), -3.0);
        assert_eq!(q("-0.25"), -0.25);
    }

    #[test]
    fn decimal_suffixes_scale_by_powers_of_ten_exactly() {
        assert_eq!(q("950m"), 0.95);
        assert_eq!(q("1500m"), 1.5);
        assert_eq!(q("1m"), 0.001);
        assert_eq!(q("999500u"), 0.9995);
        assert_eq!(q("250n"), 0.000_000_25);
        assert_eq!(q("1.5k"), 1500.0);
        assert_eq!(q("2M"), 2e6);
        assert_eq!(q("3G"), 3e9);
        assert_eq!(q("4T"), 4e12);
        assert_eq!(q("5P"), 5e15);
        assert_eq!(q("1E"), 1e18);
        assert_eq!(q("-100m"), -0.1);
    }

    #[test]
    fn binary_suffixes_scale_by_powers_of_1024() {
        assert_eq!(q("2Ki"), 2048.0);
        assert_eq!(q("1.5Ki"), 1536.0);
        assert_eq!(q("1Mi"), 1_048_576.0);
        assert_eq!(q("1Gi"), 1_073_741_824.0);
        assert_eq!(q("1Ti"), 1_099_511_627_776.0);
        assert_eq!(q("1Pi"), 2f64.powi(50));
        assert_eq!(q("1Ei"), 2f64.powi(60));
    }

    #[test]
    fn exponents_are_decimal_with_either_e_and_a_sign() {
        assert_eq!(q("1e3"), 1000.0);
        assert_eq!(q("1E3"), 1000.0);
        assert_eq!(q("1.5e-3"), 0.0015);
        assert_eq!(q("2e+2"), 200.0);
        assert_eq!(q("95e-2"), 0.95);
    }

    #[test]
    fn anything_else_is_refused_quoting_the_text() {
        for bad in [
            "", "m", "-", ".", "abc", "1x", "1 m", " 1", "1 ", "1..2", "1.2.3", "1e", "1e+", "1e1.5", "1ki", "1KI",
            "1mm", "NaN", "inf", "+-1", "0x10", "1e3m", "1E999",
        ] {
            let err = parse_quantity(bad).expect_err(bad);
            assert!(err.starts_with(&format!("{bad:?} is not a Kubernetes quantity")), "{err}");
        }
    }

    fn spec(
        api: KubernetesMetricApi,
        kind: Option<&str>,
        name: Option<&str>,
        selector: Option<&str>,
    ) -> KubernetesMetric {
        KubernetesMetric {
            api,
            metric_name: "success_rate".into(),
            object_kind: kind.map(str::to_string),
            object_name: name.map(str::to_string),
            selector: selector.map(str::to_string),
        }
    }

    fn path(spec: &KubernetesMetric) -> String {
        MetricRequest::of("shop", spec).unwrap().path
    }

    #[test]
    fn a_custom_metric_of_a_kind_is_read_at_its_resource() {
        use KubernetesMetricApi::Custom;
        let base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop";
        for (kind, resource) in [
            ("Pod", "pods"),
            ("Service", "services"),
            ("Deployment", "deployments.apps"),
            ("ReplicaSet", "replicasets.apps"),
            ("StatefulSet", "statefulsets.apps"),
            ("Ingress", "ingresses.networking.k8s.io"),
            ("rollouts.stepwise.dev", "rollouts.stepwise.dev"),
            ("widgets", "widgets"),
        ] {
            assert_eq!(
                path(&spec(Custom, Some(kind), Some("api"), None)),
                format!("{base}/{resource}/api/success_rate")
            );
        }
    }

    #[test]
    fn a_namespace_is_read_at_the_root_scoped_path_by_its_name() {
        let s = spec(KubernetesMetricApi::Custom, Some("Namespace"), Some("payments"), None);
        assert_eq!(path(&s), "/apis/custom.metrics.k8s.io/v1beta2/namespaces/payments/metrics/success_rate");
    }

    #[test]
    fn a_named_objects_selector_narrows_the_metric_series() {
        let s = spec(KubernetesMetricApi::Custom, Some("Service"), Some("api"), Some("code!=500,version in (a,b)"));
        let request = MetricRequest::of("shop", &s).unwrap();
        assert_eq!(
            request.path,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/services/api/success_rate\
             ?metricLabelSelector=code%21%3D500%2Cversion+in+%28a%2Cb%29"
        );
        assert!(!request.list);
    }

    #[test]
    fn every_pod_of_a_selector_is_a_list() {
        let s = spec(KubernetesMetricApi::Custom, Some("Pod"), Some("*"), Some("app=api"));
        let request = MetricRequest::of("shop", &s).unwrap();
        assert_eq!(
            request.path,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/success_rate?labelSelector=app%3Dapi"
        );
        assert!(request.list);
    }

    #[test]
    fn an_external_metric_is_read_in_the_runs_namespace_with_its_selector() {
        let s = spec(KubernetesMetricApi::External, None, None, Some("version=canary"));
        let request = MetricRequest::of("shop", &s).unwrap();
        assert_eq!(
            request.path,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate?labelSelector=version%3Dcanary"
        );
        assert!(request.list);
        let s = spec(KubernetesMetricApi::External, None, None, Some("  "));
        assert_eq!(path(&s), "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate");
    }

    #[test]
    fn the_custom_api_without_kind_or_name_names_the_missing_field() {
        use KubernetesMetricApi::Custom;
        for (s, field) in [
            (spec(Custom, None, Some("api"), None), "provider.kubernetes.objectKind"),
            (spec(Custom, Some("Service"), None, None), "provider.kubernetes.objectName"),
            (spec(Custom, Some("Service"), Some(" "), None), "provider.kubernetes.objectName"),
            (spec(Custom, Some("Namespace"), Some("*"), None), "provider.kubernetes.objectName"),
            (spec(Custom, Some("Rollout2"), Some("api"), None), "provider.kubernetes.objectKind"),
        ] {
            match MetricRequest::of("shop", &s) {
                Err(e @ Error::Config { .. }) => assert!(e.to_string().starts_with(field), "{e}"),
                other => panic!("{s:?}: {other:?}"),
            }
        }
        let mut s = spec(KubernetesMetricApi::External, None, None, None);
        s.metric_name = String::new();
        assert!(matches!(
            MetricRequest::of("shop", &s),
            Err(Error::Config { field: "provider.kubernetes.metricName", .. })
        ));
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_kinds_known_and_the_way_out() {
        let s = spec(KubernetesMetricApi::Custom, Some("Widget"), Some("w"), None);
        let err = MetricRequest::of("shop", &s).unwrap_err().to_string();
        assert!(
            err.contains("\"Widget\"") && err.contains("Deployment") && err.contains("rollouts.stepwise.dev"),
            "{err}"
        );
    }

    fn request(list: bool) -> MetricRequest {
        MetricRequest { path: "/p".into(), list, metric: "m".into(), selector: Some("a=b".into()) }
    }

    fn items(values: &[Value]) -> String {
        let items: Vec<Value> = values.iter().map(|v| json!({"metricName": "m", "value": v})).collect();
        json!({"kind": "ExternalMetricValueList", "items": items}).to_string()
    }

    #[test]
    fn a_named_objects_one_value_is_a_number_and_a_list_is_always_an_array() {
        assert_eq!(read_answer(&request(false), &items(&[json!("950m")])).unwrap(), json!(0.95));
        assert_eq!(read_answer(&request(true), &items(&[json!("950m")])).unwrap(), json!([0.95]));
        assert_eq!(read_answer(&request(true), &items(&[json!("1"), json!("2Ki")])).unwrap(), json!([1.0, 2048.0]));
        assert_eq!(read_answer(&request(false), &items(&[json!("1"), json!("2")])).unwrap(), json!([1.0, 2.0]));
        assert_eq!(read_answer(&request(false), &items(&[json!(3)])).unwrap(), json!(3.0));
    }

    #[test]
    fn no_value_names_the_metric_and_the_selector() {
        let err = read_answer(&request(true), &items(&[])).unwrap_err();
        assert!(matches!(err, Error::NoValue { .. }), "{err:?}");
        assert_eq!(err.to_string(), "no value was returned for metric m with selector a=b (GET /p)");
    }

    #[test]
    fn an_answer_that_cannot_be_read_says_what_is_wrong() {
        for (body, expected) in [
            ("<html>", "is not JSON"),
            ("{}", "has no items"),
            (&items(&[json!("fast")]) as &str, "\"fast\" is not a Kubernetes quantity"),
            (r#"{"items":[{}]}"#, "no value"),
        ] {
            let err = read_answer(&request(true), body).unwrap_err();
            assert!(matches!(&err, Error::Answer { message } if message.contains(expected)), "{body}: {err}");
        }
    }
}
