//! `kubectl stepwise dashboard`: the server. One set of watches (`store`), who may see and do
//! what (`auth`), the people's actions (`actions`), and here the routes: the embedded page, a
//! JSON API, and server-sent event streams that push each change within a second and resume
//! after a reconnect from the `Last-Event-ID` the browser sends.

mod actions;
pub mod auth;
mod store;
mod stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Config;
use kubectl_stepwise::dashboard::{ASSETS, view};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use self::auth::{Auth, Mode, Refused, Viewer};
use self::store::Store;

/// How the server was asked to run.
pub struct Options {
    /// Where it listens.
    pub address: SocketAddr,
    /// How people are told apart.
    pub mode: Mode,
    /// Whether actions are served.
    pub actions: bool,
    /// The only namespace watched, if any.
    pub namespace: Option<String>,
}

/// The server's state, shared by every connection.
pub struct Dashboard {
    store: Arc<Store>,
    auth: Auth,
    streams: AtomicUsize,
}

type Body = BoxBody<Bytes, Infallible>;

/// Starts the watches, then serves until the process ends.
pub async fn serve(options: Options, config: Config) -> anyhow::Result<()> {
    if options.mode == Mode::Kubeconfig && !options.address.ip().is_loopback() {
        anyhow::bail!(
            "--address {}: with --auth=kubeconfig the dashboard acts as you, so it only listens on 127.0.0.1 (or ::1); to serve others, run it with --auth=token",
            options.address
        );
    }
    let auth = Auth::new(options.mode, options.actions, config).await?;
    let store = Store::new();
    store.watch(&auth.client, options.namespace.as_deref());
    let listener = TcpListener::bind(options.address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.address))?;
    let dashboard = Arc::new(Dashboard { store: store.clone(), auth, streams: AtomicUsize::new(0) });
    let mode = match (options.mode, options.actions) {
        (Mode::Kubeconfig, false) => "read-only, as the kubeconfig's user; --actions enables the buttons",
        (Mode::Kubeconfig, true) => "actions enabled, as the kubeconfig's user",
        (Mode::Token, false) => "read-only, people sign in with a bearer token",
        (Mode::Token, true) => "actions enabled, people sign in with a bearer token and act as themselves",
    };
    println!("stepwise dashboard on http://{}/ ({mode})", listener.local_addr()?);
    tokio::spawn(async move {
        store.synced().await;
        println!(
            "watching {} Rollouts{}",
            store.rollouts(),
            options.namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        );
    });
    loop {
        let (socket, _) = listener.accept().await?;
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let dashboard = dashboard.clone();
                async move { Ok::<_, Infallible>(dashboard.handle(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(body.into()).boxed())
        .unwrap_or_default()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    respond(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

fn error(status: u16, message: impl Into<String>) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"error": message.into()}),
    )
}

impl From<Refused> for Response<Body> {
    fn from(Refused(status, message): Refused) -> Self {
        error(status, message)
    }
}

impl Dashboard {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (request.method(), segments.as_slice()) {
            (&Method::GET, _) if ASSETS.iter().any(|(p, _, _)| *p == path) => {
                let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path).copied().unwrap_or_default();
                respond(StatusCode::OK, content_type, body)
            }
            (&Method::GET, ["healthz"] | ["readyz"]) => respond(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::GET, ["api", "whoami"]) => self.whoami(request.headers()).await,
            (&Method::POST, ["api", "login"]) => self.login(request).await,
            (&Method::POST, ["api", "logout"]) => self.logout(request.headers()),
            (_, ["api", ..]) => match self.auth.viewer(request.headers()).await {
                Err(refused) => refused.into(),
                Ok(viewer) => self.api(request, viewer).await,
            },
            _ => error(404, format!("no page at {path}")),
        }
    }

    async fn api(self: Arc<Self>, request: Request<Incoming>, viewer: Viewer) -> Response<Body> {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (request.method(), &segments[1..]) {
            (&Method::GET, ["rollouts"]) => self.list(&viewer).await,
            (&Method::GET, ["rollouts", ns, name]) => self.detail(&viewer, ns, name).await,
            (&Method::GET, ["rollouts", ns, name, "undo", revision]) => {
                self.undo_diff(&viewer, ns, name, revision).await
            }
            (&Method::GET, ["stream", "rollouts"]) => {
                stream::list(self.clone(), viewer, last_event_id(request.headers())).await
            }
            (&Method::GET, ["stream", "rollouts", ns, name]) => {
                let key = (ns.to_string(), name.to_string());
                stream::detail(self.clone(), viewer, key, last_event_id(request.headers())).await
            }
            (&Method::POST, ["rollouts", ns, name, "actions", action]) => {
                let (ns, name, action) = (ns.to_string(), name.to_string(), action.to_string());
                actions::act(&self, &viewer, request, &ns, &name, &action).await
            }
            _ => error(404, format!("no API at {} {path}", request.method())),
        }
    }

    fn metrics(&self) -> Response<Body> {
        let body = format!(
            "# HELP stepwise_dashboard_rollouts Rollouts the dashboard's watches hold.\n# TYPE stepwise_dashboard_rollouts gauge\nstepwise_dashboard_rollouts {}\n# HELP stepwise_dashboard_streams Event streams open to pages.\n# TYPE stepwise_dashboard_streams gauge\nstepwise_dashboard_streams {}\n",
            self.store.rollouts(),
            self.streams.load(Ordering::Relaxed)
        );
        respond(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    async fn whoami(&self, headers: &http::HeaderMap) -> Response<Body> {
        let mode = match self.auth.mode {
            Mode::Kubeconfig => "kubeconfig",
            Mode::Token => "token",
        };
        let viewer = self.auth.viewer(headers).await.ok();
        json_response(
            StatusCode::OK,
            &json!({
                "mode": mode,
                "user": viewer.as_ref().map(|v| self.auth.name_of(v)),
                "authenticated": viewer.is_some(),
                "actions": self.auth.actions,
            }),
        )
    }

    async fn login(&self, request: Request<Incoming>) -> Response<Body> {
        if self.auth.mode != Mode::Token {
            return error(
                400,
                "this dashboard acts with the kubeconfig of the person who started it: there is no sign-in",
            );
        }
        let body = match read_json(request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        match self.auth.sign_in(body["token"].as_str().unwrap_or_default()).await {
            Err(refused) => refused.into(),
            Ok((id, person)) => {
                let mut response = json_response(StatusCode::OK, &json!({"user": person.user}));
                let cookie = format!("{}={id}; HttpOnly; SameSite=Strict; Path=/", auth::SESSION_COOKIE);
                if let Ok(value) = cookie.parse() {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                response
            }
        }
    }

    fn logout(&self, headers: &http::HeaderMap) -> Response<Body> {
        if let Some(id) = auth::session_cookie(headers) {
            self.auth.sign_out(id);
        }
        let mut response = json_response(StatusCode::OK, &json!({"user": null}));
        let expired = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::SESSION_COOKIE);
        if let Ok(value) = expired.parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    async fn list(&self, viewer: &Viewer) -> Response<Body> {
        if let Err(why) = self.store.ready().await {
            return error(503, why);
        }
        let (since, seq) = self.store.since(None);
        let entries = match since {
            store::Since::Everything(entries) | store::Since::Changes { upserted: entries, .. } => entries,
        };
        let rows = self.rows(viewer, &entries).await;
        json_response(StatusCode::OK, &json!({"version": seq, "rollouts": rows}))
    }

    /// The rows the viewer may see.
    async fn rows(&self, viewer: &Viewer, listed: &[store::Listed]) -> Vec<view::Row> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut readable = std::collections::HashMap::new();
        let mut rows = Vec::with_capacity(listed.len());
        for l in listed {
            let ns = l.rollout.metadata.namespace.clone().unwrap_or_default();
            if !*readable.entry(ns.clone()).or_insert(self.auth.may_read(viewer, &ns).await) {
                continue;
            }
            let runs: Vec<&stepwise_api::AnalysisRun> = l.runs.iter().map(|r| r.as_ref()).collect();
            rows.push(view::row(&l.rollout, &runs, now));
        }
        rows
    }

    /// The page of one Rollout as the viewer may see it; Err with the response when they may not.
    async fn detail_of(&self, viewer: &Viewer, key: &store::Key) -> Result<(view::Detail, u64), Response<Body>> {
        let (ns, name) = key;
        let unknown = || error(404, format!("no Rollout {name:?} in namespace {ns:?}"));
        if !self.auth.may_read(viewer, ns).await {
            return Err(error(403, format!("{} may not list rollouts in namespace {ns:?}", self.auth.name_of(viewer))));
        }
        let entry = self.store.get(key).ok_or_else(unknown)?;
        let related = view::Related {
            rollout: entry.rollout.as_deref(),
            replica_sets: entry.replica_sets.values().map(|r| r.as_ref()).collect(),
            runs: entry.runs.values().map(|r| r.as_ref()).collect(),
            events: entry.events.values().map(|e| e.as_ref()).collect(),
        };
        let access = self.auth.access(viewer, ns).await;
        let detail = view::detail(&related, &access, k8s_openapi::jiff::Timestamp::now()).ok_or_else(unknown)?;
        Ok((detail, entry.changed))
    }

    async fn detail(&self, viewer: &Viewer, ns: &str, name: &str) -> Response<Body> {
        if let Err(why) = self.store.ready().await {
            return error(503, why);
        }
        match self.detail_of(viewer, &(ns.to_string(), name.to_string())).await {
            Ok((detail, _)) => json_response(StatusCode::OK, &serde_json::to_value(detail).unwrap_or_default()),
            Err(response) => response,
        }
    }
}

impl Dashboard {
    /// What an undo to a revision would change, for the page to show before the person confirms.
    async fn undo_diff(&self, viewer: &Viewer, ns: &str, name: &str, revision: &str) -> Response<Body> {
        let Ok(revision) = revision.parse::<i64>() else {
            return error(400, format!("revision: expected a number, got {revision:?}"));
        };
        if !self.auth.may_read(viewer, ns).await {
            return error(403, format!("{} may not list rollouts in namespace {ns:?}", self.auth.name_of(viewer)));
        }
        let entry = self.store.get(&(ns.to_string(), name.to_string()));
        let Some((entry, rollout)) = entry.and_then(|e| e.rollout.clone().map(|r| (e, r))) else {
            return error(404, format!("no Rollout {name:?} in namespace {ns:?}"));
        };
        let replica_sets: Vec<&k8s_openapi::api::apps::v1::ReplicaSet> =
            entry.replica_sets.values().map(|r| r.as_ref()).collect();
        match view::undo_diff(&rollout, &replica_sets, revision) {
            Ok(diff) => json_response(StatusCode::OK, &serde_json::to_value(diff).unwrap_or_default()),
            Err(why) => error(404, why),
        }
    }
}

fn last_event_id(headers: &http::HeaderMap) -> Option<u64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

/// The largest request body read: a token or an action's arguments.
const MAX_BODY: usize = 64 * 1024;

async fn read_json(request: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| error(400, format!("cannot read the request body: {e}")))?
        .to_bytes();
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| error(400, format!("the request body is not JSON: {e}")))
}
