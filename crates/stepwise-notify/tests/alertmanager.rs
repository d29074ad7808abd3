//! The Alertmanager service against receivers on 127.0.0.1: the alert each request carries, the
//! failover between targets, and what each answer becomes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Answer, data, receiver};
use serde_json::json;
use stepwise_notify::{Config, Error, SendError, Sent};

const TOKEN: &str = "SECRET-alertmanager-token";
const PASSWORD: &str = "SECRET-alertmanager-password";
/// base64("stepwise:SECRET-alertmanager-password"), as basic auth sends it.
const CREDENTIALS: &str = "c3RlcHdpc2U6U0VDUkVULWFsZXJ0bWFuYWdlci1wYXNzd29yZA==";

fn secrets() -> BTreeMap<String, String> {
    data(&[("am-token", TOKEN), ("am-password", PASSWORD)])
}

/// A config of the Alertmanager service `key` configured `service`, a template with an
/// `alertmanager` section (`aborted`) and one without (`plain`).
fn config(key: &str, service: &str) -> Config {
    let config = data(&[
        (key, service),
        ("trigger.on-abort", "- send: [aborted]\n"),
        ("trigger.on-plain", "- send: [plain]\n"),
        (
            "template.aborted",
            r#"message: Rollout {{.rollout.metadata.name}} has been aborted.
alertmanager:
  labels:
    severity: critical
    namespace: '{{.rollout.metadata.namespace}}'
    paused: '{{if .rollout.spec.paused}}yes{{end}}'
  annotations:
    description: |
      {{.rollout.metadata.name}} went back to its stable revision.
    empty: ''
  generatorURL: https://rollouts.example.com/{{.rollout.metadata.namespace}}/{{.rollout.metadata.name}}
"#,
        ),
        ("template.plain", "message: Rollout {{.rollout.metadata.name}} is at a step.\n"),
    ]);
    Config::parse(&config, &secrets()).unwrap()
}

/// Sends the one message of `trigger` to the service `name` of `config`, for the recipient `to`.
async fn send(config: &Config, trigger: &str, name: &str, to: &str) -> Result<Sent, SendError> {
    let vars = json!({"rollout": {"metadata": {"name": "guestbook", "namespace": "shop"}, "spec": {"paused": false}}});
    let message = config.render(trigger, name, &vars).unwrap().remove(0);
    config.service(name).unwrap().send(&message, to, None, "shop/guestbook/3/on-abort").await
}

/// `host:port` where nothing listens: a port just freed.
fn refusing() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// `http://127.0.0.1:port` as a target `host:port`.
fn host_port(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

/// A bearer-token service of `targets`.
fn with_token(targets: &[&str]) -> String {
    format!("targets: {targets:?}\nbearerToken: $am-token\ntimeout: 2s\n")
}

/// Whether `text` is `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_utc(text: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:ddZ";
    text.len() == shape.len()
        && text.chars().zip(shape.chars()).all(|(c, s)| if s == 'd' { c.is_ascii_digit() } else { c == s })
}

fn assert_no_secret(text: &str) {
    for secret in [TOKEN, PASSWORD, CREDENTIALS] {
        assert!(!text.contains(secret), "{text:?} shows {secret}");
    }
}

#[tokio::test]
async fn alertmanager_posts_one_alert_of_the_rendered_labels_annotations_and_generator_url() {
    let mut am = receiver(vec![]).await;
    let config = config("service.alertmanager", &with_token(&[host_port(&am.url)]));
    let sent = send(&config, "on-abort", "alertmanager", "").await.unwrap();
    assert_eq!(sent, Sent { thread: None });
    let request = am.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/v2/alerts"));
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
    let mut body = request.json();
    let started = body[0].as_object_mut().unwrap().remove("startsAt").unwrap();
    assert!(is_rfc3339_utc(started.as_str().unwrap()), "{started}");
    assert_eq!(
        body,
        json!([{
            // The empty `paused` label and `empty` annotation are left out.
            "labels": {"alertname": "aborted", "severity": "critical", "namespace": "shop"},
            "annotations": {
                "description": "guestbook went back to its stable revision.",
                "summary": "Rollout guestbook has been aborted.",
            },
            "generatorURL": "https://rollouts.example.com/shop/guestbook",
        }])
    );
}

#[tokio::test]
async fn alertmanager_ignores_the_recipient_as_argo_does() {
    let mut am = receiver(vec![]).await;
    let config = config("service.alertmanager.oncall", &with_token(&[host_port(&am.url)]));
    send(&config, "on-abort", "oncall", "team-payments").await.unwrap();
    let body = am.next().await.json();
    assert!(!body.to_string().contains("team-payments"), "{body}");
}

#[tokio::test]
async fn without_a_section_the_alert_is_named_after_the_template_and_summarised_by_the_message() {
    let mut am = receiver(vec![]).await;
    let service = format!(
        "targets: ['{}/am/']\napiPath: api/v2/alerts\nbasicAuth: {{username: stepwise, password: $am-password}}\n",
        am.url
    );
    let config = config("service.alertmanager", &service);
    send(&config, "on-plain", "alertmanager", "").await.unwrap();
    let request = am.next().await;
    assert_eq!(request.path, "/am/api/v2/alerts");
    assert_eq!(request.headers["authorization"], format!("Basic {CREDENTIALS}"));
    let alert = &request.json()[0];
    assert_eq!(alert["labels"], json!({"alertname": "plain"}));
    assert_eq!(alert["annotations"], json!({"summary": "Rollout guestbook is at a step."}));
    assert!(alert.get("generatorURL").is_none(), "{alert}");
}

#[tokio::test]
async fn alertmanager_falls_over_to_the_next_target_when_the_first_refuses_connections() {
    let mut am = receiver(vec![]).await;
    let config = config("service.alertmanager", &with_token(&[&refusing(), host_port(&am.url)]));
    send(&config, "on-abort", "alertmanager", "").await.unwrap();
    assert_eq!(am.next().await.json()[0]["labels"]["alertname"], "aborted");
}

#[tokio::test]
async fn alertmanager_falls_over_on_an_error_answer_and_stops_at_the_first_target_that_takes_the_alert() {
    let mut failing = receiver(vec![Answer::Reply(503, "not ready".into())]).await;
    let mut taking = receiver(vec![Answer::Reply(200, String::new())]).await;
    let mut spare = receiver(vec![]).await;
    let targets = [host_port(&failing.url), host_port(&taking.url), host_port(&spare.url)];
    let config = config("service.alertmanager", &with_token(&targets));
    send(&config, "on-abort", "alertmanager", "").await.unwrap();
    failing.next().await;
    taking.next().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(spare.requests.try_recv().is_err(), "the third target got the alert too");
}

#[tokio::test]
async fn failing_on_every_target_is_retryable_unless_every_target_refused_the_alert() {
    let cases: &[(&[Option<u16>], bool)] = &[
        (&[None, Some(400)], true),
        (&[Some(503), Some(500)], true),
        (&[Some(429)], true),
        (&[Some(400), Some(404)], false),
        (&[Some(422)], false),
    ];
    for (answers, retryable) in cases {
        let mut receivers = Vec::new();
        let mut targets = Vec::new();
        for answer in *answers {
            match answer {
                None => targets.push(refusing()),
                Some(status) => {
                    let r = receiver(vec![Answer::Reply(*status, "alertmanager says no".into())]).await;
                    targets.push(host_port(&r.url).to_string());
                    receivers.push(r);
                }
            }
        }
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let config = config("service.alertmanager", &with_token(&targets));
        let err = send(&config, "on-abort", "alertmanager", "").await.unwrap_err();
        assert_eq!(err.retryable, *retryable, "{answers:?}: {err:?}");
        assert!(err.message.starts_with("service.alertmanager: no Alertmanager took the alert: "), "{}", err.message);
        // Every target's failure is named by its host and port.
        for target in &targets {
            assert!(err.message.contains(&format!("{target}: ")), "{target} in {}", err.message);
        }
    }
}

#[tokio::test]
async fn no_alertmanager_error_shows_the_token_or_the_credentials_even_when_echoed() {
    let echo_token = receiver(vec![Answer::Echo(401)]).await;
    let echo_basic = receiver(vec![Answer::Echo(500)]).await;
    let silent = receiver(vec![Answer::Silent]).await;
    let token = with_token(&[host_port(&echo_token.url), host_port(&silent.url)]).replace("2s", "200ms");
    let basic = format!("targets: ['{}']\nbasicAuth: {{username: stepwise, password: $am-password}}\n", echo_basic.url);
    let mut errors = Vec::new();
    for service in [token, basic] {
        errors.push(send(&config("service.alertmanager", &service), "on-abort", "alertmanager", "").await.unwrap_err());
    }
    assert!(errors[0].message.contains("no answer within 200 ms"), "{}", errors[0].message);
    for err in errors {
        assert!(err.message.contains("***"), "the echo is quoted, scrubbed: {}", err.message);
        assert_no_secret(&err.message);
        assert_no_secret(&format!("{err:?}"));
    }
}

#[test]
fn a_bad_alertmanager_config_names_its_key_and_no_secret() {
    let parse = |service: &str| {
        let config = data(&[("service.alertmanager.oncall", service)]);
        let message = Config::parse(&config, &secrets()).err().map(|e| e.to_string()).unwrap_or_default();
        assert_no_secret(&message);
        message
    };
    assert_eq!(
        parse("bearerToken: $am-token\n"),
        "service.alertmanager.oncall: targets is missing (host:port or URLs of Alertmanager)"
    );
    let both = "targets: [am:9093]\nbearerToken: $am-token\nbasicAuth: {username: u, password: $am-password}\n";
    assert_eq!(parse(both), "service.alertmanager.oncall: basicAuth and bearerToken are both set: choose one");
    let bad_header = parse("targets: [am:9093]\nbearerToken: \"a\\nb $am-token\"\n");
    assert_eq!(bad_header, "service.alertmanager.oncall: the credentials are not valid in a header");
    assert_eq!(parse("targets: am:9093\n").split(": ").next(), Some("service.alertmanager.oncall"));
}

#[test]
fn a_label_alertmanager_would_refuse_is_a_render_error_naming_the_template_and_the_field() {
    let config = data(&[
        ("service.alertmanager", "targets: [am:9093]\n"),
        ("trigger.on-abort", "- send: [aborted]\n"),
        ("template.aborted", "alertmanager:\n  labels:\n    rollout-name: '{{.name}}'\n"),
    ]);
    let config = Config::parse(&config, &BTreeMap::new()).unwrap();
    let err = config.render("on-abort", "alertmanager", &json!({"name": "guestbook"})).unwrap_err();
    assert!(
        matches!(&err, Error::Template { key, field, .. } if key == "template.aborted" && field == "alertmanager.labels.rollout-name"),
        "{err}"
    );
}
