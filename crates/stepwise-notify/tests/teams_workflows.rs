//! The Teams workflows service against receivers on 127.0.0.1: the Adaptive Card each request
//! carries, and what each answer becomes.

mod common;

use std::collections::BTreeMap;

use common::{Answer, Receiver, data, receiver};
use serde_json::json;
use stepwise_notify::{Config, SendError, Sent};

/// The signature part of a workflow's URL: what makes it a credential.
const SIGNATURE: &str = "SECRET-workflow-signature";

/// A config whose Teams workflows service sends `deploys` to `receiver`, a template with a
/// `teams-workflows` section (`aborted`) and one without (`plain`).
fn config(receiver: &Receiver) -> Config {
    let url = format!("{}/workflows/abc/triggers/manual/paths/invoke?sig=$teams-sig", receiver.url);
    let config = data(&[
        ("service.teams-workflows", &format!("recipientUrls:\n  deploys: {url}\ntimeout: 2s\n")),
        ("trigger.on-abort", "- send: [aborted]\n"),
        ("trigger.on-plain", "- send: [plain]\n"),
        (
            "template.aborted",
            r#"message: Rollout {{.rollout.metadata.name}} has been aborted.
teams-workflows:
  title: Rollout {{.rollout.metadata.name}} aborted
  text: '{{.rollout.metadata.name}} went back to its stable revision.'
  facts: '[{"name": "Rollout", "value": "{{.rollout.metadata.name}}"}, {"name": "Namespace", "value": "shop"}]'
"#,
        ),
        ("template.plain", "message: Rollout {{.rollout.metadata.name}} is at a step.\n"),
    ]);
    Config::parse(&config, &data(&[("teams-sig", SIGNATURE)])).unwrap()
}

/// Sends the one message of `trigger` to the recipient `to`.
async fn send(config: &Config, trigger: &str, to: &str) -> Result<Sent, SendError> {
    let vars = json!({"rollout": {"metadata": {"name": "guestbook"}}});
    let message = config.render(trigger, "teams-workflows", &vars).unwrap().remove(0);
    config.service("teams-workflows").unwrap().send(&message, to, None, "k").await
}

/// The Teams message of an Adaptive Card of `body`.
fn card(body: serde_json::Value) -> serde_json::Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

#[tokio::test]
async fn teams_workflows_posts_an_adaptive_card_of_the_title_text_and_facts_to_the_recipient_s_url() {
    let mut teams = receiver(vec![Answer::Reply(202, String::new())]).await;
    let config = config(&teams);
    assert_eq!(send(&config, "on-abort", "deploys").await.unwrap(), Sent { thread: None });
    let request = teams.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/workflows/abc/triggers/manual/paths/invoke?sig={SIGNATURE}"));
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(!request.headers.contains_key("authorization"), "the URL is the credential");
    assert_eq!(
        request.json(),
        card(json!([
            {"type": "TextBlock", "text": "Rollout guestbook aborted", "weight": "Bolder", "size": "Medium", "wrap": true},
            {"type": "TextBlock", "text": "guestbook went back to its stable revision.", "wrap": true},
            {"type": "FactSet", "facts": [
                {"title": "Rollout", "value": "guestbook"},
                {"title": "Namespace", "value": "shop"},
            ]},
        ]))
    );
}

#[tokio::test]
async fn without_a_section_the_card_shows_the_message_text() {
    let mut teams = receiver(vec![Answer::Reply(202, String::new())]).await;
    send(&config(&teams), "on-plain", "deploys").await.unwrap();
    let body = teams.next().await.json();
    assert_eq!(body, card(json!([{"type": "TextBlock", "text": "Rollout guestbook is at a step.", "wrap": true}])));
}

#[tokio::test]
async fn an_unknown_recipient_is_not_retryable_and_names_the_recipient_but_no_url() {
    let mut teams = receiver(vec![]).await;
    let err = send(&config(&teams), "on-abort", "releases").await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.message, r#"service.teams-workflows: no URL for the recipient "releases""#);
    assert!(teams.requests.try_recv().is_err(), "nothing is sent");
}

#[tokio::test]
async fn a_teams_answer_of_5xx_or_429_is_retryable_and_of_another_4xx_is_not() {
    for (status, retryable) in [(500, true), (502, true), (429, true), (400, false), (404, false)] {
        let mut teams = receiver(vec![Answer::Reply(status, "workflow says no".into())]).await;
        let err = send(&config(&teams), "on-abort", "deploys").await.unwrap_err();
        teams.next().await;
        assert_eq!(err.retryable, retryable, "{status}: {err:?}");
        let expected = format!("service.teams-workflows deploys: HTTP {status}");
        assert!(err.message.starts_with(&expected), "{}", err.message);
    }
}

#[tokio::test]
async fn no_teams_error_shows_the_workflow_url_even_when_echoed() {
    let mut teams = receiver(vec![Answer::Echo(403)]).await;
    let err = send(&config(&teams), "on-abort", "deploys").await.unwrap_err();
    teams.next().await;
    assert!(!err.retryable);
    assert!(err.message.contains("***"), "the echo is quoted, scrubbed: {}", err.message);
    for shown in [err.message.clone(), format!("{err:?}")] {
        assert!(!shown.contains(SIGNATURE) && !shown.contains("/workflows/abc"), "{shown}");
    }
}

#[test]
fn a_bad_teams_url_names_the_key_and_the_recipient_but_not_the_url() {
    let config = data(&[("service.teams-workflows", "recipientUrls:\n  deploys: teams.example.com/$teams-sig\n")]);
    let err = Config::parse(&config, &data(&[("teams-sig", SIGNATURE)])).unwrap_err().to_string();
    assert_eq!(err, "service.teams-workflows: recipientUrls.deploys is not an http:// or https:// URL with a host");
    let err = Config::parse(&data(&[("service.teams-workflows", "{}")]), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "service.teams-workflows: recipientUrls is missing (recipient: workflow webhook URL)");
}
