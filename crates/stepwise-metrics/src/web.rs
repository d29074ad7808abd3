//! The web provider: an HTTP request whose JSON answer (or the part of it that `jsonPath`
//! selects) is the measurement's value. Single-shot, like Argo Rollouts' web provider.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::Value;
use stepwise_api::{Metric, WebMetric, WebMetricHeader};

use crate::{Error, MetricProvider, Reading, RunRef, Taken};

mod json_path;

use json_path::JsonPath;

/// Seconds a web request may take when the metric does not say (`timeoutSeconds`).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// How much of an unexpected answer is quoted in an error.
const SNIPPET_CHARS: usize = 100;

/// Measures by HTTP: GET (default), POST or PUT a URL and keep the JSON it answers.
#[derive(Debug)]
pub struct WebProvider {
    /// Verifies TLS certificates.
    client: Result<reqwest::Client, String>,
    /// For `insecure: true` metrics: accepts any certificate.
    insecure_client: Result<reqwest::Client, String>,
}

impl WebProvider {
    /// A provider with its own HTTP clients (one verifying certificates, one for `insecure`).
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new() -> Self {
        WebProvider { client: http_client(false), insecure_client: http_client(true) }
    }
}

impl Default for WebProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricProvider for WebProvider {
    fn kind(&self) -> &'static str {
        "web"
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let web = metric.provider.web.as_ref().ok_or_else(|| Error::Config {
            field: "provider.web",
            message: format!("metric {} has no web provider", metric.name),
        })?;
        let request = WebRequest::from_metric(web)?;
        let client = if request.insecure { &self.insecure_client } else { &self.client };
        let client =
            client.as_ref().map_err(|message| Error::Source { target: request.target(), message: message.clone() })?;
        let (status, body) = request.send(client).await?;
        let value = read_answer(&request.target(), status, &body, &request.path)?;
        Ok(Taken::new(Reading::Value(value)))
    }
}

/// A web metric checked and ready to send.
#[derive(Debug)]
struct WebRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<String>,
    timeout_seconds: u64,
    path: JsonPath,
    insecure: bool,
}

impl WebRequest {
    /// Checks every field, so that a bad metric is a configuration error naming its field.
    fn from_metric(web: &WebMetric) -> Result<Self, Error> {
        let method = match web.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("") | Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            Some("PUT") => Method::PUT,
            Some(other) => {
                return Err(Error::Config {
                    field: "provider.web.method",
                    message: format!("{other} is not supported: use GET, POST or PUT"),
                });
            }
        };
        let url = parse_url(&web.url).map_err(|message| Error::Config { field: "provider.web.url", message })?;
        let mut headers = header_map(web.headers.as_deref().unwrap_or_default())
            .map_err(|message| Error::Config { field: "provider.web.headers", message })?;
        let body = match (&web.body, &web.json_body) {
            (Some(_), Some(_)) => {
                return Err(Error::Config { field: "provider.web", message: "set body or jsonBody, not both".into() });
            }
            (Some(text), None) => Some(text.clone()),
            (None, Some(json)) => {
                // As Argo: a JSON body says so, unless the metric's own header says otherwise.
                if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(json.to_string())
            }
            (None, None) => None,
        };
        let timeout_seconds = timeout_seconds(web.timeout_seconds, DEFAULT_TIMEOUT_SECONDS)
            .map_err(|message| Error::Config { field: "provider.web.timeoutSeconds", message })?;
        let path = match web.json_path.as_deref() {
            None => JsonPath::whole(),
            Some(text) => {
                JsonPath::parse(text).map_err(|message| Error::Config { field: "provider.web.jsonPath", message })?
            }
        };
        Ok(WebRequest { method, url, headers, body, timeout_seconds, path, insecure: web.insecure.unwrap_or(false) })
    }

    /// `GET https://host/path`, for messages. The query and credentials are left out: arguments
    /// (Secrets among them) are substituted into URLs, and messages are shown to everyone.
    fn target(&self) -> String {
        format!("{} {}", self.method, redacted(&self.url))
    }

    /// Sends the request and reads the whole answer within the timeout.
    async fn send(&self, client: &reqwest::Client) -> Result<(u16, String), Error> {
        let mut request = client.request(self.method.clone(), self.url.clone()).headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        // One deadline for connecting, sending and reading the body: a server that trickles its
        // answer must not hold a reconcile longer than the metric allows.
        match tokio::time::timeout(Duration::from_secs(self.timeout_seconds), exchange).await {
            Err(_) => Err(Error::Timeout { seconds: self.timeout_seconds, target: self.target() }),
            Ok(Err(e)) => Err(Error::Source { target: self.target(), message: reqwest_error(&e) }),
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

/// What an answer becomes: the JSON `path` selects in `body`, or why there is none.
fn read_answer(target: &str, status: u16, body: &str, path: &JsonPath) -> Result<Value, Error> {
    if !(200..300).contains(&status) {
        let status = match reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
            Some(reason) => format!("HTTP {status} {reason}"),
            None => format!("HTTP {status}"),
        };
        return Err(Error::Source { target: target.to_string(), message: format!("{status}: {}", snippet(body)) });
    }
    let document: Value = serde_json::from_str(body)
        .map_err(|_| Error::Answer { message: format!("the answer of {target} is not JSON: {}", snippet(body)) })?;
    path.select(&document)
        .cloned()
        .ok_or_else(|| Error::Answer { message: format!("jsonPath {path} selects nothing in the answer of {target}") })
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

/// An HTTP client whose TLS is rustls with the ring provider.
///
/// reqwest is built with `rustls-no-provider`, so building a client panics unless a process-wide
/// rustls provider is installed. ring is installed when none is (kube uses ring too); an already
/// installed provider is kept.
pub(crate) fn http_client(insecure: bool) -> Result<reqwest::Client, String> {
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

/// Parses an absolute http(s) URL with a host.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("{text:?} is not an http:// or https:// URL with a host"));
    }
    Ok(url)
}

/// A URL without credentials and query, safe to show.
pub(crate) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    if had_query { format!("{shown}?…") } else { shown.to_string() }
}

/// The metric's headers as HTTP headers.
pub(crate) fn header_map(headers: &[WebMetricHeader]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for h in headers {
        let name = HeaderName::from_bytes(h.key.trim().as_bytes())
            .map_err(|_| format!("{:?} is not a valid header name", h.key))?;
        // The value is not quoted back: headers carry tokens.
        let value =
            HeaderValue::from_str(&h.value).map_err(|_| format!("the value of header {name} is not a valid header"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A timeout in seconds, `default` when unset; at least one second.
pub(crate) fn timeout_seconds(value: Option<i64>, default: u64) -> Result<u64, String> {
    match value {
        None => Ok(default),
        Some(s) if s >= 1 => Ok(s as u64),
        Some(s) => Err(format!("{s} is not a positive number of seconds")),
    }
}

/// A reqwest error with its causes but without its URL: the target already names it, and the
/// query string may hold a Secret.
pub(crate) fn reqwest_error(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "cannot read the answer"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "cannot send the request"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", error_chain(cause)),
        None => what.to_string(),
    }
}

/// An error with its causes, `a: b: c`, so that "connection refused" is not lost under
/// "error sending request".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
    use serde_json::json;

    use super::*;

    fn whole() -> JsonPath {
        JsonPath::whole()
    }

    #[test]
    fn a_json_answer_is_the_value_its_path_selects() {
        let path = JsonPath::parse("{$.data.ok}").unwrap();
        assert_eq!(read_answer("GET u", 200, r#"{"data":{"ok":0.97}}"#, &path).unwrap(), json!(0.97));
        assert_eq!(read_answer("GET u", 204, "[1,2]", &whole()).unwrap(), json!([1, 2]));
    }

    #[test]
    fn an_error_status_names_the_status_and_quotes_the_body() {
        let err = read_answer("GET u", 503, "down for maintenance", &whole()).unwrap_err();
        assert_eq!(err.to_string(), r#"GET u: HTTP 503 Service Unavailable: "down for maintenance""#);
        assert!(matches!(err, Error::Source { .. }));
        // Even a JSON body: a 404 must not pass as a value.
        assert!(matches!(read_answer("GET u", 404, "{}", &whole()), Err(Error::Source { .. })));
    }

    #[test]
    fn a_non_json_answer_is_quoted_up_to_a_hundred_characters() {
        let body = format!("<html>{}</html>", "x".repeat(300));
        let err = read_answer("GET u", 200, &body, &whole()).unwrap_err();
        let Error::Answer { message } = err else { panic!("{err:?}") };
        assert!(message.starts_with(r#"the answer of GET u is not JSON: "<html>xxx"#), "{message}");
        assert!(message.ends_with("xxx\"…"), "{message}");
        assert!(message.len() < 160, "{message}");
        let err = read_answer("GET u", 200, "", &whole()).unwrap_err();
        assert_eq!(err.to_string(), "the answer of GET u is not JSON: (empty)");
    }

    #[test]
    fn a_path_that_selects_nothing_is_named_in_the_error() {
        let path = JsonPath::parse("{$.data.missing}").unwrap();
        let err = read_answer("GET u", 200, r#"{"data":{}}"#, &path).unwrap_err();
        assert_eq!(err.to_string(), "jsonPath {$.data.missing} selects nothing in the answer of GET u");
    }

    #[test]
    fn metric_fields_are_checked_and_defaulted() {
        let web = WebMetric { url: "http://127.0.0.1:1/x".into(), ..Default::default() };
        let r = WebRequest::from_metric(&web).unwrap();
        assert_eq!((r.method.clone(), r.timeout_seconds, r.insecure), (Method::GET, DEFAULT_TIMEOUT_SECONDS, false));
        assert_eq!(r.path, JsonPath::whole());

        let field = |web: WebMetric| match WebRequest::from_metric(&web) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(WebMetric { method: Some("DELETE".into()), ..web.clone() }), "provider.web.method");
        assert_eq!(field(WebMetric { url: "not a url".into(), ..web.clone() }), "provider.web.url");
        assert_eq!(field(WebMetric { url: "ftp://h/x".into(), ..web.clone() }), "provider.web.url");
        assert_eq!(field(WebMetric { timeout_seconds: Some(0), ..web.clone() }), "provider.web.timeoutSeconds");
        assert_eq!(field(WebMetric { json_path: Some("$..x".into()), ..web.clone() }), "provider.web.jsonPath");
        let bad_header = WebMetricHeader { key: "bad header".into(), value: "v".into() };
        assert_eq!(field(WebMetric { headers: Some(vec![bad_header]), ..web.clone() }), "provider.web.headers");
        assert_eq!(
            WebRequest::from_metric(&WebMetric { method: Some("post".into()), ..web }).unwrap().method,
            Method::POST
        );
    }

    #[test]
    fn targets_in_messages_hide_credentials_and_queries() {
        let url = parse_url("https://user:secret@example.invalid/check?token=secret#x").unwrap();
        assert_eq!(redacted(&url), "https://example.invalid/check?…");
        assert!(!redacted(&url).contains("secret"));
    }

    #[test]
    fn both_http_clients_build_without_panicking() {
        let p = WebProvider::new();
        assert!(p.client.is_ok() && p.insecure_client.is_ok(), "{p:?}");
    }
}
