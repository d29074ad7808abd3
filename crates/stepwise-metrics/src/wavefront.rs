//! The Wavefront provider: a Wavefront query (WQL) run through the chart API, whose points
//! nearest the measurement's time are the measurement's value. Single-shot, with Argo Rollouts'
//! semantics:
//!
//! * `GET https://<address>/api/v2/chart/api` with the query window reduced to the measurement's
//!   second (`s` = `e` = now, epoch milliseconds), second granularity, one point per series and
//!   series outside the window included (`p=1`, `i=true`), so that Wavefront answers each series'
//!   latest point, as Argo asks;
//! * the API token comes from the Secret `wavefront-api-tokens` in the controller's namespace,
//!   under a key named as the metric's `address`, and is sent as `Authorization: Bearer <token>`;
//! * the value is a number when the query answers one series (the value of its point nearest the
//!   measurement's time), the list of those numbers when it answers several, and no data when it
//!   answers none; the points' times and their drift from the measurement's time are kept in the
//!   measurement's metadata (`timestamps`, `drift`, in seconds), with Wavefront's `warnings`.
//!
//! Argo always builds `https://<address>`. Here the address may also carry its scheme
//! (`http://wavefront-proxy.monitoring:8080`), for a plain-HTTP proxy, or a test server. A path in
//! the address is ignored, as in Argo: the API path is absolute.
//!
//! The token never appears in an error or a log line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Number, Value};
use stepwise_api::Metric;

use crate::fields::{check_field, json_kind};
use crate::secrets::SecretStore;
use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "wavefront";

/// The Secret holding one API token per Wavefront address (Argo's name).
pub const TOKENS_SECRET: &str = "wavefront-api-tokens";

/// The chart API's path on every Wavefront address.
pub const CHART_API_PATH: &str = "/api/v2/chart/api";

/// Seconds a query may take. Argo's Wavefront client waits forever; a reconcile must not.
pub const TIMEOUT_SECONDS: u64 = 30;

/// Measurement metadata key of Wavefront's warnings, as Argo keeps them.
pub const WARNINGS_KEY: &str = "warnings";

/// Measurement metadata key of the epoch seconds of the point(s) used: `1700000000`, or
/// `[1700000000,1700000001]` for several series (Argo's format).
pub const TIMESTAMPS_KEY: &str = "timestamps";

/// Measurement metadata key of the seconds between each point used and the measurement's time,
/// negative when the point is older (Argo's format, as `timestamps`).
pub const DRIFT_KEY: &str = "drift";

/// A metric's `provider.wavefront`, as Argo Rollouts defines it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WavefrontMetric {
    /// The Wavefront instance, `example.wavefront.com` (queried over HTTPS, as Argo does), or a
    /// URL with its scheme, `http://wavefront-proxy.monitoring:8080`. Also the key of its token in
    /// the Secret `wavefront-api-tokens`.
    pub address: String,
    /// The Wavefront query (WQL), e.g. `sum(rate(5m, ts("istio.requestcount.count")))`.
    pub query: String,
}

impl WavefrontMetric {
    /// The `provider.wavefront` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.wavefront.as_ref().ok_or_else(|| Error::Config {
            field: "provider.wavefront",
            message: format!("metric {} has no wavefront provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.wavefront` as written in a metric. Every error names its field, e.g.
    /// `provider.wavefront.query: is empty`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let fields = value.as_object().ok_or_else(|| Error::Config {
            field: "provider.wavefront",
            message: format!("must be an object with an address and a query, not {}", json_kind(value)),
        })?;
        // Each field on its own first, so that an error names it; then the whole.
        if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "address" | "query")) {
            return Err(Error::Config {
                field: "provider.wavefront",
                message: format!("unknown field {unknown:?}: a wavefront provider has address and query"),
            });
        }
        check_field::<String>(fields, "address", "provider.wavefront.address")?;
        check_field::<String>(fields, "query", "provider.wavefront.query")?;
        let spec: WavefrontMetric = serde_json::from_value(value.clone())
            .map_err(|e| Error::Config { field: "provider.wavefront", message: e.to_string() })?;
        if spec.address.trim().is_empty() {
            return Err(Error::Config { field: "provider.wavefront.address", message: "is empty".into() });
        }
        if spec.query.trim().is_empty() {
            return Err(Error::Config { field: "provider.wavefront.query", message: "is empty".into() });
        }
        spec.chart_api_url()?;
        Ok(spec)
    }

    /// `https://<address>/api/v2/chart/api`, or the address's own scheme when it has one.
    pub fn chart_api_url(&self) -> Result<Url, Error> {
        let address = self.address.trim();
        let text = if address.contains("://") { address.to_string() } else { format!("https://{address}") };
        let mut url =
            parse_url(&text).map_err(|message| Error::Config { field: "provider.wavefront.address", message })?;
        url.set_path(CHART_API_PATH);
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }

    /// The keys of the Secret that may hold the token, in order: the address as written (Argo),
    /// then its host alone, for an address with a scheme or a port, which a Secret's key cannot
    /// spell (keys are letters, digits, `-`, `_` and `.`).
    pub fn token_keys(&self) -> Vec<String> {
        let address = self.address.trim().to_string();
        let host = self.chart_api_url().ok().and_then(|u| u.host_str().map(str::to_string));
        let mut keys = vec![address];
        if let Some(host) = host
            && !keys.contains(&host)
        {
            keys.push(host);
        }
        keys
    }
}

/// Measures with Wavefront queries.
pub struct WavefrontProvider {
    /// Where the token Secret is read.
    secrets: Arc<dyn SecretStore>,
    /// The controller's namespace, where the token Secret lives.
    namespace: String,
    /// Shared by all queries.
    http: Result<reqwest::Client, String>,
}

impl WavefrontProvider {
    /// A provider reading the Secret `wavefront-api-tokens` from `secrets` in
    /// `controller_namespace`.
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new(secrets: Arc<dyn SecretStore>, controller_namespace: impl Into<String>) -> Self {
        WavefrontProvider { secrets, namespace: controller_namespace.into(), http: http_client(false) }
    }

    /// The token of `spec`'s address. Errors never quote the Secret's values.
    async fn token(&self, spec: &WavefrontMetric) -> Result<String, Error> {
        let namespace = &self.namespace;
        let data = self.secrets.get(namespace, TOKENS_SECRET).await?.ok_or_else(|| Error::Config {
            field: "provider.wavefront.address",
            message: format!(
                "Secret {namespace}/{TOKENS_SECRET} does not exist: create it with the API token of {} under \
                 that key (see docs/analysis.md)",
                spec.address.trim()
            ),
        })?;
        let keys = spec.token_keys();
        keys.iter()
            .find_map(|k| data.get(k).map(|t| t.trim()).filter(|t| !t.is_empty()))
            .map(str::to_string)
            .ok_or_else(|| Error::Config {
                field: "provider.wavefront.address",
                message: format!(
                    "Secret {namespace}/{TOKENS_SECRET} has no API token for this address (keys tried: {})",
                    keys.join(", ")
                ),
            })
    }
}

impl fmt::Debug for WavefrontProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WavefrontProvider").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl MetricProvider for WavefrontProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = WavefrontMetric::from_metric(metric)?;
        let url = spec.chart_api_url()?;
        let token = self.token(&spec).await?;
        // As Argo: the measurement's time in whole seconds is both ends of the window.
        let now = Timestamp::now().as_second();
        let answer = self.query(&url, &token, &spec.query, now).await;
        // Wavefront's answers are quoted in errors; should one echo the token, it goes no further.
        let answer = answer.map_err(|e| e.without_secrets(&[&token]))?;
        let (value, timestamps, drift) = match answer.points(now) {
            Ok(Some(found)) => found,
            Ok(None) => return Err(Error::NoData { metric: metric.name.clone() }),
            Err(message) => return Err(Error::Answer { message }.without_secrets(&[&token])),
        };
        let mut taken = Taken::new(Reading::Value(value));
        taken.metadata.insert(TIMESTAMPS_KEY.into(), timestamps);
        taken.metadata.insert(DRIFT_KEY.into(), drift);
        if let Some(warnings) = answer.warnings.filter(|w| !w.trim().is_empty()) {
            taken.metadata.insert(WARNINGS_KEY.into(), warnings);
        }
        Ok(taken)
    }
}

impl WavefrontProvider {
    /// Sends the query and reads Wavefront's answer.
    async fn query(&self, url: &Url, token: &str, query: &str, now: i64) -> Result<QueryResult, Error> {
        let target = format!("Wavefront at {}", redacted(url).trim_end_matches(CHART_API_PATH));
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let mut bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Config {
            field: "provider.wavefront.address",
            message: format!(
                "the API token of this address in Secret {}/{TOKENS_SECRET} is not a valid header value",
                self.namespace
            ),
        })?;
        bearer.set_sensitive(true);
        let millis = now.saturating_mul(1000).to_string();
        // What Argo's Wavefront client sends: its false booleans too.
        let request = http
            .get(url.clone())
            .query(&[
                ("q", query),
                ("s", &millis),
                ("e", &millis),
                ("g", "s"),
                ("p", "1"),
                ("i", "true"),
                ("autoEvents", "false"),
                ("listMode", "false"),
                ("strict", "false"),
                ("includeObsoleteMetrics", "false"),
            ])
            .header(AUTHORIZATION, bearer)
            .header(ACCEPT, "application/json");
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (status, text) = match tokio::time::timeout(Duration::from_secs(TIMEOUT_SECONDS), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds: TIMEOUT_SECONDS, target }),
            Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        read_answer(status, &text).map_err(|refusal| match refusal {
            Refusal::Source(message) => Error::Source { target, message },
            Refusal::Answer(message) => Error::Answer { message: format!("{target}: {message}") },
        })
    }
}

/// Why an answer is not a result: Wavefront said no (`Source`), or it could not be read.
#[derive(Debug, PartialEq)]
enum Refusal {
    Source(String),
    Answer(String),
}

/// The chart API's answer (`QueryResult`), the fields this provider reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryResult {
    #[serde(default)]
    timeseries: Option<Vec<Timeseries>>,
    #[serde(default)]
    warnings: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

/// One series of an answer.
#[derive(Debug, Deserialize)]
struct Timeseries {
    /// `[epoch seconds, value]` pairs.
    #[serde(default)]
    data: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    label: Option<String>,
}

/// What an answer of the chart API is, or why it is none.
fn read_answer(status: StatusCode, body: &str) -> Result<QueryResult, Refusal> {
    // Argo's client takes only a 200 as an answer.
    if status != StatusCode::OK {
        let status = match status.canonical_reason() {
            Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        return Err(Refusal::Source(format!("{status}: {}", error_text(body))));
    }
    let result: QueryResult = serde_json::from_str(body)
        .map_err(|_| Refusal::Answer(format!("the answer is not Wavefront's JSON: {}", snippet(body))))?;
    let said = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    match (said(&result.error_type), said(&result.error_message)) {
        (None, None) => Ok(result),
        (Some(kind), Some(message)) => Err(Refusal::Source(format!("{kind}: {message}"))),
        (Some(only), None) | (None, Some(only)) => Err(Refusal::Source(only)),
    }
}

/// Wavefront's message in an error answer: `message` or `errorMessage` of a JSON body (also
/// within `status`), the `message='…'` of a text one, or the body's start.
fn error_text(body: &str) -> String {
    if let Ok(json) = serde_json::from_str::<Value>(body) {
        let found = ["/errorMessage", "/message", "/status/message", "/error"]
            .iter()
            .find_map(|p| json.pointer(p).and_then(Value::as_str).filter(|m| !m.trim().is_empty()));
        if let Some(message) = found {
            return message.trim().to_string();
        }
    }
    if let Some(start) = body.find("message='")
        && let Some(len) = body[start + 9..].find('\'')
    {
        return body[start + 9..start + 9 + len].to_string();
    }
    snippet(body)
}

impl QueryResult {
    /// The value (a number for one series, a list for several), and the `timestamps` and `drift`
    /// metadata, from the point of each series nearest `now` (epoch seconds); None when there is
    /// no series.
    fn points(&self, now: i64) -> Result<Option<(Value, String, String)>, String> {
        let series = self.timeseries.as_deref().unwrap_or_default();
        let mut found = Vec::with_capacity(series.len());
        for (i, s) in series.iter().enumerate() {
            let name = s.label.as_deref().map(|l| format!("series {l:?}")).unwrap_or_else(|| format!("series {i}"));
            found.push(nearest(s.data.as_deref().unwrap_or_default(), now).map_err(|e| format!("{name}: {e}"))?);
        }
        let number = |v: f64| Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null);
        Ok(match found.as_slice() {
            [] => None,
            [(value, time, drift)] => Some((number(*value), time.to_string(), drift.to_string())),
            many => {
                let list = |f: &dyn Fn(&(f64, i64, i64)) -> String| {
                    format!("[{}]", many.iter().map(f).collect::<Vec<_>>().join(","))
                };
                Some((
                    Value::Array(many.iter().map(|p| number(p.0)).collect()),
                    list(&|p| p.1.to_string()),
                    list(&|p| p.2.to_string()),
                ))
            }
        })
    }
}

/// The point nearest `now` among `[seconds, value]` pairs, as Argo picks it (the first of equally
/// near ones): its value, its time and its drift from `now`, in whole seconds.
///
/// Argo reads a series without points as the value 0; that would pass `result < 0.01`, so here it
/// is an error.
fn nearest(points: &[Vec<f64>], now: i64) -> Result<(f64, i64, i64), String> {
    let mut best: Option<(f64, f64, f64)> = None;
    for point in points {
        let [time, value] = point.as_slice() else {
            return Err(format!("a point is {point:?}, not [time, value]"));
        };
        let delta = time - now as f64;
        if best.is_none_or(|(_, _, d)| delta.abs() < d.abs()) {
            best = Some((*value, *time, delta));
        }
    }
    let (value, time, delta) = best.ok_or("no points")?;
    Ok((value, time as i64, delta as i64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(value: Value) -> &'static str {
        match WavefrontMetric::parse(&value) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field_of(json!("ts(x)")), "provider.wavefront");
        assert_eq!(
            field_of(json!({"address": "a.wavefront.com", "query": "ts(x)", "token": "t"})),
            "provider.wavefront"
        );
        assert_eq!(field_of(json!({"address": "a.wavefront.com"})), "provider.wavefront");
        assert_eq!(field_of(json!({"address": 443, "query": "ts(x)"})), "provider.wavefront.address");
        assert_eq!(field_of(json!({"address": "", "query": "ts(x)"})), "provider.wavefront.address");
        assert_eq!(field_of(json!({"address": "ftp://a", "query": "ts(x)"})), "provider.wavefront.address");
        assert_eq!(field_of(json!({"address": "a.wavefront.com", "query": " "})), "provider.wavefront.query");
        let err = WavefrontMetric::parse(&json!({"address": "a", "query": "q", "token": "t"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"provider.wavefront: unknown field "token": a wavefront provider has address and query"#
        );
    }

    #[test]
    fn the_address_is_https_unless_it_says_otherwise() {
        let url = |address: &str| {
            WavefrontMetric { address: address.into(), query: "q".into() }.chart_api_url().unwrap().to_string()
        };
        assert_eq!(url("example.wavefront.com"), "https://example.wavefront.com/api/v2/chart/api");
        assert_eq!(url("http://127.0.0.1:9/"), "http://127.0.0.1:9/api/v2/chart/api");
        // As Argo's client resolves the absolute API path against the address.
        assert_eq!(url("example.wavefront.com/prefix"), "https://example.wavefront.com/api/v2/chart/api");
    }

    #[test]
    fn the_token_is_keyed_by_the_address_then_its_host() {
        let keys = |address: &str| WavefrontMetric { address: address.into(), query: "q".into() }.token_keys();
        assert_eq!(keys("example.wavefront.com"), ["example.wavefront.com"]);
        assert_eq!(keys("http://127.0.0.1:8080"), ["http://127.0.0.1:8080", "127.0.0.1"]);
        assert_eq!(keys("wf.example.com:443"), ["wf.example.com:443", "wf.example.com"]);
    }

    #[test]
    fn the_point_nearest_the_measurement_is_used() {
        let points = vec![vec![940.0, 1.0], vec![995.0, 2.0], vec![1010.0, 3.0]];
        assert_eq!(nearest(&points, 1000), Ok((2.0, 995, -5)));
        // Equally near: the first, as Argo.
        assert_eq!(nearest(&[vec![990.0, 1.0], vec![1010.0, 2.0]], 1000), Ok((1.0, 990, -10)));
        assert_eq!(nearest(&[], 1000), Err("no points".into()));
        assert!(nearest(&[vec![1.0]], 1000).is_err());
    }

    #[test]
    fn one_series_is_a_number_several_a_list_none_no_data() {
        let one = QueryResult {
            timeseries: Some(vec![Timeseries { data: Some(vec![vec![998.0, 0.97]]), label: None }]),
            ..Default::default()
        };
        assert_eq!(one.points(1000), Ok(Some((json!(0.97), "998".into(), "-2".into()))));
        let two = QueryResult {
            timeseries: Some(vec![
                Timeseries { data: Some(vec![vec![998.0, 0.97]]), label: None },
                Timeseries { data: Some(vec![vec![1001.0, 0.5]]), label: None },
            ]),
            ..Default::default()
        };
        assert_eq!(two.points(1000), Ok(Some((json!([0.97, 0.5]), "[998,1001]".into(), "[-2,1]".into()))));
        assert_eq!(QueryResult::default().points(1000), Ok(None));
        let empty = QueryResult {
            timeseries: Some(vec![Timeseries { data: Some(vec![]), label: Some("cpu".into()) }]),
            ..Default::default()
        };
        assert_eq!(empty.points(1000), Err(r#"series "cpu": no points"#.into()));
    }

    #[test]
    fn errors_keep_wavefronts_message() {
        assert_eq!(
            read_answer(
                StatusCode::BAD_REQUEST,
                "Bad Request: status=400, message='Query syntax error: Missing expression'"
            )
            .unwrap_err(),
            Refusal::Source("HTTP 400 Bad Request: Query syntax error: Missing expression".into())
        );
        assert_eq!(
            read_answer(StatusCode::UNAUTHORIZED, r#"{"message":"Invalid token"}"#).unwrap_err(),
            Refusal::Source("HTTP 401 Unauthorized: Invalid token".into())
        );
        assert_eq!(
            read_answer(StatusCode::OK, r#"{"errorType":"QuerySyntaxError","errorMessage":"Unknown function: tss"}"#)
                .unwrap_err(),
            Refusal::Source("QuerySyntaxError: Unknown function: tss".into())
        );
        assert!(matches!(read_answer(StatusCode::OK, "<html>"), Err(Refusal::Answer(_))));
    }

    #[test]
    fn the_token_is_scrubbed_from_errors() {
        let e = Error::Source { target: "t".into(), message: "token abcd-1234 refused".into() }
            .without_secrets(&["abcd-1234"]);
        assert_eq!(e.to_string(), "t: token ***** refused");
    }
}
