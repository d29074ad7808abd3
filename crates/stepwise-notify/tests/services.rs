//! The services against receivers on 127.0.0.1: what each request carries, and what each answer
//! becomes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Answer, Receiver, data, receiver};
use serde_json::json;
use stepwise_notify::{Config, Message, SendError, Sent};

const SLACK_TOKEN: &str = "xoxb-SECRET-slack-token";
const HEADER_VALUE: &str = "SECRET-header-value";
const PASSWORD: &str = "SECRET-basic-password";
const WEBHOOK_PATH: &str = "SECRET-webhook-path";
/// base64("stepwise:SECRET-basic-password"), as basic auth sends it.
const CREDENTIALS: &str = "c3RlcHdpc2U6U0VDUkVULWJhc2ljLXBhc3N3b3Jk";
const ALL_SECRETS: &[&str] = &[SLACK_TOKEN, HEADER_VALUE, PASSWORD, WEBHOOK_PATH, CREDENTIALS];

fn secrets() -> BTreeMap<String, String> {
    data(&[("slack-token", SLACK_TOKEN), ("ci-token", HEADER_VALUE), ("ci-password", PASSWORD), ("hook", WEBHOOK_PATH)])
}

/// A config with the service `service` (its key and YAML) and one template per trigger.
fn config(service: (&str, &str)) -> Config {
    let config = data(&[
        service,
        ("trigger.on-abort", "- send: [aborted]\n"),
        ("trigger.on-step", "- send: [step]\n"),
        (
            "template.aborted",
            r##"message: Rollout {{.rollout.metadata.name}} has been aborted.
webhook:
  ci:
    method: PUT
    path: /rollouts/{{.rollout.metadata.name}}
    body: '{"rollout": "{{.rollout.metadata.name}}"}'
slack:
  attachments: '[{"title": "{{.rollout.metadata.name}}", "color": "#E96D76"}]'
  deliveryPolicy: PostAndUpdate
"##,
        ),
        (
            "template.step",
            "message: Rollout {{.rollout.metadata.name}} is at a step.\nslack:\n  notifyBroadcast: true\n",
        ),
    ]);
    Config::parse(&config, &secrets()).unwrap()
}

/// The one message `trigger` sends to `service`.
fn message(config: &Config, trigger: &str, service: &str) -> Message {
    let vars = json!({"rollout": {"metadata": {"name": "guestbook"}}});
    config.render(trigger, service, &vars).unwrap().remove(0)
}

/// Sends the one message of `trigger` through `service`.
async fn send(
    config: &Config,
    trigger: &str,
    service: &str,
    to: &str,
    thread: Option<&str>,
) -> Result<Sent, SendError> {
    let message = message(config, trigger, service);
    config.service(service).unwrap().send(&message, to, thread, "shop/guestbook/3/on-abort").await
}

fn webhook(url: &str, extra: &str) -> String {
    format!(
        "url: {url}/api\nheaders:\n- name: X-Token\n  value: Bearer $ci-token\nbasicAuth:\n  username: stepwise\n  password: $ci-password\n{extra}"
    )
}

fn slack(url: &str) -> String {
    format!("token: $slack-token\napiURL: {url}/api/\nusername: stepwise\nicon: ':rocket:'\ntimeout: 2s\n")
}

/// The failure of a send to a receiver answering `answer`, through `service` (key, config of the
/// receiver's URL).
async fn failure(answer: Answer, key: &str, service: fn(&str) -> String, name: &str) -> SendError {
    let mut receiver = receiver(vec![answer]).await;
    let config = config((key, &service(&receiver.url)));
    let err = send(&config, "on-abort", name, "deploys", None).await.unwrap_err();
    receiver.next().await;
    err
}

fn ci(url: &str) -> String {
    webhook(url, "")
}

fn assert_no_secret(text: &str) {
    for secret in ALL_SECRETS {
        assert!(!text.contains(secret), "{text:?} shows {secret}");
    }
}

#[tokio::test]
async fn a_webhook_sends_the_method_path_headers_body_basic_auth_and_idempotency_key_as_configured() {
    let mut receiver = receiver(vec![]).await;
    let config = config(("service.webhook.ci", &webhook(&receiver.url, "")));
    let sent = send(&config, "on-abort", "ci", "", None).await.unwrap();
    assert_eq!(sent, Sent { thread: None });
    let request = receiver.next().await;
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/api/rollouts/guestbook");
    assert_eq!(request.body, r#"{"rollout": "guestbook"}"#);
    let header = |name: &str| request.headers.get(name).map(String::as_str);
    assert_eq!(header("x-token"), Some("Bearer SECRET-header-value"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("idempotency-key"), Some("shop/guestbook/3/on-abort"));
    assert_eq!(header("authorization"), Some(format!("Basic {CREDENTIALS}").as_str()));
}

#[tokio::test]
async fn a_webhook_keeps_the_content_type_its_config_sets_and_posts_by_default() {
    let mut receiver = receiver(vec![]).await;
    let service = format!("url: {}/hook\nheaders: [{{name: Content-Type, value: text/plain}}]\n", receiver.url);
    let config = Config::parse(
        &data(&[
            ("service.webhook.ci", &service),
            ("trigger.on-x", "- send: [t]\n"),
            ("template.t", "webhook:\n  ci:\n    body: plain {{.x}}\n"),
        ]),
        &BTreeMap::new(),
    )
    .unwrap();
    let message = config.render("on-x", "ci", &json!({"x": 1})).unwrap().remove(0);
    config.service("ci").unwrap().send(&message, "", None, "k").await.unwrap();
    let request = receiver.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str(), request.body.as_str()), ("POST", "/hook", "plain 1"));
    assert_eq!(request.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn a_webhook_answer_of_5xx_or_429_is_retryable_and_of_another_4xx_is_not() {
    for (status, retryable) in [(500, true), (503, true), (429, true), (404, false), (400, false)] {
        let err = failure(Answer::Reply(status, "receiver says no".into()), "service.webhook.ci", ci, "ci").await;
        assert_eq!(err.retryable, retryable, "{status}: {err:?}");
        assert!(err.message.starts_with(&format!("service.webhook.ci: HTTP {status}")), "{}", err.message);
        assert!(err.message.ends_with("\"receiver says no\""), "{}", err.message);
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_a_retryable_timeout_within_the_timeout() {
    let mut receiver = receiver(vec![Answer::Silent]).await;
    let config = config(("service.webhook.ci", &webhook(&receiver.url, "timeout: 300ms\n")));
    let started = Instant::now();
    let err = send(&config, "on-abort", "ci", "", None).await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
    assert!(err.retryable);
    assert_eq!(err.message, "service.webhook.ci: no answer within 300 ms");
    receiver.next().await;
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    // A port just freed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config(("service.webhook.ci", &webhook(&format!("http://127.0.0.1:{port}"), "")));
    let err = send(&config, "on-abort", "ci", "", None).await.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert!(err.message.starts_with("service.webhook.ci: cannot connect"), "{}", err.message);
}

#[tokio::test]
async fn slack_posts_with_the_bearer_token_the_channel_the_text_and_the_attachments_and_returns_ts() {
    let ok = r#"{"ok": true, "channel": "C1", "ts": "1700000000.000100"}"#;
    let mut receiver = receiver(vec![Answer::Reply(200, ok.into())]).await;
    let config = config(("service.slack", &slack(&receiver.url)));
    let sent = send(&config, "on-abort", "slack", "deploys", None).await.unwrap();
    assert_eq!(sent, Sent { thread: Some("1700000000.000100".into()) });
    let request = receiver.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/chat.postMessage"));
    assert_eq!(request.headers["authorization"], format!("Bearer {SLACK_TOKEN}"));
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.json(),
        json!({
            "channel": "deploys",
            "text": "Rollout guestbook has been aborted.",
            "attachments": [{"title": "guestbook", "color": "#E96D76"}],
            "username": "stepwise",
            "icon_emoji": ":rocket:",
        })
    );
}

#[tokio::test]
async fn slack_with_a_thread_and_post_and_update_updates_that_message() {
    let ok = r#"{"ok": true, "ts": "1700000000.000100"}"#;
    let mut receiver = receiver(vec![Answer::Reply(200, ok.into())]).await;
    let config = config(("service.slack", &slack(&receiver.url)));
    let sent = send(&config, "on-abort", "slack", "deploys", Some("1700000000.000100")).await.unwrap();
    assert_eq!(sent.thread.as_deref(), Some("1700000000.000100"));
    let request = receiver.next().await;
    assert_eq!(request.path, "/api/chat.update");
    let body = request.json();
    assert_eq!((&body["channel"], &body["ts"]), (&json!("deploys"), &json!("1700000000.000100")));
    assert_eq!(body["text"], "Rollout guestbook has been aborted.");
    assert_eq!(body["attachments"][0]["title"], "guestbook");
}

#[tokio::test]
async fn slack_with_a_thread_and_the_post_policy_replies_in_the_thread() {
    let ok = r#"{"ok": true, "ts": "1700000000.000200"}"#;
    let mut receiver = receiver(vec![Answer::Reply(200, ok.into())]).await;
    let config = config(("service.slack", &slack(&receiver.url)));
    let sent = send(&config, "on-step", "slack", "deploys", Some("1700000000.000100")).await.unwrap();
    // The thread stays the first message's.
    assert_eq!(sent.thread.as_deref(), Some("1700000000.000100"));
    let request = receiver.next().await;
    assert_eq!(request.path, "/api/chat.postMessage");
    let body = request.json();
    assert_eq!((&body["thread_ts"], &body["reply_broadcast"]), (&json!("1700000000.000100"), &json!(true)));
}

#[tokio::test]
async fn slack_channel_not_found_is_not_retryable_and_names_the_code_without_the_token() {
    let answer = Answer::Reply(200, r#"{"ok": false, "error": "channel_not_found"}"#.into());
    let err = failure(answer, "service.slack", slack, "slack").await;
    assert!(!err.retryable);
    assert_eq!(err.message, "service.slack chat.postMessage: Slack refused: channel_not_found");
    assert!(!err.message.contains(SLACK_TOKEN));
}

#[tokio::test]
async fn slack_ratelimited_429_and_5xx_are_retryable() {
    let ratelimited = Answer::Reply(200, r#"{"ok": false, "error": "ratelimited"}"#.into());
    for answer in [ratelimited, Answer::Reply(429, String::new()), Answer::Reply(502, "bad gateway".into())] {
        let err = failure(answer.clone(), "service.slack", slack, "slack").await;
        assert!(err.retryable, "{answer:?}: {err:?}");
    }
    let err = failure(Answer::Reply(200, "<html>".into()), "service.slack", slack, "slack").await;
    assert!(err.message.contains("is not Slack's JSON"), "{}", err.message);
}

#[tokio::test]
async fn a_slack_incoming_webhook_gets_the_message_and_its_url_is_never_shown() {
    let mut receiver = receiver(vec![Answer::Reply(200, "ok".into()), Answer::Echo(404)]).await;
    let service = format!("webhookURL: {}/services/$hook\n", receiver.url);
    let config = config(("service.slack.alerts", &service));
    let sent = send(&config, "on-abort", "alerts", "", None).await.unwrap();
    assert_eq!(sent, Sent { thread: None });
    let request = receiver.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/services/SECRET-webhook-path"));
    let body = request.json();
    assert_eq!(body["text"], "Rollout guestbook has been aborted.");
    assert_eq!(body["attachments"][0]["color"], "#E96D76");
    assert!(body.get("channel").is_none());
    // The echo quotes the path back; the error must not.
    let err = send(&config, "on-abort", "alerts", "", None).await.unwrap_err();
    assert!(err.message.starts_with("service.slack.alerts: HTTP 404"), "{}", err.message);
    assert!(!err.retryable);
    assert_no_secret(&err.message);
}

#[tokio::test]
async fn no_send_error_shows_a_secret_even_when_the_receiver_echoes_the_request() {
    let mut errors = vec![
        failure(Answer::Echo(401), "service.slack", slack, "slack").await,
        failure(Answer::Echo(500), "service.webhook.ci", ci, "ci").await,
        failure(
            Answer::Reply(200, format!(r#"{{"ok": false, "error": "{SLACK_TOKEN}"}}"#)),
            "service.slack",
            slack,
            "slack",
        )
        .await,
    ];
    let silent = receiver(vec![Answer::Silent]).await;
    let config =
        config(("service.webhook.ci", &webhook(&format!("{}/{WEBHOOK_PATH}", silent.url), "timeout: 100ms\n")));
    errors.push(send(&config, "on-abort", "ci", "", None).await.unwrap_err());
    for err in errors {
        assert!(err.message.contains("***") || err.message.contains("no answer"), "{}", err.message);
        assert_no_secret(&err.message);
        assert_no_secret(&err.to_string());
        assert_no_secret(&format!("{err:?}"));
    }
}

#[tokio::test]
async fn the_config_debug_shows_names_but_no_secret() {
    let receiver: Receiver = receiver(vec![]).await;
    let config = config(("service.slack", &slack(&receiver.url)));
    let shown = format!("{config:?}");
    assert!(shown.contains("slack"), "{shown}");
    assert_no_secret(&shown);
}
