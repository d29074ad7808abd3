//! The New Relic provider: an NRQL query run through NerdGraph, New Relic's GraphQL API, whose
//! results are the measurement's value. Single-shot, with Argo Rollouts' semantics:
//!
//! * the query goes to `actor.account(id).nrql(query, timeout).results` as GraphQL variables
//!   (`$accountId: Int!`, `$query: Nrql!`, `$timeout: Seconds!`), with the personal API key in the
//!   `API-Key` header, as Argo's New Relic client sends it;
//! * the credentials come from a Secret in the controller's namespace: `newrelic`, or the one the
//!   metric's `profile` names, with `personal-api-key`, `account-id`, and optionally `region`
//!   (`us`, `eu`, …; which NerdGraph host) and `base-url-nerdgraph` (a proxy in front of it);
//! * the value is the one result object when NRQL answers one (`result.successRate`,
//!   `result['average.duration']`), the list of them when it answers several (`TIMESERIES`,
//!   `FACET`: `result[0].count`), and no data when it answers none or one empty object;
//! * a GraphQL error (NerdGraph's `errors` array) is the measurement's error, with New Relic's own
//!   messages (`NRQL Syntax Error: …`).
//!
//! Neither the API key nor the account id ever appears in an error or a log line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::de::Deserializer;
use serde::{Deserialize, de};
use serde_json::{Value, json};
use stepwise_api::Metric;

use crate::fields::{check_field, json_kind};
use crate::secrets::SecretStore;
use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "newRelic";

/// The Secret read when the metric names no `profile` (Argo's default).
pub const DEFAULT_PROFILE: &str = "newrelic";

/// Secret key of the personal (user) API key, sent as `API-Key`.
pub const API_KEY_KEY: &str = "personal-api-key";

/// Secret key of the New Relic account id the query runs in.
pub const ACCOUNT_ID_KEY: &str = "account-id";

/// Secret key of the New Relic region (`us` when absent).
pub const REGION_KEY: &str = "region";

/// Secret key of a NerdGraph URL that replaces the region's (a proxy, or a test server).
pub const NERDGRAPH_URL_KEY: &str = "base-url-nerdgraph";

/// Seconds NerdGraph may spend on the NRQL query when the metric does not say (Argo's default).
pub const DEFAULT_NRQL_TIMEOUT_SECONDS: i64 = 5;

/// Seconds the whole HTTP exchange may take, at least: New Relic's client waits as long.
pub const MIN_REQUEST_SECONDS: u64 = 30;

/// Seconds the exchange may take beyond the NRQL timeout, for a long `timeout`.
const REQUEST_MARGIN_SECONDS: u64 = 10;

/// Measurement metadata key of the query that ran (arguments substituted). Argo keeps it as
/// `ResolvedNewRelicQuery` on the metric's result; stepwise keeps every provider's query as
/// `query` on the measurement.
pub const QUERY_KEY: &str = "query";

/// The GraphQL document Argo sends: the NRQL query, account and timeout are its variables, so a
/// quote in the query needs no escaping.
const NRQL_DOCUMENT: &str = "query ($query: Nrql!, $accountId: Int!, $timeout: Seconds!) \
     { actor { account(id: $accountId) { nrql(query: $query, timeout: $timeout) { results } } } }";

/// NerdGraph messages that only warn; New Relic's client ignores them, and so does this.
const DEPRECATION_PREFIX: &str = "This field is deprecated!";

/// A metric's `provider.newRelic`, as Argo Rollouts defines it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRelicMetric {
    /// Name of the Secret, in the controller's namespace, holding the credentials; `newrelic`
    /// when unset. A different profile queries another account.
    #[serde(default)]
    pub profile: Option<String>,
    /// The NRQL query, e.g. `FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode
    /// != 500) as successRate where appName = 'checkout'`.
    pub query: String,
    /// Seconds NerdGraph may spend running the query (its `timeout` argument); 5 when unset.
    #[serde(default, deserialize_with = "whole_number")]
    pub timeout: Option<i64>,
}

impl NewRelicMetric {
    /// The `provider.newRelic` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.new_relic.as_ref().ok_or_else(|| Error::Config {
            field: "provider.newRelic",
            message: format!("metric {} has no newRelic provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.newRelic` as written in a metric. Every error names its field, e.g.
    /// `provider.newRelic.timeout: invalid type: string "soon", expected a whole number of seconds`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let fields = value.as_object().ok_or_else(|| Error::Config {
            field: "provider.newRelic",
            message: format!("must be an object with a query, not {}", json_kind(value)),
        })?;
        // Each field on its own first, so that an error names it; then the whole.
        if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "profile" | "query" | "timeout")) {
            return Err(Error::Config {
                field: "provider.newRelic",
                message: format!("unknown field {unknown:?}: a newRelic provider has profile, query and timeout"),
            });
        }
        check_field::<Option<String>>(fields, "profile", "provider.newRelic.profile")?;
        check_field::<String>(fields, "query", "provider.newRelic.query")?;
        check_field::<Seconds>(fields, "timeout", "provider.newRelic.timeout")?;
        let spec: NewRelicMetric = serde_json::from_value(value.clone())
            .map_err(|e| Error::Config { field: "provider.newRelic", message: e.to_string() })?;
        if spec.query.trim().is_empty() {
            return Err(Error::Config { field: "provider.newRelic.query", message: "is empty".into() });
        }
        if spec.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(Error::Config {
                field: "provider.newRelic.profile",
                message: format!("is empty: leave it out to use the Secret {DEFAULT_PROFILE}"),
            });
        }
        if spec.timeout.is_some_and(|t| t < 0) {
            // Argo's own words.
            return Err(Error::Config {
                field: "provider.newRelic.timeout",
                message: "timeout value needs to be a positive value".into(),
            });
        }
        Ok(spec)
    }

    /// The Secret holding the credentials.
    pub fn secret_name(&self) -> &str {
        self.profile.as_deref().map(str::trim).unwrap_or(DEFAULT_PROFILE)
    }

    /// Seconds NerdGraph may spend on the query.
    pub fn nrql_timeout(&self) -> i64 {
        self.timeout.unwrap_or(DEFAULT_NRQL_TIMEOUT_SECONDS)
    }
}

/// `timeout` as written: a number, or (after `{{args.x}}` substitution) a string holding one.
struct Seconds;

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole_number(deserializer).map(|_| Seconds)
    }
}

/// A whole number of seconds, from a number or a string of digits.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let expected = "a whole number of seconds";
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Other(&n.to_string()), &expected)),
        Value::String(s) => {
            s.trim().parse::<i64>().map(Some).map_err(|_| de::Error::invalid_value(de::Unexpected::Str(&s), &expected))
        }
        other => Err(de::Error::invalid_type(de::Unexpected::Other(json_kind(&other)), &expected)),
    }
}

/// The NerdGraph endpoint of a New Relic region, as New Relic's Go client maps them: `us`, `eu`,
/// `jp`, `gov` (or `fedramp`), `staging` and `local`, in any case. Like that client (and so
/// Argo), an unknown region, or none, is the US one.
pub fn nerdgraph_url(region: Option<&str>) -> &'static str {
    match region.map(|r| r.trim().to_ascii_lowercase()).as_deref() {
        Some("eu") => "https://api.eu.newrelic.com/graphql",
        Some("jp") => "https://api.jp.newrelic.com/graphql",
        Some("gov" | "fedramp") => "https://gov-api.newrelic.com/graphql",
        Some("staging") => "https://staging-api.newrelic.com/graphql",
        Some("local") => "http://localhost:3000/graphql",
        _ => "https://api.newrelic.com/graphql",
    }
}

/// Measures with NRQL queries through NerdGraph.
pub struct NewRelicProvider {
    /// Where the profile Secrets are read.
    secrets: Arc<dyn SecretStore>,
    /// The controller's namespace, where the profile Secrets live.
    namespace: String,
    /// Shared by all queries.
    http: Result<reqwest::Client, String>,
}

impl NewRelicProvider {
    /// A provider reading its profile Secrets from `secrets` in `controller_namespace`.
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new(secrets: Arc<dyn SecretStore>, controller_namespace: impl Into<String>) -> Self {
        NewRelicProvider { secrets, namespace: controller_namespace.into(), http: http_client(false) }
    }
}

impl fmt::Debug for NewRelicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicProvider").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl MetricProvider for NewRelicProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = NewRelicMetric::from_metric(metric)?;
        let profile = Profile::read(self.secrets.as_ref(), &self.namespace, spec.secret_name()).await?;
        let target = format!("NerdGraph at {}", redacted(&profile.endpoint));
        let answer = self.query(&profile, &spec, &target).await;
        // New Relic's answers are quoted in errors; should one echo the key, it goes no further.
        let results = answer.map_err(|e| e.without_secrets(&[&profile.api_key]))?;
        let value = value_of(results).ok_or_else(|| Error::NoData { metric: metric.name.clone() })?;
        let mut taken = Taken::new(Reading::Value(value));
        taken.metadata.insert(QUERY_KEY.into(), spec.query.clone());
        Ok(taken)
    }
}

impl NewRelicProvider {
    /// Sends the query and reads NRQL's results.
    async fn query(&self, profile: &Profile, spec: &NewRelicMetric, target: &str) -> Result<Vec<Value>, Error> {
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.into(), message: message.clone() })?;
        let timeout = spec.nrql_timeout();
        let body = json!({
            "query": NRQL_DOCUMENT,
            "variables": { "accountId": profile.account_id, "query": spec.query, "timeout": timeout },
        });
        let mut key = HeaderValue::from_str(&profile.api_key).map_err(|_| Error::Config {
            field: "provider.newRelic.profile",
            message: format!(
                "the {API_KEY_KEY} of Secret {}/{} is not a valid header value",
                self.namespace,
                spec.secret_name()
            ),
        })?;
        key.set_sensitive(true);
        let request = http
            .post(profile.endpoint.clone())
            .header("API-Key", key)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(body.to_string());
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let seconds = MIN_REQUEST_SECONDS.max((timeout.max(0) as u64).saturating_add(REQUEST_MARGIN_SECONDS));
        let (status, text) = match tokio::time::timeout(Duration::from_secs(seconds), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds, target: target.into() }),
            Ok(Err(e)) => return Err(Error::Source { target: target.into(), message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        read_answer(status, &text).map_err(|refusal| match refusal {
            Refusal::Source(message) => Error::Source { target: target.into(), message },
            Refusal::Answer(message) => Error::Answer { message: format!("{target}: {message}") },
        })
    }
}

/// The credentials and endpoint of a profile Secret.
struct Profile {
    api_key: String,
    account_id: i64,
    endpoint: Url,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile").field("endpoint", &redacted(&self.endpoint)).finish_non_exhaustive()
    }
}

impl Profile {
    /// Reads the Secret `name` in `namespace`. Errors name `provider.newRelic.profile`, the field
    /// that chooses the Secret, and never quote its values.
    async fn read(secrets: &dyn SecretStore, namespace: &str, name: &str) -> Result<Profile, Error> {
        let problem = |message: String| Error::Config { field: "provider.newRelic.profile", message };
        let data = secrets.get(namespace, name).await?.ok_or_else(|| {
            problem(format!(
                "Secret {namespace}/{name} does not exist: create it with {API_KEY_KEY} and {ACCOUNT_ID_KEY} \
                 (see docs/analysis.md)"
            ))
        })?;
        let present = |key: &str| data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let api_key = present(API_KEY_KEY)
            .ok_or_else(|| problem(format!("Secret {namespace}/{name} has no {API_KEY_KEY}")))?
            .to_string();
        let account_id = present(ACCOUNT_ID_KEY)
            .ok_or_else(|| problem(format!("Secret {namespace}/{name} has no {ACCOUNT_ID_KEY}")))?
            .parse::<i64>()
            // The value is not quoted: a key pasted in the wrong field would be shown.
            .map_err(|_| problem(format!("the {ACCOUNT_ID_KEY} of Secret {namespace}/{name} is not a number")))?;
        let region = data.get(REGION_KEY).map(String::as_str);
        if let Some(region) = region
            && !matches!(
                region.trim().to_ascii_lowercase().as_str(),
                "us" | "eu" | "jp" | "gov" | "fedramp" | "staging" | "local"
            )
        {
            let secret = format!("{namespace}/{name}");
            tracing::warn!(%secret, region, "unknown New Relic region: using the US one");
        }
        let endpoint = match data.get(NERDGRAPH_URL_KEY) {
            // As New Relic's client: the key present but empty is a mistake, not "no override".
            Some(url) => parse_url(url).map_err(|_| {
                problem(format!(
                    "the {NERDGRAPH_URL_KEY} of Secret {namespace}/{name} is not an http:// or https:// URL with a host"
                ))
            })?,
            None => Url::parse(nerdgraph_url(region)).expect("the region URLs are valid"),
        };
        Ok(Profile { api_key, account_id, endpoint })
    }
}

/// Why an answer is not a value: NerdGraph said no (`Source`), or it could not be read.
#[derive(Debug, PartialEq)]
enum Refusal {
    Source(String),
    Answer(String),
}

/// The envelope of every GraphQL answer.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GraphQlError>>,
}

/// One entry of a GraphQL answer's `errors`.
#[derive(Deserialize)]
struct GraphQlError {
    #[serde(default)]
    message: Option<String>,
}

/// NRQL's results in a NerdGraph answer: the list at `data.actor.account.nrql.results` (empty when
/// null, as New Relic's client reads it), or why there is none.
fn read_answer(status: StatusCode, body: &str) -> Result<Vec<Value>, Refusal> {
    let http_status = || match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let Ok(envelope) = serde_json::from_str::<Envelope>(body) else {
        // A proxy or load balancer in front of NerdGraph answers in text; quote it either way.
        return Err(if status.is_success() {
            Refusal::Answer(format!("the answer is not GraphQL JSON: {}", snippet(body)))
        } else {
            Refusal::Source(format!("{}: {}", http_status(), snippet(body)))
        });
    };
    let messages: Vec<String> = envelope
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.message.unwrap_or_default())
        .filter(|m| !m.starts_with(DEPRECATION_PREFIX))
        .collect();
    let said: Vec<&str> = messages.iter().map(String::as_str).filter(|m| !m.is_empty()).collect();
    match (status.is_success(), messages.is_empty()) {
        (true, true) => {}
        // GraphQL errors come with 200: the `errors` array is the answer.
        (true, false) if said.is_empty() => return Err(Refusal::Source("an error without a message".into())),
        (true, false) => return Err(Refusal::Source(said.join(", "))),
        (false, _) if said.is_empty() => return Err(Refusal::Source(format!("{}: {}", http_status(), snippet(body)))),
        (false, _) => return Err(Refusal::Source(format!("{}: {}", http_status(), said.join(", ")))),
    }
    let results =
        envelope.data.as_ref().and_then(|d| d.pointer("/actor/account/nrql/results")).cloned().unwrap_or(Value::Null);
    match results {
        Value::Null => Ok(Vec::new()),
        Value::Array(results) => Ok(results),
        other => Err(Refusal::Answer(format!("nrql.results is {}, not a list", json_kind(&other)))),
    }
}

/// The value the conditions see, as Argo makes it: the single result, or the list of several;
/// None when there is no data (no result, or one that is empty).
fn value_of(mut results: Vec<Value>) -> Option<Value> {
    match results.len() {
        0 => None,
        1 => match results.pop() {
            Some(Value::Object(fields)) if fields.is_empty() => None,
            one => one,
        },
        _ => Some(Value::Array(results)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::secrets::FixedSecrets;

    fn field_of(value: Value) -> &'static str {
        match NewRelicMetric::parse(&value) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_metric_is_read_with_argos_defaults() {
        let spec = NewRelicMetric::parse(&json!({"query": "FROM Transaction SELECT count(*)"})).unwrap();
        assert_eq!((spec.secret_name(), spec.nrql_timeout()), ("newrelic", 5));
        let spec = NewRelicMetric::parse(&json!({"profile": "nr-eu", "query": "q", "timeout": 10})).unwrap();
        assert_eq!((spec.secret_name(), spec.nrql_timeout()), ("nr-eu", 10));
        // A templated timeout arrives as a string once its argument is substituted.
        assert_eq!(NewRelicMetric::parse(&json!({"query": "q", "timeout": "7"})).unwrap().timeout, Some(7));
        // Argo lets a zero timeout through to NerdGraph.
        assert_eq!(NewRelicMetric::parse(&json!({"query": "q", "timeout": 0})).unwrap().timeout, Some(0));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field_of(json!("FROM Transaction")), "provider.newRelic");
        assert_eq!(field_of(json!({"query": "q", "timout": 5})), "provider.newRelic");
        assert_eq!(field_of(json!({})), "provider.newRelic");
        assert_eq!(field_of(json!({"query": 5})), "provider.newRelic.query");
        assert_eq!(field_of(json!({"query": "  "})), "provider.newRelic.query");
        assert_eq!(field_of(json!({"query": "q", "profile": ["a"]})), "provider.newRelic.profile");
        assert_eq!(field_of(json!({"query": "q", "profile": ""})), "provider.newRelic.profile");
        assert_eq!(field_of(json!({"query": "q", "timeout": "soon"})), "provider.newRelic.timeout");
        assert_eq!(field_of(json!({"query": "q", "timeout": 2.5})), "provider.newRelic.timeout");
        assert_eq!(field_of(json!({"query": "q", "timeout": -1})), "provider.newRelic.timeout");
        let err = NewRelicMetric::parse(&json!({"query": "q", "timeout": -1})).unwrap_err();
        assert_eq!(err.to_string(), "provider.newRelic.timeout: timeout value needs to be a positive value");
        let err = NewRelicMetric::parse(&json!({"query": "q", "timeout": "soon"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"provider.newRelic.timeout: invalid value: string "soon", expected a whole number of seconds"#
        );
        let err = NewRelicMetric::parse(&json!({"query": "q", "timout": 5})).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"provider.newRelic: unknown field "timout": a newRelic provider has profile, query and timeout"#
        );
    }

    #[test]
    fn regions_map_to_their_nerdgraph_hosts() {
        assert_eq!(nerdgraph_url(None), "https://api.newrelic.com/graphql");
        assert_eq!(nerdgraph_url(Some("us")), "https://api.newrelic.com/graphql");
        assert_eq!(nerdgraph_url(Some("EU")), "https://api.eu.newrelic.com/graphql");
        assert_eq!(nerdgraph_url(Some("jp")), "https://api.jp.newrelic.com/graphql");
        assert_eq!(nerdgraph_url(Some("fedramp")), "https://gov-api.newrelic.com/graphql");
        // As New Relic's client: anything else is the US, not an error.
        assert_eq!(nerdgraph_url(Some("prod")), "https://api.newrelic.com/graphql");
    }

    #[test]
    fn one_result_is_the_value_several_are_a_list_none_is_no_data() {
        assert_eq!(value_of(vec![json!({"count": 10})]), Some(json!({"count": 10})));
        assert_eq!(
            value_of(vec![json!({"count": 10}), json!({"count": 20})]),
            Some(json!([{"count": 10}, {"count": 20}]))
        );
        assert_eq!(value_of(vec![]), None);
        assert_eq!(value_of(vec![json!({})]), None);
    }

    #[test]
    fn graphql_errors_are_the_error_text() {
        let body = r#"{"errors":[{"message":"NRQL Syntax Error: Error at line 1 position 6",
                                  "path":["actor","account","nrql"]},
                     {"message":"second"}],"data":{"actor":{"account":{"nrql":null}}}}"#;
        assert_eq!(
            read_answer(StatusCode::OK, body),
            Err(Refusal::Source("NRQL Syntax Error: Error at line 1 position 6, second".into()))
        );
        let body = r#"{"errors":[{"extensions":{"error_code":"BAD_API_KEY"},
                       "message":"Bad API Key or no API Key provided"}]}"#;
        assert_eq!(
            read_answer(StatusCode::UNAUTHORIZED, body),
            Err(Refusal::Source("HTTP 401 Unauthorized: Bad API Key or no API Key provided".into()))
        );
        assert_eq!(
            read_answer(StatusCode::BAD_GATEWAY, "<html>upstream</html>"),
            Err(Refusal::Source(r#"HTTP 502 Bad Gateway: "<html>upstream</html>""#.into()))
        );
        assert!(matches!(read_answer(StatusCode::OK, "<html>"), Err(Refusal::Answer(_))));
    }

    #[test]
    fn deprecation_warnings_are_not_errors() {
        let body = r#"{"errors":[{"message":"This field is deprecated! Please use `x` instead."}],
                      "data":{"actor":{"account":{"nrql":{"results":[{"count":3}]}}}}}"#;
        assert_eq!(read_answer(StatusCode::OK, body), Ok(vec![json!({"count": 3})]));
    }

    #[test]
    fn null_results_are_no_results() {
        let body = r#"{"data":{"actor":{"account":{"nrql":{"results":null}}}}}"#;
        assert_eq!(read_answer(StatusCode::OK, body), Ok(vec![]));
        let body = r#"{"data":{"actor":{"account":{"nrql":{"results":5}}}}}"#;
        assert!(matches!(read_answer(StatusCode::OK, body), Err(Refusal::Answer(_))));
    }

    #[test]
    fn secrets_are_scrubbed_from_errors() {
        let e = Error::Source { target: "t".into(), message: "bad key NRAK-123456".into() }
            .without_secrets(&["NRAK-123456"]);
        assert_eq!(e.to_string(), "t: bad key *****");
    }

    #[tokio::test]
    async fn the_profile_secret_is_checked_without_quoting_it() {
        let secrets = FixedSecrets::default()
            .with("ns", "newrelic", &[(API_KEY_KEY, "NRAK-SECRET"), (ACCOUNT_ID_KEY, "NRAK-SECRET2")])
            .with("ns", "no-key", &[(ACCOUNT_ID_KEY, "1")])
            .with("ns", "eu", &[(API_KEY_KEY, "NRAK-EU-KEY"), (ACCOUNT_ID_KEY, " 42\n"), (REGION_KEY, "eu")])
            .with("ns", "bad-url", &[(API_KEY_KEY, "k"), (ACCOUNT_ID_KEY, "1"), (NERDGRAPH_URL_KEY, "")]);
        let err = Profile::read(&secrets, "ns", "newrelic").await.unwrap_err();
        assert_eq!(err.to_string(), "provider.newRelic.profile: the account-id of Secret ns/newrelic is not a number");
        let err = Profile::read(&secrets, "ns", "no-key").await.unwrap_err();
        assert_eq!(err.to_string(), "provider.newRelic.profile: Secret ns/no-key has no personal-api-key");
        let err = Profile::read(&secrets, "ns", "missing").await.unwrap_err();
        assert!(err.to_string().starts_with("provider.newRelic.profile: Secret ns/missing does not exist"), "{err}");
        let err = Profile::read(&secrets, "ns", "bad-url").await.unwrap_err();
        assert!(err.to_string().contains("base-url-nerdgraph"), "{err}");
        let eu = Profile::read(&secrets, "ns", "eu").await.unwrap();
        assert_eq!((eu.account_id, eu.endpoint.as_str()), (42, "https://api.eu.newrelic.com/graphql"));
        assert!(!format!("{eu:?}").contains("NRAK-EU-KEY"), "{eu:?}");
    }
}
