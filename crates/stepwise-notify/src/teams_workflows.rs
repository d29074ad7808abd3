//! The Microsoft Teams workflows service (`service.teams-workflows`, Argo's name): an Adaptive
//! Card posted to a Teams workflow's webhook ("Post to a channel when a webhook request is
//! received"), which replaced Teams' retired Office 365 connectors.
//!
//! ```yaml
//! service.teams-workflows: |
//!   recipientUrls:
//!     deploys: $teams-deploys-url
//! template.rollout-aborted: |
//!   message: Rollout {{.rollout.metadata.name}} has been aborted.
//!   teams-workflows:
//!     title: Rollout aborted
//!     facts: '[{"name": "Rollout", "value": "{{.rollout.metadata.name}}"}]'
//! ```
//!
//! The recipient of a subscription names one of `recipientUrls`. The card has the section's
//! `title` in bold, its `text` (the message text unless set) and its `facts` (JSON written as
//! text, a list of `{name, value}`, as Argo's) as a FactSet. Any 2xx answer is delivery (a
//! workflow answers 202 Accepted). A workflow's URL carries its signature, so it is a credential
//! wherever it is kept: errors name the recipient, never the URL.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Secrets;
use crate::http::{self, Redactor};
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "teams-workflows";

/// The content type of an Adaptive Card attachment.
const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

/// A `service.teams-workflows` value as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TeamsWorkflowsConfig {
    #[serde(default)]
    recipient_urls: BTreeMap<String, String>,
    timeout: Option<serde_yaml::Value>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// A configured Teams workflows service, its URLs resolved.
pub struct TeamsWorkflows {
    /// The ConfigMap key, which names the service in errors.
    key: String,
    /// Recipient → the workflow's webhook URL.
    urls: BTreeMap<String, String>,
    timeout: Duration,
    client: Result<reqwest::Client, String>,
    redactor: Redactor,
}

/// Builds the Teams workflows service of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: String| Error::Config { key: key.to_string(), message };
    let config: TeamsWorkflowsConfig =
        serde_yaml::from_str(config).map_err(|e| invalid(format!("not a Teams workflows config: {e}")))?;
    if config.recipient_urls.is_empty() {
        return Err(invalid("recipientUrls is missing (recipient: workflow webhook URL)".into()));
    }
    let mut secrets = Secrets::new(key, secrets);
    let mut urls = BTreeMap::new();
    for (recipient, url) in &config.recipient_urls {
        let url = secrets.resolve(url)?.trim().to_string();
        // The URL's signature is the credential, even when written in the ConfigMap.
        secrets.treat_as_secret(&url);
        let Some(parsed) = http_url(&url) else {
            let message = format!("recipientUrls.{recipient} is not an http:// or https:// URL with a host");
            return Err(invalid(message));
        };
        credential_parts(&parsed).iter().for_each(|part| secrets.treat_as_secret(part));
        urls.insert(recipient.clone(), url);
    }
    let timeout = crate::webhook::timeout(config.timeout.as_ref()).map_err(|e| invalid(format!("timeout: {e}")))?;
    Ok(Box::new(TeamsWorkflows {
        key: key.to_string(),
        urls,
        timeout,
        client: http::client(config.insecure_skip_verify),
        redactor: Redactor::new(secrets.into_used()),
    }))
}

/// `url` parsed, if it is an absolute http(s) URL with a host.
fn http_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// The parts of a workflow's URL that a receiver may quote without the rest: its path with the
/// query (an echo of the request line), and the query's long values (the `sig` signature) alone.
fn credential_parts(url: &reqwest::Url) -> Vec<String> {
    let mut parts = vec![match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }];
    // Short values (`api-version=2016-06-01`, `sv=1.0`) are no secret, and scrubbing them would
    // garble unrelated text.
    parts.extend(url.query_pairs().map(|(_, value)| value.into_owned()).filter(|value| value.len() >= 16));
    // A path of `/` alone is no secret either.
    parts.retain(|part| part.len() > 1);
    parts
}

/// A template's `teams-workflows` section serves every Teams workflows service.
pub fn section(section: &Value, _name: &str) -> Option<(String, Value)> {
    Some((KIND.to_string(), section.clone()))
}

/// Reads the rendered `facts` as the JSON list of `{name, value}` they are written in, and turns
/// them into the FactSet's `{title, value}`, so that a template Teams could not show fails when
/// rendered, naming the field.
pub fn finish(mut rendered: Value) -> Result<Value, (String, String)> {
    let Some(fields) = rendered.as_object_mut() else {
        return Err((KIND.into(), "not a map (title, text, facts)".into()));
    };
    let failed = |message: String| (format!("{KIND}.facts"), message);
    let facts = match fields.get("facts") {
        None | Some(Value::Null) => return Ok(rendered),
        Some(Value::String(text)) if text.trim().is_empty() => Value::Array(Vec::new()),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| failed(format!("not JSON: {e}")))?,
        Some(_) => return Err(failed("not JSON written as text".into())),
    };
    let Value::Array(facts) = facts else { return Err(failed("not a list of {name, value}".into())) };
    let facts = facts.iter().enumerate().map(|(i, f)| fact(f).ok_or_else(|| failed(format!("[{i}] has no name"))));
    let facts = facts.collect::<Result<Vec<_>, _>>()?;
    fields.insert("facts".into(), Value::Array(facts));
    Ok(rendered)
}

/// A fact as Argo writes it, `{name, value}`, as a FactSet shows it, `{title, value}`: a value
/// that is not text is shown as its JSON.
fn fact(fact: &Value) -> Option<Value> {
    let name = fact.get("name")?.as_str()?;
    let value = match fact.get("value") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Some(json!({"title": name, "value": value}))
}

/// The Teams message of `message`: an Adaptive Card of the title, the text and the facts.
fn card(message: &Message) -> Value {
    let section = message.fields.get(KIND);
    let text_of =
        |field: &str| section.and_then(|s| s.get(field)).and_then(Value::as_str).filter(|t| !t.trim().is_empty());
    let mut body = Vec::new();
    if let Some(title) = text_of("title") {
        body.push(json!({"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true}));
    }
    let text = text_of("text").unwrap_or(&message.text);
    if !text.trim().is_empty() {
        body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
    }
    let facts = section.and_then(|s| s.get("facts")).and_then(Value::as_array).filter(|f| !f.is_empty());
    if let Some(facts) = facts {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    json!({"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": content}]})
}

impl TeamsWorkflows {
    /// Posts `message` to the workflow of `recipient`.
    async fn post(&self, message: &Message, recipient: &str) -> Result<Sent, SendError> {
        let Some(url) = self.urls.get(recipient) else {
            // A configuration mistake that no later attempt repairs.
            return Err(self.redactor.error(false, format!("{}: no URL for the recipient {recipient:?}", self.key)));
        };
        let client = self.client.as_ref().map_err(|e| self.redactor.error(false, format!("{}: {e}", self.key)))?;
        let target = format!("{} {recipient}", self.key);
        let request = client.post(url).json(&card(message));
        let (status, text) = http::exchange(request, self.timeout, &target, &self.redactor).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_error(&target, status, &text, &self.redactor));
        }
        Ok(Sent::default())
    }
}

impl Service for TeamsWorkflows {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(&'a self, message: &'a Message, recipient: &'a str, _: Option<&'a str>, _: &'a str) -> Sending<'a> {
        Box::pin(self.post(message, recipient))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(config: &str) -> String {
        let secrets = [("url".to_string(), "ftp://SECRET".to_string())].into();
        build("service.teams-workflows", config, &secrets).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_teams_workflows_service_needs_an_http_url_per_recipient_and_never_quotes_it() {
        assert_eq!(
            error("timeout: 5s"),
            "service.teams-workflows: recipientUrls is missing (recipient: workflow webhook URL)"
        );
        let message = error("recipientUrls: {deploys: $url}");
        assert_eq!(
            message,
            "service.teams-workflows: recipientUrls.deploys is not an http:// or https:// URL with a host"
        );
        assert_eq!(
            error("recipientUrls: {deploys: $nope}"),
            "service.teams-workflows: $nope is not a key of the Secret"
        );
        assert_eq!(error("recipientUrls: {deploys: 'https://h/x'}"), "");
    }

    #[test]
    fn the_path_and_the_signature_of_a_workflow_url_are_secret_on_their_own() {
        let url =
            http_url("https://prod.logic.azure.com/workflows/1/invoke?api-version=2016-06-01&sig=abcdefghijklmnop1")
                .unwrap();
        let parts = credential_parts(&url);
        assert_eq!(parts, ["/workflows/1/invoke?api-version=2016-06-01&sig=abcdefghijklmnop1", "abcdefghijklmnop1"]);
        assert!(credential_parts(&http_url("https://h").unwrap()).is_empty());
    }

    #[test]
    fn facts_written_as_json_text_become_a_fact_set_s_titles_and_values() {
        let rendered = json!({"facts": r#"[{"name": "Rollout", "value": "guestbook"}, {"name": "Step", "value": 3}]"#});
        let out = finish(rendered).unwrap();
        assert_eq!(out["facts"], json!([{"title": "Rollout", "value": "guestbook"}, {"title": "Step", "value": "3"}]));
        assert_eq!(finish(json!({"facts": " "})).unwrap()["facts"], json!([]));
    }

    #[test]
    fn facts_that_are_not_a_json_list_of_names_name_the_field() {
        for bad in [json!({"facts": "[{name: a}]"}), json!({"facts": "{}"}), json!({"facts": "[{\"value\": 1}]"})] {
            let (field, _) = finish(bad.clone()).unwrap_err();
            assert_eq!(field, "teams-workflows.facts", "{bad}");
        }
    }

    #[test]
    fn a_card_without_a_section_shows_the_message_text_alone() {
        let message = Message { template: "t".into(), text: "Aborted.".into(), ..Message::default() };
        let body = &card(&message)["attachments"][0]["content"]["body"];
        assert_eq!(body, &json!([{"type": "TextBlock", "text": "Aborted.", "wrap": true}]));
    }
}
