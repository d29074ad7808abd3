//! The Datadog provider: Argo Rollouts' `datadog` metric, read, sent and answered as Argo's
//! provider does, so that an Argo AnalysisTemplate measures the same value here. Single-shot.
//!
//! * `apiVersion: v1` (Argo's default): `GET /api/v1/query` with `query`, `from` and `to` (Unix
//!   seconds, the last `interval`). The value is the last point of the first series.
//! * `apiVersion: v2`: `POST /api/v2/query/scalar`, a `scalar_request` of the `queries` (or of
//!   `query`, named `query`) and the `formula`, each query reduced to one number per group by
//!   `aggregator` (default `last`). The value is the first number column: a number, or for a
//!   `by {tag}` query a list with one number per group (their names in `metadata.groups`). Argo
//!   has asked the scalar endpoint since v1.7 (v1.5 and v1.6 asked `/api/v2/query/timeseries`),
//!   which is what makes `aggregator` mean anything.
//! * No data (no series, no points, only nulls) is a null `result`, Argo's nil:
//!   `default(result, 0)` makes it a number, and a condition that compares it is an Error.
//!
//! The keys are read at each measurement, as Argo reads them: from the Secret `secretRef` names
//! (in the AnalysisRun's namespace with `namespaced: true`, else in the controller's), otherwise
//! from the controller's environment when it was given one, otherwise from the Secret `datadog`
//! in the controller's namespace. They travel only in the `DD-API-KEY` and `DD-APPLICATION-KEY`
//! headers, are never logged, and are cut out of every error text (a proxy may echo a request).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use k8s_openapi::jiff::Timestamp;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use stepwise_api::{Duration, Metric};

use crate::fields::json_number;
use crate::secrets::SecretStore;
use crate::web::{http_client, parse_url, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// Where Datadog is asked when the Secret has no `address` (Datadog's US1 site).
pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";

/// The Secret read when a metric names none, in the controller's namespace.
pub const DEFAULT_SECRET: &str = "datadog";

/// The Secret's key holding the API key, sent as `DD-API-KEY`.
pub const API_KEY: &str = "api-key";

/// The Secret's key holding the application key, sent as `DD-APPLICATION-KEY`.
pub const APP_KEY: &str = "app-key";

/// The Secret's key holding Datadog's address (another site, or a proxy); optional.
pub const ADDRESS_KEY: &str = "address";

/// The environment variables Argo reads the keys from when a metric names no Secret; all three
/// must be set (`DD_ADDRESS` may be empty).
pub const ENV_API_KEY: &str = "DD_API_KEY";
/// See [`ENV_API_KEY`].
pub const ENV_APP_KEY: &str = "DD_APP_KEY";
/// See [`ENV_API_KEY`].
pub const ENV_ADDRESS: &str = "DD_ADDRESS";

/// The window queried when the metric does not say (`interval`), as Argo's CRD default.
pub const DEFAULT_INTERVAL: StdDuration = StdDuration::from_secs(5 * 60);

/// The time a request may take when the metric does not say (`requestTimeout`), as Argo.
pub const DEFAULT_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// The reducer of a v2 query when the metric does not say (`aggregator`), as Argo.
pub const DEFAULT_AGGREGATOR: &str = "last";

/// The reducers Datadog's scalar endpoint takes (`MetricsAggregator`), Argo's enum.
pub const AGGREGATORS: [&str; 9] = ["avg", "min", "max", "sum", "last", "percentile", "mean", "l2norm", "area"];

/// Measurement metadata key of a grouped query's groups: a JSON list of `{"name", "value"}`.
pub const GROUPS_KEY: &str = "groups";

/// Measurement metadata key set to `"true"` when [`GROUPS_KEY`] lists only some groups.
pub const GROUPS_TRUNCATED_KEY: &str = "groups_truncated";

/// Groups kept in [`GROUPS_KEY`], as Argo: a status holds a few measurements of each metric, and
/// a `by {host}` query can answer thousands. The lowest and the highest half are kept, so that
/// the worst group stays in view whichever way the condition looks.
const MAX_GROUPS_IN_METADATA: usize = 100;

/// Argo's route of each API version.
const V1_ROUTE: &str = "/api/v1/query";
const V2_ROUTE: &str = "/api/v2/query/scalar";

/// The fields of Argo's `DatadogMetric`, each with the name errors give it.
const FIELDS: [(&str, &str); 8] = [
    ("apiVersion", "provider.datadog.apiVersion"),
    ("interval", "provider.datadog.interval"),
    ("query", "provider.datadog.query"),
    ("queries", "provider.datadog.queries"),
    ("formula", "provider.datadog.formula"),
    ("aggregator", "provider.datadog.aggregator"),
    ("secretRef", "provider.datadog.secretRef"),
    ("requestTimeout", "provider.datadog.requestTimeout"),
];

/// A metric's `provider.datadog`, as Argo Rollouts' `DatadogMetric`. The API keeps it as the
/// JSON the user wrote; it is read here, at each measurement, after `{{args.*}}` substitution.
/// Empty strings count as unset, as in Go.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogMetric {
    /// Datadog's API: `v1` (the default, as Argo's; Datadog deprecates it) or `v2`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The window queried, ending now (default 5m): Datadog is asked from `now - interval` to
    /// `now`. Not the time between measurements, which is the metric's own `interval`.
    #[serde(default)]
    pub interval: Option<Duration>,
    /// One Datadog query. The only form v1 takes; for v2 it is the query named `query`.
    #[serde(default)]
    pub query: Option<String>,
    /// v2 only: queries by name, the names a `formula` refers to. Not with `query`.
    #[serde(default)]
    pub queries: Option<BTreeMap<String, String>>,
    /// v2 only: a formula over the `queries` by name (`a / b`); required with several queries,
    /// since Datadog would answer a column per query in no promised order.
    #[serde(default)]
    pub formula: Option<String>,
    /// v2 only: how each query's points become one number: avg, min, max, sum, last (the
    /// default), percentile, mean, l2norm or area.
    #[serde(default)]
    pub aggregator: Option<String>,
    /// The Secret holding the keys, instead of `datadog` in the controller's namespace.
    #[serde(default)]
    pub secret_ref: Option<SecretRef>,
    /// The time Datadog has to answer (default 10s), a duration such as `30s`.
    #[serde(default)]
    pub request_timeout: Option<Duration>,
}

/// Argo's `secretRef` of a Datadog metric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name; it holds `api-key`, `app-key` and optionally `address`.
    #[serde(default)]
    pub name: Option<String>,
    /// True: the Secret is in the AnalysisRun's namespace (then `name` is required). False (the
    /// default): in the controller's namespace.
    #[serde(default)]
    pub namespaced: Option<bool>,
}

impl DatadogMetric {
    /// Reads a metric's `provider.datadog`; an error names the field that is wrong.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        let config = |field, message| Error::Config { field, message };
        let Value::Object(fields) = value else {
            return Err(config("provider.datadog", "must be an object of Argo's DatadogMetric fields".into()));
        };
        // Each field on its own first, so that the error names the one that is wrong.
        for (key, field_value) in fields {
            let Some((_, field)) = FIELDS.iter().find(|(k, _)| k == key) else {
                let known: Vec<&str> = FIELDS.iter().map(|(k, _)| *k).collect();
                return Err(config(
                    "provider.datadog",
                    format!("unknown field {key:?}; the fields are {}", known.join(", ")),
                ));
            };
            let alone = Value::Object(Map::from_iter([(key.clone(), field_value.clone())]));
            serde_json::from_value::<DatadogMetric>(alone).map_err(|e| config(field, e.to_string()))?;
        }
        serde_json::from_value(value.clone()).map_err(|e| config("provider.datadog", e.to_string()))
    }
}

/// Datadog's two query APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiVersion {
    V1,
    V2,
}

/// What to ask Datadog, checked.
#[derive(Clone, Debug, PartialEq)]
enum Ask {
    /// `GET /api/v1/query`.
    V1 { query: String },
    /// `POST /api/v2/query/scalar`.
    V2 { queries: BTreeMap<String, String>, formula: Option<String>, aggregator: String },
}

/// A Datadog metric checked as Argo checks it (`validateIncomingProps`), with its defaults.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    ask: Ask,
    /// Whole seconds, as Argo (`int64(d.Seconds())`): Datadog takes Unix seconds (v1).
    window_seconds: i64,
    timeout: StdDuration,
}

/// Unset when empty, as Go's zero string.
fn set(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}

impl Plan {
    fn from_metric(dd: &DatadogMetric) -> Result<Plan, Error> {
        let config = |field, message: &str| Error::Config { field, message: message.to_string() };
        let version = match set(&dd.api_version) {
            None | Some("v1") => ApiVersion::V1,
            Some("v2") => ApiVersion::V2,
            Some(other) => {
                return Err(Error::Config {
                    field: "provider.datadog.apiVersion",
                    message: format!("{other:?} is not a Datadog API version: use v1 (the default) or v2"),
                });
            }
        };
        let query = set(&dd.query);
        let queries = dd.queries.clone().unwrap_or_default();
        let formula = set(&dd.formula);
        let aggregator = set(&dd.aggregator);
        match (query, queries.is_empty()) {
            (None, true) => return Err(config("provider.datadog.query", "set query, or queries (v2)")),
            (Some(_), false) => return Err(config("provider.datadog.queries", "set query or queries, not both")),
            _ => {}
        }
        if version == ApiVersion::V1 && query.is_none() {
            return Err(config(
                "provider.datadog.queries",
                "apiVersion v1 only takes query; set apiVersion: v2 to use queries",
            ));
        }
        if formula.is_some() && queries.is_empty() {
            return Err(config("provider.datadog.formula", "a formula needs queries to refer to"));
        }
        if formula.is_none() && queries.len() > 1 {
            return Err(config(
                "provider.datadog.formula",
                "several queries need a formula: Datadog answers one column per query, in no promised order",
            ));
        }
        if let Some((name, _)) = queries.iter().find(|(name, q)| name.is_empty() || q.is_empty()) {
            return Err(Error::Config {
                field: "provider.datadog.queries",
                message: format!("query {name:?} is empty: each needs a name and a query"),
            });
        }
        if version == ApiVersion::V1 && aggregator.is_some() {
            return Err(config("provider.datadog.aggregator", "aggregator is only taken by apiVersion v2"));
        }
        if let Some(a) = aggregator.filter(|a| !AGGREGATORS.contains(a)) {
            return Err(Error::Config {
                field: "provider.datadog.aggregator",
                message: format!("{a:?} is not one of {}", AGGREGATORS.join(", ")),
            });
        }
        let window = match &dd.interval {
            None => DEFAULT_INTERVAL,
            Some(d) => {
                d.to_std().map_err(|e| Error::Config { field: "provider.datadog.interval", message: e.to_string() })?
            }
        };
        let window_seconds = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        if window_seconds < 1 {
            return Err(config(
                "provider.datadog.interval",
                "the window must be at least 1s: Datadog is asked from now - interval to now",
            ));
        }
        let timeout = match &dd.request_timeout {
            None => DEFAULT_TIMEOUT,
            Some(d) => d
                .to_std()
                .map_err(|e| Error::Config { field: "provider.datadog.requestTimeout", message: e.to_string() })?,
        };
        if timeout.is_zero() {
            return Err(config("provider.datadog.requestTimeout", "must be a positive duration, e.g. 30s"));
        }
        let ask = match version {
            ApiVersion::V1 => Ask::V1 { query: query.unwrap_or_default().to_string() },
            ApiVersion::V2 => {
                // As Argo: a single query is the query named `query`.
                let queries = match query {
                    Some(q) => BTreeMap::from([("query".to_string(), q.to_string())]),
                    None => queries,
                };
                Ask::V2 {
                    queries,
                    formula: formula.map(str::to_string),
                    aggregator: aggregator.unwrap_or(DEFAULT_AGGREGATOR).to_string(),
                }
            }
        };
        Ok(Plan { ask, window_seconds, timeout })
    }

    fn route(&self) -> &'static str {
        match self.ask {
            Ask::V1 { .. } => V1_ROUTE,
            Ask::V2 { .. } => V2_ROUTE,
        }
    }
}

/// The keys and address a measurement is sent with. Its `Debug` shows neither key.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    api_key: String,
    app_key: String,
    /// Empty: [`DEFAULT_ADDRESS`].
    address: String,
    /// Where they were read, for messages: `Secret ns/name` or `the environment`.
    origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("address", &self.address)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `text` with both keys replaced by `*****`.
    fn redact(&self, text: String) -> String {
        let mut keys = [self.api_key.as_str(), self.app_key.as_str()];
        // Longest first, so that a key containing the other is replaced whole.
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        keys.iter().filter(|k| !k.is_empty()).fold(text, |text, key| text.replace(key, "*****"))
    }

    fn redact_error(&self, error: Error) -> Error {
        match error {
            Error::Source { target, message } => {
                Error::Source { target: self.redact(target), message: self.redact(message) }
            }
            Error::Answer { message } => Error::Answer { message: self.redact(message) },
            Error::Config { field, message } => Error::Config { field, message: self.redact(message) },
            Error::Timeout { seconds, target } => Error::Timeout { seconds, target: self.redact(target) },
            other => other,
        }
    }

    /// Datadog's base URL: the address without a trailing slash (a proxy's path is kept).
    fn base(&self) -> Result<String, Error> {
        let address = if self.address.trim().is_empty() { DEFAULT_ADDRESS } else { self.address.trim() };
        parse_url(address)
            .map_err(|message| Error::Source { target: format!("the address of {}", self.origin), message })?;
        Ok(address.trim_end_matches('/').to_string())
    }
}

/// Measures with Datadog's query APIs.
pub struct DatadogProvider {
    secrets: Arc<dyn SecretStore>,
    /// Where the Secret `datadog`, and a `secretRef` without `namespaced`, are read.
    controller_namespace: String,
    /// The keys of the controller's environment, when it was given them
    /// ([`DatadogProvider::with_environment`]).
    environment: Option<Credentials>,
    http: Result<reqwest::Client, String>,
}

impl std::fmt::Debug for DatadogProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatadogProvider")
            .field("controller_namespace", &self.controller_namespace)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl DatadogProvider {
    /// A provider reading keys through `secrets`: the Secret `datadog` in `controller_namespace`
    /// unless a metric names another.
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new(secrets: Arc<dyn SecretStore>, controller_namespace: impl Into<String>) -> Self {
        DatadogProvider {
            secrets,
            controller_namespace: controller_namespace.into(),
            environment: None,
            http: http_client(false),
        }
    }

    /// Also reads keys from the environment, as Argo does for metrics that name no Secret
    /// (before the Secret `datadog`): `DD_API_KEY`, `DD_APP_KEY` and `DD_ADDRESS`, all three set,
    /// looked up with `lookup` (`|name| std::env::var(name).ok()` in the controller).
    pub fn with_environment(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        self.environment = match (lookup(ENV_API_KEY), lookup(ENV_APP_KEY), lookup(ENV_ADDRESS)) {
            (Some(api_key), Some(app_key), Some(address)) if !api_key.is_empty() && !app_key.is_empty() => {
                Some(Credentials { api_key, app_key, address, origin: "the controller's environment".into() })
            }
            _ => None,
        };
        self
    }

    /// The keys for a metric, found as Argo finds them (`findCredentials`), or an error naming
    /// the Secret and what it lacks.
    async fn credentials(&self, run: &RunRef, secret_ref: Option<&SecretRef>) -> Result<Credentials, Error> {
        let name = secret_ref.and_then(|r| set(&r.name));
        let namespaced = secret_ref.and_then(|r| r.namespaced).unwrap_or(false);
        if namespaced && name.is_none() {
            return Err(Error::Config {
                field: "provider.datadog.secretRef.name",
                message: "required with namespaced: true (the Secret is read in the AnalysisRun's namespace)".into(),
            });
        }
        match name {
            Some(name) => {
                let (namespace, place) = if namespaced {
                    (run.namespace.as_str(), "the AnalysisRun's namespace")
                } else {
                    (self.controller_namespace.as_str(), "the controller's namespace")
                };
                self.read_secret(namespace, name).await?.map_err(|missing| Error::Config {
                    field: "provider.datadog.secretRef",
                    message: format!("{missing} (secretRef is read in {place})"),
                })
            }
            None => {
                if let Some(env) = &self.environment {
                    return Ok(env.clone());
                }
                self.read_secret(&self.controller_namespace, DEFAULT_SECRET).await?.map_err(|missing| Error::Source {
                    target: "Datadog credentials".into(),
                    message: format!(
                        "{missing}; create it in the controller's namespace, or name another with \
                             provider.datadog.secretRef"
                    ),
                })
            }
        }
    }

    /// The Secret's keys; Ok(Err(what is missing)) when there is no such Secret or it lacks a key.
    async fn read_secret(&self, namespace: &str, name: &str) -> Result<Result<Credentials, String>, Error> {
        let Some(data) = self.secrets.get(namespace, name).await? else {
            return Ok(Err(format!(
                "Secret {namespace}/{name} was not found; it must hold the keys {API_KEY} and {APP_KEY} \
                 (and optionally {ADDRESS_KEY})"
            )));
        };
        let value = |key: &str| data.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let missing: Vec<&str> = [API_KEY, APP_KEY].into_iter().filter(|k| value(k).is_none()).collect();
        if !missing.is_empty() {
            return Ok(Err(format!(
                "Secret {namespace}/{name} has no {} (it needs both {API_KEY} and {APP_KEY})",
                missing.join(" and ")
            )));
        }
        Ok(Ok(Credentials {
            api_key: value(API_KEY).unwrap_or_default(),
            app_key: value(APP_KEY).unwrap_or_default(),
            address: value(ADDRESS_KEY).unwrap_or_default(),
            origin: format!("Secret {namespace}/{name}"),
        }))
    }

    async fn measure(&self, plan: &Plan, credentials: &Credentials) -> Result<Taken, Error> {
        let http = self
            .http
            .as_ref()
            .map_err(|message| Error::Source { target: "Datadog".into(), message: message.clone() })?;
        let base = credentials.base()?;
        let endpoint = format!("{base}{}", plan.route());
        let to = Timestamp::now().as_second();
        let from = to - plan.window_seconds;
        let mut url = Url::parse(&endpoint).map_err(|e| Error::Source {
            target: format!("the address of {}", credentials.origin),
            message: e.to_string(),
        })?;
        let (method, body) = match &plan.ask {
            Ask::V1 { query } => {
                url.query_pairs_mut()
                    .append_pair("query", query)
                    .append_pair("from", &from.to_string())
                    .append_pair("to", &to.to_string());
                (Method::GET, None)
            }
            Ask::V2 { queries, formula, aggregator } => {
                (Method::POST, Some(v2_body(queries, formula.as_deref(), aggregator, from, to)))
            }
        };
        // The target never shows the query string: it is the query, not needed to say where.
        let target = format!("Datadog {method} {endpoint}");
        let headers = key_headers(credentials)?;
        tracing::debug!(%target, from, to, origin = %credentials.origin, "querying Datadog");

        let mut request = http.request(method, url).headers(headers);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            Ok::<_, reqwest::Error>((status, headers, response.text().await?))
        };
        let (status, headers, text) = match tokio::time::timeout(plan.timeout, exchange).await {
            Err(_) => return Err(Error::Timeout { seconds: plan.timeout.as_secs().max(1), target }),
            Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        if status != StatusCode::OK {
            return Err(Error::Source { target, message: refusal(status, &headers, &text, &credentials.origin) });
        }
        let answer = match plan.ask {
            Ask::V1 { .. } => read_v1(&text),
            Ask::V2 { .. } => read_v2(&text),
        };
        let (value, metadata) = answer.map_err(|e| match e {
            Refused::Datadog(message) => Error::Source { target: target.clone(), message },
            Refused::Unreadable(message) => Error::Answer { message: format!("the answer of {target}: {message}") },
        })?;
        Ok(Taken { reading: Reading::Value(value), metadata })
    }
}

impl MetricProvider for DatadogProvider {
    fn kind(&self) -> &'static str {
        "datadog"
    }

    async fn run(&self, run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let raw = metric.provider.datadog.as_ref().ok_or_else(|| Error::Config {
            field: "provider.datadog",
            message: format!("metric {} has no datadog provider", metric.name),
        })?;
        let dd = DatadogMetric::from_json(raw)?;
        let plan = Plan::from_metric(&dd)?;
        if matches!(plan.ask, Ask::V1 { .. }) {
            warn_v1_once();
        }
        let credentials = self.credentials(run, dd.secret_ref.as_ref()).await?;
        self.measure(&plan, &credentials).await.map_err(|e| credentials.redact_error(e))
    }
}

/// Argo warns at each v1 measurement that Datadog deprecates v1; once per process is enough.
fn warn_v1_once() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("a Datadog metric uses apiVersion v1, which Datadog deprecates; consider apiVersion: v2");
    }
}

/// The headers carrying the keys, marked sensitive so that no debug output shows them.
fn key_headers(credentials: &Credentials) -> Result<HeaderMap, Error> {
    let header = |value: &str, key: &str| {
        let mut value = HeaderValue::from_str(value).map_err(|_| Error::Source {
            target: "Datadog credentials".into(),
            // The value is not quoted: it is a key.
            message: format!("the {key} of {} is not a valid HTTP header value", credentials.origin),
        })?;
        value.set_sensitive(true);
        Ok::<_, Error>(value)
    };
    let mut headers = HeaderMap::new();
    headers.insert("DD-API-KEY", header(&credentials.api_key, API_KEY)?);
    headers.insert("DD-APPLICATION-KEY", header(&credentials.app_key, APP_KEY)?);
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// Argo's v2 body: a `scalar_request` from `from` to `to` (milliseconds), each query a metrics
/// query reduced by `aggregator`, the formula if any (an empty list otherwise, as Argo sends).
fn v2_body(queries: &BTreeMap<String, String>, formula: Option<&str>, aggregator: &str, from: i64, to: i64) -> Value {
    let queries: Vec<Value> = queries
        .iter()
        .map(|(name, query)| json!({"aggregator": aggregator, "data_source": "metrics", "name": name, "query": query}))
        .collect();
    let formulas: Vec<Value> = formula.map(|f| json!({"formula": f})).into_iter().collect();
    json!({
        "data": {
            "type": "scalar_request",
            "attributes": {
                "from": from.saturating_mul(1000),
                "to": to.saturating_mul(1000),
                "queries": queries,
                "formulas": formulas,
            }
        }
    })
}

/// Why an answer of 200 is not a value.
#[derive(Debug, PartialEq)]
enum Refused {
    /// Datadog said the query failed.
    Datadog(String),
    /// The answer is not what Datadog's API describes.
    Unreadable(String),
}

/// The message of an answer other than 200: Datadog's `errors`, what the status means, and for a
/// 429 the rate limit and when it resets (Datadog's `X-RateLimit-*` headers).
fn refusal(status: StatusCode, headers: &HeaderMap, body: &str, origin: &str) -> String {
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let said = datadog_errors(body).unwrap_or_else(|| snippet(body));
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let header =
                |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
            let mut limit = String::from("rate limited by Datadog");
            if let Some(name) = header("x-ratelimit-name") {
                limit.push_str(&format!(" on {name}"));
            }
            match (header("x-ratelimit-limit"), header("x-ratelimit-period")) {
                (Some(n), Some(p)) => limit.push_str(&format!(" ({n} requests per {p} s)")),
                (Some(n), None) => limit.push_str(&format!(" ({n} requests per period)")),
                _ => {}
            }
            match header("x-ratelimit-reset") {
                Some(reset) => limit.push_str(&format!("; the limit resets in {reset} s")),
                None => limit.push_str("; no X-RateLimit-Reset said when the limit resets"),
            }
            format!("{status_text}: {limit}: {said}")
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "{status_text}: Datadog refused the keys of {origin} (check its {API_KEY} and {APP_KEY}, and that \
             the application key may query timeseries): {said}"
        ),
        _ => format!("{status_text}: {said}"),
    }
}

/// Datadog's error texts: `{"errors": ["…"]}` (or JSON:API error objects), joined by `; `.
fn datadog_errors(body: &str) -> Option<String> {
    let document: Value = serde_json::from_str(body).ok()?;
    let texts: Vec<String> = match document.get("errors")? {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                Value::Object(o) => {
                    let part = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
                    match (part("title"), part("detail")) {
                        (Some(t), Some(d)) => format!("{t}: {d}"),
                        (Some(t), None) => t.to_string(),
                        (None, Some(d)) => d.to_string(),
                        (None, None) => item.to_string(),
                    }
                }
                other => other.to_string(),
            })
            .collect(),
        _ => return None,
    };
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// What `GET /api/v1/query` answers (`MetricsQueryResponse`), the parts read.
#[derive(Deserialize)]
struct V1Answer {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    series: Option<Vec<V1Series>>,
}

#[derive(Deserialize)]
struct V1Series {
    #[serde(default)]
    pointlist: Option<Vec<Vec<Value>>>,
}

/// The value of a v1 answer: as Argo, the last point of the first series; null without one.
fn read_v1(body: &str) -> Result<(Value, BTreeMap<String, String>), Refused> {
    let answer: V1Answer = serde_json::from_str(body)
        .map_err(|e| Refused::Unreadable(format!("not Datadog's query answer ({e}): {}", snippet(body))))?;
    // Argo ignores this; a query Datadog could not run is an error, not an empty result.
    if answer.status.as_deref() == Some("error") {
        return Err(Refused::Datadog(answer.error.unwrap_or_else(|| "status error without a message".into())));
    }
    let last = answer.series.unwrap_or_default().into_iter().next().and_then(|s| s.pointlist.unwrap_or_default().pop());
    let Some(point) = last else { return Ok((Value::Null, BTreeMap::new())) };
    let [_, value] = point.as_slice() else {
        return Err(Refused::Unreadable(format!("a point has {} values, not [time, value]", point.len())));
    };
    let value = match value {
        // Datadog's points are nullable: a last bucket without data is no data (Argo's Go
        // decoding would read 0 there).
        Value::Null => Value::Null,
        Value::Number(n) => json_number(n.as_f64().unwrap_or(f64::NAN)),
        other => return Err(Refused::Unreadable(format!("the point value {other} is not a number"))),
    };
    Ok((value, BTreeMap::new()))
}

/// What `POST /api/v2/query/scalar` answers (`ScalarFormulaQueryResponse`), the parts read.
#[derive(Deserialize)]
struct V2Answer {
    #[serde(default)]
    data: Option<V2Data>,
    /// Where Datadog's specification puts a failed query's error.
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct V2Data {
    #[serde(default)]
    attributes: Option<V2Attributes>,
    /// Where Argo reads it.
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct V2Attributes {
    #[serde(default)]
    columns: Vec<V2Column>,
}

/// A column: numbers of a formula or query (`type: number`; Argo takes a column without a type
/// as one), or a tag's values per group (`type: group`).
#[derive(Deserialize)]
struct V2Column {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    values: Vec<Value>,
}

/// The value of a v2 answer, as Argo's `parseResponseV2`: the first number column, nulls (no
/// data for a group) left out; a number, or with group columns a list and the groups' names.
fn read_v2(body: &str) -> Result<(Value, BTreeMap<String, String>), Refused> {
    let answer: V2Answer = serde_json::from_str(body)
        .map_err(|e| Refused::Unreadable(format!("not Datadog's scalar answer ({e}): {}", snippet(body))))?;
    let data_errors = answer.data.as_ref().and_then(|d| d.errors.clone());
    for errors in [answer.errors, data_errors].into_iter().flatten() {
        let text = match &errors {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s.clone(),
            other => datadog_errors(&json!({"errors": other}).to_string()).unwrap_or_else(|| other.to_string()),
        };
        return Err(Refused::Datadog(format!("there were errors in the query: {text}")));
    }
    let columns = answer.data.and_then(|d| d.attributes).map(|a| a.columns).unwrap_or_default();
    let numbers = columns.iter().find(|c| matches!(c.kind.as_deref(), None | Some("") | Some("number")));
    let groups: Vec<&V2Column> = columns.iter().filter(|c| c.kind.as_deref() == Some("group")).collect();
    let grouped = !groups.is_empty();
    let Some(numbers) = numbers else { return Ok((Value::Null, BTreeMap::new())) };

    let mut values = Vec::new();
    let mut named = Vec::new();
    for (i, raw) in numbers.values.iter().enumerate() {
        let value = match raw {
            Value::Null => continue,
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => {
                return Err(Refused::Unreadable(format!(
                    "the value {other} in column {:?} is not a number",
                    numbers.name.as_deref().unwrap_or_default()
                )));
            }
        };
        values.push(value);
        if grouped {
            let name = group_name(&groups, i)
                .ok_or_else(|| Refused::Unreadable(format!("the group of value {i} cannot be read")))?;
            named.push((name, value));
        }
    }
    if values.is_empty() {
        return Ok((Value::Null, BTreeMap::new()));
    }
    if !grouped {
        return Ok((json_number(values[0]), BTreeMap::new()));
    }
    let mut metadata = BTreeMap::new();
    let (shown, truncated) = groups_metadata(named);
    metadata.insert(GROUPS_KEY.to_string(), shown);
    if truncated {
        metadata.insert(GROUPS_TRUNCATED_KEY.to_string(), "true".to_string());
    }
    Ok((Value::Array(values.into_iter().map(json_number).collect()), metadata))
}

/// The name of group `i`: each group column's tags for it, joined by `,` across columns
/// (`by {region, host}` is `us-east,host-a`). None when a column has no non-empty list there.
fn group_name(groups: &[&V2Column], i: usize) -> Option<String> {
    let mut parts = Vec::new();
    for column in groups {
        let tags = column.values.get(i)?.as_array().filter(|tags| !tags.is_empty())?;
        for tag in tags {
            parts.push(tag.as_str()?.to_string());
        }
    }
    Some(parts.join(","))
}

/// The groups as JSON for `metadata.groups`, and whether some were left out (at most
/// [`MAX_GROUPS_IN_METADATA`]: the lowest and the highest half by value).
fn groups_metadata(mut groups: Vec<(String, f64)>) -> (String, bool) {
    let truncated = groups.len() > MAX_GROUPS_IN_METADATA;
    if truncated {
        groups.sort_by(|a, b| a.1.total_cmp(&b.1));
        let low = MAX_GROUPS_IN_METADATA / 2;
        let high = MAX_GROUPS_IN_METADATA - low;
        let top = groups.split_off(groups.len() - high);
        groups.truncate(low);
        groups.extend(top);
    }
    let list: Vec<Value> =
        groups.into_iter().map(|(name, value)| json!({"name": name, "value": json_number(value)})).collect();
    (Value::Array(list).to_string(), truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::FixedSecrets;

    fn parse(value: Value) -> Result<Plan, Error> {
        Plan::from_metric(&DatadogMetric::from_json(&value)?)
    }

    fn field_of(value: Value) -> &'static str {
        match parse(value) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_argos_v1_a_five_minute_window_and_ten_seconds() {
        let plan = parse(json!({"query": "avg:system.cpu.user{*}"})).unwrap();
        assert_eq!(plan.ask, Ask::V1 { query: "avg:system.cpu.user{*}".into() });
        assert_eq!((plan.window_seconds, plan.timeout), (300, StdDuration::from_secs(10)));
        assert_eq!(plan.route(), "/api/v1/query");
    }

    #[test]
    fn v2_names_a_single_query_query_and_aggregates_with_last() {
        let plan = parse(json!({"apiVersion": "v2", "interval": "10m", "query": "sum:x{*}"})).unwrap();
        let queries = BTreeMap::from([("query".to_string(), "sum:x{*}".to_string())]);
        assert_eq!(plan.ask, Ask::V2 { queries, formula: None, aggregator: "last".into() });
        assert_eq!(plan.window_seconds, 600);
        assert_eq!(plan.route(), "/api/v2/query/scalar");
    }

    #[test]
    fn every_rule_of_argos_validation_names_its_field() {
        let v2 = |extra: Value| {
            let mut base = json!({"apiVersion": "v2"});
            base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            base
        };
        assert_eq!(field_of(json!({})), "provider.datadog.query");
        assert_eq!(field_of(v2(json!({"query": "a", "queries": {"a": "b"}}))), "provider.datadog.queries");
        assert_eq!(field_of(json!({"queries": {"a": "x"}})), "provider.datadog.queries");
        assert_eq!(field_of(v2(json!({"query": "q", "formula": "a"}))), "provider.datadog.formula");
        assert_eq!(field_of(v2(json!({"queries": {"a": "x", "b": "y"}}))), "provider.datadog.formula");
        assert_eq!(field_of(v2(json!({"queries": {"a": ""}}))), "provider.datadog.queries");
        assert_eq!(field_of(json!({"query": "q", "aggregator": "sum"})), "provider.datadog.aggregator");
        assert_eq!(field_of(v2(json!({"query": "q", "aggregator": "median"}))), "provider.datadog.aggregator");
        assert_eq!(field_of(json!({"apiVersion": "v3", "query": "q"})), "provider.datadog.apiVersion");
        assert_eq!(field_of(json!({"query": "q", "interval": "5 minutes"})), "provider.datadog.interval");
        assert_eq!(field_of(json!({"query": "q", "interval": "0s"})), "provider.datadog.interval");
        assert_eq!(field_of(json!({"query": "q", "requestTimeout": "0s"})), "provider.datadog.requestTimeout");
        assert_eq!(field_of(json!({"query": "q", "requestTimeout": "soon"})), "provider.datadog.requestTimeout");
        assert_eq!(field_of(json!({"query": 3})), "provider.datadog.query");
        assert_eq!(
            field_of(json!({"query": "q", "secretRef": {"name": "s", "namespace": "x"}})),
            "provider.datadog.secretRef"
        );
        assert_eq!(field_of(json!({"querys": "q"})), "provider.datadog");
        assert_eq!(field_of(json!("avg:x{*}")), "provider.datadog");
        // Empty strings are unset, as in Go: a v2 metric with `query: ""` and queries is fine.
        let plan = parse(v2(json!({"query": "", "aggregator": "", "queries": {"a": "x"}}))).unwrap();
        assert!(matches!(plan.ask, Ask::V2 { ref aggregator, .. } if aggregator == "last"));
    }

    #[test]
    fn an_unknown_field_is_named_with_the_known_ones() {
        let err = parse(json!({"query": "q", "window": "5m"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "provider.datadog: unknown field \"window\"; the fields are apiVersion, interval, query, queries, \
             formula, aggregator, secretRef, requestTimeout"
        );
    }

    #[test]
    fn the_v2_body_is_a_scalar_request_in_milliseconds() {
        let queries = BTreeMap::from([("a".to_string(), "sum:e{*}".to_string()), ("b".to_string(), "sum:r{*}".into())]);
        let body = v2_body(&queries, Some("a / b"), "sum", 100, 400);
        assert_eq!(
            body,
            json!({"data": {"type": "scalar_request", "attributes": {
                "from": 100_000, "to": 400_000,
                "queries": [
                    {"aggregator": "sum", "data_source": "metrics", "name": "a", "query": "sum:e{*}"},
                    {"aggregator": "sum", "data_source": "metrics", "name": "b", "query": "sum:r{*}"}
                ],
                "formulas": [{"formula": "a / b"}]
            }}})
        );
        let body = v2_body(&queries, None, "last", 1, 2);
        assert_eq!(body["data"]["attributes"]["formulas"], json!([]));
    }

    #[test]
    fn v1_takes_the_last_point_of_the_first_series() {
        let body = r#"{"status":"ok","series":[
            {"pointlist":[[1598867910000,0.002],[1598867925000,0.0003332881882246533]]},
            {"pointlist":[[1598867910000,9.0]]}]}"#;
        assert_eq!(read_v1(body).unwrap().0, json!(0.0003332881882246533));
    }

    #[test]
    fn v1_without_series_points_or_a_value_is_null() {
        assert_eq!(read_v1(r#"{"status":"ok","series":[]}"#).unwrap().0, Value::Null);
        assert_eq!(read_v1(r#"{"status":"ok","series":[{"pointlist":[]}]}"#).unwrap().0, Value::Null);
        assert_eq!(read_v1(r#"{"status":"ok"}"#).unwrap().0, Value::Null);
        assert_eq!(read_v1(r#"{"series":[{"pointlist":[[1,0.5],[2,null]]}]}"#).unwrap().0, Value::Null);
    }

    #[test]
    fn v1_refuses_what_it_cannot_read_and_an_error_status() {
        assert!(matches!(read_v1(r#"{"series":"invalid"}"#), Err(Refused::Unreadable(_))));
        let Err(Refused::Unreadable(m)) = read_v1(r#"{"series":[{"pointlist":[[1,2,3]]}]}"#) else { panic!() };
        assert_eq!(m, "a point has 3 values, not [time, value]");
        assert!(matches!(read_v1(r#"{"series":[{"pointlist":[[1,"x"]]}]}"#), Err(Refused::Unreadable(_))));
        assert_eq!(
            read_v1(
                r#"{"status":"error","error":"Error parsing query: unable to parse avg:: Rule 'scope_expr' didn't match"}"#
            ),
            Err(Refused::Datadog("Error parsing query: unable to parse avg:: Rule 'scope_expr' didn't match".into()))
        );
    }

    #[test]
    fn v2_takes_the_first_number_column_and_skips_nulls() {
        let one = r#"{"data":{"type":"scalar_response","attributes":{"columns":[
            {"name":"a","type":"number","values":[0.0006332881882246533],"meta":{"unit":null}}]}}}"#;
        assert_eq!(read_v2(one).unwrap(), (json!(0.0006332881882246533), BTreeMap::new()));
        // Argo's legacy shape, a column without a type.
        assert_eq!(read_v2(r#"{"data":{"attributes":{"columns":[{"values":[0.5]}]}}}"#).unwrap().0, json!(0.5));
        assert_eq!(read_v2(r#"{"data":{"attributes":{"columns":[{"values":[null, 0.7]}]}}}"#).unwrap().0, json!(0.7));
    }

    #[test]
    fn v2_without_values_is_null() {
        for body in [
            r#"{"data":{"attributes":{"columns":[{"values":[]}]}}}"#,
            r#"{"data":{"attributes":{"columns":[{"type":"number","values":[null]}]}}}"#,
            r#"{"data":{"attributes":{"columns":[]}}}"#,
            r#"{"data":{"type":"scalar_response"}}"#,
        ] {
            assert_eq!(read_v2(body).unwrap(), (Value::Null, BTreeMap::new()), "{body}");
        }
    }

    #[test]
    fn v2_grouped_is_a_list_with_the_groups_in_metadata() {
        let body = r#"{"data":{"attributes":{"columns":[
            {"name":"env","type":"group","values":[["prod"],["prod"],["prod"]]},
            {"name":"resource_name","type":"group","values":[["GET /a"],["GET /b"],["GET /c"]]},
            {"name":"query1","type":"number","values":[0.01,null,0.09]}]}}}"#;
        let (value, metadata) = read_v2(body).unwrap();
        assert_eq!(value, json!([0.01, 0.09]));
        let groups: Value = serde_json::from_str(&metadata[GROUPS_KEY]).unwrap();
        assert_eq!(groups, json!([{"name": "prod,GET /a", "value": 0.01}, {"name": "prod,GET /c", "value": 0.09}]));
        assert!(!metadata.contains_key(GROUPS_TRUNCATED_KEY));
        // One group is still a list, so that `max(result)`-style conditions keep working.
        let one = r#"{"data":{"attributes":{"columns":[
            {"name":"r","type":"group","values":[["a"]]},{"name":"q","type":"number","values":[3]}]}}}"#;
        assert_eq!(read_v2(one).unwrap().0, json!([3.0]));
    }

    #[test]
    fn v2_refuses_unreadable_values_and_groups_and_reports_query_errors() {
        let bad_value = r#"{"data":{"attributes":{"columns":[{"name":"query1","type":"number","values":["oops"]}]}}}"#;
        let Err(Refused::Unreadable(m)) = read_v2(bad_value) else { panic!() };
        assert_eq!(m, r#"the value "oops" in column "query1" is not a number"#);
        let bad_group = r#"{"data":{"attributes":{"columns":[
            {"type":"group","values":[["a"],"not-an-array"]},{"type":"number","values":[1,2]}]}}}"#;
        let Err(Refused::Unreadable(m)) = read_v2(bad_group) else { panic!() };
        assert_eq!(m, "the group of value 1 cannot be read");
        assert!(matches!(
            read_v2(r#"{"data":{"attributes":{"columns":[{"values":"invalid"}]}}}"#),
            Err(Refused::Unreadable(_))
        ));
        let expected = Err(Refused::Datadog(
            "there were errors in the query: query exceeded the maximum allowed time range".into(),
        ));
        assert_eq!(read_v2(r#"{"data":{"errors":"query exceeded the maximum allowed time range"}}"#), expected);
        assert_eq!(read_v2(r#"{"errors":"query exceeded the maximum allowed time range"}"#), expected);
    }

    #[test]
    fn many_groups_keep_the_lowest_and_highest_fifty_in_metadata() {
        let groups: Vec<(String, f64)> = (0..250).map(|i| (format!("host-{i}"), f64::from(i))).collect();
        let (text, truncated) = groups_metadata(groups);
        assert!(truncated);
        let shown: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(shown.len(), 100);
        assert_eq!((shown[0]["value"].clone(), shown[49]["value"].clone()), (json!(0.0), json!(49.0)));
        assert_eq!((shown[50]["value"].clone(), shown[99]["value"].clone()), (json!(200.0), json!(249.0)));
    }

    #[test]
    fn a_rate_limit_says_which_limit_and_when_it_resets() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-period", "60"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "17"),
            ("x-ratelimit-name", "query_scalar_public"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        let text =
            refusal(StatusCode::TOO_MANY_REQUESTS, &headers, r#"{"errors":["Too many requests"]}"#, "Secret a/b");
        assert_eq!(
            text,
            "HTTP 429 Too Many Requests: rate limited by Datadog on query_scalar_public (100 requests per 60 s); \
             the limit resets in 17 s: Too many requests"
        );
        let bare = refusal(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "slow down", "Secret a/b");
        assert!(bare.contains("rate limited by Datadog; no X-RateLimit-Reset"), "{bare}");
    }

    #[test]
    fn other_refusals_keep_datadogs_errors() {
        let h = HeaderMap::new();
        assert_eq!(
            refusal(StatusCode::FORBIDDEN, &h, r#"{"errors":["Forbidden"]}"#, "Secret ns/datadog"),
            "HTTP 403 Forbidden: Datadog refused the keys of Secret ns/datadog (check its api-key and app-key, \
             and that the application key may query timeseries): Forbidden"
        );
        assert_eq!(
            refusal(StatusCode::BAD_REQUEST, &h, r#"{"errors":["Invalid query input","second"]}"#, "x"),
            "HTTP 400 Bad Request: Invalid query input; second"
        );
        assert_eq!(
            refusal(
                StatusCode::BAD_REQUEST,
                &h,
                r#"{"errors":[{"status":"400","title":"Bad Request","detail":"invalid formula"}]}"#,
                "x"
            ),
            "HTTP 400 Bad Request: Bad Request: invalid formula"
        );
        assert_eq!(
            refusal(StatusCode::BAD_GATEWAY, &h, "<html>bad gateway</html>", "x"),
            "HTTP 502 Bad Gateway: \"<html>bad gateway</html>\""
        );
    }

    #[test]
    fn keys_are_cut_out_of_errors_and_debug_output() {
        let c = Credentials {
            api_key: "abc123".into(),
            app_key: "abc123456".into(),
            address: String::new(),
            origin: "Secret ns/datadog".into(),
        };
        let e =
            c.redact_error(Error::Source { target: "t abc123".into(), message: "echo abc123456 and abc123".into() });
        assert_eq!(e.to_string(), "t *****: echo ***** and *****");
        assert!(!format!("{c:?}").contains("abc"), "{c:?}");
    }

    #[test]
    fn the_address_defaults_to_datadogs_us1_site_and_loses_a_trailing_slash() {
        let c = |address: &str| Credentials {
            api_key: "k".into(),
            app_key: "k".into(),
            address: address.into(),
            origin: "Secret ns/datadog".into(),
        };
        assert_eq!(c("").base().unwrap(), "https://api.datadoghq.com");
        assert_eq!(c("https://api.datadoghq.eu/").base().unwrap(), "https://api.datadoghq.eu");
        assert_eq!(c("http://proxy:8080/datadog").base().unwrap(), "http://proxy:8080/datadog");
        let err = c("api.datadoghq.eu").base().unwrap_err();
        assert!(err.to_string().starts_with("the address of Secret ns/datadog: "), "{err}");
    }

    #[tokio::test]
    async fn credentials_are_found_where_argo_looks() {
        fn keys(k: &str) -> [(&str, &str); 2] {
            [(API_KEY, k), (APP_KEY, k)]
        }
        let secrets = FixedSecrets::default()
            .with("ctl", "datadog", &keys("default"))
            .with("ctl", "other", &keys("other-in-ctl"))
            .with("team", "other", &keys("other-in-team"));
        let provider = DatadogProvider::new(Arc::new(secrets), "ctl");
        let run = RunRef { namespace: "team".into(), ..Default::default() };
        let found = |r: Option<SecretRef>| {
            let provider = &provider;
            let run = &run;
            async move { provider.credentials(run, r.as_ref()).await.map(|c| (c.api_key, c.origin)) }
        };
        assert_eq!(found(None).await.unwrap(), ("default".into(), "Secret ctl/datadog".into()));
        let named = SecretRef { name: Some("other".into()), namespaced: None };
        assert_eq!(found(Some(named.clone())).await.unwrap(), ("other-in-ctl".into(), "Secret ctl/other".into()));
        let namespaced = SecretRef { namespaced: Some(true), ..named };
        assert_eq!(found(Some(namespaced)).await.unwrap(), ("other-in-team".into(), "Secret team/other".into()));
        let nameless = SecretRef { name: None, namespaced: Some(true) };
        assert!(matches!(
            found(Some(nameless)).await,
            Err(Error::Config { field: "provider.datadog.secretRef.name", .. })
        ));

        // The environment comes before the Secret `datadog`, and only with all three variables.
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let secrets = Arc::new(FixedSecrets::default().with("ctl", "datadog", &keys("default")));
        let all = DatadogProvider::new(secrets.clone(), "ctl").with_environment(env(&[
            ("DD_API_KEY", "e"),
            ("DD_APP_KEY", "e"),
            ("DD_ADDRESS", ""),
        ]));
        assert_eq!(all.credentials(&run, None).await.unwrap().api_key, "e");
        let two =
            DatadogProvider::new(secrets, "ctl").with_environment(env(&[("DD_API_KEY", "e"), ("DD_APP_KEY", "e")]));
        assert_eq!(two.credentials(&run, None).await.unwrap().api_key, "default");
        assert!(!format!("{all:?}").contains("\"e\""), "{all:?}");
    }
}
