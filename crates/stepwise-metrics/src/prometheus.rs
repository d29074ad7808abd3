//! The Prometheus provider: a PromQL query (instant, or over a range with `rangeQuery`) whose
//! samples are the measurement's value. Single-shot, with Argo Rollouts' conversions: a scalar is
//! a number, a vector the array of its sample values, a matrix (what a range query answers) the
//! flattened array of all its values, series after series.
//!
//! JSON has no NaN or infinities, so those samples are the strings `"NaN"`, `"+Inf"` and `"-Inf"`
//! (Prometheus' own spellings); everything else is a JSON number.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use stepwise_api::{Metric, RangeOffsets};

use crate::fields::json_number;
use crate::web::{error_chain, header_map, http_client, parse_url, redacted, reqwest_error, snippet, timeout_seconds};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// Seconds a query may take when the metric does not say (`timeout`).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

/// The environment variable the controller reads the default address from; named in errors.
pub const ADDRESS_ENV: &str = "STEPWISE_PROMETHEUS_ADDRESS";

/// Measurement metadata key of the query that ran (arguments substituted).
pub const QUERY_KEY: &str = "query";

/// Measurement metadata key of Prometheus' warnings, joined by `; `.
pub const WARNINGS_KEY: &str = "warnings";

/// Measurement metadata key of a range query's range: `START to END step STEP` (RFC 3339 times).
pub const RANGE_KEY: &str = "range";

/// Measures with PromQL instant queries.
#[derive(Debug)]
pub struct PrometheusProvider {
    /// Shared by all queries; a `prometheus_http_query::Client` is made per address from it.
    http: Result<reqwest::Client, String>,
    /// For `insecure: true` metrics: accepts any certificate.
    insecure_http: Result<reqwest::Client, String>,
    /// The server of metrics whose `address` is empty.
    default_address: Option<String>,
}

impl PrometheusProvider {
    /// A provider querying the metric's `address`, or `default_address` (the controller's
    /// `STEPWISE_PROMETHEUS_ADDRESS`) when the metric leaves it empty.
    ///
    /// Never fails: a bad default address or an unusable TLS stack is reported by each
    /// measurement that needs it.
    pub fn new(default_address: Option<String>) -> Self {
        let default_address = default_address.filter(|a| !a.trim().is_empty());
        PrometheusProvider { http: http_client(false), insecure_http: http_client(true), default_address }
    }
}

impl MetricProvider for PrometheusProvider {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let prom = metric.provider.prometheus.as_ref().ok_or_else(|| Error::Config {
            field: "provider.prometheus",
            message: format!("metric {} has no prometheus provider", metric.name),
        })?;
        let address = resolve_address(&prom.address, self.default_address.as_deref())?;
        let seconds = timeout_seconds(prom.timeout, DEFAULT_TIMEOUT_SECONDS)
            .map_err(|message| Error::Config { field: "provider.prometheus.timeout", message })?;
        let headers = header_map(prom.headers.as_deref().unwrap_or_default())
            .map_err(|message| Error::Config { field: "provider.prometheus.headers", message })?;
        // Credentials in the address stay out of messages, which everyone can read.
        let target = format!("Prometheus at {}", redacted(&address).trim_end_matches('/'));
        let address = base_url(&address);
        let http = if prom.insecure == Some(true) { &self.insecure_http } else { &self.http };
        let http =
            http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let client = prometheus_http_query::Client::from(http.clone(), &address)
            .map_err(|e| Error::Config { field: "provider.prometheus.address", message: error_chain(&e) })?;

        let range = match &prom.range_query {
            None => None,
            Some(range) => {
                let offsets =
                    range.offsets().map_err(|message| Error::Config { field: "provider.prometheus", message })?;
                Some(Range::ending_now(offsets))
            }
        };
        // Prometheus is told the deadline too, so that it stops evaluating when we stop waiting.
        let deadline_ms = (seconds as i64).saturating_mul(1000);
        // The raw answer, read here rather than by the crate: its parsed result drops warnings,
        // and its errors lose Prometheus' text for non-JSON (proxy) answers.
        let exchange = async {
            let sent = match &range {
                None => {
                    let mut query = client.query(&prom.query).timeout(deadline_ms);
                    for (name, value) in &headers {
                        query = query.header(name.clone(), value.clone());
                    }
                    query.get_raw().await
                }
                Some(r) => {
                    let mut query = client
                        .query_range(&prom.query, r.start.as_second(), r.end.as_second(), r.step.as_secs_f64())
                        .timeout(deadline_ms);
                    for (name, value) in &headers {
                        query = query.header(name.clone(), value.clone());
                    }
                    query.get_raw().await
                }
            };
            let response = sent.map_err(|e| match &e {
                prometheus_http_query::Error::Client(c) => {
                    c.inner().map(reqwest_error).unwrap_or_else(|| error_chain(&e))
                }
                _ => error_chain(&e),
            })?;
            let status = response.status();
            let body = response.text().await.map_err(|e| reqwest_error(&e))?;
            Ok::<_, String>((status, body))
        };
        let (status, body) = match tokio::time::timeout(Duration::from_secs(seconds), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds, target }),
            Ok(Err(message)) => return Err(Error::Source { target, message }),
            Ok(Ok(answer)) => answer,
        };
        let answer = read_answer(status, &body).map_err(|e| match e {
            Refusal::Source(message) => Error::Source { target, message },
            Refusal::Answer(message) => Error::Answer { message },
        })?;

        let mut taken = Taken::new(Reading::Value(answer.value));
        taken.metadata.insert(QUERY_KEY.into(), prom.query.clone());
        if !answer.warnings.is_empty() {
            taken.metadata.insert(WARNINGS_KEY.into(), answer.warnings.join("; "));
        }
        if let Some(r) = &range {
            taken.metadata.insert(RANGE_KEY.into(), r.to_string());
        }
        Ok(taken)
    }
}

/// The times of a range query, fixed when the measurement starts.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    start: Timestamp,
    end: Timestamp,
    step: Duration,
}

impl Range {
    /// Argo evaluates `now()` when the measurement is taken; so does this. Whole seconds: the
    /// API takes Unix seconds, and a sub-second start would only shift the points.
    fn ending_now(offsets: RangeOffsets) -> Range {
        let now = Timestamp::now().as_second();
        let before = |d: Duration| {
            Timestamp::from_second(now.saturating_sub(d.as_secs() as i64)).unwrap_or(Timestamp::UNIX_EPOCH)
        };
        Range { start: before(offsets.start_before_now), end: before(offsets.end_before_now), step: offsets.step }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {} step {}s", self.start, self.end, self.step.as_secs_f64())
    }
}

/// The metric's address when set, else the default; an absolute http(s) URL with a host.
fn resolve_address(metric_address: &str, default: Option<&str>) -> Result<Url, Error> {
    let address = match (metric_address.trim(), default) {
        ("", Some(default)) => default,
        ("", None) => {
            return Err(Error::Config {
                field: "provider.prometheus.address",
                message: format!("no address: set it in the metric or give the controller {ADDRESS_ENV}"),
            });
        }
        (address, _) => address,
    };
    parse_url(address).map_err(|message| Error::Config { field: "provider.prometheus.address", message })
}

/// The address as the crate's base URL: the query path is appended to its path, so a trailing
/// slash would double.
fn base_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// A successful answer: the value and Prometheus' warnings.
#[derive(Debug, PartialEq)]
struct Answer {
    value: Value,
    warnings: Vec<String>,
}

/// Why an answer is not a value: Prometheus said no (`Source`), or it could not be read.
#[derive(Debug, PartialEq)]
enum Refusal {
    Source(String),
    Answer(String),
}

/// The envelope of every Prometheus API answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// What an answer of `/api/v1/query` becomes.
fn read_answer(status: StatusCode, body: &str) -> Result<Answer, Refusal> {
    let Ok(envelope) = serde_json::from_str::<Envelope>(body) else {
        // A proxy in front of Prometheus answers in text; quote it either way.
        return Err(if status.is_success() {
            Refusal::Answer(format!("Prometheus answered something that is not its JSON: {}", snippet(body)))
        } else {
            Refusal::Source(format!("HTTP {}: {}", status.as_u16(), snippet(body)))
        });
    };
    if envelope.status != "success" {
        let error = envelope.error.unwrap_or_else(|| "no error message".into());
        return Err(Refusal::Source(match envelope.error_type {
            Some(kind) => format!("{kind}: {error}"),
            None => error,
        }));
    }
    if !status.is_success() {
        return Err(Refusal::Source(format!("HTTP {}: {}", status.as_u16(), snippet(body))));
    }
    let data = envelope.data.ok_or_else(|| Refusal::Answer("Prometheus answered success without data".into()))?;
    let value = convert(&data).map_err(Refusal::Answer)?;
    Ok(Answer { value, warnings: envelope.warnings })
}

/// A query result as the metric's conditions see it.
fn convert(data: &Value) -> Result<Value, String> {
    use prometheus_http_query::response::Data;

    // The crate's types parse samples (values are strings such as "0.5" or "NaN"); the result
    // type is checked first so that `string` results get a clear message.
    let kind = data.get("resultType").and_then(Value::as_str).unwrap_or("none");
    if !matches!(kind, "scalar" | "vector" | "matrix") {
        return Err(format!("Prometheus result type {kind} is not supported (use a scalar, vector or matrix)"));
    }
    let data: Data =
        serde_json::from_value(data.clone()).map_err(|e| format!("Prometheus' {kind} result cannot be read: {e}"))?;
    Ok(match data {
        Data::Scalar(sample) => json_number(sample.value()),
        Data::Vector(series) => Value::Array(series.iter().map(|s| json_number(s.sample().value())).collect()),
        Data::Matrix(series) => {
            Value::Array(series.iter().flat_map(|s| s.samples()).map(|s| json_number(s.value())).collect())
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(body: &str) -> Result<Answer, Refusal> {
        read_answer(StatusCode::OK, body)
    }

    fn value(result_type: &str, result: Value) -> Value {
        let body = json!({"status": "success", "data": {"resultType": result_type, "result": result}});
        ok(&body.to_string()).unwrap().value
    }

    #[test]
    fn a_scalar_is_a_number() {
        assert_eq!(value("scalar", json!([1700000000.1, "0.25"])), json!(0.25));
    }

    #[test]
    fn a_vector_is_the_array_of_its_sample_values_in_order() {
        let result = json!([
            {"metric": {"app": "b"}, "value": [1700000000, "0.5"]},
            {"metric": {"app": "a"}, "value": [1700000000, "1"]},
        ]);
        assert_eq!(value("vector", result), json!([0.5, 1.0]));
    }

    #[test]
    fn a_matrix_is_flattened_series_after_series() {
        let result = json!([
            {"metric": {"code": "200"}, "values": [[1, "1"], [2, "2"]]},
            {"metric": {"code": "500"}, "values": [[1, "10"]]},
        ]);
        assert_eq!(value("matrix", result), json!([1.0, 2.0, 10.0]));
    }

    #[test]
    fn empty_vectors_and_matrices_are_empty_arrays() {
        assert_eq!(value("vector", json!([])), json!([]));
        assert_eq!(value("matrix", json!([])), json!([]));
    }

    #[test]
    fn nan_and_infinities_are_prometheus_spellings_as_strings() {
        let result = json!([
            {"metric": {}, "value": [1, "NaN"]},
            {"metric": {}, "value": [1, "+Inf"]},
            {"metric": {}, "value": [1, "-Inf"]},
        ]);
        assert_eq!(value("vector", result), json!(["NaN", "+Inf", "-Inf"]));
        assert_eq!(value("scalar", json!([1, "NaN"])), json!("NaN"));
    }

    #[test]
    fn string_results_are_not_supported() {
        let body = json!({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}});
        assert_eq!(
            ok(&body.to_string()),
            Err(Refusal::Answer(
                "Prometheus result type string is not supported (use a scalar, vector or matrix)".into()
            ))
        );
    }

    #[test]
    fn warnings_are_kept() {
        let body =
            json!({"status": "success", "warnings": ["w1", "w2"], "data": {"resultType": "vector", "result": []}});
        assert_eq!(ok(&body.to_string()).unwrap().warnings, ["w1", "w2"]);
    }

    #[test]
    fn a_prometheus_error_keeps_its_type_and_text() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#;
        assert_eq!(
            read_answer(StatusCode::BAD_REQUEST, body),
            Err(Refusal::Source("bad_data: 1:5: parse error: unexpected end of input".into()))
        );
    }

    #[test]
    fn a_text_answer_is_quoted_with_its_status() {
        assert_eq!(
            read_answer(StatusCode::BAD_GATEWAY, "upstream connect error"),
            Err(Refusal::Source(r#"HTTP 502: "upstream connect error""#.into()))
        );
        assert!(matches!(ok("<html>"), Err(Refusal::Answer(m)) if m.contains("\"<html>\"")));
    }

    /// A fake Prometheus on 127.0.0.1 that answers one request with `body` (or never, when
    /// `None`) and hands back the request it got.
    async fn fake_prometheus(body: Option<&'static str>) -> (String, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16384];
            let n = conn.read(&mut buf).await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
            let Some(body) = body else {
                // Hold the connection open without answering.
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
        });
        (address, rx)
    }

    fn metric(address: &str, query: &str) -> Metric {
        use stepwise_api::{MetricProvider as Spec, PrometheusMetric, WebMetricHeader};
        let prometheus = PrometheusMetric {
            address: address.into(),
            query: query.into(),
            timeout: Some(1),
            headers: Some(vec![WebMetricHeader { key: "X-Scope-OrgID".into(), value: "team-a".into() }]),
            ..Default::default()
        };
        Metric {
            name: "m".into(),
            provider: Spec { prometheus: Some(prometheus), ..Default::default() },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_query_is_sent_with_its_headers_and_the_answer_keeps_query_and_warnings() {
        let (address, request) = fake_prometheus(Some(
            r#"{"status":"success","warnings":["partial data"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.99"]}]}}"#,
        ))
        .await;
        let taken = PrometheusProvider::new(None).run(&RunRef::default(), &metric(&address, "up == 1")).await.unwrap();
        assert_eq!(taken.reading, Reading::Value(json!([0.99])));
        assert_eq!(taken.metadata.get(QUERY_KEY).map(String::as_str), Some("up == 1"));
        assert_eq!(taken.metadata.get(WARNINGS_KEY).map(String::as_str), Some("partial data"));
        let request = request.await.unwrap();
        assert!(request.starts_with("GET /api/v1/query?query=up+%3D%3D+1&timeout=1000ms HTTP/1.1"), "{request}");
        assert!(request.to_ascii_lowercase().contains("\r\nx-scope-orgid: team-a\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_range_query_asks_query_range_for_the_range_ending_now_with_its_step() {
        let (address, request) =
            fake_prometheus(Some(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)).await;
        let mut m = metric(&address, "up");
        m.provider.prometheus.as_mut().unwrap().range_query = Some(stepwise_api::PrometheusRangeQuery {
            start: "now() - duration('10m')".into(),
            end: "now()".into(),
            step: "1m".into(),
        });
        let before = Timestamp::now().as_second();
        let taken = PrometheusProvider::new(None).run(&RunRef::default(), &m).await.unwrap();
        let after = Timestamp::now().as_second();
        assert_eq!(taken.reading, Reading::Value(json!([])));
        let request = request.await.unwrap();
        assert!(request.starts_with("GET /api/v1/query_range?query=up&start="), "{request}");
        let param = |name: &str| -> i64 {
            let at = request.find(&format!("&{name}=")).unwrap() + name.len() + 2;
            request[at..].split(['&', ' ']).next().unwrap().parse().unwrap()
        };
        assert!((before..=after).contains(&param("end")), "{request}");
        assert_eq!(param("end") - param("start"), 600, "{request}");
        assert!(request.contains("&step=60&"), "{request}");
        assert!(taken.metadata[RANGE_KEY].ends_with(" step 60s"), "{:?}", taken.metadata);
    }

    #[tokio::test]
    async fn the_default_address_serves_metrics_without_one() {
        let (address, _) =
            fake_prometheus(Some(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#)).await;
        let taken = PrometheusProvider::new(Some(address)).run(&RunRef::default(), &metric("", "3")).await.unwrap();
        assert_eq!(taken.reading, Reading::Value(json!(3.0)));
        assert!(!taken.metadata.contains_key(WARNINGS_KEY));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_after_the_metrics_timeout() {
        let (address, _) = fake_prometheus(None).await;
        let started = std::time::Instant::now();
        let err = PrometheusProvider::new(None).run(&RunRef::default(), &metric(&address, "up")).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { seconds: 1, .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[test]
    fn the_metric_address_wins_and_an_empty_one_falls_back_to_the_default() {
        let base = |address, default| base_url(&resolve_address(address, default).unwrap());
        assert_eq!(base("http://p:9090/", Some("http://d:9090")), "http://p:9090");
        assert_eq!(base("", Some("http://d:9090/prom/")), "http://d:9090/prom");
        assert_eq!(base("  ", Some("https://d")), "https://d");
    }

    #[test]
    fn an_address_without_scheme_or_host_or_a_missing_one_is_a_config_error() {
        for (address, default) in [("p:9090", None), ("/api", None), ("http://", None), ("", None), ("", Some("x"))] {
            match resolve_address(address, default) {
                Err(Error::Config { field: "provider.prometheus.address", .. }) => {}
                other => panic!("{address:?} {default:?}: {other:?}"),
            }
        }
        let err = resolve_address("", None).unwrap_err().to_string();
        assert!(err.contains(ADDRESS_ENV), "{err}");
    }
}
