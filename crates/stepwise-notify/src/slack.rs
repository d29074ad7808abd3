//! The Slack service (`service.slack`, or `service.slack.<name>` for several workspaces), as
//! Argo's: a bot token posting with `chat.postMessage`, or an incoming webhook.
//!
//! ```yaml
//! service.slack: |
//!   token: $slack-token
//! template.rollout-aborted: |
//!   message: Rollout {{.rollout.metadata.name}} has been aborted.
//!   slack:
//!     attachments: '[{"color": "#E96D76", "title": "{{.rollout.metadata.name}}"}]'
//!     deliveryPolicy: PostAndUpdate
//! ```
//!
//! With a token, the recipient is the channel. Given the thread of an earlier message of the same
//! release, a message is posted in that thread, or, when the template's `deliveryPolicy` is
//! `PostAndUpdate` or `Update`, replaces that message (`chat.update`); `Update` without an earlier
//! message sends nothing, as in Argo. The message's `ts` is the thread to keep. With
//! `webhookURL` instead, the message is posted to the incoming webhook, which has no threads.
//!
//! Slack refuses with HTTP 200 and `{"ok": false, "error": "channel_not_found"}`: the error code
//! is the message of the [`SendError`], retryable only for Slack's transient codes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::Secrets;
use crate::http::{self, Redactor};
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "slack";

/// Where Slack's Web API is when `apiURL` does not say.
pub const DEFAULT_API_URL: &str = "https://slack.com/api/";

/// Slack error codes that a later attempt may not get.
const TRANSIENT_ERRORS: &[&str] =
    &["ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"];

/// The fields of a template's `slack` section that are JSON written as text.
const JSON_FIELDS: &[&str] = &["attachments", "blocks"];

/// A `service.slack` value as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlackConfig {
    token: Option<String>,
    #[serde(rename = "apiURL")]
    api_url: Option<String>,
    #[serde(rename = "webhookURL")]
    webhook_url: Option<String>,
    username: Option<String>,
    icon: Option<String>,
    retry_max: Option<u32>,
    timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// How Slack is reached.
enum Endpoint {
    /// The Web API at this base URL, with this bot token.
    Api { base: String, token: String },
    /// An incoming webhook.
    Webhook { url: String },
}

/// A configured Slack service, its secrets resolved.
pub struct Slack {
    /// The ConfigMap key, which names the service in errors.
    key: String,
    endpoint: Endpoint,
    username: Option<String>,
    icon: Option<String>,
    timeout: Duration,
    retry_max: Option<u32>,
    client: Result<reqwest::Client, String>,
    redactor: Redactor,
}

/// How a message with an earlier one of its release is delivered (the template's
/// `deliveryPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryPolicy {
    /// Always a new message (in the thread of the earlier one).
    Post,
    /// A new message when there is no earlier one, else the earlier one is updated.
    PostAndUpdate,
    /// Only updates an earlier message.
    Update,
}

impl DeliveryPolicy {
    fn parse(text: Option<&str>) -> Result<Self, String> {
        match text.map(str::trim) {
            None | Some("") | Some("Post") => Ok(DeliveryPolicy::Post),
            Some("PostAndUpdate") => Ok(DeliveryPolicy::PostAndUpdate),
            Some("Update") => Ok(DeliveryPolicy::Update),
            Some(other) => Err(format!("{other:?} is not Post, PostAndUpdate or Update")),
        }
    }
}

/// Builds the Slack service of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let config: SlackConfig = serde_yaml::from_str(config).map_err(|e| invalid(format!("not a Slack config: {e}")))?;
    let mut secrets = Secrets::new(key, secrets);
    let endpoint = match (&config.token, &config.webhook_url) {
        (Some(token), _) => {
            let base = config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
            let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
            Endpoint::Api { base, token: secrets.resolve(token)? }
        }
        (None, Some(url)) => {
            let url = secrets.resolve(url)?;
            // The URL of an incoming webhook is its credential, even when written in the ConfigMap.
            secrets.treat_as_secret(&url);
            Endpoint::Webhook { url }
        }
        (None, None) => return Err(invalid("token is missing (or webhookURL, for an incoming webhook)".into())),
    };
    let timeout = crate::webhook::timeout(config.timeout.as_ref()).map_err(|e| invalid(format!("timeout: {e}")))?;
    Ok(Box::new(Slack {
        key: key.to_string(),
        endpoint,
        username: config.username,
        icon: config.icon,
        timeout,
        retry_max: config.retry_max,
        client: http::client(config.insecure_skip_verify),
        redactor: Redactor::new(secrets.into_used()),
    }))
}

/// A template's `slack` section serves every Slack service.
pub fn section(section: &Value, _name: &str) -> Option<(String, Value)> {
    Some((KIND.to_string(), section.clone()))
}

/// Reads the rendered `attachments` and `blocks` as the JSON they are written in, and checks the
/// delivery policy, so that a template Slack would refuse fails when rendered, naming the field.
pub fn finish(mut rendered: Value) -> Result<Value, (String, String)> {
    let Some(fields) = rendered.as_object_mut() else {
        return Err((KIND.into(), "not a map (attachments, blocks, groupingKey, …)".into()));
    };
    for field in JSON_FIELDS {
        let Some(Value::String(text)) = fields.get(*field) else { continue };
        let parsed = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).map_err(|e| (format!("{KIND}.{field}"), format!("not JSON: {e}")))?
        };
        fields.insert(field.to_string(), parsed);
    }
    DeliveryPolicy::parse(fields.get("deliveryPolicy").and_then(Value::as_str))
        .map_err(|e| (format!("{KIND}.deliveryPolicy"), e))?;
    Ok(rendered)
}

/// Slack's answer to a Web API call.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    error: Option<String>,
    ts: Option<String>,
}

impl Slack {
    /// The JSON of a message: its text, the section's attachments and blocks, and who posts it.
    fn body(&self, message: &Message) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("text".into(), json!(message.text));
        let section = message.fields.get(KIND);
        for field in JSON_FIELDS {
            if let Some(value) = section.and_then(|s| s.get(field)).filter(|v| !v.is_null()) {
                body.insert(field.to_string(), value.clone());
            }
        }
        if let Some(username) = &self.username {
            body.insert("username".into(), json!(username));
        }
        match self.icon.as_deref() {
            Some(icon) if icon.starts_with(':') => body.insert("icon_emoji".into(), json!(icon)),
            Some(icon) => body.insert("icon_url".into(), json!(icon)),
            None => None,
        };
        body
    }

    /// Calls the Web API method `method` with `body`: the message's `ts`.
    async fn call(&self, base: &str, token: &str, method: &str, body: Map<String, Value>) -> Result<String, SendError> {
        let client = self.client.as_ref().map_err(|e| self.redactor.error(false, format!("{}: {e}", self.key)))?;
        let request = client.post(format!("{base}{method}")).bearer_auth(token).json(&body);
        let target = format!("{} {method}", self.key);
        let (status, text) = http::exchange(request, self.timeout, &target, &self.redactor).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(&target, status, &text, &self.redactor));
        }
        let answer: Answer = serde_json::from_str(&text).map_err(|_| {
            self.redactor.error(true, format!("{target}: the answer is not Slack's JSON: {}", http::snippet(&text)))
        })?;
        match (answer.ok, answer.error) {
            (true, _) => Ok(answer.ts.unwrap_or_default()),
            (false, error) => {
                let code = error.unwrap_or_else(|| "unknown error".into());
                let retryable = TRANSIENT_ERRORS.contains(&code.as_str());
                Err(self.redactor.error(retryable, format!("{target}: Slack refused: {code}")))
            }
        }
    }

    /// Delivers through the Web API, as `policy` says for a message with or without `thread`.
    async fn send_api(
        &self,
        base: &str,
        token: &str,
        message: &Message,
        channel: &str,
        thread: Option<&str>,
    ) -> Result<Sent, SendError> {
        if channel.trim().is_empty() {
            return Err(self.redactor.error(false, format!("{}: no channel to post to", self.key)));
        }
        let section = message.fields.get(KIND);
        let field = |name: &str| section.and_then(|s| s.get(name));
        let policy = DeliveryPolicy::parse(field("deliveryPolicy").and_then(Value::as_str))
            .map_err(|e| self.redactor.error(false, format!("{}: deliveryPolicy: {e}", self.key)))?;
        let mut body = self.body(message);
        body.insert("channel".into(), json!(channel));
        match (thread, policy) {
            (Some(ts), DeliveryPolicy::PostAndUpdate | DeliveryPolicy::Update) => {
                body.insert("ts".into(), json!(ts));
                self.call(base, token, "chat.update", body).await?;
                Ok(Sent { thread: Some(ts.to_string()) })
            }
            (None, DeliveryPolicy::Update) => Ok(Sent::default()),
            (Some(ts), DeliveryPolicy::Post) => {
                body.insert("thread_ts".into(), json!(ts));
                let broadcast = field("notifyBroadcast").and_then(Value::as_bool).unwrap_or(false);
                body.insert("reply_broadcast".into(), json!(broadcast));
                self.call(base, token, "chat.postMessage", body).await?;
                // The thread stays that of the first message.
                Ok(Sent { thread: Some(ts.to_string()) })
            }
            (None, _) => {
                let ts = self.call(base, token, "chat.postMessage", body).await?;
                Ok(Sent { thread: Some(ts).filter(|ts| !ts.is_empty()) })
            }
        }
    }

    /// Posts to the incoming webhook `url`, which answers `ok`.
    async fn send_webhook(&self, url: &str, message: &Message, channel: &str) -> Result<Sent, SendError> {
        let client = self.client.as_ref().map_err(|e| self.redactor.error(false, format!("{}: {e}", self.key)))?;
        let mut body = self.body(message);
        if !channel.trim().is_empty() {
            body.insert("channel".into(), json!(channel));
        }
        let request = client.post(url).json(&body);
        let (status, text) = http::exchange(request, self.timeout, &self.key, &self.redactor).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(&self.key, status, &text, &self.redactor));
        }
        Ok(Sent::default())
    }
}

impl Service for Slack {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
        recipient: &'a str,
        thread: Option<&'a str>,
        _idempotency_key: &'a str,
    ) -> Sending<'a> {
        Box::pin(async move {
            match &self.endpoint {
                Endpoint::Api { base, token } => self.send_api(base, token, message, recipient, thread).await,
                Endpoint::Webhook { url } => self.send_webhook(url, message, recipient).await,
            }
        })
    }

    fn retry_max(&self) -> Option<u32> {
        self.retry_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_and_blocks_written_as_text_become_json() {
        let rendered = json!({"attachments": "[{\"title\": \"a\"}]", "blocks": " ", "groupingKey": "g"});
        let out = finish(rendered).unwrap();
        assert_eq!(out, json!({"attachments": [{"title": "a"}], "blocks": null, "groupingKey": "g"}));
    }

    #[test]
    fn attachments_that_are_not_json_name_the_field() {
        let (field, message) = finish(json!({"attachments": "[{title: a}]"})).unwrap_err();
        assert_eq!(field, "slack.attachments");
        assert!(message.starts_with("not JSON"), "{message}");
    }

    #[test]
    fn an_unknown_delivery_policy_names_the_field() {
        let (field, message) = finish(json!({"deliveryPolicy": "Upsert"})).unwrap_err();
        assert_eq!(
            (field.as_str(), message.as_str()),
            ("slack.deliveryPolicy", r#""Upsert" is not Post, PostAndUpdate or Update"#)
        );
    }

    #[test]
    fn a_slack_service_needs_a_token_or_an_incoming_webhook() {
        let err = build("service.slack", "username: bot", &BTreeMap::new()).err().unwrap();
        assert_eq!(err.to_string(), "service.slack: token is missing (or webhookURL, for an incoming webhook)");
    }
}
