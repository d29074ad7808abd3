//! The pod responder: gives every running pod of the lab cluster a data path.
//!
//! kwok marks pods Running and hands them a pod IP, but nothing answers there. The responder
//! watches pods and, for each running pod, serves HTTP on `podIP:containerPort` the way a small
//! well-behaved app would: it answers with its version, can be told to fail or to be slow through
//! its environment, exposes Prometheus metrics, and drains on deletion like an app on SIGTERM.
//!
//! The set of servers is a pure function of the pods ([`desired_servers`]); [`Responder::apply`]
//! reconciles the running servers toward it, so tests can drive the responder with plain pod
//! lists and no Kubernetes API. [`watch`] feeds it from a cluster.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How often a server retries binding an address that is still held (typically by the draining
/// server of the pod that had the address before).
pub const BIND_RETRY: Duration = Duration::from_millis(200);

/// The longest a stopping server waits for in-flight requests once it has stopped accepting;
/// a client that never finishes must not hold the address forever.
const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(30);

/// Upper bounds of `lab_http_request_duration_seconds`: 1 ms to 5 s, about three per decade.
const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// What one server answers: the pod it stands for and the behaviour its environment asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Serve {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// UID of the pod, so that a pod recreated under the same name gets a fresh server.
    pub uid: Option<String>,
    /// The version the pod answers with: its first container's `VERSION`, else its image tag.
    pub version: String,
    /// Fraction of requests answered with 500, from `ERROR_RATE`.
    pub error_rate: f64,
    /// Delay before every answer, from `LATENCY_MS`.
    pub latency: Duration,
    /// Problems with the pod's settings, each naming the pod and the variable; logged when the
    /// server starts.
    pub warnings: Vec<String>,
    /// The pod's labels, given to Prometheus with its scrape target.
    pub labels: BTreeMap<String, String>,
}

impl Serve {
    /// What `pod` should answer, read from its metadata and its first container.
    pub fn from_pod(pod: &Pod) -> Serve {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let first = pod.spec.as_ref().and_then(|spec| spec.containers.first());
        let mut warnings = Vec::new();

        let version = match first.and_then(|c| literal_env(c, "VERSION")) {
            Some(version) if !version.is_empty() => version.to_owned(),
            _ => image_tag(first.and_then(|c| c.image.as_deref()).unwrap_or_default()).to_owned(),
        };
        let error_rate = match first.and_then(|c| literal_env(c, "ERROR_RATE")) {
            None => 0.0,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
                _ => {
                    warnings.push(format!(
                        "pod {namespace}/{name}: ERROR_RATE={raw:?} is not a number from 0.0 to 1.0; using 0"
                    ));
                    0.0
                }
            },
        };
        let latency = match first.and_then(|c| literal_env(c, "LATENCY_MS")) {
            None => Duration::ZERO,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    warnings.push(format!(
                        "pod {namespace}/{name}: LATENCY_MS={raw:?} is not a whole number of milliseconds; using 0"
                    ));
                    Duration::ZERO
                }
            },
        };

        let labels = pod.metadata.labels.clone().unwrap_or_default();
        Serve { namespace, pod: name, uid: pod.metadata.uid.clone(), version, error_rate, latency, warnings, labels }
    }
}

/// The literal value of the environment variable `name` of `container`; values from references
/// (`valueFrom`) are unknown to the responder, so they count as unset.
fn literal_env<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container.env.as_ref()?.iter().find(|env| env.name == name)?.value.as_deref()
}

/// The tag of an image reference: the text after the last `:` that follows the last `/` (a `:`
/// before it belongs to a registry port), ignoring any `@digest`; `latest` when there is none.
pub fn image_tag(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _digest)| name);
    let last_part = image.rsplit_once('/').map_or(image, |(_, last)| last);
    match last_part.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

/// Whether the responder serves `pod` at all: it has an IP, runs, and is not being deleted.
fn is_served(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|status| status.phase.as_deref() == Some("Running"))
}

/// The addresses `pod` listens on: its IP with each distinct TCP container port of all its
/// containers, or with `default_port` when it declares no TCP port.
fn pod_addresses(pod: &Pod, default_port: u16) -> Vec<SocketAddr> {
    let Some(ip) =
        pod.status.as_ref().and_then(|status| status.pod_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .filter(|port| port.protocol.as_deref().is_none_or(|protocol| protocol.eq_ignore_ascii_case("TCP")))
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .filter(|port| *port != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.push(default_port);
    }
    ports.into_iter().map(|port| SocketAddr::new(ip, port)).collect()
}

/// The servers the pods call for: one per TCP container port (or `default_port`) of each pod that
/// has an IP, is Running and is not being deleted.
///
/// Two pods claiming one address (a stale pod object next to its successor) must not make the
/// result depend on the order of `pods`, so the pod first by namespace and name gets it.
pub fn desired_servers<'a>(pods: impl IntoIterator<Item = &'a Pod>, default_port: u16) -> BTreeMap<SocketAddr, Serve> {
    let mut desired: BTreeMap<SocketAddr, Serve> = BTreeMap::new();
    for pod in pods.into_iter().filter(|pod| is_served(pod)) {
        let addresses = pod_addresses(pod, default_port);
        if addresses.is_empty() {
            continue;
        }
        let serve = Serve::from_pod(pod);
        for address in addresses {
            match desired.entry(address) {
                Entry::Vacant(entry) => {
                    entry.insert(serve.clone());
                }
                Entry::Occupied(mut entry) => {
                    let held = entry.get();
                    if (&serve.namespace, &serve.pod) < (&held.namespace, &held.pod) {
                        entry.insert(serve.clone());
                    }
                }
            }
        }
    }
    desired
}

/// Settings of a [`Responder`].
#[derive(Clone, Debug)]
pub struct ResponderConfig {
    /// The port of pods that declare no TCP container port.
    pub default_port: u16,
    /// How long a removed pod keeps serving before it stops accepting connections, like an app
    /// that keeps serving after SIGTERM until the routers have stopped sending to it.
    pub drain: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig { default_port: 8080, drain: Duration::from_secs(3) }
    }
}

/// Where a served pod is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeState {
    /// Accepting connections.
    Serving,
    /// Removed, still accepting connections until the drain is over.
    Draining,
}

/// A pod the responder is currently serving (also while draining); the status server lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// The address served.
    pub address: SocketAddr,
    /// The version answered.
    pub version: String,
    /// Whether the pod still serves for good or is draining.
    pub state: ServeState,
    /// The pod's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Serves pods and reconciles the servers toward the pods it is given. Cheap to clone; clones
/// share the servers.
#[derive(Clone, Debug)]
pub struct Responder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ResponderConfig,
    servers: Mutex<Servers>,
    served: Arc<Mutex<BTreeMap<u64, ServedPod>>>,
}

#[derive(Debug, Default)]
struct Servers {
    /// Servers of pods in the desired set, by address.
    current: BTreeMap<SocketAddr, Running>,
    /// Servers told to stop that may still be draining or finishing requests.
    stopping: Vec<JoinHandle<()>>,
    next_id: u64,
}

#[derive(Debug)]
struct Running {
    serve: Serve,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Responder {
    /// A responder serving nothing yet.
    pub fn new(config: ResponderConfig) -> Responder {
        Responder {
            inner: Arc::new(Inner {
                config,
                servers: Mutex::new(Servers::default()),
                served: Arc::new(Mutex::new(BTreeMap::new())),
            }),
        }
    }

    /// The settings the responder was made with.
    pub fn config(&self) -> &ResponderConfig {
        &self.inner.config
    }

    /// Reconciles the servers toward `pods`, the complete current list: starts a server for each
    /// new address, and stops (with a drain) every server whose pod left the list, stopped
    /// running, is being deleted, or changed. Returns at once; binding and draining happen in
    /// the background. Must be called within a Tokio runtime.
    pub fn apply<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) {
        let desired = desired_servers(pods, self.inner.config.default_port);
        let mut servers = lock(&self.inner.servers);
        let Servers { current, stopping, next_id } = &mut *servers;

        let leaving: Vec<SocketAddr> = current
            .iter()
            .filter(|(address, running)| desired.get(address) != Some(&running.serve))
            .map(|(address, _)| *address)
            .collect();
        for address in leaving {
            if let Some(running) = current.remove(&address) {
                // The receiver is gone only if the server already ended; nothing to stop then.
                let _ = running.stop.send(());
                stopping.push(running.task);
            }
        }

        for (address, serve) in desired {
            if let Entry::Vacant(entry) = current.entry(address) {
                let (stop, stopped) = oneshot::channel();
                let server = Server {
                    id: *next_id,
                    address,
                    serve: serve.clone(),
                    drain: self.inner.config.drain,
                    served: Arc::clone(&self.inner.served),
                };
                *next_id += 1;
                let task = tokio::spawn(server.run(stopped));
                entry.insert(Running { serve, stop, task });
            }
        }
        stopping.retain(|task| !task.is_finished());
    }

    /// The pods currently served (also those draining), by address.
    pub fn served(&self) -> Vec<ServedPod> {
        let mut served: Vec<ServedPod> = lock(&self.inner.served).values().cloned().collect();
        served.sort_by_key(|served| (served.address, served.state));
        served
    }

    /// Stops every server as if all pods were deleted, and returns once all have drained and
    /// freed their addresses. Pods applied meanwhile get servers again, so stop feeding pods
    /// first.
    pub async fn shutdown(&self) {
        self.apply([]);
        let tasks = std::mem::take(&mut lock(&self.inner.servers).stopping);
        for task in tasks {
            if let Err(error) = task.await
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

/// Locks `mutex`, ignoring poisoning: the guarded maps stay consistent even if a holder panicked,
/// since no holder leaves them half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One address being served for one pod.
struct Server {
    id: u64,
    address: SocketAddr,
    serve: Serve,
    drain: Duration,
    served: Arc<Mutex<BTreeMap<u64, ServedPod>>>,
}

impl Server {
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let Server { id, address, serve, drain, served } = self;
        let (namespace, pod) = (serve.namespace.as_str(), serve.pod.as_str());

        let listener = {
            let mut reported = false;
            loop {
                match TcpListener::bind(address).await {
                    Ok(listener) => break listener,
                    Err(error) => {
                        if !reported {
                            // In use is expected while the previous pod on this address drains.
                            if error.kind() == std::io::ErrorKind::AddrInUse {
                                info!(%namespace, %pod, %address, "address still in use, retrying");
                            } else {
                                warn!(%namespace, %pod, %address, %error, "cannot bind, retrying");
                            }
                            reported = true;
                        }
                        tokio::select! {
                            _ = &mut stop => {
                                debug!(%namespace, %pod, %address, "removed before it could be served");
                                return;
                            }
                            () = tokio::time::sleep(BIND_RETRY) => {}
                        }
                    }
                }
            }
        };

        for warning in &serve.warnings {
            warn!("{warning}");
        }
        info!(%namespace, %pod, %address, version = %serve.version, "serving");
        let status = |state| ServedPod {
            namespace: serve.namespace.clone(),
            pod: serve.pod.clone(),
            address,
            version: serve.version.clone(),
            state,
            labels: serve.labels.clone(),
        };
        lock(&served).insert(id, status(ServeState::Serving));

        let app = Arc::new(App::new(&serve));
        let graceful = GracefulShutdown::new();
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());

        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => accept(accepted, &builder, &graceful, &app).await,
            }
        }

        info!(%namespace, %pod, %address, drain_seconds = drain.as_secs_f64(), "draining");
        lock(&served).insert(id, status(ServeState::Draining));
        let drained = tokio::time::sleep(drain);
        tokio::pin!(drained);
        loop {
            tokio::select! {
                () = &mut drained => break,
                accepted = listener.accept() => accept(accepted, &builder, &graceful, &app).await,
            }
        }

        // Closing the listener first makes new connections fail fast instead of waiting in the
        // backlog; in-flight requests then finish and idle keep-alive connections close.
        drop(listener);
        if tokio::time::timeout(IN_FLIGHT_LIMIT, graceful.shutdown()).await.is_err() {
            warn!(%namespace, %pod, %address, "in-flight requests did not finish; closing them");
        }
        lock(&served).remove(&id);
        info!(%namespace, %pod, %address, "stopped");
    }
}

/// Serves an accepted connection in its own task, watched by `graceful`.
async fn accept(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    app: &Arc<App>,
) {
    match accepted {
        Ok((stream, _peer)) => {
            let _ = stream.set_nodelay(true);
            let app = Arc::clone(app);
            let service = service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%error, "connection ended with an error");
                }
            });
        }
        Err(error) => {
            // Accept fails when out of file descriptors; pausing avoids spinning until some close.
            warn!(%error, "cannot accept a connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CodeLabels {
    code: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The app of one served pod: its answers, its failure and latency behaviour, and its metrics.
struct App {
    version: HeaderValue,
    ok_body: Bytes,
    error_body: Bytes,
    error_rate: f64,
    latency: Duration,
    /// xorshift64* state: deterministic per pod, so error fractions are reproducible.
    rng: AtomicU64,
    registry: Registry,
    answered_ok: Counter,
    answered_error: Counter,
    duration: Histogram,
}

impl App {
    fn new(serve: &Serve) -> App {
        let body = |error: bool| {
            let mut body = serde_json::json!({
                "version": serve.version,
                "pod": serve.pod,
                "namespace": serve.namespace,
            });
            if error {
                body["error"] = serde_json::Value::Bool(true);
            }
            Bytes::from(body.to_string())
        };

        let requests = Family::<CodeLabels, Counter>::default();
        let durations = Family::<VersionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS.iter().copied())
        });
        let code = |code: &str| CodeLabels { code: code.to_owned(), version: serve.version.clone() };
        let answered_ok = requests.get_or_create_owned(&code("200"));
        let answered_error = requests.get_or_create_owned(&code("500"));
        let duration = durations.get_or_create_owned(&VersionLabels { version: serve.version.clone() });
        let mut registry = Registry::default();
        registry.register("lab_http_requests", "HTTP requests answered, by status code", requests);
        registry.register(
            "lab_http_request_duration_seconds",
            "Time from receiving a request to answering it",
            durations,
        );

        let mut hasher = DefaultHasher::new();
        (&serve.namespace, &serve.pod, &serve.uid).hash(&mut hasher);

        App {
            version: HeaderValue::from_str(&serve.version).unwrap_or(HeaderValue::from_static("invalid")),
            ok_body: body(false),
            error_body: body(true),
            error_rate: serve.error_rate,
            latency: serve.latency,
            // xorshift never leaves zero, so the seed must not be zero.
            rng: AtomicU64::new(hasher.finish() | 1),
            registry,
            answered_ok,
            answered_error,
            duration,
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            return self.metrics();
        }
        let started = Instant::now();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let fail = self.error_rate > 0.0 && self.next_unit() < self.error_rate;
        let (status, body) =
            if fail { (StatusCode::INTERNAL_SERVER_ERROR, &self.error_body) } else { (StatusCode::OK, &self.ok_body) };
        if fail { &self.answered_error } else { &self.answered_ok }.inc();
        self.duration.observe(started.elapsed().as_secs_f64());
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .header("x-version", self.version.clone())
            .body(Full::new(body.clone()))
            .expect("a response of valid parts")
    }

    /// A number in [0, 1) from the pod's xorshift64* sequence.
    fn next_unit(&self) -> f64 {
        let step = |mut x: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x
        };
        let previous =
            self.rng.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))).unwrap_or_else(|x| x);
        let output = step(previous).wrapping_mul(0x2545_f491_4f6c_dd1d);
        (output >> 11) as f64 / (1u64 << 53) as f64
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let mut text = String::new();
        let (status, body) = match encode(&mut text, &self.registry) {
            Ok(()) => (StatusCode::OK, text),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n".to_owned()),
        };
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a response of valid parts")
    }
}

/// Serves the responder's status on `listener` until the future is dropped: `GET /pods` answers
/// the JSON list of [`ServedPod`]s, `GET /healthz` answers 200.
pub async fn serve_status(listener: TcpListener, responder: Responder) {
    let builder = http1::Builder::new();
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "status server cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let responder = responder.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let responder = responder.clone();
            async move { Ok::<_, Infallible>(status_answer(&request, &responder)) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "status connection ended with an error");
            }
        });
    }
}

/// The served pods as Prometheus HTTP service discovery targets: one group per address, labelled
/// as Prometheus' Kubernetes pod discovery with the usual relabelling would (`namespace`, `pod`,
/// `pod_template_hash`). The lab's Prometheus (Debian's build) has no Kubernetes discovery; the
/// responders watch the pods anyway, so they serve the list.
pub fn scrape_targets(served: &[ServedPod]) -> Vec<serde_json::Value> {
    served
        .iter()
        .map(|pod| {
            let mut labels = serde_json::Map::new();
            labels.insert("namespace".into(), pod.namespace.clone().into());
            labels.insert("pod".into(), pod.pod.clone().into());
            if let Some(hash) = pod.labels.get(POD_TEMPLATE_HASH_LABEL) {
                labels.insert("pod_template_hash".into(), hash.clone().into());
            }
            serde_json::json!({"targets": [pod.address.to_string()], "labels": labels})
        })
        .collect()
}

/// The label stepwise puts on every pod of a ReplicaSet it owns.
const POD_TEMPLATE_HASH_LABEL: &str = "stepwise.dev/pod-template-hash";

fn status_answer(request: &Request<Incoming>, responder: &Responder) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/pods") => match serde_json::to_vec(&responder.served()) {
            Ok(json) => (StatusCode::OK, "application/json", Bytes::from(json)),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", Bytes::from(error.to_string())),
        },
        (&Method::GET, "/targets") => match serde_json::to_vec(&scrape_targets(&responder.served())) {
            Ok(json) => (StatusCode::OK, "application/json", Bytes::from(json)),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", Bytes::from(error.to_string())),
        },
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("a response of valid parts")
}

/// Watches the pods of `api` and keeps `responder` applied to the complete current list. Returns
/// only if the watch stream ends, which it does not on its own: errors are retried with backoff.
pub async fn watch(api: Api<Pod>, responder: &Responder) {
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            // The store swaps in a relisted set only at InitDone; applying before it would
            // re-apply an unchanged set once per listed pod.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => {
                let pods = store.state();
                responder.apply(pods.iter().map(|pod| pod.as_ref()));
            }
            Err(error) => warn!(%error, "pod watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn container(image: &str, env: &[(&str, &str)], ports: &[(i32, Option<&str>)]) -> Container {
        Container {
            name: "app".into(),
            image: Some(image.into()),
            env: Some(
                env.iter()
                    .map(|(name, value)| EnvVar {
                        name: (*name).into(),
                        value: Some((*value).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(port, protocol)| ContainerPort {
                        container_port: *port,
                        protocol: protocol.map(Into::into),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: Option<&str>, phase: &str, containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec { containers, ..Default::default() }),
            status: Some(PodStatus { phase: Some(phase.into()), pod_ip: ip.map(Into::into), ..Default::default() }),
        }
    }

    fn running(name: &str, ip: &str, container: Container) -> Pod {
        pod(name, Some(ip), "Running", vec![container])
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_running_pod_with_an_ip_and_no_ports_is_served_on_the_default_port() {
        let pods = [running("a", "10.244.0.5", container("app:v1", &[], &[]))];
        let desired = desired_servers(&pods, 8080);
        assert_eq!(desired.keys().copied().collect::<Vec<_>>(), [addr("10.244.0.5:8080")]);
        let serve = &desired[&addr("10.244.0.5:8080")];
        assert_eq!((serve.namespace.as_str(), serve.pod.as_str(), serve.version.as_str()), ("default", "a", "v1"));
        assert_eq!(serve.uid.as_deref(), Some("uid-a"));
    }

    #[test]
    fn a_pod_without_an_ip_is_not_served() {
        let pods = [pod("a", None, "Running", vec![container("app:v1", &[], &[])])];
        assert!(desired_servers(&pods, 8080).is_empty());
    }

    #[test]
    fn a_pod_with_an_unparsable_ip_is_not_served() {
        let pods = [running("a", "not-an-ip", container("app:v1", &[], &[]))];
        assert!(desired_servers(&pods, 8080).is_empty());
    }

    #[test]
    fn a_pod_that_is_not_running_is_not_served() {
        for phase in ["Pending", "Succeeded", "Failed", "Unknown"] {
            let pods = [pod("a", Some("10.244.0.5"), phase, vec![container("app:v1", &[], &[])])];
            assert!(desired_servers(&pods, 8080).is_empty(), "phase {phase}");
        }
    }

    #[test]
    fn a_pod_without_a_status_is_not_served() {
        let mut without = running("a", "10.244.0.5", container("app:v1", &[], &[]));
        without.status = None;
        assert!(desired_servers([&without], 8080).is_empty());
    }

    #[test]
    fn a_pod_being_deleted_is_not_served() {
        let mut deleting = running("a", "10.244.0.5", container("app:v1", &[], &[]));
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(desired_servers([&deleting], 8080).is_empty());
    }

    #[test]
    fn a_pod_is_served_on_every_distinct_tcp_port_of_all_its_containers() {
        let pods = [pod(
            "a",
            Some("10.244.0.5"),
            "Running",
            vec![
                container("app:v1", &[], &[(80, None), (9090, Some("TCP")), (53, Some("UDP"))]),
                container("sidecar:v9", &[], &[(9090, Some("TCP")), (7070, Some("tcp")), (5353, Some("SCTP"))]),
            ],
        )];
        let desired = desired_servers(&pods, 8080);
        assert_eq!(
            desired.keys().copied().collect::<Vec<_>>(),
            [addr("10.244.0.5:80"), addr("10.244.0.5:7070"), addr("10.244.0.5:9090")]
        );
        assert!(desired.values().all(|serve| serve.version == "v1"), "the first container decides the version");
    }

    #[test]
    fn a_pod_declaring_only_udp_ports_is_served_on_the_default_port() {
        let pods = [running("a", "10.244.0.5", container("dns:v1", &[], &[(53, Some("UDP"))]))];
        assert_eq!(desired_servers(&pods, 8080).keys().copied().collect::<Vec<_>>(), [addr("10.244.0.5:8080")]);
    }

    #[test]
    fn ipv6_pod_ips_are_served() {
        let pods = [running("a", "fd00::5", container("app:v1", &[], &[(80, None)]))];
        assert_eq!(desired_servers(&pods, 8080).keys().copied().collect::<Vec<_>>(), [addr("[fd00::5]:80")]);
    }

    #[test]
    fn of_two_pods_claiming_one_address_the_first_by_name_gets_it_whatever_the_order() {
        let b = running("b", "10.244.0.5", container("app:v2", &[], &[]));
        let a = running("a", "10.244.0.5", container("app:v1", &[], &[]));
        for pods in [[&a, &b], [&b, &a]] {
            let desired = desired_servers(pods, 8080);
            assert_eq!(desired.len(), 1);
            assert_eq!(desired[&addr("10.244.0.5:8080")].pod, "a");
        }
    }

    #[test]
    fn every_running_pod_gets_its_own_servers() {
        let pods: Vec<Pod> = (0..300)
            .map(|i| {
                running(&format!("p{i}"), &format!("10.244.{}.{}", i / 250, i % 250 + 1), container("app:v1", &[], &[]))
            })
            .collect();
        let desired = desired_servers(&pods, 8080);
        assert_eq!(desired.len(), 300);
    }

    #[test]
    fn the_version_is_the_literal_version_variable_of_the_first_container() {
        let serve = Serve::from_pod(&running("a", "10.244.0.5", container("app:v1", &[("VERSION", "blue")], &[])));
        assert_eq!(serve.version, "blue");
    }

    #[test]
    fn a_version_from_a_reference_or_empty_falls_back_to_the_image_tag() {
        let mut from_reference = container("app:v3", &[], &[]);
        from_reference.env = Some(vec![EnvVar { name: "VERSION".into(), value: None, ..Default::default() }]);
        assert_eq!(Serve::from_pod(&running("a", "10.244.0.5", from_reference)).version, "v3");
        let empty = container("app:v4", &[("VERSION", "")], &[]);
        assert_eq!(Serve::from_pod(&running("a", "10.244.0.5", empty)).version, "v4");
    }

    #[test]
    fn a_later_container_does_not_decide_the_version() {
        let pod = pod(
            "a",
            Some("10.244.0.5"),
            "Running",
            vec![container("app:v1", &[], &[]), container("sidecar:v2", &[("VERSION", "v9")], &[])],
        );
        assert_eq!(Serve::from_pod(&pod).version, "v1");
    }

    #[test]
    fn image_tags_ignore_registry_ports_and_digests() {
        let cases = [
            ("nginx:1.27", "1.27"),
            ("nginx", "latest"),
            ("nginx:", "latest"),
            ("", "latest"),
            ("registry.local:5000/team/app:v2", "v2"),
            ("registry.local:5000/team/app", "latest"),
            ("ghcr.io/org/app:2.0.1-rc1", "2.0.1-rc1"),
            ("app:v1@sha256:0123abcd", "v1"),
            ("app@sha256:0123abcd", "latest"),
        ];
        for (image, tag) in cases {
            assert_eq!(image_tag(image), tag, "image {image:?}");
        }
    }

    #[test]
    fn a_pod_without_a_spec_answers_latest() {
        let mut bare = running("a", "10.244.0.5", container("app:v1", &[], &[]));
        bare.spec = None;
        assert_eq!(Serve::from_pod(&bare).version, "latest");
        assert_eq!(desired_servers([&bare], 8080).keys().copied().collect::<Vec<_>>(), [addr("10.244.0.5:8080")]);
    }

    #[test]
    fn error_rate_and_latency_come_from_the_first_container() {
        let serve = Serve::from_pod(&running(
            "a",
            "10.244.0.5",
            container("app:v1", &[("ERROR_RATE", "0.25"), ("LATENCY_MS", "120")], &[]),
        ));
        assert_eq!(serve.error_rate, 0.25);
        assert_eq!(serve.latency, Duration::from_millis(120));
        assert!(serve.warnings.is_empty());
    }

    #[test]
    fn without_settings_a_pod_never_fails_and_is_not_slowed() {
        let serve = Serve::from_pod(&running("a", "10.244.0.5", container("app:v1", &[], &[])));
        assert_eq!((serve.error_rate, serve.latency), (0.0, Duration::ZERO));
        assert!(serve.warnings.is_empty());
    }

    #[test]
    fn invalid_settings_fall_back_to_zero_with_a_warning_naming_pod_and_variable() {
        for (rate, latency) in [("1.5", "-3"), ("abc", "1.5"), ("NaN", "ten"), ("-0.1", "")] {
            let serve = Serve::from_pod(&running(
                "a",
                "10.244.0.5",
                container("app:v1", &[("ERROR_RATE", rate), ("LATENCY_MS", latency)], &[]),
            ));
            assert_eq!((serve.error_rate, serve.latency), (0.0, Duration::ZERO), "{rate} {latency}");
            assert_eq!(serve.warnings.len(), 2, "{:?}", serve.warnings);
            assert!(serve.warnings[0].contains("default/a") && serve.warnings[0].contains("ERROR_RATE"));
            assert!(serve.warnings[1].contains("default/a") && serve.warnings[1].contains("LATENCY_MS"));
        }
    }

    #[test]
    fn the_error_rate_bounds_are_valid() {
        for (raw, rate) in [("0", 0.0), ("1", 1.0), (" 0.5 ", 0.5)] {
            let serve = Serve::from_pod(&running("a", "10.244.0.5", container("app:v1", &[("ERROR_RATE", raw)], &[])));
            assert_eq!(serve.error_rate, rate);
            assert!(serve.warnings.is_empty());
        }
    }

    #[test]
    fn scrape_targets_label_each_address_with_its_namespace_pod_and_template_hash() {
        let mut labels = BTreeMap::new();
        labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), "abc123".to_string());
        let served = [
            ServedPod {
                namespace: "ns".into(),
                pod: "app-1".into(),
                address: "10.244.0.5:8080".parse().unwrap(),
                version: "1".into(),
                state: ServeState::Serving,
                labels,
            },
            ServedPod {
                namespace: "ns".into(),
                pod: "other".into(),
                address: "10.244.0.6:8080".parse().unwrap(),
                version: "1".into(),
                state: ServeState::Draining,
                labels: BTreeMap::new(),
            },
        ];
        assert_eq!(
            serde_json::to_value(scrape_targets(&served)).unwrap(),
            serde_json::json!([
                {"targets": ["10.244.0.5:8080"], "labels": {"namespace": "ns", "pod": "app-1", "pod_template_hash": "abc123"}},
                {"targets": ["10.244.0.6:8080"], "labels": {"namespace": "ns", "pod": "other"}},
            ])
        );
    }

    #[test]
    fn the_failure_fraction_over_ten_thousand_requests_is_within_two_percent_of_the_rate() {
        for rate in [0.01, 0.1, 0.3, 0.5, 0.9] {
            let app = App::new(&Serve {
                error_rate: rate,
                ..Serve::from_pod(&running("a", "10.244.0.5", container("app:v1", &[], &[])))
            });
            let failed = (0..10_000).filter(|_| app.next_unit() < rate).count();
            let fraction = failed as f64 / 10_000.0;
            assert!((fraction - rate).abs() <= 0.02, "rate {rate}: fraction {fraction}");
        }
    }

    #[test]
    fn pods_with_different_names_draw_different_sequences() {
        let app = |name: &str| App::new(&Serve::from_pod(&running(name, "10.244.0.5", container("app:v1", &[], &[]))));
        let (a, b) = (app("a"), app("b"));
        let draws = |app: &App| (0..8).map(|_| app.next_unit()).collect::<Vec<_>>();
        assert_ne!(draws(&a), draws(&b));
    }
}
