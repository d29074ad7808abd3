//! The Alertmanager service (`service.alertmanager`, or `service.alertmanager.<name>` for
//! several clusters), as Argo's: each message becomes one alert posted to Alertmanager's API, so
//! that an on-call team's existing routing, grouping, inhibition and silences apply to it.
//!
//! ```yaml
//! service.alertmanager: |
//!   targets: [alertmanager-0.monitoring:9093, alertmanager-1.monitoring:9093]
//!   bearerToken: $alertmanager-token
//! template.rollout-aborted: |
//!   message: Rollout {{.rollout.metadata.name}} has been aborted.
//!   alertmanager:
//!     labels:
//!       severity: critical
//!       namespace: '{{.rollout.metadata.namespace}}'
//!     annotations:
//!       runbook_url: https://runbooks.example.com/rollout-aborted
//!     generatorURL: https://argo.example.com/rollouts/{{.rollout.metadata.name}}
//! ```
//!
//! The body is Alertmanager's API v2 `postableAlerts`: a list of one alert with the section's
//! labels and annotations, `startsAt` now and the `generatorURL`. The label `alertname` defaults
//! to the template's name and the annotation `summary` to the message text. Values empty once
//! rendered are left out, as Alertmanager refuses an empty label value.
//!
//! Config: `targets` (`host:port`, or URLs, whose path is a prefix of `apiPath`), `scheme`
//! (`http` unless set), `apiPath` (`/api/v2/alerts`), `basicAuth {username, password}` or
//! `bearerToken`, `timeout` (per target; 3 s, Argo's default) and `insecureSkipVerify`.
//!
//! The nodes of an Alertmanager cluster share their alerts, so one node taking the alert is
//! delivery: targets are tried in order until one answers 2xx. The recipient of a subscription is
//! ignored, as Argo's alertmanager service ignores it: routing is Alertmanager's, by label.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::Secrets;
use crate::http::{self, Redactor};
use crate::webhook::{BasicAuth, basic_auth};
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "alertmanager";

/// Where Alertmanager takes alerts when `apiPath` does not say.
pub const DEFAULT_API_PATH: &str = "/api/v2/alerts";

/// How long one target may take when `timeout` does not say: Argo's default, short because an
/// Alertmanager answers within milliseconds and a stuck node must not hold up the next one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The label every alert has: Alertmanager groups and routes by it.
const ALERTNAME: &str = "alertname";

/// The annotation the message text becomes when the template does not set it.
const SUMMARY: &str = "summary";

/// A `service.alertmanager` value as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertmanagerConfig {
    #[serde(default)]
    targets: Vec<String>,
    scheme: Option<String>,
    api_path: Option<String>,
    basic_auth: Option<BasicAuth>,
    bearer_token: Option<String>,
    timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// One Alertmanager node.
struct Target {
    /// Where alerts are posted.
    url: String,
    /// `host:port`, which names the node in errors: never the URL's path or credentials.
    name: String,
}

/// A configured Alertmanager service, its secrets resolved.
pub struct Alertmanager {
    /// The ConfigMap key, which names the service in errors.
    key: String,
    targets: Vec<Target>,
    /// Basic auth or the bearer token, as the `Authorization` header.
    authorization: Option<HeaderValue>,
    /// The deadline of each target; a send tries every target, so takes up to this many times.
    timeout: Duration,
    client: Result<reqwest::Client, String>,
    redactor: Redactor,
}

/// Builds the Alertmanager service of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let config: AlertmanagerConfig =
        serde_yaml::from_str(config).map_err(|e| invalid(format!("not an Alertmanager config: {e}")))?;
    let mut secrets = Secrets::new(key, secrets);
    let targets = targets(&config, &mut secrets)?.map_err(invalid)?;
    let authorization = authorization(&config, &mut secrets)?.map_err(invalid)?;
    let timeout = match config.timeout {
        None => DEFAULT_TIMEOUT,
        Some(ref value) => crate::webhook::timeout(Some(value)).map_err(|e| invalid(format!("timeout: {e}")))?,
    };
    Ok(Box::new(Alertmanager {
        key: key.to_string(),
        targets,
        authorization,
        timeout,
        client: http::client(config.insecure_skip_verify),
        redactor: Redactor::new(secrets.into_used()),
    }))
}

/// The targets of `config`, in order. The outer error is a missing secret; the inner one, what is
/// wrong with the config.
fn targets(config: &AlertmanagerConfig, secrets: &mut Secrets) -> Result<Result<Vec<Target>, String>, Error> {
    // Argo falls back to 127.0.0.1:9093, where a controller's pod has no Alertmanager.
    if config.targets.is_empty() {
        return Ok(Err("targets is missing (host:port or URLs of Alertmanager)".into()));
    }
    let scheme = config.scheme.as_deref().map(str::trim).unwrap_or("http");
    if !matches!(scheme, "http" | "https") {
        return Ok(Err(format!("scheme {scheme:?} is not http or https")));
    }
    let api_path = config.api_path.as_deref().map(str::trim).unwrap_or(DEFAULT_API_PATH);
    let api_path = if api_path.starts_with('/') { api_path.to_string() } else { format!("/{api_path}") };
    let mut targets = Vec::with_capacity(config.targets.len());
    for (i, text) in config.targets.iter().enumerate() {
        match target(&secrets.resolve(text)?, scheme, &api_path) {
            Some(target) => targets.push(target),
            // Not quoted: a target may carry credentials in its URL.
            None => return Ok(Err(format!("targets[{i}] is not host:port or an http:// or https:// URL"))),
        }
    }
    Ok(Ok(targets))
}

/// The target written `text`: `host:port` reached with `scheme`, or a URL; `api_path` follows.
fn target(text: &str, scheme: &str, api_path: &str) -> Option<Target> {
    let text = text.trim();
    let base = if text.contains("://") { text.to_string() } else { format!("{scheme}://{text}") };
    let url = reqwest::Url::parse(&base).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let name = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Some(Target { url: crate::webhook::join(base.trim_end_matches('/'), api_path), name })
}

/// The `Authorization` header of `config`'s basic auth or bearer token. The outer error is a
/// missing secret; the inner one, what is wrong with the config.
fn authorization(
    config: &AlertmanagerConfig,
    secrets: &mut Secrets,
) -> Result<Result<Option<HeaderValue>, String>, Error> {
    let value = match (&config.basic_auth, &config.bearer_token) {
        // Argo silently prefers basic auth; a token configured for nothing is a mistake to report.
        (Some(_), Some(_)) => return Ok(Err("basicAuth and bearerToken are both set: choose one".into())),
        (Some(auth), None) => {
            let password = secrets.resolve(&auth.password)?;
            // Written in the ConfigMap or not, a password is a credential.
            secrets.treat_as_secret(&password);
            let credentials = basic_auth(&secrets.resolve(&auth.username)?, &password);
            // Encoded, the credentials are as secret as they are plain, should a receiver echo them.
            secrets.treat_as_secret(&credentials);
            format!("Basic {credentials}")
        }
        (None, Some(token)) => {
            let token = secrets.resolve(token)?;
            secrets.treat_as_secret(&token);
            format!("Bearer {}", token.trim())
        }
        (None, None) => return Ok(Ok(None)),
    };
    // Not quoted back: the value is the credential.
    Ok(HeaderValue::from_str(&value).map(Some).map_err(|_| "the credentials are not valid in a header".into()))
}

/// A template's `alertmanager` section serves every Alertmanager service.
pub fn section(section: &Value, _name: &str) -> Option<(String, Value)> {
    Some((KIND.to_string(), section.clone()))
}

/// Checks a rendered section and leaves out what Alertmanager would refuse: labels and
/// annotations become maps of non-empty text (trimmed: a YAML block keeps a trailing newline that
/// would make a different label value), and a label name must be one Alertmanager accepts. An
/// error names the field.
pub fn finish(mut rendered: Value) -> Result<Value, (String, String)> {
    let Some(fields) = rendered.as_object_mut() else {
        return Err((KIND.into(), "not a map (labels, annotations, generatorURL)".into()));
    };
    for field in ["labels", "annotations"] {
        if let Some(value) = fields.get_mut(field) {
            *value = Value::Object(texts(value, field)?);
        }
    }
    match fields.get("generatorURL") {
        None | Some(Value::Null) => {}
        Some(Value::String(url)) if url.trim().is_empty() => {}
        Some(Value::String(url)) if reqwest::Url::parse(url.trim()).is_ok() => {}
        Some(_) => return Err((format!("{KIND}.generatorURL"), "not an absolute URL".into())),
    }
    Ok(rendered)
}

/// The `labels` or `annotations` (`field`) of a rendered section as names to non-empty text.
fn texts(value: &Value, field: &str) -> Result<Map<String, Value>, (String, String)> {
    let path = format!("{KIND}.{field}");
    let pairs = match value {
        Value::Null => return Ok(Map::new()),
        Value::Object(pairs) => pairs,
        _ => return Err((path, "not a map of names to values".into())),
    };
    let mut out = Map::new();
    for (name, value) in pairs {
        if field == "labels" && !is_label_name(name) {
            return Err((
                format!("{path}.{name}"),
                "not a label name (letters, digits and _, not first a digit)".into(),
            ));
        }
        let text = match value {
            Value::String(text) => text.trim().to_string(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            Value::Null => String::new(),
            _ => return Err((format!("{path}.{name}"), "not text".into())),
        };
        if !text.is_empty() {
            out.insert(name.clone(), Value::String(text));
        }
    }
    Ok(out)
}

/// A label name as every Alertmanager version accepts: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `postableAlerts` of `message`, started at `now`: a list of one alert.
fn alerts(message: &Message, now: SystemTime) -> Value {
    let section = message.fields.get(KIND);
    let texts = |field: &str| section.and_then(|s| s.get(field)).and_then(Value::as_object).cloned();
    let mut labels = texts("labels").unwrap_or_default();
    if !labels.contains_key(ALERTNAME) {
        // Without a name, Alertmanager would refuse the alert; the template's says what happened.
        let name = if message.template.is_empty() { "stepwise" } else { message.template.as_str() };
        labels.insert(ALERTNAME.into(), json!(name));
    }
    let mut annotations = texts("annotations").unwrap_or_default();
    if !annotations.contains_key(SUMMARY) && !message.text.trim().is_empty() {
        annotations.insert(SUMMARY.into(), json!(message.text.trim()));
    }
    let mut alert = json!({"labels": labels, "annotations": annotations, "startsAt": rfc3339(now)});
    let url = section.and_then(|s| s.get("generatorURL")).and_then(Value::as_str).map(str::trim);
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        alert["generatorURL"] = json!(url);
    }
    json!([alert])
}

/// `time` in UTC as RFC 3339 (`2023-11-14T22:13:20Z`), as Alertmanager reads `startsAt`.
fn rfc3339(time: SystemTime) -> String {
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", second / 3600, second / 60 % 60, second % 60)
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`), so that no
/// date crate is needed for one timestamp.
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl Alertmanager {
    /// Posts `body` to `target`.
    async fn post(&self, client: &reqwest::Client, target: &Target, body: &[u8]) -> Result<(), SendError> {
        let mut request = client.post(&target.url).header(CONTENT_TYPE, "application/json").body(body.to_vec());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let (status, text) = http::exchange(request, self.timeout, &target.name, &self.redactor).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(&target.name, status, &text, &self.redactor));
        }
        Ok(())
    }

    /// The error of a send no target took: retryable unless every target refused (a 4xx other
    /// than 429), as a refusal is the same on every later attempt.
    fn no_target_took_it(&self, failures: Vec<SendError>) -> SendError {
        let retryable = failures.iter().any(|f| f.retryable);
        let reasons: Vec<String> = failures.into_iter().map(|f| f.message).collect();
        // Each reason is scrubbed already; the redactor leaves the key alone.
        self.redactor.error(retryable, format!("{}: no Alertmanager took the alert: {}", self.key, reasons.join("; ")))
    }
}

impl Service for Alertmanager {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(&'a self, message: &'a Message, _: &'a str, _: Option<&'a str>, _: &'a str) -> Sending<'a> {
        Box::pin(async move {
            let client = self.client.as_ref().map_err(|e| self.redactor.error(false, format!("{}: {e}", self.key)))?;
            let body = alerts(message, SystemTime::now()).to_string().into_bytes();
            let mut failures = Vec::new();
            for target in &self.targets {
                match self.post(client, target, &body).await {
                    Ok(()) => return Ok(Sent::default()),
                    Err(failure) => failures.push(failure),
                }
            }
            Err(self.no_target_took_it(failures))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(config: &str) -> Result<Box<dyn Service>, Error> {
        let secrets = [("token".to_string(), "s3cr3t".to_string())].into();
        build("service.alertmanager.oncall", config, &secrets)
    }

    fn error(config: &str) -> String {
        built(config).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn an_alertmanager_service_needs_targets_it_can_reach() {
        assert_eq!(
            error("scheme: https"),
            "service.alertmanager.oncall: targets is missing (host:port or URLs of Alertmanager)"
        );
        assert_eq!(
            error("targets: [am:9093, 'ftp://am']"),
            "service.alertmanager.oncall: targets[1] is not host:port or an http:// or https:// URL"
        );
        assert_eq!(
            error("targets: [am:9093]\nscheme: udp"),
            "service.alertmanager.oncall: scheme \"udp\" is not http or https"
        );
        assert_eq!(error("targets: [am]\ntimeout: forever").split(": ").nth(1), Some("timeout"));
        assert!(built("targets: [am:9093, 'https://am.example.com/prefix/']").is_ok());
    }

    #[test]
    fn basic_auth_and_a_bearer_token_exclude_each_other() {
        let config = "targets: [am:9093]\nbearerToken: $token\nbasicAuth: {username: u, password: $token}";
        assert_eq!(error(config), "service.alertmanager.oncall: basicAuth and bearerToken are both set: choose one");
        assert_eq!(
            error("targets: [am:9093]\nbearerToken: $tokn"),
            "service.alertmanager.oncall: $tokn is not a key of the Secret"
        );
    }

    #[test]
    fn a_target_is_host_port_with_the_scheme_or_a_url_prefixing_the_api_path() {
        let t = target("am-0.monitoring:9093", "https", "/api/v2/alerts").unwrap();
        assert_eq!(
            (t.url.as_str(), t.name.as_str()),
            ("https://am-0.monitoring:9093/api/v2/alerts", "am-0.monitoring:9093")
        );
        let t = target("http://user:pw@am.example.com/prefix/", "https", "/api/v2/alerts").unwrap();
        assert_eq!(
            (t.url.as_str(), t.name.as_str()),
            ("http://user:pw@am.example.com/prefix/api/v2/alerts", "am.example.com")
        );
        assert!(target("", "http", "/api/v2/alerts").is_none());
    }

    #[test]
    fn labels_and_annotations_become_trimmed_text_without_empty_values() {
        let rendered = json!({
            "labels": {"severity": "critical\n", "team": " ", "tier": 1, "gone": null},
            "annotations": {"description": "", "runbook": "https://r"},
            "generatorURL": "",
        });
        let out = finish(rendered).unwrap();
        assert_eq!(out["labels"], json!({"severity": "critical", "tier": "1"}));
        assert_eq!(out["annotations"], json!({"runbook": "https://r"}));
    }

    #[test]
    fn a_label_name_alertmanager_refuses_or_a_bad_generator_url_names_the_field() {
        let (field, _) = finish(json!({"labels": {"rollout-name": "x"}})).unwrap_err();
        assert_eq!(field, "alertmanager.labels.rollout-name");
        let (field, _) = finish(json!({"labels": {"1st": "x"}})).unwrap_err();
        assert_eq!(field, "alertmanager.labels.1st");
        let (field, _) = finish(json!({"annotations": ["x"]})).unwrap_err();
        assert_eq!(field, "alertmanager.annotations");
        let (field, _) = finish(json!({"generatorURL": "not a url"})).unwrap_err();
        assert_eq!(field, "alertmanager.generatorURL");
    }

    #[test]
    fn an_alert_is_named_after_the_template_and_summarised_by_the_message_unless_the_section_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let message = Message { template: "rollout-aborted".into(), text: "Aborted.\n".into(), ..Message::default() };
        let expected = json!([{
            "labels": {"alertname": "rollout-aborted"},
            "annotations": {"summary": "Aborted."},
            "startsAt": "2023-11-14T22:13:20Z",
        }]);
        assert_eq!(alerts(&message, now), expected);
        let section = json!({"labels": {"alertname": "RolloutAborted"}, "annotations": {"summary": "S"}});
        let message = Message { fields: [(KIND.to_string(), section)].into(), ..message };
        let alert = &alerts(&message, now)[0];
        assert_eq!(
            (&alert["labels"]["alertname"], &alert["annotations"]["summary"]),
            (&json!("RolloutAborted"), &json!("S"))
        );
    }

    #[test]
    fn start_times_are_rfc_3339_in_utc() {
        let at = |seconds: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
