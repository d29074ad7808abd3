//! The SkyWalking provider: a GraphQL query sent to a SkyWalking OAP server, whose answer's
//! `data` is the measurement's value. Single-shot, with Argo Rollouts' semantics:
//!
//! * `POST <address>/graphql` with `{"query": <the metric's query>, "variables": {"duration":
//!   {"start", "end", "step": "MINUTE"}}}`: the query's `$duration` is the window of the
//!   metric's `interval` ending now, in SkyWalking's minute format (`2024-05-01 1304`), as Argo's
//!   client sends it;
//! * the value is the answer's `data`, as SkyWalking shaped it (so the conditions read e.g.
//!   `result.service_apdex.values.values`); an answer without `data` is no data;
//! * an answer with GraphQL `errors` is an error whose text is their messages.
//!
//! Argo formats the window in its controller's local time zone, which is UTC in its image; here
//! it is always UTC. SkyWalking reads it in the OAP server's time zone: keep both in UTC.

use std::time::Duration as StdDuration;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use stepwise_api::{Duration, Metric};

use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "skywalking";

/// The GraphQL path on every OAP address (Argo appends it to the address).
pub const GRAPHQL_PATH: &str = "/graphql";

/// Seconds a query may take, as Argo's `defaultQueryTimeout`.
pub const TIMEOUT_SECONDS: u64 = 30;

/// SkyWalking's `Step` of the window Argo sends.
pub const STEP: &str = "MINUTE";

/// The format of a `MINUTE` step's times in SkyWalking's `Duration` (Go's `2006-01-02 1504`).
const MINUTE_FORMAT: &str = "%Y-%m-%d %H%M";

/// The fields of Argo's `SkyWalkingMetric`, each with the name errors give it.
const FIELDS: [(&str, &str); 3] = [
    ("address", "provider.skywalking.address"),
    ("query", "provider.skywalking.query"),
    ("interval", "provider.skywalking.interval"),
];

/// A metric's `provider.skywalking`, as Argo Rollouts' `SkyWalkingMetric`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkywalkingMetric {
    /// The OAP server's base URL, e.g. `http://skywalking-oap.istio-system:12800`; the query is
    /// posted to its `/graphql`.
    #[serde(default)]
    pub address: String,
    /// The GraphQL query. It may declare `$duration: Duration!`, the window asked for.
    #[serde(default)]
    pub query: String,
    /// The window queried, ending now: a duration such as `3m` (required, as in Argo, where an
    /// empty one fails). Not the time between measurements, which is the metric's own
    /// `interval`.
    #[serde(default)]
    pub interval: Option<Duration>,
}

impl SkywalkingMetric {
    /// The `provider.skywalking` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.skywalking.as_ref().ok_or_else(|| Error::Config {
            field: "provider.skywalking",
            message: format!("metric {} has no skywalking provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.skywalking` as written in a metric. Every error names its field, e.g.
    /// `provider.skywalking.interval: is required`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let config = |field, message: String| Error::Config { field, message };
        let Value::Object(fields) = value else {
            return Err(config("provider.skywalking", "must be an object with address, query and interval".into()));
        };
        for (key, field_value) in fields {
            let Some((_, field)) = FIELDS.iter().find(|(k, _)| k == key) else {
                return Err(config(
                    "provider.skywalking",
                    format!("unknown field {key:?}: a skywalking provider has address, query and interval"),
                ));
            };
            let alone = Value::Object(Map::from_iter([(key.clone(), field_value.clone())]));
            serde_json::from_value::<SkywalkingMetric>(alone).map_err(|e| config(field, e.to_string()))?;
        }
        let spec: SkywalkingMetric =
            serde_json::from_value(value.clone()).map_err(|e| config("provider.skywalking", e.to_string()))?;
        if spec.address.trim().is_empty() {
            return Err(config("provider.skywalking.address", "is required, e.g. http://skywalking-oap:12800".into()));
        }
        if spec.query.trim().is_empty() {
            return Err(config("provider.skywalking.query", "is required: a GraphQL query".into()));
        }
        spec.graphql_url()?;
        spec.window()?;
        Ok(spec)
    }

    /// `<address>/graphql`: a path in the address is kept (a proxy's), as Argo appends.
    pub fn graphql_url(&self) -> Result<Url, Error> {
        let address = self.address.trim().trim_end_matches('/');
        let mut url =
            parse_url(address).map_err(|message| Error::Config { field: "provider.skywalking.address", message })?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config {
                field: "provider.skywalking.address",
                message: "must be a base URL, without a query or a fragment".into(),
            });
        }
        let path = format!("{}{GRAPHQL_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(url)
    }

    /// The window: `interval`, at least a minute (SkyWalking's step).
    pub fn window(&self) -> Result<StdDuration, Error> {
        let field = "provider.skywalking.interval";
        let interval = self
            .interval
            .as_ref()
            .ok_or_else(|| Error::Config { field, message: "is required: the window queried, e.g. 3m".into() })?;
        let window = interval.to_std().map_err(|e| Error::Config { field, message: e.to_string() })?;
        if window.is_zero() {
            return Err(Error::Config { field, message: "must be a positive duration, e.g. 3m".into() });
        }
        Ok(window)
    }
}

/// The `duration` variable of the window of `window` ending at `now`, as Argo sends it.
pub fn duration_variable(now: Timestamp, window: StdDuration) -> Value {
    let seconds = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let start = now.as_second().saturating_sub(seconds);
    let start = Timestamp::from_second(start).unwrap_or(Timestamp::MIN);
    json!({ "start": minute(start), "end": minute(now), "step": STEP })
}

/// A time in SkyWalking's minute format, UTC.
fn minute(at: Timestamp) -> String {
    at.to_zoned(TimeZone::UTC).strftime(MINUTE_FORMAT).to_string()
}

/// A GraphQL answer, the fields this provider reads.
#[derive(Debug, Default, Deserialize)]
struct GraphqlAnswer {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
}

/// One of a GraphQL answer's `errors`.
#[derive(Debug, Deserialize)]
struct GraphqlError {
    #[serde(default)]
    message: Option<String>,
}

/// Measures with SkyWalking GraphQL queries.
#[derive(Debug)]
pub struct SkywalkingProvider {
    /// Shared by all queries.
    http: Result<reqwest::Client, String>,
}

impl Default for SkywalkingProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl SkywalkingProvider {
    /// A provider. Never fails: should the TLS stack be unusable, every measurement reports why
    /// instead.
    pub fn new() -> Self {
        SkywalkingProvider { http: http_client(false) }
    }
}

impl MetricProvider for SkywalkingProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = SkywalkingMetric::from_metric(metric)?;
        let url = spec.graphql_url()?;
        let variables = json!({ "duration": duration_variable(Timestamp::now(), spec.window()?) });
        let target = format!("SkyWalking at {}", redacted(&url).trim_end_matches(GRAPHQL_PATH));
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let request = http
            .post(url)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(ACCEPT, "application/json; charset=utf-8")
            .json(&json!({ "query": spec.query, "variables": variables }));
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (status, body) = match tokio::time::timeout(StdDuration::from_secs(TIMEOUT_SECONDS), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds: TIMEOUT_SECONDS, target }),
            Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        match read_answer(status.as_u16(), &body) {
            Ok(Some(data)) => Ok(Taken::new(Reading::Value(data))),
            Ok(None) => Err(Error::NoData { metric: metric.name.clone() }),
            Err(Refusal::Source(message)) => Err(Error::Source { target, message }),
            Err(Refusal::Answer(message)) => Err(Error::Answer { message: format!("{target}: {message}") }),
        }
    }
}

/// Why an answer has no value: SkyWalking said no (`Source`), or it could not be read.
#[derive(Debug, PartialEq)]
enum Refusal {
    Source(String),
    Answer(String),
}

/// The `data` of an answer (`None`: null or absent), or why there is none. As Argo's GraphQL
/// client: the `errors` win over the status and over any partial `data`.
fn read_answer(status: u16, body: &str) -> Result<Option<Value>, Refusal> {
    let ok = (200..300).contains(&status);
    let http = || format!("HTTP {status}");
    let answer: GraphqlAnswer = match serde_json::from_str(body) {
        Ok(answer) => answer,
        Err(_) if !ok => return Err(Refusal::Source(format!("{}: {}", http(), snippet(body)))),
        Err(_) => return Err(Refusal::Answer(format!("the answer is not GraphQL's JSON: {}", snippet(body)))),
    };
    let messages: Vec<String> = answer
        .errors
        .iter()
        .flatten()
        .map(|e| e.message.as_deref().map(str::trim).filter(|m| !m.is_empty()).unwrap_or("(no message)").to_string())
        .collect();
    if !messages.is_empty() {
        return Err(Refusal::Source(messages.join("; ")));
    }
    if !ok {
        return Err(Refusal::Source(format!("{}: {}", http(), snippet(body))));
    }
    Ok(answer.data.filter(|d| !d.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<SkywalkingMetric, String> {
        SkywalkingMetric::parse(&value).map_err(|e| e.to_string())
    }

    #[test]
    fn the_fields_are_argos_and_errors_name_them() {
        let spec = parse(json!({"address": "http://oap:12800/", "query": "q", "interval": "3m"})).unwrap();
        assert_eq!(spec.graphql_url().unwrap().as_str(), "http://oap:12800/graphql");
        assert_eq!(spec.window().unwrap(), StdDuration::from_secs(180));
        let proxied = parse(json!({"address": "https://gw/sw/", "query": "q", "interval": 60})).unwrap();
        assert_eq!(proxied.graphql_url().unwrap().as_str(), "https://gw/sw/graphql");

        for (value, error) in [
            (json!("x"), "provider.skywalking: must be an object"),
            (json!({"query": "q", "interval": "3m"}), "provider.skywalking.address: is required"),
            (json!({"address": "oap:12800", "query": "q", "interval": "3m"}), "provider.skywalking.address:"),
            (json!({"address": "http://oap", "interval": "3m"}), "provider.skywalking.query: is required"),
            (json!({"address": "http://oap", "query": 1, "interval": "3m"}), "provider.skywalking.query: invalid"),
            (json!({"address": "http://oap", "query": "q"}), "provider.skywalking.interval: is required"),
            (json!({"address": "http://oap", "query": "q", "interval": "3 minutes"}), "provider.skywalking.interval:"),
            (json!({"address": "http://oap", "query": "q", "interval": "0s"}), "provider.skywalking.interval: must"),
            (
                json!({"address": "http://oap", "query": "q", "interval": "3m", "step": "HOUR"}),
                "unknown field \"step\"",
            ),
        ] {
            let got = parse(value.clone()).unwrap_err();
            assert!(got.starts_with(error) || got.contains(error), "{value}: {got}");
        }
    }

    #[test]
    fn the_window_is_skywalkings_minute_format_ending_now() {
        let now: Timestamp = "2024-05-01T13:04:59Z".parse().unwrap();
        assert_eq!(
            duration_variable(now, StdDuration::from_secs(180)),
            json!({"start": "2024-05-01 1301", "end": "2024-05-01 1304", "step": "MINUTE"})
        );
        let midnight: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(duration_variable(midnight, StdDuration::from_secs(120))["start"], "2023-12-31 2359");
    }

    #[test]
    fn the_value_is_the_data_and_errors_are_their_messages() {
        assert_eq!(read_answer(200, r#"{"data": {"a": 1}}"#), Ok(Some(json!({"a": 1}))));
        assert_eq!(read_answer(200, r#"{"data": null}"#), Ok(None));
        assert_eq!(read_answer(200, "{}"), Ok(None));
        assert_eq!(
            read_answer(200, r#"{"data": {"a": null}, "errors": [{"message": "boom"}, {"message": "bang"}]}"#),
            Err(Refusal::Source("boom; bang".into()))
        );
        assert_eq!(
            read_answer(400, r#"{"errors": [{"message": "Validation error"}]}"#),
            Err(Refusal::Source("Validation error".into()))
        );
        assert_eq!(read_answer(502, "Bad Gateway"), Err(Refusal::Source("HTTP 502: \"Bad Gateway\"".into())));
        assert!(matches!(read_answer(200, "<html>"), Err(Refusal::Answer(_))));
    }
}
