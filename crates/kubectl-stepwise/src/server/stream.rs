//! Server-sent events: each page's stream is a task that waits on the store's changes and writes
//! what changed since the last id it sent. A change is coalesced for a moment so that a burst of
//! watch events is one message; a heartbeat keeps proxies from closing an idle stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kubectl_stepwise::dashboard::view::Row;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::auth::Viewer;
use super::store::{Key, Since};
use super::{Body, Dashboard};

/// How long changes are gathered before they are sent.
const COALESCE: Duration = Duration::from_millis(150);
/// How often an idle stream sends a comment.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the browser waits before it reconnects (the `retry:` field).
const RECONNECT_MS: u32 = 1000;

/// One SSE message without its end, serialized straight into its bytes: `end` closes it, with
/// or without an id.
fn message(event: &str, data: &impl Serialize) -> Vec<u8> {
    let mut out = format!("event: {event}\ndata: ").into_bytes();
    // JSON has no raw newline, so the data is one line whatever it holds.
    let _ = serde_json::to_writer(&mut out, data);
    out.push(b'\n');
    out
}

/// Ends a message, with the id a reconnecting browser will send back.
fn end(mut message: Vec<u8>, id: Option<u64>) -> Bytes {
    if let Some(id) = id {
        message.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    message.push(b'\n');
    Bytes::from(message)
}

fn key_of(row: &Row) -> Key {
    (row.namespace.clone(), row.name.clone())
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(bytes, &mut hasher);
    std::hash::Hasher::finish(&hasher)
}

/// The list's first message.
#[derive(Serialize)]
struct Snapshot {
    rollouts: Vec<Row>,
}

/// A streaming response fed by a task through a channel: when the browser goes away, the body
/// is dropped, the channel closes and the task ends.
fn streaming(dashboard: &Arc<Dashboard>) -> (Response<Body>, Sender) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(Frame::data(bytes)), rx))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        // Proxies that buffer responses (nginx) would hold the stream back.
        .header("X-Accel-Buffering", "no")
        .body(StreamBody::new(frames).boxed())
        .unwrap_or_default();
    dashboard.streams.fetch_add(1, Ordering::Relaxed);
    (response, Sender { tx, dashboard: dashboard.clone() })
}

/// The sending end of a stream, which counts the streams open.
struct Sender {
    tx: mpsc::Sender<Bytes>,
    dashboard: Arc<Dashboard>,
}

impl Sender {
    /// False once the browser went away.
    async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.dashboard.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a stream wakes for.
enum Wake {
    /// The store changed after what the stream sent.
    Changed,
    /// A heartbeat is due.
    Tick,
    /// The store is gone (the server stops).
    Closed,
}

/// Waits for the next change after `seen` (gathered for a moment), or the next heartbeat.
async fn wake(rx: &mut tokio::sync::watch::Receiver<u64>, seen: u64) -> Wake {
    tokio::select! {
        changed = async { rx.wait_for(|seq| *seq > seen).await.is_ok() } => {
            if !changed {
                return Wake::Closed;
            }
            tokio::time::sleep(COALESCE).await;
            Wake::Changed
        }
        _ = tokio::time::sleep(HEARTBEAT) => Wake::Tick,
    }
}

const HEARTBEAT_MESSAGE: &[u8] = b": heartbeat\n\n";

/// The list: a snapshot, then upserts and deletes. A reconnect that sends the last id it saw
/// gets only what changed after it (or a snapshot when that is too long ago).
pub async fn list(dashboard: Arc<Dashboard>, viewer: Viewer, last_id: Option<u64>) -> Response<Body> {
    if let Err(why) = dashboard.store.ready().await {
        return super::error(503, why);
    }
    let (response, out) = streaming(&dashboard);
    tokio::spawn(async move {
        let mut changes = dashboard.store.subscribe();
        if !out.send(Bytes::from(format!("retry: {RECONNECT_MS}\n\n"))).await {
            return;
        }
        let mut seen = last_id;
        // What this page was last sent of each row: a change of what a Rollout owns (an Event,
        // a ReplicaSet's status) often leaves its row as it was, and is not sent again.
        let mut sent: HashMap<Key, u64> = HashMap::new();
        loop {
            let (since, seq) = dashboard.store.since(seen);
            let mut messages = vec![];
            match since {
                Since::Everything(listed) => {
                    let rollouts = dashboard.rows(&viewer, &listed).await;
                    sent = rollouts.iter().map(|row| (key_of(row), fingerprint(&message("upsert", row)))).collect();
                    messages.push(message("snapshot", &Snapshot { rollouts }));
                }
                Since::Changes { upserted, deleted } => {
                    for (namespace, name) in deleted {
                        sent.remove(&(namespace.clone(), name.clone()));
                        messages.push(message("delete", &json!({"namespace": namespace, "name": name})));
                    }
                    for row in dashboard.rows(&viewer, &upserted).await {
                        let upsert = message("upsert", &row);
                        let print = fingerprint(&upsert);
                        if sent.insert(key_of(&row), print) != Some(print) {
                            messages.push(upsert);
                        }
                    }
                }
            }
            // Only the last message of a batch carries the id: a browser cut off in the middle
            // of it resumes from the previous id and gets the whole batch again. A batch of
            // nothing the viewer may see still moves the id on.
            if messages.is_empty() && seen != Some(seq) {
                messages.push(b": nothing for this page\n".to_vec());
            }
            let last = messages.len().saturating_sub(1);
            for (i, m) in messages.into_iter().enumerate() {
                if !out.send(end(m, (i == last).then_some(seq))).await {
                    return;
                }
            }
            seen = Some(seq);
            loop {
                match wake(&mut changes, seq).await {
                    Wake::Changed => break,
                    Wake::Closed => return,
                    // A progressing Rollout's row changes with time alone (its progress
                    // deadline nears): those rows are made again, and sent if they differ.
                    Wake::Tick => {
                        let mut batch = vec![Bytes::from_static(HEARTBEAT_MESSAGE)];
                        for row in dashboard.rows(&viewer, &dashboard.store.progressing()).await {
                            let upsert = message("upsert", &row);
                            let print = fingerprint(&upsert);
                            if sent.insert(key_of(&row), print) != Some(print) {
                                batch.push(end(upsert, None));
                            }
                        }
                        for m in batch {
                            if !out.send(m).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
    response
}

/// One Rollout's page, whole, each time it or what it owns changes.
pub async fn detail(dashboard: Arc<Dashboard>, viewer: Viewer, key: Key, last_id: Option<u64>) -> Response<Body> {
    if let Err(why) = dashboard.store.ready().await {
        return super::error(503, why);
    }
    if let Err(response) = dashboard.detail_of(&viewer, &key).await {
        return response;
    }
    let (response, out) = streaming(&dashboard);
    tokio::spawn(async move {
        let mut changes = dashboard.store.subscribe();
        if !out.send(Bytes::from(format!("retry: {RECONNECT_MS}\n\n"))).await {
            return;
        }
        let mut sent = last_id;
        loop {
            let seq = dashboard.store.seq();
            match dashboard.detail_of(&viewer, &key).await {
                Ok((detail, changed)) if sent.is_none_or(|s| changed > s) => {
                    if !out.send(end(message("detail", &detail), Some(changed))).await {
                        return;
                    }
                    sent = Some(changed);
                }
                Ok(_) => {}
                Err(_) => {
                    let gone = json!({"error": format!("Rollout {:?} in namespace {:?} is gone", key.1, key.0)});
                    let _ = out.send(end(message("gone", &gone), None)).await;
                    return;
                }
            }
            loop {
                match wake(&mut changes, seq).await {
                    Wake::Changed => break,
                    Wake::Closed => return,
                    Wake::Tick if !out.send(Bytes::from_static(HEARTBEAT_MESSAGE)).await => return,
                    Wake::Tick => {}
                }
            }
        }
    });
    response
}
