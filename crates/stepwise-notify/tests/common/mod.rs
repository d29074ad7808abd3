//! A minimal HTTP/1.1 receiver on 127.0.0.1 for the service tests: it records every request and
//! answers each with the next scripted answer, or with what a handler makes of it
//! ([`responder`]).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names; a repeated header's values joined by `, `.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Request {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status and body.
    Reply(u16, String),
    /// This status, and the request's path, headers and body as the body (a receiver echoing
    /// secrets).
    Echo(u16),
    /// Never answers, keeping the connection open.
    Silent,
}

/// A receiver: its base URL (`http://127.0.0.1:port`) and the requests it received.
pub struct Receiver {
    pub url: String,
    pub requests: mpsc::UnboundedReceiver<Request>,
}

impl Receiver {
    /// The next request received.
    pub async fn next(&mut self) -> Request {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("the receiver runs")
    }
}

/// Starts a receiver answering requests with `answers`, in order; once they are used up, with 200.
pub async fn receiver(answers: Vec<Answer>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, requests) = mpsc::unbounded_channel();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, answers.clone(), sender.clone()));
        }
    });
    Receiver { url, requests }
}

/// Serves the requests of one connection.
async fn serve(mut stream: TcpStream, answers: Arc<Mutex<VecDeque<Answer>>>, sender: mpsc::UnboundedSender<Request>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        let answer = answers.lock().unwrap().pop_front().unwrap_or(Answer::Reply(200, String::new()));
        let _ = sender.send(request.clone());
        let (status, body) = match answer {
            Answer::Reply(status, body) => (status, body),
            Answer::Echo(status) => (status, format!("{} {:?} {}", request.path, request.headers, request.body)),
            Answer::Silent => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return;
            }
        };
        if stream.write_all(response(status, &[], &body).as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An answer made by a [`responder`]'s handler.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Sent after `content-length`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A JSON answer of `status`.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        let headers = vec![("content-type".to_string(), "application/json; charset=utf-8".to_string())];
        Response { status, headers, body: body.to_string() }
    }
}

/// Starts a receiver answering every request with what `handler` makes of it; the requests are
/// recorded as [`receiver`] records them.
pub async fn responder(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (sender, requests) = mpsc::unbounded_channel();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (handler, sender) = (handler.clone(), sender.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some(request) = read_request(&mut stream, &mut buffer).await {
                    let answer = handler(&request);
                    let _ = sender.send(request);
                    let text = response(answer.status, &answer.headers, &answer.body);
                    if stream.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Receiver { url, requests }
}

/// The HTTP/1.1 text of an answer.
fn response(status: u16, headers: &[(String, String)], body: &str) -> String {
    let headers: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{headers}\r\n{body}", body.len())
}

/// Reads one request (headers, then a body of its content-length); None when the connection ends.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        read_more(stream, buffer).await?;
    };
    let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, path) = (start.next()?.to_string(), start.next()?.to_string());
    let mut headers = BTreeMap::<String, String>::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim().to_string();
        headers.entry(name.trim().to_ascii_lowercase()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    let length: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
    while buffer.len() < end + 4 + length {
        read_more(stream, buffer).await?;
    }
    let body = String::from_utf8(buffer[end + 4..end + 4 + length].to_vec()).unwrap();
    buffer.drain(..end + 4 + length);
    Some(Request { method, path, headers, body })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// A map of string pairs, as ConfigMap and Secret data.
pub fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
