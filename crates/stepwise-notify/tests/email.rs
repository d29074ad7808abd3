//! The email service against a real SMTP server: aiosmtpd (Debian's python3-aiosmtpd, which
//! scripts/smtp.sh installs), run by tests/smtp_receiver.py on a loopback address. What the
//! server received (envelope, headers, body, STARTTLS, AUTH) and what each of its replies
//! becomes.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::data;
use serde_json::{Value, json};
use stepwise_notify::{Config, SendError, Sent};

const USERNAME: &str = "SECRET-smtp-user";
const PASSWORD: &str = "SECRET-smtp-password";
const KEY: &str = "3/on-abort//ops/ops@example.com/aborted";

/// Debian's python, for which python3-aiosmtpd is installed (the one first on PATH may be
/// another).
const PYTHON: &str = "/usr/bin/python3";
const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_receiver.py");

fn secrets() -> BTreeMap<String, String> {
    data(&[("smtp-user", USERNAME), ("smtp-password", PASSWORD), ("smtp-host", "127.0.0.1")])
}

/// A running smtp_receiver.py: its port and the JSON lines it prints. Killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    events: mpsc::Receiver<Value>,
    /// The certificate's directory, kept while the server runs.
    _certificate: Option<tempfile::TempDir>,
}

impl Receiver {
    /// Starts the receiver on 127.0.0.1 with `args`.
    fn start(args: &[&str]) -> Receiver {
        Self::try_start(args, None).expect("the receiver binds a free port")
    }

    /// Starts the receiver with `args`, with a fresh self-signed certificate (`CERT` and `KEY`
    /// in `args` become its paths) when `certificate` holds a directory; None when it may not
    /// bind the port asked for.
    fn try_start(args: &[&str], certificate: Option<tempfile::TempDir>) -> Option<Receiver> {
        let paths = certificate.as_ref().map(|dir| self_signed(dir.path()));
        let args: Vec<String> = args
            .iter()
            .map(|a| match (*a, &paths) {
                ("CERT", Some((cert, _))) => cert.clone(),
                ("KEY", Some((_, key))) => key.clone(),
                _ => a.to_string(),
            })
            .collect();
        let mut child = Command::new(PYTHON)
            .arg(RECEIVER)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{PYTHON} does not start ({e}): run scripts/smtp.sh"));
        // Drained all along, so that a server with much to say never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        if first.trim() == "denied" {
            let _ = child.wait();
            return None;
        }
        let Ok(port) = first.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!("smtp_receiver.py {args:?} printed {first:?}, not a port (run scripts/smtp.sh?): {stderr}");
        };
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        Some(Receiver { child, port, events, _certificate: certificate })
    }

    /// Starts the receiver with `args` and a self-signed certificate for `CERT` and `KEY`.
    fn with_certificate(args: &[&str]) -> Receiver {
        Self::try_start(args, Some(tempfile::tempdir().unwrap())).expect("the receiver binds a free port")
    }

    /// The next event the server printed.
    fn next(&self) -> Value {
        self.events.recv_timeout(Duration::from_secs(5)).expect("an event within 5 s")
    }

    /// The next event, which must be a message.
    fn message(&self) -> Value {
        let event = self.next();
        assert_eq!(event["event"], "message", "{event}");
        event
    }

    /// Asserts that the server printed nothing (no AUTH, no message) in the meantime.
    fn assert_nothing_received(&self) {
        if let Ok(event) = self.events.recv_timeout(Duration::from_millis(300)) {
            panic!("the server received {event}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for localhost and 127.0.0.1 in `dir`, made by the openssl CLI:
/// (certificate, key).
fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl req failed");
    (cert.display().to_string(), key.display().to_string())
}

/// The config of an email service on `host`:`port`, plus `extra` lines.
fn service(host: &str, port: u16, extra: &str) -> String {
    format!("host: {host}\nport: {port}\nfrom: Stepwise <stepwise@example.com>\n{extra}")
}

/// Credentials from the Secret.
const CREDENTIALS: &str = "username: $smtp-user\npassword: $smtp-password\n";

/// A config of the email service `key` configured `service`: templates with an email section
/// (`aborted`), a subject only (`step`) and none (`plain`).
fn config(key: &str, service: &str) -> Config {
    let config = data(&[
        (key, service),
        ("trigger.on-abort", "- send: [aborted]\n"),
        ("trigger.on-step", "- send: [step]\n"),
        ("trigger.on-plain", "- send: [plain]\n"),
        (
            "template.aborted",
            r#"message: Rollout {{.rollout.metadata.name}} has been aborted.
email:
  subject: Rollout {{.rollout.metadata.name}} aborted
  body: |
    {{.rollout.metadata.name}} went back to its stable revision.
    .
    A line of a dot, as SMTP must escape it.
"#,
        ),
        (
            "template.step",
            "message: <p>Rollout <b>{{.rollout.metadata.name}}</b> is at a step.</p>\nemail:\n  subject: |\n    Rollout {{.rollout.metadata.name}}\n    at a step\n",
        ),
        ("template.plain", "message: Rollout {{.rollout.metadata.name}} is at a step.\n"),
    ]);
    Config::parse(&config, &secrets()).unwrap()
}

/// Sends the one message of `trigger` to the service `name` of `config`, for the recipient `to`.
async fn send(config: &Config, trigger: &str, name: &str, to: &str) -> Result<Sent, SendError> {
    let vars = json!({"rollout": {"metadata": {"name": "guestbook", "namespace": "shop"}}});
    let message = config.render(trigger, name, &vars).unwrap().remove(0);
    config.service(name).unwrap().send(&message, to, None, KEY).await
}

/// The failure of a send to the service `service` (the config of `service.email`).
async fn failure(service: &str, to: &str) -> SendError {
    let err = send(&config("service.email", service), "on-abort", "email", to).await.unwrap_err();
    assert_no_secret(&err);
    err
}

fn assert_no_secret(err: &SendError) {
    for text in [err.message.clone(), format!("{err:?}")] {
        for secret in [USERNAME, PASSWORD] {
            assert!(!text.contains(secret), "{text:?} shows {secret}");
        }
    }
}

/// The headers (lower-case names, folded lines unfolded) and the body of a raw message.
fn parse(raw: &str) -> (BTreeMap<String, String>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no blank line in {raw:?}"));
    let mut headers = BTreeMap::new();
    let mut last = String::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            headers.entry(last.clone()).and_modify(|v: &mut String| v.push_str(line));
        } else {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{line:?} in {raw:?}"));
            last = name.to_ascii_lowercase();
            headers.insert(last.clone(), value.trim().to_string());
        }
    }
    (headers, body.to_string())
}

/// The next message the receiver got: (its event, headers, body).
fn received(receiver: &Receiver) -> (Value, BTreeMap<String, String>, String) {
    let event = receiver.message();
    let (headers, body) = parse(event["data"].as_str().unwrap());
    (event, headers, body)
}

#[tokio::test]
async fn a_release_message_arrives_with_its_subject_and_key() {
    let receiver = Receiver::start(&[]);
    let config = config("service.email.ops", &service("127.0.0.1", receiver.port, ""));
    let sent = send(&config, "on-abort", "ops", "ops@example.com").await.unwrap();
    assert_eq!(sent, Sent { thread: None });
    let (event, headers, body) = received(&receiver);
    assert_eq!(event["mail_from"], "stepwise@example.com");
    assert_eq!(event["rcpt_tos"], json!(["ops@example.com"]));
    assert_eq!(event["login"], Value::Null, "no credentials, no AUTH");
    assert_eq!(headers["from"], "Stepwise <stepwise@example.com>");
    assert_eq!(headers["to"], "ops@example.com");
    assert_eq!(headers["subject"], "Rollout guestbook aborted");
    assert_eq!(headers["x-stepwise-notification-key"], KEY);
    assert_eq!(headers["auto-submitted"], "auto-generated");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(headers["date"].ends_with("+0000"), "{}", headers["date"]);
    let id = &headers["message-id"];
    assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
    assert_eq!(
        body,
        "guestbook went back to its stable revision.\r\n.\r\nA line of a dot, as SMTP must escape it.\r\n"
    );
}

#[tokio::test]
async fn every_attempt_carries_the_same_key_and_a_message_id_of_its_own() {
    let receiver = Receiver::start(&[]);
    let config = config("service.email", &service("127.0.0.1", receiver.port, ""));
    send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
    send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
    let (_, first, _) = received(&receiver);
    let (_, second, _) = received(&receiver);
    assert_eq!(first["x-stepwise-notification-key"], second["x-stepwise-notification-key"]);
    assert_ne!(first["message-id"], second["message-id"]);
}

#[tokio::test]
async fn an_html_service_sends_html_and_without_a_body_the_message_text() {
    let receiver = Receiver::start(&[]);
    let config = config("service.email", &service("127.0.0.1", receiver.port, "html: true\n"));
    send(&config, "on-step", "email", "Ops Team <ops@example.com>").await.unwrap();
    let (event, headers, body) = received(&receiver);
    assert_eq!(event["rcpt_tos"], json!(["ops@example.com"]));
    assert_eq!(headers["to"], "\"Ops Team\" <ops@example.com>");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    // The subject's YAML block became one line.
    assert_eq!(headers["subject"], "Rollout guestbook at a step");
    // SMTP's own line break ends the data.
    assert_eq!(body, "<p>Rollout <b>guestbook</b> is at a step.</p>\r\n");
}

#[tokio::test]
async fn a_template_without_an_email_section_sends_its_message_with_an_empty_subject_as_argo_does() {
    let receiver = Receiver::start(&[]);
    let config = config("service.email", &service("127.0.0.1", receiver.port, ""));
    send(&config, "on-plain", "email", "ops@example.com").await.unwrap();
    let (_, headers, body) = received(&receiver);
    assert_eq!(headers["subject"], "");
    assert_eq!(body, "Rollout guestbook is at a step.\r\n");
}

#[tokio::test]
async fn starttls_is_used_whenever_the_server_offers_it() {
    let receiver = Receiver::with_certificate(&["--starttls", "CERT", "KEY"]);
    let config = config("service.email", &service("127.0.0.1", receiver.port, "insecure_skip_verify: true\n"));
    send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
    let (event, headers, _) = received(&receiver);
    assert_eq!(event["tls"], true, "{event}");
    assert_eq!(headers["subject"], "Rollout guestbook aborted");
}

#[tokio::test]
async fn the_credentials_of_the_secret_authenticate_over_starttls_with_plain_or_login() {
    for mechanism in ["PLAIN", "LOGIN"] {
        let args = ["--user", USERNAME, "--password", PASSWORD, "--mechanisms", mechanism, "--starttls", "CERT", "KEY"];
        let receiver = Receiver::with_certificate(&args);
        let extra = format!("{CREDENTIALS}insecure_skip_verify: true\n");
        let config = config("service.email", &service("$smtp-host", receiver.port, &extra));
        send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
        let auth = receiver.next();
        assert_eq!(
            auth,
            json!({"event": "auth", "mechanism": mechanism, "login": USERNAME, "success": true, "tls": true})
        );
        let event = receiver.message();
        assert_eq!(
            (&event["login"], &event["mechanism"], &event["tls"]),
            (&json!(USERNAME), &json!(mechanism), &json!(true))
        );
    }
}

#[tokio::test]
async fn port_465_speaks_tls_from_the_first_byte() {
    let host = "127.0.0.1";
    let args = ["--port", "465", "--tls", "CERT", "KEY", "--user", USERNAME, "--password", PASSWORD];
    let receiver = Receiver::try_start(&args, Some(tempfile::tempdir().unwrap()))
        .expect("the receiver on 127.0.0.1:465 (binding it needs root or net.ipv4.ip_unprivileged_port_start <= 465)");
    let config = config("service.email", &service(host, 465, &format!("{CREDENTIALS}insecure_skip_verify: true\n")));
    send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
    assert_eq!(receiver.next()["tls"], true);
    let event = receiver.message();
    assert_eq!((&event["tls"], &event["login"]), (&json!(true), &json!(USERNAME)));
}

#[tokio::test]
async fn credentials_are_never_sent_in_plain_text() {
    let host = "127.0.0.1";
    let args = ["--user", USERNAME, "--password", PASSWORD, "--auth-in-clear"];
    let receiver = Receiver::start(&args);
    let err = failure(&service(host, receiver.port, CREDENTIALS), "ops@example.com").await;
    assert!(!err.retryable, "{err:?}");
    assert_eq!(
        err.message,
        format!(
            "service.email: {host}:{} does not offer STARTTLS, and the credentials are only sent encrypted \
             (use port 465 if the server takes implicit TLS)",
            receiver.port
        )
    );
    receiver.assert_nothing_received();
}

#[tokio::test]
async fn a_wrong_password_fails_for_good_without_showing_the_credentials_the_server_echoes() {
    let args = ["--user", USERNAME, "--password", "another", "--echo-credentials", "--starttls", "CERT", "KEY"];
    let receiver = Receiver::with_certificate(&args);
    let extra = format!("{CREDENTIALS}insecure_skip_verify: true\n");
    let err = failure(&service("127.0.0.1", receiver.port, &extra), "ops@example.com").await;
    assert!(!err.retryable, "{err:?}");
    assert_eq!(
        err.message,
        "service.email: authentication failed: the server answered 535 5.7.8 Authentication failed for *** with password ***"
    );
    assert_eq!(receiver.next()["success"], false);
    receiver.assert_nothing_received();
}

#[tokio::test]
async fn a_greylisting_server_s_451_is_retryable_and_the_retry_is_delivered() {
    let receiver = Receiver::start(&["--busy", "1"]);
    let config = config("service.email", &service("127.0.0.1", receiver.port, ""));
    let err = send(&config, "on-abort", "email", "ops@example.com").await.unwrap_err();
    assert!(err.retryable, "{err:?}");
    assert_eq!(
        err.message,
        "service.email: sending to ops@example.com failed: the server answered 451 4.7.1 Greylisted, please try again later"
    );
    send(&config, "on-abort", "email", "ops@example.com").await.unwrap();
    let (_, headers, _) = received(&receiver);
    assert_eq!(headers["x-stepwise-notification-key"], KEY);
}

#[tokio::test]
async fn a_mailbox_the_server_refuses_with_550_is_not_retried() {
    let receiver = Receiver::start(&["--refuse", "nobody@example.com"]);
    let err = failure(&service("127.0.0.1", receiver.port, ""), "nobody@example.com").await;
    assert!(!err.retryable, "{err:?}");
    assert_eq!(
        err.message,
        "service.email: sending to nobody@example.com failed: the server answered 550 5.1.1 \
         <nobody@example.com>: Recipient address rejected: User unknown"
    );
    receiver.assert_nothing_received();
}

#[tokio::test]
async fn a_server_that_is_down_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = failure(&service("127.0.0.1", port, CREDENTIALS), "ops@example.com").await;
    assert!(err.retryable, "{err:?}");
    assert!(
        err.message.starts_with(&format!("service.email: cannot connect to 127.0.0.1:{port}: ")),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_server_that_never_greets_is_retryable_after_the_timeout() {
    // Connections complete in the listen backlog, and nothing ever answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = failure(&service("127.0.0.1", port, "timeout: 300ms\n"), "ops@example.com").await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(err.retryable, "{err:?}");
    assert_eq!(err.message, format!("service.email: no answer from 127.0.0.1:{port} within 300 ms"));
}

#[tokio::test]
async fn an_untrusted_certificate_is_not_retried_unless_insecure_skip_verify() {
    let receiver = Receiver::with_certificate(&["--starttls", "CERT", "KEY"]);
    let err = failure(&service("127.0.0.1", receiver.port, ""), "ops@example.com").await;
    assert!(!err.retryable, "{err:?}");
    assert!(
        err.message.starts_with("service.email: STARTTLS failed: the server's certificate is not trusted ("),
        "{}",
        err.message
    );
    receiver.assert_nothing_received();
}

#[tokio::test]
async fn a_recipient_that_is_not_an_email_address_fails_for_good_before_connecting() {
    let receiver = Receiver::start(&[]);
    for (to, why) in [
        ("deploys", r#"the recipient "deploys" is not an email address"#),
        ("a@example.com,b@example.com", r#"the recipient "a@example.com,b@example.com" is several addresses"#),
    ] {
        let err = failure(&service("127.0.0.1", receiver.port, ""), to).await;
        assert!(!err.retryable, "{err:?}");
        assert!(err.message.starts_with(&format!("service.email: {why}")), "{}", err.message);
    }
    receiver.assert_nothing_received();
}

#[test]
fn a_bad_email_config_names_its_key_and_field_and_no_secret() {
    let parse = |service: &str| {
        let config = data(&[("service.email.ops", service)]);
        let message = Config::parse(&config, &secrets()).err().map(|e| e.to_string()).unwrap_or_default();
        for secret in [USERNAME, PASSWORD] {
            assert!(!message.contains(secret), "{message}");
        }
        message
    };
    assert_eq!(parse("port: 587\nfrom: a@example.com\n"), "service.email.ops: host is missing");
    assert_eq!(
        parse("host: smtp\nport: 587\nfrom: a@example.com\nusername: $smtp-user\n"),
        "service.email.ops: username is set but password is not: set both or neither"
    );
    assert_eq!(
        parse("host: smtp\nport: 587\nfrom: $smtp-password\n"),
        "service.email.ops: from is not an email address (like ops@example.com)"
    );
    assert_eq!(
        parse("host: smtp\nport: $smtp-port\nfrom: a@example.com\n"),
        "service.email.ops: $smtp-port is not a key of the Secret"
    );
    assert_eq!(parse(&service("smtp.example.com", 587, CREDENTIALS)), "");
}
