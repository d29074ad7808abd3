//! The lab's metrics adapter: a small custom and external metrics API server, like
//! prometheus-adapter but small. The lab registers it with two APIService objects
//! (`manifests/metrics-adapter.yaml`), so the real kube-apiserver proxies
//! `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1` to it, and the real HPA
//! controller in kube-controller-manager, like stepwise's `kubernetes` metric provider, reads it
//! through the API server.
//!
//! Each metric is a rule (`adapter-rules.yaml`): an API, a resource (custom metrics), a name, and a
//! PromQL template answered by the lab's Prometheus. Everything that decides an answer is pure
//! ([`Rules`], [`selector_matchers`], [`render`], [`format_quantity`], the discovery documents,
//! [`route`]); [`Adapter`] adds Prometheus and, for pods, the Kubernetes API; [`serve`] adds TLS.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// The custom metrics API group.
pub const CUSTOM_GROUP: &str = "custom.metrics.k8s.io";
/// The one version of the custom metrics API served (the HPA and stepwise both ask for it).
pub const CUSTOM_VERSION: &str = "v1beta2";
/// The external metrics API group.
pub const EXTERNAL_GROUP: &str = "external.metrics.k8s.io";
/// The one version of the external metrics API served.
pub const EXTERNAL_VERSION: &str = "v1beta1";

/// Which of the two APIs a rule or a request belongs to.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MetricsApi {
    /// custom.metrics.k8s.io: metrics of Kubernetes objects.
    Custom,
    /// external.metrics.k8s.io: metrics of nothing in the cluster, chosen by labels.
    External,
}

impl MetricsApi {
    /// API group and version.
    pub fn group_version(self) -> (&'static str, &'static str) {
        match self {
            MetricsApi::Custom => (CUSTOM_GROUP, CUSTOM_VERSION),
            MetricsApi::External => (EXTERNAL_GROUP, EXTERNAL_VERSION),
        }
    }
}

/// A resource custom metrics may describe, with what an answer says about its objects.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Plural name, e.g. `deployments`.
    pub plural: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// `apiVersion` of the described object.
    pub api_version: &'static str,
}

impl ResourceInfo {
    /// The name requests use: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// The resources the adapter describes. An answer names its objects' kind and apiVersion, which
/// the API server does not tell the adapter, so the adapter knows them from here.
pub const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo { plural: "pods", group: "", kind: "Pod", api_version: "v1" },
    ResourceInfo { plural: "services", group: "", kind: "Service", api_version: "v1" },
    ResourceInfo { plural: "namespaces", group: "", kind: "Namespace", api_version: "v1" },
    ResourceInfo { plural: "deployments", group: "apps", kind: "Deployment", api_version: "apps/v1" },
    ResourceInfo { plural: "replicasets", group: "apps", kind: "ReplicaSet", api_version: "apps/v1" },
    ResourceInfo { plural: "statefulsets", group: "apps", kind: "StatefulSet", api_version: "apps/v1" },
    ResourceInfo {
        plural: "ingresses",
        group: "networking.k8s.io",
        kind: "Ingress",
        api_version: "networking.k8s.io/v1",
    },
    ResourceInfo { plural: "rollouts", group: "stepwise.dev", kind: "Rollout", api_version: "stepwise.dev/v1alpha1" },
];

/// The resource a request or a rule names, as `pods` or `deployments.apps` (or `deployments`).
pub fn resource_info(name: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.plural == name || r.qualified() == name)
}

/// One metric the adapter serves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The API that serves it.
    pub api: MetricsApi,
    /// Custom metrics: the resource it describes (`pods`, `services`, ...).
    #[serde(default)]
    pub resource: Option<String>,
    /// Its name.
    pub metric: String,
    /// The PromQL template: `{{namespace}}`, `{{name}}` (one object), `{{pods}}` (a regular
    /// expression matching the pods in question), `{{selector}}` (the request's selector as
    /// PromQL matchers).
    pub query: String,
}

/// The placeholders a query may hold.
pub const PLACEHOLDERS: &[&str] = &["namespace", "name", "pods", "selector"];

/// The rules file: `rules: [...]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// The rules, checked: every custom rule names a known resource (kept qualified), no external
/// rule names one, queries only use known placeholders, and no metric is served twice.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Rules from the YAML of a rules file.
    pub fn from_yaml(text: &str) -> anyhow::Result<Rules> {
        let file: RulesFile = serde_yaml::from_str(text).context("the rules file is not a list of rules")?;
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
        for mut rule in file.rules {
            let what = format!("rule {} ({:?})", rule.metric, rule.api);
            if rule.metric.is_empty() || rule.metric.contains('/') {
                bail!("{what}: a metric is named, without '/'");
            }
            match (rule.api, rule.resource.as_deref()) {
                (MetricsApi::Custom, None) => bail!("{what}: a custom metric names the resource it describes"),
                (MetricsApi::Custom, Some(resource)) => {
                    let info = resource_info(resource).with_context(|| {
                        let known: Vec<String> = RESOURCES.iter().map(ResourceInfo::qualified).collect();
                        format!("{what}: resource {resource:?} is not one of {}", known.join(", "))
                    })?;
                    rule.resource = Some(info.qualified());
                }
                (MetricsApi::External, Some(_)) => bail!("{what}: an external metric describes no resource"),
                (MetricsApi::External, None) => {}
            }
            for placeholder in placeholders(&rule.query).map_err(|e| anyhow::anyhow!("{what}: {e}"))? {
                let allowed = match rule.api {
                    MetricsApi::Custom => PLACEHOLDERS.contains(&placeholder.as_str()),
                    MetricsApi::External => ["namespace", "selector"].contains(&placeholder.as_str()),
                };
                if !allowed {
                    bail!("{what}: the query's {{{{{placeholder}}}}} means nothing here");
                }
            }
            if !seen.insert((rule.api, rule.resource.clone(), rule.metric.clone())) {
                bail!("{what}: served twice");
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    /// The rule of a custom metric of `resource` (as requested: `deployments` or
    /// `deployments.apps`).
    pub fn custom(&self, resource: &str, metric: &str) -> Option<&Rule> {
        let qualified = resource_info(resource)?.qualified();
        self.rules.iter().find(|r| {
            r.api == MetricsApi::Custom && r.resource.as_deref() == Some(qualified.as_str()) && r.metric == metric
        })
    }

    /// The rule of an external metric.
    pub fn external(&self, metric: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.api == MetricsApi::External && r.metric == metric)
    }

    /// All rules, in the file's order.
    pub fn all(&self) -> &[Rule] {
        &self.rules
    }
}

/// The placeholders of a template, in order; `{{ name }}` may hold spaces.
fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some((_, placeholder, after)) = next_placeholder(rest)? {
        found.push(placeholder.to_string());
        rest = after;
    }
    Ok(found)
}

/// The text before the next `{{placeholder}}`, its name, and the text after it. A brace right
/// before the placeholder is PromQL's: `x{{{selector}}}` is `x{` and `{{selector}}` and `}`.
fn next_placeholder(text: &str) -> Result<Option<(&str, &str, &str)>, String> {
    let Some(mut start) = text.find("{{") else { return Ok(None) };
    while text[start + 2..].starts_with('{') {
        start += 1;
    }
    let after = &text[start + 2..];
    let end = after.find("}}").ok_or_else(|| format!("an unclosed {{{{ in {text:?}"))?;
    Ok(Some((&text[..start], after[..end].trim(), &after[end + 2..])))
}

/// What a query's placeholders stand for in one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    /// The namespace asked about.
    pub namespace: String,
    /// The object's name, when one object is asked about.
    pub name: Option<String>,
    /// The pods in question (the pod asked about, a Service's pods, the pods of a selector).
    pub pods: Option<Vec<String>>,
    /// The request's selector as PromQL matchers ([`selector_matchers`]).
    pub selector: String,
}

/// The query of `template` for `values`. Text lands inside PromQL double-quoted strings, so it is
/// escaped for them; pod names are escaped as regular expressions first. An empty `{{selector}}`
/// takes a comma next to it along, so that `{a="b",{{selector}}}` stays valid.
pub fn render(template: &str, values: &Values) -> Result<String, String> {
    let mut template = template.to_string();
    if values.selector.is_empty() {
        for with_comma in [", {{selector}}", "{{selector}}, ", ",{{selector}}", "{{selector}},"] {
            template = template.replace(with_comma, "");
        }
    }
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some((before, placeholder, after)) = next_placeholder(rest)? {
        out.push_str(before);
        let value = match placeholder {
            "namespace" => promql_string(&values.namespace),
            "name" => promql_string(
                values.name.as_deref().ok_or("the query uses {{name}}, which only means something for one object")?,
            ),
            "pods" => {
                let pods = values.pods.as_ref().ok_or("the query uses {{pods}}, which has no pods here")?;
                promql_string(&pods.iter().map(|p| regex_escape(p)).collect::<Vec<_>>().join("|"))
            }
            "selector" => values.selector.clone(),
            other => return Err(format!("unknown placeholder {{{{{other}}}}}")),
        };
        out.push_str(&value);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Text as the inside of a PromQL double-quoted string.
pub fn promql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Text matched literally by a regular expression (RE2, as Prometheus uses).
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Kubernetes label selector (`a=b,c!=d,e in (x,y),f notin (z),g,!h`) as PromQL label
/// matchers (`a="b",c!="d",e=~"x|y",f!~"z",g!="",h=""`); empty for an empty selector. Label keys
/// that cannot be Prometheus label names (`app.kubernetes.io/name`) are refused: no series has them.
pub fn selector_matchers(selector: &str) -> Result<String, String> {
    let mut matchers = Vec::new();
    for term in split_terms(selector)? {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let matcher = if let Some(key) = term.strip_prefix('!') {
            format!("{}=\"\"", label_name(key)?)
        } else if let Some(open) = term.find('(') {
            let close = term.strip_suffix(')').ok_or_else(|| format!("{term:?}: a set ends with ')'"))?;
            let mut head = term[..open].split_whitespace();
            let (key, op) = (head.next().unwrap_or_default(), head.next().unwrap_or_default());
            if head.next().is_some() {
                return Err(format!("{term:?} is not `key in (values)`"));
            }
            let values: Vec<String> =
                close[open + 1..].split(',').map(|v| regex_escape(v.trim())).filter(|v| !v.is_empty()).collect();
            let regex = promql_string(&values.join("|"));
            match op {
                "in" => format!("{}=~\"{regex}\"", label_name(key)?),
                "notin" => format!("{}!~\"{regex}\"", label_name(key)?),
                _ => return Err(format!("{term:?}: {op:?} is not in or notin")),
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            format!("{}!=\"{}\"", label_name(key)?, promql_string(value.trim()))
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            format!("{}=\"{}\"", label_name(key)?, promql_string(value.trim()))
        } else {
            format!("{}!=\"\"", label_name(term)?)
        };
        matchers.push(matcher);
    }
    Ok(matchers.join(","))
}

/// The terms of a selector: split at commas outside parentheses.
fn split_terms(selector: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(|| format!("{selector:?}: a ')' without '('"))?,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{selector:?}: a '(' without ')'"));
    }
    terms.push(&selector[start..]);
    Ok(terms)
}

/// A label key that is also a Prometheus label name.
fn label_name(key: &str) -> Result<&str, String> {
    let key = key.trim();
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(key) } else { Err(format!("label {key:?} is not a Prometheus label name")) }
}

/// A number as a Kubernetes quantity, exact to the nano: `1500m`, `2`, `999500u`, `-250n`. None for
/// NaN and the infinities, which no quantity can say (a success rate with no requests is no value).
pub fn format_quantity(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    if value.abs() >= 1e15 {
        // Beyond what nanos in an i64 hold; a quantity's exponent form says it.
        return Some(format!("{value:e}"));
    }
    let nanos = (value * 1e9).round() as i64;
    Some(if nanos % 1_000_000_000 == 0 {
        format!("{}", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}m", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}u", nanos / 1_000)
    } else {
        format!("{nanos}n")
    })
}

/// `GET /apis`: both groups.
pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [api_group(MetricsApi::Custom), api_group(MetricsApi::External)],
    })
}

/// `GET /apis/<group>`.
pub fn api_group(api: MetricsApi) -> Value {
    let (group, version) = api.group_version();
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [group_version.clone()],
        "preferredVersion": group_version,
    })
}

/// `GET /apis/<group>/<version>`: every metric of the API as a resource, named as
/// prometheus-adapter names them (`pods/lab_requests_per_second`; external: the metric).
pub fn resource_list(rules: &Rules, api: MetricsApi) -> Value {
    let (group, version) = api.group_version();
    let (kind, resources): (&str, Vec<Value>) = match api {
        MetricsApi::Custom => (
            "MetricValueList",
            rules
                .all()
                .iter()
                .filter(|r| r.api == api)
                .map(|r| {
                    let resource = r.resource.as_deref().unwrap_or_default();
                    // A Namespace's metrics are not namespaced: they are read at the root.
                    let namespaced = resource != "namespaces";
                    json!({"name": format!("{resource}/{}", r.metric), "singularName": "", "namespaced": namespaced})
                })
                .collect(),
        ),
        MetricsApi::External => (
            "ExternalMetricValueList",
            rules
                .all()
                .iter()
                .filter(|r| r.api == api)
                .map(|r| json!({"name": r.metric, "singularName": "", "namespaced": true}))
                .collect(),
        ),
    };
    let resources: Vec<Value> = resources
        .into_iter()
        .map(|mut r| {
            r["kind"] = json!(kind);
            r["verbs"] = json!(["get"]);
            r
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources})
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/apis`.
    GroupList,
    /// `/apis/<group>`.
    Group(MetricsApi),
    /// `/apis/<group>/<version>`.
    Resources(MetricsApi),
    /// A custom metric: of one object, or of every object (`name` `*`) a selector matches.
    Custom {
        /// The namespace (a Namespace's own name for its metrics).
        namespace: String,
        /// The resource as requested.
        resource: String,
        /// The object's name, or `*`.
        name: String,
        /// The metric.
        metric: String,
    },
    /// An external metric.
    External {
        /// The namespace.
        namespace: String,
        /// The metric.
        metric: String,
    },
    /// Anything else.
    NotFound,
}

/// The route of a request path (without its query).
pub fn route(path: &str) -> Route {
    let segments: Vec<String> = path.trim_end_matches('/').split('/').skip(1).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let custom = (CUSTOM_GROUP, CUSTOM_VERSION);
    let external = (EXTERNAL_GROUP, EXTERNAL_VERSION);
    match segments.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["apis"] => Route::GroupList,
        ["apis", g] if *g == CUSTOM_GROUP => Route::Group(MetricsApi::Custom),
        ["apis", g] if *g == EXTERNAL_GROUP => Route::Group(MetricsApi::External),
        ["apis", g, v] if (*g, *v) == custom => Route::Resources(MetricsApi::Custom),
        ["apis", g, v] if (*g, *v) == external => Route::Resources(MetricsApi::External),
        ["apis", g, v, "namespaces", ns, "metrics", metric] if (*g, *v) == custom => Route::Custom {
            namespace: ns.to_string(),
            resource: "namespaces".into(),
            name: ns.to_string(),
            metric: metric.to_string(),
        },
        ["apis", g, v, "namespaces", ns, resource, name, metric] if (*g, *v) == custom => Route::Custom {
            namespace: ns.to_string(),
            resource: resource.to_string(),
            name: name.to_string(),
            metric: metric.to_string(),
        },
        ["apis", g, v, "namespaces", ns, metric] if (*g, *v) == external => {
            Route::External { namespace: ns.to_string(), metric: metric.to_string() }
        }
        _ => Route::NotFound,
    }
}

/// `%XX` sequences decoded; anything malformed kept as it is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request's query parameters.
fn query_params(uri: &Uri) -> BTreeMap<String, String> {
    let text = format!("https://adapter/?{}", uri.query().unwrap_or_default());
    reqwest::Url::parse(&text).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default()
}

/// An answer other than 200, as the Status object the API server's clients read.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Status reason, e.g. `NotFound`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, reason, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The Status object.
    pub fn status_object(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status.as_u16(),
        })
    }
}

/// One series of a Prometheus answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its labels, without `__name__`.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The samples of a Prometheus instant query's answer (a vector, or a scalar as one sample
/// without labels).
pub fn read_prometheus(body: &str) -> Result<Vec<Sample>, String> {
    let answer: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body:.200}"))?;
    if answer["status"] != "success" {
        return Err(format!("{}: {}", answer["errorType"].as_str().unwrap_or("error"), answer["error"]));
    }
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok()).ok_or_else(|| format!("value {v}"));
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: number(&data["result"][1])? }]),
        Some("vector") => data["result"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|series| {
                let mut labels: BTreeMap<String, String> =
                    serde_json::from_value(series["metric"].clone()).map_err(|e| format!("labels: {e}"))?;
                labels.remove("__name__");
                Ok(Sample { labels, value: number(&series["value"][1])? })
            })
            .collect(),
        other => Err(format!("result type {other:?}: the queries of the rules must give a vector or a scalar")),
    }
}

/// A custom metric's item for one object.
fn custom_item(info: &ResourceInfo, namespace: &str, name: &str, metric: &str, quantity: String, now: &Value) -> Value {
    let mut described = json!({"kind": info.kind, "name": name, "apiVersion": info.api_version});
    if info.plural != "namespaces" {
        described["namespace"] = json!(namespace);
    }
    json!({"describedObject": described, "metric": {"name": metric}, "timestamp": now, "value": quantity})
}

/// The custom metrics answer of `items`.
fn custom_list(items: Vec<Value>) -> Value {
    json!({"kind": "MetricValueList", "apiVersion": format!("{CUSTOM_GROUP}/{CUSTOM_VERSION}"), "metadata": {}, "items": items})
}

/// The external metrics answer: one item per sample with a value, with its labels.
pub fn external_list(metric: &str, samples: &[Sample], now: &Value) -> Value {
    let items: Vec<Value> = samples
        .iter()
        .filter_map(|s| {
            let value = format_quantity(s.value)?;
            Some(json!({"metricName": metric, "metricLabels": s.labels, "timestamp": now, "value": value}))
        })
        .collect();
    json!({"kind": "ExternalMetricValueList", "apiVersion": format!("{EXTERNAL_GROUP}/{EXTERNAL_VERSION}"), "metadata": {}, "items": items})
}

/// The time answers carry, as Kubernetes writes times.
fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// The adapter: the rules, the Prometheus that answers their queries, and the Kubernetes API for
/// the pods a selector or a Service stands for.
pub struct Adapter {
    rules: Rules,
    prometheus: String,
    http: reqwest::Client,
    kube: kube::Client,
}

impl Adapter {
    /// An adapter answering `rules` from the Prometheus at `prometheus` (its base URL), with pods
    /// listed through `kube`.
    pub fn new(rules: Rules, prometheus: &str, kube: kube::Client) -> anyhow::Result<Self> {
        // reqwest is built without a rustls provider; ring is the one kube uses.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        let prometheus = prometheus.trim_end_matches('/').to_string();
        reqwest::Url::parse(&prometheus).with_context(|| format!("Prometheus' address {prometheus:?} is not a URL"))?;
        Ok(Adapter { rules, prometheus, http, kube })
    }

    /// The answer to one request.
    pub async fn answer(&self, method: &Method, uri: &Uri) -> Response<Full<Bytes>> {
        let route = route(uri.path());
        if method != Method::GET {
            let refusal =
                Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} is not served"));
            return json_response(refusal.status, &refusal.status_object());
        }
        let result = match route {
            Route::Health => {
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "text/plain")
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .expect("a static response");
            }
            Route::GroupList => Ok(group_list()),
            Route::Group(api) => Ok(api_group(api)),
            Route::Resources(api) => Ok(resource_list(&self.rules, api)),
            Route::Custom { namespace, resource, name, metric } => {
                self.custom(&namespace, &resource, &name, &metric, &query_params(uri)).await
            }
            Route::External { namespace, metric } => self.external(&namespace, &metric, &query_params(uri)).await,
            Route::NotFound => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource {}", uri.path()),
            )),
        };
        match result {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(refusal) => {
                debug!(path = %uri, status = %refusal.status, message = %refusal.message, "refused");
                json_response(refusal.status, &refusal.status_object())
            }
        }
    }

    async fn custom(
        &self,
        namespace: &str,
        resource: &str,
        name: &str,
        metric: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Value, Refusal> {
        let rule = self.rules.custom(resource, metric).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the metric {metric} for {resource}"),
            )
        })?;
        let info = resource_info(resource).expect("a rule's resource is known");
        let selector = selector_matchers(params.get("metricLabelSelector").map(String::as_str).unwrap_or_default())
            .map_err(Refusal::bad_request)?;
        let uses = placeholders(&rule.query).unwrap_or_default();
        let now = now();

        if name == "*" {
            if info.plural != "pods" {
                return Err(Refusal::bad_request(format!("{resource}/*: lists are served for pods only")));
            }
            // The HPA counts every item: only pods the selector matches, each with a value.
            let label_selector = params.get("labelSelector").map(String::as_str).unwrap_or_default();
            let pods = self.pods_matching(namespace, label_selector).await?;
            if pods.is_empty() {
                return Ok(custom_list(Vec::new()));
            }
            let values = Values { namespace: namespace.into(), name: None, pods: Some(pods.clone()), selector };
            let samples = self.query(rule, &values).await?;
            let items = pods
                .iter()
                .filter_map(|pod| {
                    let sample = samples.iter().find(|s| s.labels.get("pod") == Some(pod))?;
                    Some(custom_item(info, namespace, pod, metric, format_quantity(sample.value)?, &now))
                })
                .collect();
            return Ok(custom_list(items));
        }

        let pods =
            if uses.iter().any(|p| p == "pods") { Some(self.pods_of(namespace, info, name).await?) } else { None };
        if pods.as_ref().is_some_and(Vec::is_empty) {
            return Ok(custom_list(Vec::new()));
        }
        let values = Values { namespace: namespace.into(), name: Some(name.into()), pods, selector };
        let samples = self.query(rule, &values).await?;
        let item = samples
            .first()
            .and_then(|s| format_quantity(s.value))
            .map(|quantity| custom_item(info, namespace, name, metric, quantity, &now));
        Ok(custom_list(item.into_iter().collect()))
    }

    async fn external(
        &self,
        namespace: &str,
        metric: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Value, Refusal> {
        let rule = self.rules.external(metric).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the external metric {metric}"),
            )
        })?;
        let selector = selector_matchers(params.get("labelSelector").map(String::as_str).unwrap_or_default())
            .map_err(Refusal::bad_request)?;
        let values = Values { namespace: namespace.into(), name: None, pods: None, selector };
        let samples = self.query(rule, &values).await?;
        Ok(external_list(metric, &samples, &now()))
    }

    /// The samples of `rule`'s query for `values`.
    async fn query(&self, rule: &Rule, values: &Values) -> Result<Vec<Sample>, Refusal> {
        let query = render(&rule.query, values).map_err(Refusal::bad_request)?;
        debug!(metric = rule.metric, query, "querying Prometheus");
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.prometheus))
            .map_err(|e| Refusal::internal(format!("Prometheus at {}: {e}", self.prometheus)))?;
        url.query_pairs_mut().append_pair("query", &query);
        let answer = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Refusal::internal(format!("Prometheus at {}: {e}", self.prometheus)))?;
        let body = answer.text().await.map_err(|e| Refusal::internal(format!("Prometheus' answer: {e}")))?;
        read_prometheus(&body).map_err(|e| Refusal::internal(format!("Prometheus, for {query}: {e}")))
    }

    /// The names of the pods of `namespace` that `selector` matches, sorted.
    async fn pods_matching(&self, namespace: &str, selector: &str) -> Result<Vec<String>, Refusal> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| Refusal::internal(format!("listing the pods of {namespace} ({selector}): {e}")))?;
        let mut names: Vec<String> = list.items.into_iter().filter_map(|p| p.metadata.name).collect();
        names.sort();
        Ok(names)
    }

    /// The pods one object stands for: a pod itself, a Service's selected pods.
    async fn pods_of(&self, namespace: &str, info: &ResourceInfo, name: &str) -> Result<Vec<String>, Refusal> {
        match info.plural {
            "pods" => Ok(vec![name.to_string()]),
            "services" => {
                let services: Api<Service> = Api::namespaced(self.kube.clone(), namespace);
                let service =
                    services.get_opt(name).await.map_err(|e| Refusal::internal(format!("service {name}: {e}")))?;
                let Some(selector) = service.and_then(|s| s.spec).and_then(|s| s.selector).filter(|s| !s.is_empty())
                else {
                    // No such Service, or one without a selector: no pods, so no value.
                    return Ok(Vec::new());
                };
                let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.pods_matching(namespace, &selector.join(",")).await
            }
            _ => Err(Refusal::bad_request(format!(
                "{{{{pods}}}} is known for pods and services, not {}",
                info.qualified()
            ))),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a JSON response")
}

/// A TLS configuration from PEM files: the certificate chain and its private key. No client
/// certificate is asked for: the lab's network namespace holds only the lab, and the aggregator is
/// its only client (a real adapter checks the aggregator's front-proxy certificate).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificates of {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1 only: the aggregator would otherwise try HTTP/2, which this server does not speak.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the adapter over TLS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, adapter: Arc<Adapter>) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    info!(address = %listener.local_addr()?, "serving the custom and external metrics APIs");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the next connection may fare better.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, adapter) = (acceptor.clone(), adapter.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let adapter = adapter.clone();
                async move {
                    let response = adapter.answer(request.method(), request.uri()).await;
                    debug!(method = %request.method(), uri = %request.uri(), status = %response.status(), "answered");
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = include_str!("../adapter-rules.yaml");

    fn rules() -> Rules {
        Rules::from_yaml(RULES).unwrap()
    }

    #[test]
    fn the_shipped_rules_serve_the_labs_metrics() {
        let rules = rules();
        assert!(rules.custom("pods", "lab_requests_per_second").is_some());
        assert!(rules.custom("services", "lab_success_rate").is_some());
        assert!(rules.external("lab_success_rate").is_some());
        assert!(rules.custom("pods", "lab_success_rate").is_none(), "a metric belongs to its resource");
    }

    #[test]
    fn a_rule_that_cannot_be_answered_is_refused_when_loaded() {
        for (yaml, why) in [
            ("rules: [{api: custom, metric: m, query: up}]", "names the resource"),
            ("rules: [{api: custom, resource: widgets, metric: m, query: up}]", "is not one of"),
            ("rules: [{api: external, resource: pods, metric: m, query: up}]", "describes no resource"),
            ("rules: [{api: external, metric: m, query: 'up{pod=~\"{{pods}}\"}'}]", "means nothing here"),
            ("rules: [{api: custom, resource: pods, metric: m, query: '{{podz}}'}]", "means nothing here"),
            ("rules: [{api: custom, resource: pods, metric: m, query: '{{pods'}]", "unclosed"),
            ("rules: [{api: custom, resource: pods, metric: a/b, query: up}]", "without '/'"),
            ("rules: [{api: external, metric: m, query: up}, {api: external, metric: m, query: up}]", "served twice"),
            ("rules: [{api: external, metric: m, query: up, extra: 1}]", "not a list of rules"),
        ] {
            let err = format!("{:#}", Rules::from_yaml(yaml).unwrap_err());
            assert!(err.contains(why), "{yaml}: {err}");
        }
    }

    #[test]
    fn custom_rules_match_the_resource_with_or_without_its_group() {
        let rules = Rules::from_yaml("rules: [{api: custom, resource: deployments, metric: m, query: up}]").unwrap();
        assert_eq!(rules.all()[0].resource.as_deref(), Some("deployments.apps"));
        assert!(rules.custom("deployments.apps", "m").is_some());
        assert!(rules.custom("deployments", "m").is_some());
        assert!(rules.custom("statefulsets.apps", "m").is_none());
        assert!(rules.custom("widgets", "m").is_none());
        assert!(rules.external("m").is_none());
    }

    #[test]
    fn a_selector_becomes_promql_matchers() {
        assert_eq!(selector_matchers("").unwrap(), "");
        assert_eq!(selector_matchers("version=2").unwrap(), r#"version="2""#);
        assert_eq!(selector_matchers("version==2, code!=500").unwrap(), r#"version="2",code!="500""#);
        assert_eq!(
            selector_matchers("version in (1, 2.5),code notin (500)").unwrap(),
            r#"version=~"1|2\\.5",code!~"500""#
        );
        assert_eq!(selector_matchers("pod_template_hash,!canary").unwrap(), r#"pod_template_hash!="",canary="""#);
        assert_eq!(selector_matchers("a=").unwrap(), r#"a="""#);
        assert_eq!(selector_matchers(r#"a=x"y\z"#).unwrap(), r#"a="x\"y\\z""#);
    }

    #[test]
    fn a_selector_promql_cannot_say_is_refused() {
        for (bad, why) in [
            ("app.kubernetes.io/name=x", "not a Prometheus label name"),
            ("1a=b", "not a Prometheus label name"),
            ("a in (x", "without ')'"),
            ("a in x)", "without '('"),
            ("a within (x)", "is not in or notin"),
            ("a in (x) y", "ends with ')'"),
        ] {
            let err = selector_matchers(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn placeholders_are_filled_in_escaped_for_promql_strings() {
        let values = Values {
            namespace: "shop".into(),
            name: Some(r#"a"b"#.into()),
            pods: Some(vec!["api-7d.x".into(), "api-8".into()]),
            selector: r#"version="2""#.into(),
        };
        let query = r#"x{namespace="{{namespace}}",name="{{ name }}",pod=~"{{pods}}",{{selector}}}"#;
        assert_eq!(
            render(query, &values).unwrap(),
            r#"x{namespace="shop",name="a\"b",pod=~"api-7d\\.x|api-8",version="2"}"#
        );
    }

    #[test]
    fn an_empty_selector_takes_its_comma_along() {
        let values = Values { namespace: "shop".into(), ..Default::default() };
        assert_eq!(render(r#"x{namespace="{{namespace}}",{{selector}}}"#, &values).unwrap(), r#"x{namespace="shop"}"#);
        assert_eq!(render(r#"x{{{selector}}, a="b"}"#, &values).unwrap(), r#"x{a="b"}"#);
        assert_eq!(render("x{{{selector}}}", &values).unwrap(), "x{}");
        let values = Values { selector: r#"a="b""#.into(), ..values };
        assert_eq!(render("x{{{selector}}}", &values).unwrap(), r#"x{a="b"}"#);
    }

    #[test]
    fn a_placeholder_without_a_value_here_is_an_error() {
        let values = Values { namespace: "shop".into(), ..Default::default() };
        assert!(render("{{name}}", &values).unwrap_err().contains("one object"));
        assert!(render("{{pods}}", &values).unwrap_err().contains("no pods"));
        assert!(render("{{other}}", &values).unwrap_err().contains("unknown placeholder"));
    }

    #[test]
    fn quantities_are_exact_to_the_nano_in_the_shortest_unit() {
        assert_eq!(format_quantity(1.5).as_deref(), Some("1500m"));
        assert_eq!(format_quantity(2.0).as_deref(), Some("2"));
        assert_eq!(format_quantity(0.0).as_deref(), Some("0"));
        assert_eq!(format_quantity(0.95).as_deref(), Some("950m"));
        assert_eq!(format_quantity(0.9995).as_deref(), Some("999500u"));
        assert_eq!(format_quantity(-0.00000025).as_deref(), Some("-250n"));
        assert_eq!(format_quantity(12345.678).as_deref(), Some("12345678m"));
        assert_eq!(format_quantity(1e20).as_deref(), Some("1e20"));
        assert_eq!(format_quantity(f64::NAN), None);
        assert_eq!(format_quantity(f64::INFINITY), None);
    }

    #[test]
    fn discovery_lists_each_metric_as_prometheus_adapter_names_it() {
        let custom = resource_list(&rules(), MetricsApi::Custom);
        assert_eq!(custom["groupVersion"], "custom.metrics.k8s.io/v1beta2");
        let names: Vec<&str> =
            custom["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(
            names.contains(&"pods/lab_requests_per_second") && names.contains(&"services/lab_success_rate"),
            "{names:?}"
        );
        assert!(
            custom["resources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["kind"] == "MetricValueList" && r["verbs"] == json!(["get"]))
        );

        let external = resource_list(&rules(), MetricsApi::External);
        assert_eq!(external["groupVersion"], "external.metrics.k8s.io/v1beta1");
        assert_eq!(external["resources"][0]["name"], "lab_success_rate");
        assert_eq!(external["resources"][0]["kind"], "ExternalMetricValueList");

        assert_eq!(
            api_group(MetricsApi::External)["preferredVersion"]["groupVersion"],
            "external.metrics.k8s.io/v1beta1"
        );
        assert_eq!(group_list()["groups"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn paths_route_to_discovery_objects_lists_and_external_metrics() {
        let c = "/apis/custom.metrics.k8s.io/v1beta2";
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/readyz/ping"), Route::Health);
        assert_eq!(route("/apis"), Route::GroupList);
        assert_eq!(route("/apis/custom.metrics.k8s.io"), Route::Group(MetricsApi::Custom));
        assert_eq!(route("/apis/external.metrics.k8s.io/"), Route::Group(MetricsApi::External));
        assert_eq!(route(c), Route::Resources(MetricsApi::Custom));
        let object = |resource: &str, name: &str| Route::Custom {
            namespace: "shop".into(),
            resource: resource.into(),
            name: name.into(),
            metric: "m".into(),
        };
        assert_eq!(route(&format!("{c}/namespaces/shop/services/api/m")), object("services", "api"));
        assert_eq!(route(&format!("{c}/namespaces/shop/pods/*/m")), object("pods", "*"));
        assert_eq!(route(&format!("{c}/namespaces/shop/pods/%2A/m")), object("pods", "*"));
        assert_eq!(route(&format!("{c}/namespaces/shop/metrics/m")), object("namespaces", "shop"));
        assert_eq!(
            route("/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/m"),
            Route::External { namespace: "shop".into(), metric: "m".into() }
        );
        for other in [
            "/",
            "/openapi/v2",
            "/openapi/v3",
            "/apis/custom.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/m",
        ] {
            assert_eq!(route(other), Route::NotFound, "{other}");
        }
    }

    #[test]
    fn prometheus_vectors_and_scalars_are_read_and_errors_are_told() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x","pod":"a"},"value":[1,"0.5"]},{"metric":{"pod":"b"},"value":[1,"NaN"]}]}}"#;
        let samples = read_prometheus(vector).unwrap();
        assert_eq!(samples[0], Sample { labels: BTreeMap::from([("pod".into(), "a".into())]), value: 0.5 });
        assert!(samples[1].value.is_nan());
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(read_prometheus(scalar).unwrap(), [Sample { labels: BTreeMap::new(), value: 3.0 }]);
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(read_prometheus(error).unwrap_err().contains("bad_data"));
        assert!(read_prometheus("<html>").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn an_external_answer_has_one_item_per_series_with_a_value() {
        let samples = [
            Sample { labels: BTreeMap::from([("version".into(), "2".into())]), value: 0.95 },
            Sample { labels: BTreeMap::new(), value: f64::NAN },
        ];
        let list = external_list("lab_success_rate", &samples, &json!("2026-01-01T00:00:00Z"));
        assert_eq!(list["kind"], "ExternalMetricValueList");
        assert_eq!(
            list["items"],
            json!([{"metricName": "lab_success_rate", "metricLabels": {"version": "2"}, "timestamp": "2026-01-01T00:00:00Z", "value": "950m"}])
        );
    }

    /// A fake of both the lab's Prometheus and the Kubernetes API, on 127.0.0.1: pods api-a and
    /// api-b carry `app=api` and Service `api` selects them; api-z has a series but not the label.
    /// The queries it was asked are recorded.
    async fn fake_prometheus_and_kubernetes() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = queries.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let params = query_params(request.uri());
                        let body = match request.uri().path() {
                            "/api/v1/query" => {
                                let query = params.get("query").cloned().unwrap_or_default();
                                seen.lock().unwrap().push(query.clone());
                                let series = |pod: &str, v: &str| json!({"metric": {"pod": pod}, "value": [1, v]});
                                let result = if query.contains("by (pod)") {
                                    json!([series("api-a", "1.5"), series("api-b", "2"), series("api-z", "9")])
                                } else {
                                    json!([{"metric": {}, "value": [1, "0.95"]}])
                                };
                                json!({"status": "success", "data": {"resultType": "vector", "result": result}})
                            }
                            "/api/v1/namespaces/shop/pods"
                                if params.get("labelSelector").map(String::as_str) == Some("app=api") =>
                            {
                                let pod = |name: &str| json!({"metadata": {"name": name, "namespace": "shop"}});
                                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod("api-b"), pod("api-a")]})
                            }
                            "/api/v1/namespaces/shop/services/api" => json!({
                                "kind": "Service", "apiVersion": "v1",
                                "metadata": {"name": "api", "namespace": "shop"}, "spec": {"selector": {"app": "api"}},
                            }),
                            _ => {
                                let refusal = Refusal::new(StatusCode::NOT_FOUND, "NotFound", "not here");
                                return Ok::<_, Infallible>(json_response(refusal.status, &refusal.status_object()));
                            }
                        };
                        Ok(json_response(StatusCode::OK, &body))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        (url, queries)
    }

    /// A self-signed certificate and key made by openssl, as the lab makes them.
    fn certificate() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("lab-adapter-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("adapter.crt"), dir.join("adapter.key"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lab-metrics-adapter"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl, which the lab uses to make the adapter's certificate");
        assert!(status.success(), "openssl req failed");
        (cert, key)
    }

    #[tokio::test]
    async fn over_https_the_adapter_answers_discovery_pods_of_a_selector_services_and_external_metrics() {
        let (fake, queries) = fake_prometheus_and_kubernetes().await;
        let kube = kube::Client::try_from(kube::Config::new(fake.parse().unwrap())).unwrap();
        let adapter = Arc::new(Adapter::new(rules(), &fake, kube).unwrap());
        let (cert, key) = certificate();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, tls_config(&cert, &key).unwrap(), adapter));
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let get = |path: &str| {
            let request = client.get(format!("{base}{path}"));
            async move {
                let answer = request.send().await.unwrap();
                let status = answer.status().as_u16();
                (status, answer.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let custom = "/apis/custom.metrics.k8s.io/v1beta2";
        let external = "/apis/external.metrics.k8s.io/v1beta1";

        let (status, discovery) = get(custom).await;
        assert_eq!((status, discovery["kind"].as_str()), (200, Some("APIResourceList")));
        assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status().as_u16(), 200);
        assert_eq!(client.get(format!("{base}/openapi/v2")).send().await.unwrap().status().as_u16(), 404);

        // Every pod of the selector that has a value, and no other: api-z is not in the selector.
        let (status, pods) =
            get(&format!("{custom}/namespaces/shop/pods/*/lab_requests_per_second?labelSelector=app%3Dapi")).await;
        assert_eq!(status, 200, "{pods}");
        let items: Vec<(&str, &str)> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["describedObject"]["name"].as_str().unwrap(), i["value"].as_str().unwrap()))
            .collect();
        assert_eq!(items, [("api-a", "1500m"), ("api-b", "2")]);
        assert_eq!(
            pods["items"][0]["describedObject"],
            json!({"kind": "Pod", "namespace": "shop", "name": "api-a", "apiVersion": "v1"})
        );
        assert!(
            queries.lock().unwrap().last().unwrap().contains(r#"pod=~"api-a|api-b""#),
            "{:?}",
            queries.lock().unwrap()
        );

        // A Service stands for the pods it selects.
        let (status, service) = get(&format!("{custom}/namespaces/shop/services/api/lab_success_rate")).await;
        assert_eq!((status, service["items"][0]["value"].as_str()), (200, Some("950m")), "{service}");
        assert_eq!(service["items"][0]["describedObject"]["kind"], "Service");
        assert!(queries.lock().unwrap().last().unwrap().contains(r#"pod=~"api-a|api-b""#));

        // An external metric, its selector in the query.
        let (status, rate) =
            get(&format!("{external}/namespaces/shop/lab_success_rate?labelSelector=version%3D2")).await;
        assert_eq!((status, rate["items"][0]["value"].as_str()), (200, Some("950m")), "{rate}");
        assert_eq!(rate["items"][0]["metricName"], "lab_success_rate");
        let query = queries.lock().unwrap().last().unwrap().clone();
        assert!(query.contains(r#"{namespace="shop",code!~"5..",version="2"}"#), "{query}");

        // A metric no rule serves: 404, as a Status.
        let (status, missing) = get(&format!("{external}/namespaces/shop/nothing")).await;
        assert_eq!(
            (status, missing["kind"].as_str(), missing["reason"].as_str()),
            (404, Some("Status"), Some("NotFound"))
        );
        server.abort();
    }

    #[test]
    fn refusals_are_status_objects() {
        let refusal =
            Refusal::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the metric m for pods");
        assert_eq!(
            refusal.status_object(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the metric m for pods", "reason": "NotFound", "code": 404})
        );
    }
}
