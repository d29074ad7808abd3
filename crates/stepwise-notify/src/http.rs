//! What the HTTP services share: the client, the deadline of one exchange, and errors that say
//! what the receiver said without anything secret.

use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use crate::SendError;

/// How long a send may take when the service's config does not say (`timeout`).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a receiver's answer is quoted in an error.
const SNIPPET_CHARS: usize = 200;

/// An HTTP client whose TLS is rustls with the ring provider, as stepwise-metrics builds its own.
///
/// reqwest is built with `rustls-no-provider`, so building a client panics unless a process-wide
/// rustls provider is installed: ring is installed when none is; an installed one is kept.
pub(crate) fn client(insecure: bool) -> Result<reqwest::Client, String> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed a provider in between, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .user_agent(concat!("stepwise/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(insecure)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// A duration as Go writes them (`300ms`, `10s`, `1.5m`), or a number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        _ => return Err(format!("{text:?} is not a duration (like 300ms, 10s or 1m)")),
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(format!("{text:?} is not a positive duration (like 300ms, 10s or 1m)")),
    }
}

/// Scrubs a service's secret values from the receiver's text before it is quoted: a receiver may
/// echo the request, credentials included.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor of `secrets` (empty ones are ignored).
    pub(crate) fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        // The longest first, so that a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// A [`SendError`] of `message`, with every secret value replaced by `***`.
    pub(crate) fn error(&self, retryable: bool, message: String) -> SendError {
        SendError { retryable, message: self.scrub(message) }
    }

    /// `text` with every secret value replaced by `***`.
    fn scrub(&self, text: String) -> String {
        self.secrets.iter().fold(text, |text, secret| text.replace(secret.as_str(), "***"))
    }

    /// A receiver's `text` scrubbed, then quoted and cut as [`snippet`] does: scrubbed first, so
    /// that neither the cut nor the quoting's escapes leave a part of a secret that no longer
    /// matches.
    pub(crate) fn quote(&self, text: &str) -> String {
        snippet(&self.scrub(text.to_string()))
    }
}

/// Sends `request` and reads the whole answer within `timeout`: (status, body). `target` names the
/// service in errors (`webhook ci`), never its URL.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    target: &str,
    redactor: &Redactor,
) -> Result<(u16, String), SendError> {
    let (status, _, body) = exchange_by(request, Instant::now() + timeout, timeout, target, redactor).await?;
    Ok((status, body))
}

/// Sends `request` and reads the whole answer by `deadline`: (status, headers, body), for a
/// service that makes several requests within its `timeout` (the deadline's length, for errors).
pub(crate) async fn exchange_by(
    request: reqwest::RequestBuilder,
    deadline: Instant,
    timeout: Duration,
    target: &str,
    redactor: &Redactor,
) -> Result<(u16, HeaderMap, String), SendError> {
    let exchange = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok::<_, reqwest::Error>((status, headers, response.text().await?))
    };
    // One deadline for connecting, sending and reading: a receiver that trickles its answer must
    // not hold the controller longer than the service allows.
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Err(redactor.error(true, format!("{target}: no answer within {}", shown(timeout)))),
        // A request that cannot even be built (a bad header) fails the same way every time.
        Ok(Err(e)) => Err(redactor.error(!e.is_builder(), format!("{target}: {}", reqwest_error(&e)))),
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// The error of an answer with a status other than 2xx: retryable for 429 and 5xx.
pub(crate) fn status_error(target: &str, status: u16, body: &str, redactor: &Redactor) -> SendError {
    let retryable = status == 429 || status >= 500;
    redactor.error(retryable, format!("{target}: {}: {}", status_text(status), redactor.quote(body)))
}

/// `HTTP 404 Not Found`.
pub(crate) fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// The start of a text, quoted, for error messages.
pub(crate) fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".into();
    }
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
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

/// A reqwest error with its causes but without its URL, which may hold a secret.
fn reqwest_error(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "cannot read the answer"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_builder() {
        "cannot build the request"
    } else {
        "cannot send the request"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", error_chain(cause)),
        None => what.to_string(),
    }
}

/// An error with its causes, `a: b: c`, so that "connection refused" is not lost.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat their cause in their own text.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_go_writes_them_or_as_seconds() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn only_429_and_5xx_answers_are_retryable() {
        let r = Redactor::default();
        assert!(status_error("t", 429, "", &r).retryable);
        assert!(status_error("t", 500, "", &r).retryable);
        assert!(status_error("t", 503, "", &r).retryable);
        assert!(!status_error("t", 400, "", &r).retryable);
        assert!(!status_error("t", 404, "", &r).retryable);
        assert_eq!(
            status_error("webhook ci", 404, "no such hook", &r).message,
            r#"webhook ci: HTTP 404 Not Found: "no such hook""#
        );
    }

    #[test]
    fn an_answer_echoing_a_secret_is_quoted_without_it() {
        let r = Redactor::new(vec!["tok-123".into(), "xoxb-tok-123".into(), String::new()]);
        let e = status_error("slack", 401, "bad token xoxb-tok-123 (tok-123)", &r);
        assert_eq!(e.message, r#"slack: HTTP 401 Unauthorized: "bad token *** (***)""#);
    }

    #[test]
    fn both_http_clients_build_without_panicking() {
        assert!(client(false).is_ok());
        assert!(client(true).is_ok());
    }
}
