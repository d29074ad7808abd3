//! The webhook service (`service.webhook.<name>`): an HTTP request per message to a URL of the
//! user's, as Argo's webhook service sends it.
//!
//! ```yaml
//! service.webhook.ci: |
//!   url: https://ci.example.com/hooks
//!   headers:
//!   - name: X-Token
//!     value: $ci-token
//!   basicAuth: {username: stepwise, password: $ci-password}
//!   timeout: 5s
//! template.rollout-aborted: |
//!   webhook:
//!     ci:
//!       method: POST
//!       path: /rollouts/{{.rollout.metadata.name}}
//!       body: '{"aborted": "{{.rollout.metadata.name}}"}'
//! ```
//!
//! The request goes to `url` + `path` with the rendered `body` as it is (JSON unless a header says
//! otherwise), the configured headers and basic auth, and an `Idempotency-Key` header that is the
//! same for every attempt of one notification. Any 2xx answer is delivery. A template without a
//! section for the webhook sends nothing to it, as in Argo.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Secrets;
use crate::http::{self, Redactor};
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "webhook";

/// The header carrying the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A `service.webhook.<name>` value as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookConfig {
    url: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderConfig>,
    basic_auth: Option<BasicAuth>,
    retry_max: Option<u32>,
    timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize)]
struct HeaderConfig {
    name: String,
    value: String,
}

/// `basicAuth` of a service config, as Argo writes it.
#[derive(Deserialize)]
pub(crate) struct BasicAuth {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// A configured webhook, its secrets resolved.
pub struct Webhook {
    /// The ConfigMap key, which names the service in errors (the URL may hold a secret).
    key: String,
    url: String,
    /// The configured headers, basic auth as `Authorization` among them.
    headers: HeaderMap,
    timeout: Duration,
    retry_max: Option<u32>,
    client: Result<reqwest::Client, String>,
    redactor: Redactor,
}

/// Builds the webhook of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let config: WebhookConfig =
        serde_yaml::from_str(config).map_err(|e| invalid(format!("not a webhook config: {e}")))?;
    let mut secrets = Secrets::new(key, secrets);
    let url = secrets.resolve(config.url.as_deref().ok_or_else(|| invalid("url is missing".into()))?)?;
    check_url(&url).map_err(invalid)?;
    let mut headers = HeaderMap::new();
    for header in &config.headers {
        let name = HeaderName::from_bytes(header.name.trim().as_bytes())
            .map_err(|_| invalid(format!("{:?} is not a valid header name", header.name)))?;
        // Not quoted back: header values carry tokens.
        let value = HeaderValue::from_str(&secrets.resolve(&header.value)?)
            .map_err(|_| invalid(format!("the value of header {name} is not a valid header value")))?;
        headers.append(name, value);
    }
    if let Some(auth) = &config.basic_auth {
        let credentials = basic_auth(&secrets.resolve(&auth.username)?, &secrets.resolve(&auth.password)?);
        // Encoded, the credentials are as secret as they are plain, should a receiver echo them.
        secrets.treat_as_secret(&credentials);
        let value = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| invalid("basicAuth is not valid in a header".into()))?;
        headers.insert(AUTHORIZATION, value);
    }
    let timeout = timeout(config.timeout.as_ref()).map_err(|e| invalid(format!("timeout: {e}")))?;
    Ok(Box::new(Webhook {
        key: key.to_string(),
        url,
        headers,
        timeout,
        retry_max: config.retry_max,
        client: http::client(config.insecure_skip_verify),
        redactor: Redactor::new(secrets.into_used()),
    }))
}

/// A service's `timeout`: a Go duration or a number of seconds; 10 s when absent.
pub(crate) fn timeout(value: Option<&serde_yaml::Value>) -> Result<Duration, String> {
    match value {
        None => Ok(http::DEFAULT_TIMEOUT),
        Some(serde_yaml::Value::String(text)) => http::parse_duration(text),
        Some(serde_yaml::Value::Number(n)) => http::parse_duration(&n.to_string()),
        Some(_) => Err("not a duration (like 300ms, 10s or 1m)".into()),
    }
}

/// `user:password` in base64 (RFC 7617), as the `Basic` scheme sends them.
pub(crate) fn basic_auth(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// An absolute http(s) URL with a host. Not quoted in the error: it may hold a secret.
fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err("url is not an http:// or https:// URL with a host".into()),
    }
}

/// The part of a template's `webhook` section for the webhook `name`: `webhook.<name>`.
pub fn section(section: &Value, name: &str) -> Option<(String, Value)> {
    Some((format!("{KIND}.{name}"), section.get(name)?.clone()))
}

impl Webhook {
    /// The request of a rendered section: method, URL and body; an error for a method that is not
    /// one.
    fn request(&self, fields: &Value, idempotency_key: &str) -> Result<reqwest::RequestBuilder, SendError> {
        let text = |field: &str| fields.get(field).and_then(Value::as_str).unwrap_or_default();
        let method = match text("method").trim() {
            "" => Method::POST,
            m => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| self.redactor.error(false, format!("{}: method {m:?} is not an HTTP method", self.key)))?,
        };
        let client = self.client.as_ref().map_err(|e| self.redactor.error(false, format!("{}: {e}", self.key)))?;
        let mut headers = self.headers.clone();
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
            self.redactor.error(false, format!("{}: the idempotency key is not a valid header value", self.key))
        })?;
        headers.insert(IDEMPOTENCY_KEY, key);
        Ok(client.request(method, join(&self.url, text("path"))).headers(headers).body(text("body").to_string()))
    }
}

/// `url` + `path`, without doubling the slash between them.
pub(crate) fn join(url: &str, path: &str) -> String {
    match (url.strip_suffix('/'), path.starts_with('/')) {
        (Some(base), true) => format!("{base}{path}"),
        _ => format!("{url}{path}"),
    }
}

impl Service for Webhook {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
        _: &'a str,
        _: Option<&'a str>,
        idempotency_key: &'a str,
    ) -> Sending<'a> {
        Box::pin(async move {
            let Some(fields) = message.fields.get(KIND) else { return Ok(Sent::default()) };
            let request = self.request(fields, idempotency_key)?;
            let (status, body) = http::exchange(request, self.timeout, &self.key, &self.redactor).await?;
            if !(200..300).contains(&status) {
                return Err(http::status_error(&self.key, status, &body, &self.redactor));
            }
            Ok(Sent::default())
        })
    }

    fn retry_max(&self) -> Option<u32> {
        self.retry_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(config: &str) -> Result<Box<dyn Service>, Error> {
        let secrets = [("token".to_string(), "s3cr3t".to_string())].into();
        build("service.webhook.ci", config, &secrets)
    }

    #[test]
    fn a_webhook_needs_an_http_url() {
        let message = |config: &str| built(config).err().map(|e| e.to_string());
        assert_eq!(message("headers: []").unwrap(), "service.webhook.ci: url is missing");
        assert_eq!(
            message("url: ftp://h/$token").unwrap(),
            "service.webhook.ci: url is not an http:// or https:// URL with a host"
        );
        assert!(message("url: http://127.0.0.1:1/x").is_none());
    }

    #[test]
    fn a_bad_header_value_is_named_without_its_value() {
        let err = built("url: http://h\nheaders: [{name: X-Token, value: \"a\\nb $token\"}]").err().unwrap();
        assert_eq!(err.to_string(), "service.webhook.ci: the value of header x-token is not a valid header value");
    }

    #[test]
    fn timeouts_default_to_ten_seconds_and_read_go_durations() {
        assert_eq!(timeout(None).unwrap(), Duration::from_secs(10));
        assert_eq!(timeout(Some(&"300ms".into())).unwrap(), Duration::from_millis(300));
        assert_eq!(timeout(Some(&serde_yaml::from_str("2").unwrap())).unwrap(), Duration::from_secs(2));
        assert!(built("url: http://h\ntimeout: forever").is_err());
    }

    #[test]
    fn basic_auth_is_encoded_as_rfc_7617_says() {
        assert_eq!(basic_auth("Aladdin", "open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic_auth("a", "b"), "YTpi");
        assert_eq!(basic_auth("ab", "c"), "YWI6Yw==");
        assert_eq!(basic_auth("ab", "cd"), "YWI6Y2Q=");
    }

    #[test]
    fn a_path_is_appended_to_the_url_with_one_slash() {
        assert_eq!(join("http://h/api/", "/x"), "http://h/api/x");
        assert_eq!(join("http://h/api", "/x"), "http://h/api/x");
        assert_eq!(join("http://h", ""), "http://h");
    }

    #[test]
    fn the_section_of_a_webhook_is_its_entry_under_its_name() {
        let section = serde_json::json!({"ci": {"body": "b"}, "other": {}});
        assert_eq!(super::section(&section, "ci"), Some(("webhook.ci".into(), serde_json::json!({"body": "b"}))));
        assert_eq!(super::section(&section, "cd"), None);
    }
}
