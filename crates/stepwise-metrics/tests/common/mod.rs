//! The HTTP plumbing the providers' stand-ins share: a request as read off the wire, an answer
//! and how it is written, a server on 127.0.0.1 that answers each request (one per connection),
//! and a stand-in that holds every request to an API's specification and records the calls that
//! followed it and the violations of those that did not. What a service checks and answers stays
//! in its test file.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::fmt::{self, Debug};
use std::sync::{Arc, Mutex};

use reqwest::Url;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 request as read off the wire.
#[derive(Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent: the path and the query string.
    pub target: String,
    /// The target's path (the whole target when it is not a path and query).
    pub path: String,
    /// The target's query parameters, decoded, in their order.
    pub params: Vec<(String, String)>,
    /// The request line and the header lines as they came, without the blank line after them.
    pub head: String,
    /// Each header line's name and value, in their order, as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of a header (names in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// Every value of a header (names in any case), in their order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The one value of a header: an error when it is missing or given twice.
    pub fn one_header(&self, name: &str) -> Result<&str, String> {
        match self.headers(name)[..] {
            [value] => Ok(value),
            [] => Err(format!("no {name} header")),
            _ => Err(format!("{name} header given twice")),
        }
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text (bytes that are not UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("the body is not JSON: {e}: {}", self.text()))
    }
}

/// The request line's parts, the headers, and the body as text.
impl Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

/// Reads one request: the head up to the blank line, then the body by its content-length. None
/// when the connection ends before the head does, or the head is not UTF-8 or has no target.
pub async fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, params) = match Url::parse(&format!("http://stand-in{target}")) {
        Ok(url) => (url.path().to_string(), url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()),
        Err(_) => (target.clone(), Vec::new()),
    };
    Some(Request { method, target, path, params, head, headers, body })
}

/// An answer: its status, its headers (the content type first), and its body, sent with its
/// content-length, or chunked.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Sent `transfer-encoding: chunked`, in two chunks cut mid-body as a stream is.
    pub chunked: bool,
}

impl Answer {
    pub fn new(status: u16, content_type: &str, body: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            chunked: false,
        }
    }

    /// `application/json`.
    pub fn json(status: u16, body: Value) -> Answer {
        Answer::new(status, "application/json", body.to_string())
    }

    /// `application/json` when the body is a JSON object, `text/plain` otherwise.
    pub fn json_or_text(status: u16, body: impl Into<String>) -> Answer {
        let body = body.into();
        let content_type = if body.starts_with('{') { "application/json" } else { "text/plain" };
        Answer::new(status, content_type, body)
    }

    /// With one more header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sent chunked.
    pub fn chunked(mut self) -> Answer {
        self.chunked = true;
        self
    }
}

/// Writes `answer` with `connection: close`, and ends the connection's writing side.
pub async fn reply(conn: &mut TcpStream, answer: &Answer) {
    let reason = http::StatusCode::from_u16(answer.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Other");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = &answer.body;
    if answer.chunked {
        out.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        let cut = body.char_indices().map(|(i, _)| i).find(|i| *i >= body.len() / 2).unwrap_or(0);
        for part in [&body[..cut], &body[cut..]] {
            if !part.is_empty() {
                out.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
            }
        }
        out.push_str("0\r\n\r\n");
    } else {
        out.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()));
    }
    let _ = conn.write_all(out.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Writes a `status` answer of this content type and body.
pub async fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    reply(conn, &Answer::new(status, content_type, body)).await;
}

/// Serves on 127.0.0.1 until the test ends: reads each connection's request and writes what
/// `handle` answers to it. The address, `http://127.0.0.1:PORT`.
pub async fn serve(handle: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut conn).await else { return };
                let answer = handle(&request);
                reply(&mut conn, &answer).await;
            });
        }
    });
    address
}

/// A server on 127.0.0.1 that accepts connections and never answers; its address.
pub async fn serve_silence() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    address
}

/// Why a stand-in does not answer a request as a call, and what it answers instead.
pub enum Refusal {
    /// Off the specification: the problems are recorded as a violation, which fails the test.
    OffSpec(String, Answer),
    /// Refused as the service itself would refuse it (a wrong key): not a violation.
    Refused(Answer),
}

impl Refusal {
    /// Off the specification with these problems; `answer` words the refusal from their text
    /// (the problems joined by `; `).
    pub fn off_spec(problems: &[String], answer: impl FnOnce(&str) -> Answer) -> Refusal {
        let text = problems.join("; ");
        let answer = answer(&text);
        Refusal::OffSpec(text, answer)
    }
}

/// A stand-in for a service's API on 127.0.0.1 that holds every request to the API's
/// specification: a request that follows it is recorded as the call it makes and answered; one
/// that does not is recorded as a violation and refused.
pub struct StandIn<C> {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The calls of the requests that followed the specification, in order.
    pub calls: Arc<Mutex<Vec<C>>>,
    /// The problems of each request off the specification, joined by `; `.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// What the requests are held to, as the failures name it ("the chart API spec").
    spec: &'static str,
}

impl<C: Clone + Debug + Send + 'static> StandIn<C> {
    /// Serves `spec`: `check` reads each request as its call or refuses it; a call is recorded,
    /// then answered with `answer`.
    pub async fn serve(
        spec: &'static str,
        check: impl Fn(&Request) -> Result<C, Refusal> + Send + Sync + 'static,
        answer: impl Fn(&C) -> Answer + Send + Sync + 'static,
    ) -> StandIn<C> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (c, v) = (calls.clone(), violations.clone());
        let address = serve(move |request| match check(request) {
            Ok(call) => {
                c.lock().unwrap().push(call.clone());
                answer(&call)
            }
            Err(Refusal::OffSpec(problems, refusal)) => {
                v.lock().unwrap().push(problems);
                refusal
            }
            Err(Refusal::Refused(refusal)) => refusal,
        })
        .await;
        StandIn { address, calls, violations, spec }
    }

    /// The calls received; fails the test when any request broke the specification.
    pub fn calls(&self) -> Vec<C> {
        let violations = self.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "requests off {}: {violations:#?}", self.spec);
        self.calls.lock().unwrap().clone()
    }

    /// The only call received.
    pub fn call(&self) -> C {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls[0].clone()
    }
}
