//! The email service (`service.email`, or `service.email.<name>` for several mail servers): one
//! message per recipient over SMTP, as Argo's email service sends it.
//!
//! ```yaml
//! service.email.ops: |
//!   host: smtp.example.com
//!   port: 587
//!   username: $email-username
//!   password: $email-password
//!   from: Stepwise <stepwise@example.com>
//!   html: false
//! template.rollout-aborted: |
//!   message: Rollout {{.rollout.metadata.name}} has been aborted.
//!   email:
//!     subject: 'Rollout {{.rollout.metadata.name}} aborted'
//!     body: |
//!       {{.rollout.metadata.name}} went back to its stable revision.
//! ```
//!
//! Config, as Argo's: `host`, `port`, `username` and `password` (AUTH PLAIN or LOGIN, whichever
//! the server offers), `from` (an address, or `Name <address>`), `html` (the body is HTML rather
//! than plain text) and `insecure_skip_verify` (accept any certificate: a test server's own);
//! stepwise adds `timeout` (10 s unless set), the deadline of one delivery.
//!
//! The recipient of a subscription (`email:ops@example.com`) is the address the message goes to,
//! alone: Argo's `;`-separated lists arrive here one address at a time. The template's `email`
//! section serves every email service: `subject`, and `body` (the message text unless it renders
//! to nothing, as in Argo). A template without a section sends the message text with an empty
//! subject, as Argo does.
//!
//! Transport security, decided by the config alone so that nobody on the path can weaken it:
//! port 465 speaks TLS from the first byte (implicit TLS, as Argo's). On any other port the
//! connection starts in plain text and is upgraded with STARTTLS when the server offers it, as
//! Argo's does, so that a relay inside the cluster that has no TLS keeps working; but when the
//! config has credentials, STARTTLS is required: a server (or a man in the middle stripping the
//! offer) that does not offer it gets no credentials, only a non-retryable error. Go's net/smtp,
//! which Argo's email service authenticates with, sends them in plain text to a server named
//! `localhost`; stepwise does not, as a name says nothing of where a connection goes in a Pod
//! with a sidecar or a proxy.
//! Certificates are checked against the system's roots, as the HTTP services do, unless
//! `insecure_skip_verify` is set.
//!
//! Each message has the headers `From`, `To` (the recipient), `Subject`, `Date`, a `Message-ID`
//! of its own, `Auto-Submitted: auto-generated` (RFC 3834: no out-of-office reply comes back to
//! the sender) and [`KEY_HEADER`], the idempotency key: the same for every attempt of one
//! notification, so that a reader or a mail filter can recognise a repeat. The `Message-ID` is
//! not derived from the key: keys are not unique across Rollouts and clusters, and mail providers
//! silently drop a message whose `Message-ID` a mailbox has seen already.
//!
//! The server accepting the message (250 after DATA) is delivery. A 4xx reply (a greylisting
//! server, a full queue), a refused or dropped connection and the deadline are retryable; a 5xx
//! reply (a mailbox that does not exist, credentials refused), an untrusted certificate and a
//! bad config are not. Errors name the ConfigMap key and quote the server's reply, never the
//! username or password: both are scrubbed from anything the server says.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Secrets;
use crate::http::Redactor;
use crate::{Error, Message, SendError, Sending, Sent, Service};

/// The service type, and the key of its template sections.
pub const KIND: &str = "email";

/// The header carrying the idempotency key: the same for every attempt of one notification.
pub const KEY_HEADER: &str = "X-Stepwise-Notification-Key";

/// The port of implicit TLS (SMTP submission over TLS, RFC 8314), as Argo decides by it.
pub const IMPLICIT_TLS_PORT: u16 = 465;

/// How long the polite QUIT after a delivered message may take: the message is delivered by then,
/// so a server slow to say goodbye must not turn a delivery into a failure (and a repeat).
const QUIT_GRACE: Duration = Duration::from_secs(1);

/// The mechanisms offered to the server, in order of preference: the two every submission server
/// knows, both sending the password as it is, which is why they only travel encrypted.
const MECHANISMS: &[Mechanism] = &[Mechanism::Plain, Mechanism::Login];

/// A `service.email` value as written.
#[derive(Deserialize)]
struct EmailConfig {
    host: Option<String>,
    port: Option<serde_yaml::Value>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
    #[serde(default)]
    html: bool,
    #[serde(default)]
    insecure_skip_verify: bool,
    timeout: Option<serde_yaml::Value>,
}

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS before the credentials, or nothing is sent.
    StartTlsRequired,
    /// STARTTLS when the server offers it, plain text otherwise.
    StartTlsOpportunistic,
}

/// A configured email service, its secrets resolved.
pub struct Email {
    /// The ConfigMap key, which names the service in errors.
    key: String,
    host: String,
    port: u16,
    from: Mailbox,
    credentials: Option<Credentials>,
    html: bool,
    security: Security,
    /// The certificate checks, or why they cannot be set up (reported when sending).
    tls: Result<TlsParameters, String>,
    /// The name the EHLO command gives: this host's name.
    hello: ClientId,
    timeout: Duration,
    redactor: Redactor,
}

/// Builds the email service of the ConfigMap key `key` from its YAML `config`.
pub fn build(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error> {
    let invalid = |message: &str| Error::Config { key: key.to_string(), message: message.to_string() };
    let config: EmailConfig =
        serde_yaml::from_str(config).map_err(|e| invalid(&format!("not an email config: {e}")))?;
    let mut secrets = Secrets::new(key, secrets);
    // Credentials are kept as written (a password may end with a space); the rest is trimmed.
    let mut resolve = |value: &Option<String>, trim: bool| -> Result<Option<String>, Error> {
        let resolved = value.as_deref().map(|v| secrets.resolve(v)).transpose()?;
        Ok(resolved.map(|v| if trim { v.trim().to_string() } else { v }).filter(|v| !v.is_empty()))
    };
    let mut text = |value: &Option<String>| resolve(value, true);
    let host = text(&config.host)?.ok_or_else(|| invalid("host is missing"))?;
    let port = match &config.port {
        None => return Err(invalid("port is missing (465 for implicit TLS, 587 or 25 for STARTTLS)")),
        Some(serde_yaml::Value::String(port)) => text(&Some(port.clone()))?,
        Some(serde_yaml::Value::Number(port)) => Some(port.to_string()),
        Some(_) => None,
    };
    // Not quoted: a port may come from the Secret too.
    let port = port.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
    let port = port.ok_or_else(|| invalid("port is not a port number (1 to 65535)"))?;
    let from = text(&config.from)?.ok_or_else(|| invalid("from is missing (the sender's address)"))?;
    let from: Mailbox = from.parse().map_err(|_| invalid("from is not an email address (like ops@example.com)"))?;
    let username = resolve(&config.username, false)?;
    let password = resolve(&config.password, false)?;
    let credentials = match (username, password) {
        (Some(username), Some(password)) => {
            // Written in the ConfigMap or not, a password is a credential.
            secrets.treat_as_secret(&password);
            Some(Credentials::new(username, password))
        }
        (None, None) => None,
        (Some(_), None) => return Err(invalid("username is set but password is not: set both or neither")),
        (None, Some(_)) => return Err(invalid("password is set but username is not: set both or neither")),
    };
    if rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
        return Err(invalid("host is not a host name or an IP address"));
    }
    let timeout = crate::webhook::timeout(config.timeout.as_ref()).map_err(|e| invalid(&format!("timeout: {e}")))?;
    let security = security(port, credentials.is_some());
    // As Go's InsecureSkipVerify, which Argo's sets: neither the chain nor the name is checked.
    let tls = TlsParameters::builder(host.clone())
        .dangerous_accept_invalid_certs(config.insecure_skip_verify)
        .dangerous_accept_invalid_hostnames(config.insecure_skip_verify)
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS: {e}"));
    Ok(Box::new(Email {
        key: key.to_string(),
        host,
        port,
        from,
        credentials,
        html: config.html,
        security,
        tls,
        hello: ClientId::default(),
        timeout,
        redactor: Redactor::new(secrets.into_used()),
    }))
}

/// How a connection on `port` is secured: implicit TLS on port 465; otherwise STARTTLS, required
/// when there are credentials to send.
fn security(port: u16, credentials: bool) -> Security {
    if port == IMPLICIT_TLS_PORT {
        Security::Implicit
    } else if credentials {
        Security::StartTlsRequired
    } else {
        Security::StartTlsOpportunistic
    }
}

/// A template's `email` section serves every email service.
pub fn section(section: &Value, _name: &str) -> Option<(String, Value)> {
    Some((KIND.to_string(), section.clone()))
}

/// Checks a rendered section: `subject` and `body` are text. The subject becomes one line (a
/// YAML block keeps a trailing newline, and a header cannot hold a line break). An error names
/// the field.
pub fn finish(mut rendered: Value) -> Result<Value, (String, String)> {
    let Some(fields) = rendered.as_object_mut() else {
        return Err((KIND.into(), "not a map (subject, body)".into()));
    };
    for field in ["subject", "body"] {
        match fields.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => return Err((format!("{KIND}.{field}"), "not text".into())),
        }
    }
    if let Some(Value::String(subject)) = fields.get_mut("subject") {
        *subject = one_line(subject);
    }
    Ok(rendered)
}

/// `text` on one line: line breaks and runs of white space become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The recipient of a subscription as a mailbox; the error says why not, quoting it (an address
/// is no secret; the subscription shows it anyway).
fn parse_recipient(text: &str) -> Result<Mailbox, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("no recipient: the subscription names no address".into());
    }
    if text.contains([';', ',']) {
        return Err(format!("the recipient {text:?} is several addresses: separate them with ;"));
    }
    text.parse().map_err(|_| format!("the recipient {text:?} is not an email address"))
}

/// A `Message-ID` (RFC 5322 3.6.4) of its own for every message: 128 random bits and the time,
/// at the domain of the sender, as mail providers expect of the sender's messages.
fn message_id(from: &Mailbox, now: SystemTime) -> String {
    let nanos = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut random = [0u8; 16];
    // Fails only without the OS's randomness; the time then still tells messages apart.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let domain = from.email.domain();
    let domain = if domain.is_ascii() && !domain.is_empty() { domain } else { "localhost" };
    format!("<{random}.{nanos:x}@{domain}>")
}

impl Email {
    /// The message to `to`: headers, and the rendered section's subject and body (the message
    /// text unless the body renders to nothing) as plain text or HTML.
    fn compose(&self, message: &Message, to: Mailbox, key: &str, now: SystemTime) -> Result<lettre::Message, String> {
        let section = message.fields.get(KIND);
        let text = |field: &str| section.and_then(|s| s.get(field)).and_then(Value::as_str).unwrap_or_default();
        let body = if text("body").is_empty() { message.text.as_str() } else { text("body") };
        // SMTP ends the data with a line break of its own: one of the template's (a YAML block
        // keeps one) would add an empty line.
        let body = body.trim_end_matches(['\r', '\n']);
        let header =
            |name: &'static str, value: &str| HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string());
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(text("subject")))
            .date(now)
            .message_id(Some(message_id(&self.from, now)))
            .raw_header(header("Auto-Submitted", "auto-generated"))
            .raw_header(header(KEY_HEADER, &one_line(key)))
            .header(if self.html { ContentType::TEXT_HTML } else { ContentType::TEXT_PLAIN })
            .body(body.to_string())
            .map_err(|e| format!("cannot compose the message: {e}"))
    }

    /// Delivers `email` within the deadline; the connection is returned for the QUIT.
    async fn deliver(&self, email: &lettre::Message) -> Result<AsyncSmtpConnection, SendError> {
        let tls = self.tls.as_ref().map_err(|e| self.error(false, e.clone()))?;
        let server = format!("{}:{}", self.host, self.port);
        let implicit = (self.security == Security::Implicit).then(|| tls.clone());
        let mut connection = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| self.smtp_error(&format!("cannot connect to {server}"), &e))?;
        if connection.can_starttls() {
            connection.starttls(tls.clone(), &self.hello).await.map_err(|e| self.smtp_error("STARTTLS failed", &e))?;
        } else if self.security == Security::StartTlsRequired && !connection.is_encrypted() {
            let why = format!(
                "{server} does not offer STARTTLS, and the credentials are only sent encrypted \
                 (use port {IMPLICIT_TLS_PORT} if the server takes implicit TLS)"
            );
            return Err(self.error(false, why));
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(MECHANISMS, credentials).await.map_err(|e| self.smtp_error("authentication failed", &e))?;
        }
        let to = email.envelope().to().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        connection
            .send(email.envelope(), &email.formatted())
            .await
            .map_err(|e| self.smtp_error(&format!("sending to {to} failed"), &e))?;
        Ok(connection)
    }

    /// A [`SendError`] of this service: `<key>: <what>`, without secrets.
    fn error(&self, retryable: bool, what: String) -> SendError {
        self.redactor.error(retryable, format!("{}: {what}", self.key))
    }

    /// The error of a failed SMTP step (`doing`): the server's reply with its code, or what
    /// failed underneath. Retryable unless the server answered 5xx, the certificate is not
    /// trusted or the client refused (no common AUTH mechanism, an address the server cannot
    /// take).
    fn smtp_error(&self, doing: &str, e: &lettre::transport::smtp::Error) -> SendError {
        let cause = causes(e).unwrap_or_else(|| e.to_string());
        if let Some(code) = e.status() {
            return self.error(e.is_transient(), format!("{doing}: the server answered {code} {}", cause.trim()));
        }
        if let Some(certificate) = certificate_error(e) {
            let why = format!(
                "{doing}: the server's certificate is not trusted ({certificate}); insecure_skip_verify: true \
                 accepts it, for a test server only"
            );
            return self.error(false, why);
        }
        let retryable = !(e.is_client() || e.is_tls());
        self.error(retryable, format!("{doing}: {cause}"))
    }
}

/// The text of `e`'s causes, `a: b`, without lettre's own label of its kind; None without one.
fn causes(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut texts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !texts.iter().any(|t| t.contains(&text)) {
            texts.push(text);
        }
        source = cause.source();
    }
    (!texts.is_empty()).then(|| texts.join(": "))
}

/// The certificate problem among `e`'s causes, if that is what failed the TLS handshake: a
/// rustls error inside an I/O error, as tokio-rustls reports it.
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = e.source();
    while let Some(cause) = source {
        let rustls_error = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(error @ rustls::Error::InvalidCertificate(_)) = rustls_error {
            return Some(error.to_string());
        }
        source = cause.source();
    }
    None
}

impl Service for Email {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn send<'a>(
        &'a self,
        message: &'a Message,
        recipient: &'a str,
        _: Option<&'a str>,
        idempotency_key: &'a str,
    ) -> Sending<'a> {
        Box::pin(async move {
            let to = parse_recipient(recipient).map_err(|e| self.error(false, e))?;
            let email =
                self.compose(message, to, idempotency_key, SystemTime::now()).map_err(|e| self.error(false, e))?;
            // One deadline for connecting, STARTTLS, AUTH and the message: a server that trickles
            // its replies must not hold the controller longer than the service allows.
            let mut connection = match tokio::time::timeout(self.timeout, self.deliver(&email)).await {
                Err(_) => {
                    let what = format!("no answer from {}:{} within {}", self.host, self.port, shown(self.timeout));
                    return Err(self.error(true, what));
                }
                Ok(result) => result?,
            };
            let _ = tokio::time::timeout(QUIT_GRACE, connection.quit()).await;
            Ok(Sent::default())
        })
    }
}

/// `300 ms`, `10 s`.
fn shown(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PASSWORD: &str = "s3cr3t-pw";

    fn built(config: &str) -> Result<Box<dyn Service>, Error> {
        let secrets = [("password".to_string(), PASSWORD.to_string()), ("user".to_string(), "bot".to_string())];
        build("service.email.ops", config, &secrets.into())
    }

    fn error(config: &str) -> String {
        built(config).err().map(|e| e.to_string()).unwrap_or_default()
    }

    /// The service `config` builds, as the concrete type.
    fn email(config: &str) -> Email {
        let parsed: EmailConfig = serde_yaml::from_str(config).unwrap();
        let from: Mailbox = parsed.from.unwrap().parse().unwrap();
        let host = parsed.host.unwrap();
        Email {
            key: "service.email".into(),
            tls: TlsParameters::builder(host.clone()).build_rustls().map_err(|e| e.to_string()),
            host,
            port: 587,
            from,
            credentials: None,
            html: parsed.html,
            security: Security::StartTlsOpportunistic,
            hello: ClientId::default(),
            timeout: Duration::from_secs(10),
            redactor: Redactor::default(),
        }
    }

    #[test]
    fn an_email_service_needs_a_host_a_port_and_a_sender() {
        assert_eq!(error("port: 25\nfrom: a@example.com"), "service.email.ops: host is missing");
        assert_eq!(
            error("host: smtp\nfrom: a@example.com"),
            "service.email.ops: port is missing (465 for implicit TLS, 587 or 25 for STARTTLS)"
        );
        for port in ["0", "70000", "smtp", "[25]"] {
            assert_eq!(
                error(&format!("host: smtp\nport: {port}\nfrom: a@example.com")),
                "service.email.ops: port is not a port number (1 to 65535)",
                "{port}"
            );
        }
        assert_eq!(error("host: smtp\nport: 25"), "service.email.ops: from is missing (the sender's address)");
        assert_eq!(
            error("host: smtp\nport: 25\nfrom: stepwise"),
            "service.email.ops: from is not an email address (like ops@example.com)"
        );
        assert_eq!(
            error("host: 'smtp server'\nport: 25\nfrom: a@example.com"),
            "service.email.ops: host is not a host name or an IP address"
        );
        assert!(built("host: smtp.example.com\nport: '587'\nfrom: Stepwise <stepwise@example.com>").is_ok());
        assert!(
            built("host: 127.0.0.1\nport: 25\nfrom: a@example.com\nhtml: true\ninsecure_skip_verify: true").is_ok()
        );
    }

    #[test]
    fn username_and_password_go_together_and_neither_is_quoted() {
        let base = "host: smtp\nport: 587\nfrom: a@example.com\n";
        assert_eq!(
            error(&format!("{base}username: $user")),
            "service.email.ops: username is set but password is not: set both or neither"
        );
        assert_eq!(
            error(&format!("{base}password: $password")),
            "service.email.ops: password is set but username is not: set both or neither"
        );
        assert_eq!(
            error(&format!("{base}password: $pasword")),
            "service.email.ops: $pasword is not a key of the Secret"
        );
        assert!(built(&format!("{base}username: $user\npassword: $password")).is_ok());
        let bad_timeout = error(&format!("{base}timeout: forever"));
        assert!(bad_timeout.starts_with("service.email.ops: timeout: "), "{bad_timeout}");
    }

    #[test]
    fn port_465_is_implicit_tls_and_credentials_require_starttls() {
        assert_eq!(security(465, false), Security::Implicit);
        assert_eq!(security(465, true), Security::Implicit);
        assert_eq!(security(587, true), Security::StartTlsRequired);
        assert_eq!(security(25, true), Security::StartTlsRequired);
        assert_eq!(security(587, false), Security::StartTlsOpportunistic);
    }

    #[test]
    fn a_recipient_is_one_email_address() {
        assert_eq!(parse_recipient(" ops@example.com ").unwrap().to_string(), "ops@example.com");
        assert_eq!(parse_recipient("Ops <ops@example.com>").unwrap().email.to_string(), "ops@example.com");
        assert_eq!(parse_recipient("deploys").unwrap_err(), r#"the recipient "deploys" is not an email address"#);
        assert_eq!(
            parse_recipient("a@example.com, b@example.com").unwrap_err(),
            r#"the recipient "a@example.com, b@example.com" is several addresses: separate them with ;"#
        );
        assert_eq!(parse_recipient("").unwrap_err(), "no recipient: the subscription names no address");
    }

    #[test]
    fn the_section_serves_every_email_service_and_its_subject_becomes_one_line() {
        assert_eq!(super::section(&json!({"subject": "s"}), "ops"), Some(("email".into(), json!({"subject": "s"}))));
        let out = finish(json!({"subject": "Rollout\n  guestbook aborted\n", "body": "line 1\nline 2\n"})).unwrap();
        assert_eq!(out, json!({"subject": "Rollout guestbook aborted", "body": "line 1\nline 2\n"}));
        assert_eq!(finish(json!({"subject": ["x"]})).unwrap_err().0, "email.subject");
        assert_eq!(finish(json!({"body": {"x": 1}})).unwrap_err().0, "email.body");
        assert_eq!(finish(json!("text")).unwrap_err().0, "email");
    }

    #[test]
    fn a_message_has_the_headers_of_a_notification_and_the_body_of_the_section_or_the_message() {
        let service = email("host: smtp.example.com\nfrom: Stepwise <stepwise@example.com>");
        let section = json!({"subject": "Rollout guestbook aborted", "body": ""});
        let message = Message {
            template: "aborted".into(),
            text: "Rollout guestbook has been aborted.".into(),
            fields: [(KIND.to_string(), section)].into(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let to = parse_recipient("ops@example.com").unwrap();
        let email = service.compose(&message, to, "3/on-abort//email/ops@example.com/aborted", now).unwrap();
        let text = String::from_utf8(email.formatted()).unwrap();
        for header in [
            "From: Stepwise <stepwise@example.com>\r\n",
            "To: ops@example.com\r\n",
            "Subject: Rollout guestbook aborted\r\n",
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "X-Stepwise-Notification-Key: 3/on-abort//email/ops@example.com/aborted\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
        ] {
            assert!(text.contains(header), "{header:?} in {text}");
        }
        assert!(text.contains("Message-ID: <") && text.contains("@example.com>\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nRollout guestbook has been aborted."), "{text}");
        assert_eq!(email.envelope().from().unwrap().to_string(), "stepwise@example.com");
        assert_eq!(email.envelope().to()[0].to_string(), "ops@example.com");
    }

    #[test]
    fn html_is_sent_as_html_and_a_message_without_a_section_has_an_empty_subject() {
        let service = email("host: smtp.example.com\nfrom: stepwise@example.com\nhtml: true");
        let message = Message { text: "<b>aborted</b>".into(), ..Message::default() };
        let to = parse_recipient("ops@example.com").unwrap();
        let text =
            String::from_utf8(service.compose(&message, to, "k", SystemTime::now()).unwrap().formatted()).unwrap();
        assert!(text.contains("Content-Type: text/html; charset=utf-8\r\n"), "{text}");
        assert!(text.contains("Subject: \r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n<b>aborted</b>"), "{text}");
    }

    #[test]
    fn every_message_id_is_its_own_and_at_the_sender_s_domain() {
        let from: Mailbox = "stepwise@example.com".parse().unwrap();
        let now = SystemTime::now();
        let ids: std::collections::BTreeSet<String> = (0..100).map(|_| message_id(&from, now)).collect();
        assert_eq!(ids.len(), 100);
        let id = ids.first().unwrap();
        assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
        assert!(id[1..id.len() - 1].chars().all(|c| c.is_ascii_alphanumeric() || "@.".contains(c)), "{id}");
    }
}
