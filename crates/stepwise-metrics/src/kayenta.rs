//! The Kayenta provider: an automated canary analysis (e.g. Mann-Whitney) run by Kayenta, whose
//! judgement's score the provider weighs against the metric's thresholds. A long measurement,
//! with Argo Rollouts' semantics:
//!
//! * `run` finds the canary config's id by its name (`GET <address>/canaryConfig?application=…
//!   &configurationAccountName=…`), starts an execution (`POST <address>/canary/<configId>` with
//!   `application`, `metricsAccountName`, `configurationAccountName` and `storageAccountName` as
//!   query parameters and a `CanaryExecutionRequest` of the metric's scopes and thresholds), and
//!   answers [`Reading::InProgress`] in 15 s, the execution's id kept in the measurement's
//!   metadata under `canaryExecutionId`, as Argo keeps it;
//! * `resume` reads the execution (`GET <address>/canary/<canaryExecutionId>`): not `complete`,
//!   it looks again in 15 s; complete, its `result.judgeResult.score.score`, truncated to a whole
//!   number as Argo does, is Successful at `pass` or above, Inconclusive at `marginal` or above,
//!   Failed below (a [`Reading::Verdict`]; the score is in its message and in the metadata under
//!   `score`).
//!
//! A scope without `start`/`end` (both of its control and experiment scopes, or neither, as Argo
//! demands) spans the metric's `interval` before the measurement (`start = now - interval`) to
//! the measurement (`end = now`), in RFC 3339 UTC.
//!
//! Where this differs from Argo: the canary config is looked up in the `configurationAccountName`
//! (Argo sends the `storageAccountName` under that name, which is the same account in its
//! examples); Argo's documentation spells the thresholds `thresholds`, its API `threshold`: both
//! are read; `lookback: true` (a window from the run's start) is refused when a scope needs it,
//! since providers are not told the run's start; an execution that completed without a score
//! reports Kayenta's exception.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stepwise_api::{AnalysisPhase, Measurement, Metric};

use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "kayenta";

/// Measurement metadata key of the execution's id, as Argo keeps it.
pub const EXECUTION_ID_KEY: &str = "canaryExecutionId";

/// Measurement metadata key of the judgement's score (a whole number, as Argo's value).
pub const SCORE_KEY: &str = "score";

/// The time between two looks at an execution, as Argo's `resumeDelay`.
pub const RESUME_AFTER: StdDuration = StdDuration::from_secs(15);

/// Seconds a request may take, as Argo's `httpConnectionTimeout`.
pub const TIMEOUT_SECONDS: u64 = 15;

/// The fields of Argo's `KayentaMetric`, each with the name errors give it (`thresholds` is the
/// spelling of Argo's documentation).
const FIELDS: [(&str, &str); 10] = [
    ("address", "provider.kayenta.address"),
    ("application", "provider.kayenta.application"),
    ("canaryConfigName", "provider.kayenta.canaryConfigName"),
    ("metricsAccountName", "provider.kayenta.metricsAccountName"),
    ("configurationAccountName", "provider.kayenta.configurationAccountName"),
    ("storageAccountName", "provider.kayenta.storageAccountName"),
    ("threshold", "provider.kayenta.threshold"),
    ("thresholds", "provider.kayenta.threshold"),
    ("scopes", "provider.kayenta.scopes"),
    ("lookback", "provider.kayenta.lookback"),
];

/// A metric's `provider.kayenta`, as Argo Rollouts' `KayentaMetric`. Empty strings count as
/// unset, as in Go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KayentaMetric {
    /// Kayenta's base URL, e.g. `https://kayenta.example.com` (required).
    #[serde(default)]
    pub address: String,
    /// The application the canary config belongs to (required).
    #[serde(default)]
    pub application: String,
    /// The canary config's name, as Kayenta lists it (required).
    #[serde(default)]
    pub canary_config_name: String,
    /// The account Kayenta reads the metrics from; empty: Kayenta's default one.
    #[serde(default)]
    pub metrics_account_name: String,
    /// The account holding the canary configs; empty: Kayenta's default one.
    #[serde(default)]
    pub configuration_account_name: String,
    /// The account Kayenta stores the results in; empty: Kayenta's default one.
    #[serde(default)]
    pub storage_account_name: String,
    /// The scores the judgement is weighed against (also read as `thresholds`).
    #[serde(default, alias = "thresholds")]
    pub threshold: KayentaThreshold,
    /// The scopes compared, by name (at least one).
    #[serde(default)]
    pub scopes: Vec<KayentaScope>,
    /// A scope without `start` starts at the run's start instead of `now - interval`.
    #[serde(default)]
    pub lookback: bool,
}

/// Argo's `KayentaThreshold`: scores from 0 to 100.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KayentaThreshold {
    /// A score at least this is Successful.
    #[serde(default)]
    pub pass: i64,
    /// A score below `pass` and at least this is Inconclusive; below it, Failed.
    #[serde(default)]
    pub marginal: i64,
}

/// Argo's `KayentaScope`: a control and an experiment scope compared under a name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KayentaScope {
    /// The scope's name in the canary config (`default`).
    #[serde(default)]
    pub name: String,
    /// The baseline, e.g. the stable pods.
    #[serde(default)]
    pub control_scope: ScopeDetail,
    /// The canary.
    #[serde(default)]
    pub experiment_scope: ScopeDetail,
}

/// Argo's `ScopeDetail`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeDetail {
    /// The metrics source's selector, e.g. `app=guestbook and rollouts-pod-template-hash=…`.
    #[serde(default)]
    pub scope: String,
    /// The region (Kayenta's `location`).
    #[serde(default)]
    pub region: String,
    /// Seconds between data points.
    #[serde(default)]
    pub step: i64,
    /// RFC 3339 start; empty: `now - interval` (both scopes or neither).
    #[serde(default)]
    pub start: String,
    /// RFC 3339 end; empty: now (both scopes or neither).
    #[serde(default)]
    pub end: String,
}

impl KayentaMetric {
    /// The `provider.kayenta` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.kayenta.as_ref().ok_or_else(|| Error::Config {
            field: "provider.kayenta",
            message: format!("metric {} has no kayenta provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.kayenta` as written in a metric. Every error names its field, e.g.
    /// `provider.kayenta.canaryConfigName: is required`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let config = |field, message: String| Error::Config { field, message };
        let Value::Object(fields) = value else {
            return Err(config("provider.kayenta", "must be an object of Argo's KayentaMetric fields".into()));
        };
        if fields.contains_key("threshold") && fields.contains_key("thresholds") {
            return Err(config("provider.kayenta.threshold", "set threshold or thresholds, not both".into()));
        }
        for (key, field_value) in fields {
            let Some((_, field)) = FIELDS.iter().find(|(k, _)| k == key) else {
                let hint = if matches!(key.as_str(), "interval" | "count") {
                    format!(": {key} belongs to the metric, beside provider")
                } else {
                    let known: Vec<&str> = FIELDS.iter().map(|(k, _)| *k).filter(|k| *k != "thresholds").collect();
                    format!("; the fields are {}", known.join(", "))
                };
                return Err(config("provider.kayenta", format!("unknown field {key:?}{hint}")));
            };
            let alone = Value::Object(Map::from_iter([(key.clone(), field_value.clone())]));
            serde_json::from_value::<KayentaMetric>(alone).map_err(|e| config(field, e.to_string()))?;
        }
        if !fields.contains_key("threshold") && !fields.contains_key("thresholds") {
            // Argo would weigh every score against 0 and pass it.
            return Err(config("provider.kayenta.threshold", "is required: {pass, marginal} scores".into()));
        }
        let spec: KayentaMetric =
            serde_json::from_value(value.clone()).map_err(|e| config("provider.kayenta", e.to_string()))?;
        for (field, text) in [
            ("provider.kayenta.address", &spec.address),
            ("provider.kayenta.application", &spec.application),
            ("provider.kayenta.canaryConfigName", &spec.canary_config_name),
        ] {
            if text.trim().is_empty() {
                return Err(config(field, "is required".into()));
            }
        }
        spec.base_url()?;
        let t = &spec.threshold;
        if !(0..=100).contains(&t.pass) || !(0..=100).contains(&t.marginal) || t.marginal > t.pass {
            return Err(config(
                "provider.kayenta.threshold",
                format!("pass ({}) and marginal ({}) are scores, 0 ≤ marginal ≤ pass ≤ 100", t.pass, t.marginal),
            ));
        }
        if spec.scopes.is_empty() {
            return Err(config("provider.kayenta.scopes", "at least one scope is required".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for scope in &spec.scopes {
            if !names.insert(scope.name.as_str()) {
                return Err(config("provider.kayenta.scopes", format!("two scopes are named {:?}", scope.name)));
            }
            // Argo's checks, with its messages.
            let (c, e) = (&scope.control_scope, &scope.experiment_scope);
            if c.start.is_empty() != e.start.is_empty() {
                return Err(config(
                    "provider.kayenta.scopes",
                    format!(
                        "scope {:?}: controlScope.start and experimentScope.start must both be set or be empty",
                        scope.name
                    ),
                ));
            }
            if c.end.is_empty() != e.end.is_empty() {
                return Err(config(
                    "provider.kayenta.scopes",
                    format!(
                        "scope {:?}: controlScope.end and experimentScope.end must both be set or be empty",
                        scope.name
                    ),
                ));
            }
        }
        Ok(spec)
    }

    /// The address as a base URL (a proxy's path is kept).
    pub fn base_url(&self) -> Result<Url, Error> {
        let url = parse_url(self.address.trim().trim_end_matches('/'))
            .map_err(|message| Error::Config { field: "provider.kayenta.address", message })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config {
                field: "provider.kayenta.address",
                message: "must be a base URL, without a query or a fragment".into(),
            });
        }
        Ok(url)
    }

    /// The `CanaryExecutionRequest` of a measurement at `now` of a metric measured every
    /// `interval` (the window of scopes without `start`).
    pub fn execution_request(&self, now: Timestamp, interval: Option<StdDuration>) -> Result<Value, Error> {
        let rfc3339 = |t: Timestamp| t.to_zoned(TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut scopes = BTreeMap::new();
        for scope in &self.scopes {
            let mut start = None;
            if scope.control_scope.start.is_empty() {
                if self.lookback {
                    return Err(Error::Config {
                        field: "provider.kayenta.lookback",
                        message: format!(
                            "scope {:?} has no start, and this controller cannot start it at the run's start: \
                             set controlScope.start and experimentScope.start (e.g. from an argument), or drop \
                             lookback to start at now - interval",
                            scope.name
                        ),
                    });
                }
                let interval = interval.ok_or_else(|| Error::Config {
                    field: "interval",
                    message: format!(
                        "scope {:?} has no start: it starts at now - interval, and the metric has no interval",
                        scope.name
                    ),
                })?;
                let seconds = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
                start = Some(rfc3339(Timestamp::from_second(now.as_second().saturating_sub(seconds)).unwrap_or(now)));
            }
            let end = scope.control_scope.end.is_empty().then(|| rfc3339(now));
            let detail = |d: &ScopeDetail| ScopeRequest {
                scope: d.scope.clone(),
                location: d.region.clone(),
                step: d.step,
                start: start.clone().unwrap_or_else(|| d.start.clone()),
                end: end.clone().unwrap_or_else(|| d.end.clone()),
            };
            scopes.insert(
                scope.name.clone(),
                ScopePair {
                    control_scope: detail(&scope.control_scope),
                    experiment_scope: detail(&scope.experiment_scope),
                },
            );
        }
        let request = ExecutionRequest { scopes, thresholds: self.threshold.clone() };
        serde_json::to_value(request).map_err(|e| Error::Answer { message: e.to_string() })
    }
}

/// Argo's `AnalysisRequest`: Kayenta's `CanaryExecutionRequest`, the fields Argo sends.
#[derive(Serialize)]
struct ExecutionRequest {
    scopes: BTreeMap<String, ScopePair>,
    thresholds: KayentaThreshold,
}

/// Kayenta's `CanaryScopePair`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopePair {
    control_scope: ScopeRequest,
    experiment_scope: ScopeRequest,
}

/// Kayenta's `CanaryScope`, the fields Argo sends.
#[derive(Serialize)]
struct ScopeRequest {
    scope: String,
    location: String,
    step: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    start: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    end: String,
}

/// What Argo decides of a score.
pub fn judge(score: i64, threshold: &KayentaThreshold) -> AnalysisPhase {
    if score >= threshold.pass {
        AnalysisPhase::Successful
    } else if score >= threshold.marginal {
        AnalysisPhase::Inconclusive
    } else {
        AnalysisPhase::Failed
    }
}

/// Measures with Kayenta canary analyses.
#[derive(Debug)]
pub struct KayentaProvider {
    /// Shared by all requests.
    http: Result<reqwest::Client, String>,
}

impl Default for KayentaProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl KayentaProvider {
    /// A provider. Never fails: should the TLS stack be unusable, every measurement reports why
    /// instead.
    pub fn new() -> Self {
        KayentaProvider { http: http_client(false) }
    }

    /// Sends one request to Kayenta and answers its JSON.
    async fn call(
        &self,
        base: &Url,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| Error::Config { field: "provider.kayenta.address", message: "is not a base URL".into() })?
            .pop_if_empty()
            .extend(segments);
        let shown_path = format!("/{}", segments.join("/"));
        let target = format!("Kayenta at {}: {method} {shown_path}", redacted(base).trim_end_matches('/'));
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let mut request = http.request(method, url).header(ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (status, text) = match tokio::time::timeout(StdDuration::from_secs(TIMEOUT_SECONDS), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds: TIMEOUT_SECONDS, target }),
            Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        // Argo takes only a 200.
        if status != StatusCode::OK {
            return Err(Error::Source { target, message: format!("HTTP {}: {}", status.as_u16(), error_text(&text)) });
        }
        serde_json::from_str(&text).map_err(|_| Error::Answer {
            message: format!("{target}: the answer is not Kayenta's JSON: {}", snippet(&text)),
        })
    }

    /// The id of the canary config named as the metric says.
    async fn config_id(&self, base: &Url, spec: &KayentaMetric) -> Result<String, Error> {
        let query = [
            ("application", spec.application.as_str()),
            ("configurationAccountName", spec.configuration_account_name.as_str()),
        ];
        let answer = self.call(base, Method::GET, &["canaryConfig"], &query, None).await?;
        let Value::Array(configs) = answer else {
            return Err(Error::Answer {
                message: format!("Kayenta's canary configs are not a list: {}", snippet(&answer.to_string())),
            });
        };
        let named = |c: &Value| c.get("name").and_then(Value::as_str) == Some(spec.canary_config_name.as_str());
        match configs.iter().find(|c| named(c)).map(|c| c.get("id")) {
            Some(Some(Value::String(id))) if !id.is_empty() => Ok(id.clone()),
            Some(_) => Err(Error::Answer {
                message: format!("Kayenta's canary config {:?} has no id", spec.canary_config_name),
            }),
            None => {
                let names: Vec<&str> = configs.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect();
                Err(Error::Config {
                    field: "provider.kayenta.canaryConfigName",
                    message: format!(
                        "Canary config not found: Kayenta has no canary config {:?} for application {:?} (it has: {})",
                        spec.canary_config_name,
                        spec.application,
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                })
            }
        }
    }
}

impl MetricProvider for KayentaProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = KayentaMetric::from_metric(metric)?;
        let base = spec.base_url()?;
        let interval = match &metric.interval {
            None => None,
            Some(d) => Some(d.to_std().map_err(|e| Error::Config { field: "interval", message: e.to_string() })?),
        };
        let now = Timestamp::now();
        // Checked before any call, unlike Argo, which looks the config up first.
        let request = spec.execution_request(now, interval)?;
        let config_id = self.config_id(&base, &spec).await?;
        let query = [
            ("application", spec.application.as_str()),
            ("metricsAccountName", spec.metrics_account_name.as_str()),
            ("configurationAccountName", spec.configuration_account_name.as_str()),
            ("storageAccountName", spec.storage_account_name.as_str()),
        ];
        let answer = self.call(&base, Method::POST, &["canary", &config_id], &query, Some(&request)).await?;
        let id = match answer.get(EXECUTION_ID_KEY) {
            Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                return Err(Error::Answer {
                    message: format!("Invalid canaryExecutionId: Kayenta answered {}", snippet(&answer.to_string())),
                });
            }
        };
        let mut taken = Taken::new(Reading::InProgress { resume_at: now + RESUME_AFTER });
        taken.metadata.insert(EXECUTION_ID_KEY.into(), id);
        Ok(taken)
    }

    async fn resume(&self, _run: &RunRef, metric: &Metric, measurement: &Measurement) -> Result<Taken, Error> {
        let spec = KayentaMetric::from_metric(metric)?;
        let base = spec.base_url()?;
        let id = measurement
            .metadata
            .as_ref()
            .and_then(|m| m.get(EXECUTION_ID_KEY))
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Answer {
                message: format!("the measurement names no Kayenta execution (metadata {EXECUTION_ID_KEY})"),
            })?;
        let status = self.call(&base, Method::GET, &["canary", &id], &[], None).await?;
        let mut metadata = BTreeMap::from([(EXECUTION_ID_KEY.to_string(), id.clone())]);
        let reading = read_status(&status, &spec.threshold, Timestamp::now())?;
        if let Some(score) = score_of(&status) {
            metadata.insert(SCORE_KEY.into(), score.to_string());
        }
        Ok(Taken { reading, metadata })
    }
}

/// The judgement's score, a whole number (Argo's `int(score)`).
fn score_of(status: &Value) -> Option<i64> {
    let score = status.pointer("/result/judgeResult/score/score")?.as_f64()?;
    score.is_finite().then_some(score.trunc() as i64)
}

/// What a `CanaryExecutionStatusResponse` says, read at `now`.
fn read_status(status: &Value, threshold: &KayentaThreshold, now: Timestamp) -> Result<Reading, Error> {
    match status.get("complete") {
        Some(Value::Bool(false)) => return Ok(Reading::InProgress { resume_at: now + RESUME_AFTER }),
        Some(Value::Bool(true)) => {}
        _ => {
            return Err(Error::Answer {
                message: format!("Missing Complete Status in Kayenta's answer: {}", snippet(&status.to_string())),
            });
        }
    }
    let Some(score) = score_of(status) else {
        let mut why = String::new();
        if let Some(s) = status.get("status").and_then(Value::as_str) {
            why.push_str(&format!(" (status {s})"));
        }
        if let Some(exception) = status.get("exception").filter(|e| !e.is_null()) {
            why.push_str(&format!(": {}", exception_text(exception)));
        }
        return Err(Error::Answer {
            message: format!("Missing Score: the Kayenta execution completed without one{why}"),
        });
    };
    let phase = judge(score, threshold);
    let message = format!("score {score} (pass {}, marginal {})", threshold.pass, threshold.marginal);
    Ok(Reading::Verdict { phase, message: Some(message) })
}

/// Kayenta's exception of a failed execution: its `details.errors`, `details.error`, or itself.
fn exception_text(exception: &Value) -> String {
    let details = exception.get("details");
    if let Some(Value::Array(errors)) = details.and_then(|d| d.get("errors")) {
        let texts: Vec<String> =
            errors.iter().map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string())).collect();
        if !texts.is_empty() {
            return texts.join("; ");
        }
    }
    if let Some(error) = details.and_then(|d| d.get("error")).and_then(Value::as_str) {
        return error.to_string();
    }
    snippet(&exception.to_string())
}

/// Kayenta's message in an error answer: the `message` (or `error`) of its JSON, or the body's
/// start.
fn error_text(body: &str) -> String {
    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body) {
        for key in ["message", "error"] {
            if let Some(text) = fields.get(key).and_then(Value::as_str).filter(|t| !t.trim().is_empty()) {
                return text.trim().to_string();
            }
        }
    }
    snippet(body)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> Value {
        json!({
            "address": "https://kayenta.example.com",
            "application": "guestbook",
            "canaryConfigName": "my-test",
            "threshold": {"pass": 90, "marginal": 75},
            "scopes": [{
                "name": "default",
                "controlScope": {"scope": "app=guestbook and rollouts-pod-template-hash=xxxx", "step": 60},
                "experimentScope": {"scope": "app=guestbook and rollouts-pod-template-hash=yyyy", "step": 60}
            }]
        })
    }

    fn with(mut value: Value, pointer: &str, field: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        value.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.into(), field);
        value
    }

    fn error(value: Value) -> String {
        KayentaMetric::parse(&value).unwrap_err().to_string()
    }

    #[test]
    fn the_fields_are_argos_and_errors_name_them() {
        let parsed = KayentaMetric::parse(&spec()).unwrap();
        assert_eq!(parsed.threshold, KayentaThreshold { pass: 90, marginal: 75 });
        // Argo's documentation spells it `thresholds`.
        let mut documented = spec();
        let t = documented.as_object_mut().unwrap().remove("threshold").unwrap();
        documented.as_object_mut().unwrap().insert("thresholds".into(), t);
        assert_eq!(KayentaMetric::parse(&documented).unwrap(), parsed);
        let both = with(documented, "/threshold", json!({"pass": 1, "marginal": 0}));
        assert!(error(both).starts_with("provider.kayenta.threshold: set threshold or thresholds"));

        for (value, expected) in [
            (with(spec(), "/address", json!("")), "provider.kayenta.address: is required"),
            (with(spec(), "/address", json!("kayenta:8090")), "provider.kayenta.address:"),
            (with(spec(), "/canaryConfigName", json!(7)), "provider.kayenta.canaryConfigName: invalid type"),
            (with(spec(), "/application", json!(" ")), "provider.kayenta.application: is required"),
            (with(spec(), "/threshold", json!({"pass": "90"})), "provider.kayenta.threshold: invalid type"),
            (with(spec(), "/threshold", json!({"pass": 70, "marginal": 75})), "provider.kayenta.threshold: pass"),
            (with(spec(), "/scopes", json!([])), "provider.kayenta.scopes: at least one"),
            (with(spec(), "/scopes/0/controlScope/step", json!("60")), "provider.kayenta.scopes: invalid type"),
            (with(spec(), "/scopes/0/controlScope/start", json!("2019-03-29T01:08:34Z")), "controlScope.start and"),
            (with(spec(), "/scopes/0/experimentScope/end", json!("2019-03-29T01:08:34Z")), "controlScope.end and"),
            (with(spec(), "/interval", json!(3600)), "provider.kayenta: unknown field \"interval\": interval belongs"),
            (with(spec(), "/lookbak", json!(true)), "provider.kayenta: unknown field \"lookbak\"; the fields"),
        ] {
            let got = error(value);
            assert!(got.starts_with(expected) || got.contains(expected), "{expected}: {got}");
        }
        let twice = json!([{"name": "a"}, {"name": "a"}]);
        assert!(error(with(spec(), "/scopes", twice)).contains("two scopes are named \"a\""));
    }

    #[test]
    fn scopes_without_times_span_the_interval_before_now() {
        let parsed = KayentaMetric::parse(&spec()).unwrap();
        let now: Timestamp = "2019-03-29T01:38:34.5Z".parse().unwrap();
        let request = parsed.execution_request(now, Some(StdDuration::from_secs(1800))).unwrap();
        let control = &request["scopes"]["default"]["controlScope"];
        assert_eq!(control["start"], "2019-03-29T01:08:34Z");
        assert_eq!(control["end"], "2019-03-29T01:38:34Z");
        assert_eq!(control["location"], "");
        assert_eq!(request["thresholds"], json!({"pass": 90, "marginal": 75}));
        let no_interval = parsed.execution_request(now, None).unwrap_err().to_string();
        assert!(no_interval.starts_with("interval: scope \"default\" has no start"), "{no_interval}");
        let lookback = KayentaMetric::parse(&with(spec(), "/lookback", json!(true))).unwrap();
        let refused = lookback.execution_request(now, Some(StdDuration::from_secs(60))).unwrap_err().to_string();
        assert!(refused.starts_with("provider.kayenta.lookback:"), "{refused}");
    }

    #[test]
    fn the_score_is_weighed_as_argo_does() {
        let t = KayentaThreshold { pass: 90, marginal: 75 };
        for (score, phase) in [
            (100.0, AnalysisPhase::Successful),
            (90.0, AnalysisPhase::Successful),
            (89.99, AnalysisPhase::Inconclusive),
            (75.0, AnalysisPhase::Inconclusive),
            (74.9, AnalysisPhase::Failed),
            (0.0, AnalysisPhase::Failed),
        ] {
            let status = json!({"complete": true, "result": {"judgeResult": {"score": {"score": score}}}});
            let Reading::Verdict { phase: got, .. } = read_status(&status, &t, Timestamp::UNIX_EPOCH).unwrap() else {
                panic!("no verdict for {score}")
            };
            assert_eq!(got, phase, "{score}");
        }
        let running = read_status(&json!({"complete": false}), &t, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(running, Reading::InProgress { resume_at: Timestamp::UNIX_EPOCH + RESUME_AFTER });
        assert!(
            read_status(&json!({}), &t, Timestamp::UNIX_EPOCH).unwrap_err().to_string().contains("Missing Complete")
        );
        let failed = json!({"complete": true, "status": "terminal",
            "exception": {"details": {"errors": ["No metric set", "boom"]}}});
        let text = read_status(&failed, &t, Timestamp::UNIX_EPOCH).unwrap_err().to_string();
        assert!(
            text.contains("Missing Score") && text.contains("terminal") && text.contains("No metric set; boom"),
            "{text}"
        );
    }
}
