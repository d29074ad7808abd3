//! A fault-injecting proxy between the controller and the API server.
//!
//! It listens on 127.0.0.1 (an ephemeral port) and speaks plain HTTP/1.1, which is what kube's
//! client speaks to an `http://` server, and forwards every request to the real API server over
//! HTTPS, trusting the cluster's CA and passing the `Authorization` header through: it holds no
//! credentials of its own. A [`FaultPlan`], changeable while requests flow, says what goes wrong:
//! 429s with `Retry-After`, 500s, 409 conflicts on writes, slow answers, watch streams cut after a
//! few seconds, watches from a resourceVersion older than a mark answered as the API server does
//! (a watch `ERROR` event carrying a `410 Expired` Status), and partitions (every request hangs, or
//! every connection fails).
//!
//! Every request is recorded (when, method, verb, resource, the faults it met, the status it got,
//! when it went on to the API server and when the answer came back), so that a test can measure
//! the controller's request rate, see that it relisted, and read the records as the API server's
//! audit log for the controller behind the proxy.
//!
//! [`start_controller`] starts the controller with a kubeconfig that points at a proxy.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::{CertificateDer, ServerName};
use stepwise_e2e::ControllerProcess;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What goes wrong, request by request. Probabilities are per request, from 0 to 1; the default
/// plan injects nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Answer `429 Too Many Requests` with `Retry-After: 1`, as API Priority and Fairness does.
    pub throttle: f64,
    /// Answer `500 Internal Server Error`.
    pub server_error: f64,
    /// Answer a write (POST, PUT, PATCH) with `409 Conflict`.
    pub conflict: f64,
    /// Delay the request by a time drawn from `delay` before anything else happens to it.
    pub slow: f64,
    /// The range of a slow request's delay.
    pub delay: (Duration, Duration),
    /// Cut every watch stream after a time drawn from this range, as a broken connection would.
    pub cut_watches: Option<(Duration, Duration)>,
    /// Answer a watch from a resourceVersion below this one with a `410 Expired` ERROR event, as
    /// the API server does once the version has left its watch cache: the client must relist.
    pub expire_older_than: Option<u64>,
    /// Cut the controller off.
    pub partition: Option<Partition>,
}

/// How the controller is cut off from the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Requests wait until the partition heals and then go through, as over TCP once a network
    /// heals. Open watches are cut when it begins. A request whose client closes its connection
    /// meanwhile is dropped, never forwarded: the model of a request not yet delivered when its
    /// connection was closed.
    Hang,
    /// New connections are closed at once and requests on open ones fail, as when the API server
    /// is unreachable. Open watches are cut when it begins.
    Refuse,
}

/// A fault the proxy injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Answered 429 with `Retry-After: 1`.
    Throttled,
    /// Answered 500.
    ServerError,
    /// A write answered 409.
    Conflict,
    /// Delayed.
    Slowed,
    /// A watch stream cut.
    WatchCut,
    /// A watch answered with a 410 Expired ERROR event.
    Expired,
    /// Held by a hanging partition.
    Hung,
    /// Failed by a refusing partition (a request, or a connection closed as it was accepted).
    Refused,
}

impl Fault {
    /// Every fault, in order.
    pub const ALL: [Fault; 8] = [
        Fault::Throttled,
        Fault::ServerError,
        Fault::Conflict,
        Fault::Slowed,
        Fault::WatchCut,
        Fault::Expired,
        Fault::Hung,
        Fault::Refused,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Throttled => "throttled",
            Fault::ServerError => "server_error",
            Fault::Conflict => "conflict",
            Fault::Slowed => "slowed",
            Fault::WatchCut => "watch_cut",
            Fault::Expired => "expired",
            Fault::Hung => "hung",
            Fault::Refused => "refused",
        })
    }
}

/// What a request asks of the API server, as its audit log would name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// GET of one object (or of discovery).
    Get,
    /// GET of a collection.
    List,
    /// A watch (`watch=true`, or a path under `/watch/`).
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// Any other method.
    Other,
}

impl Verb {
    /// Whether the request writes (and may therefore meet a conflict).
    pub fn is_write(self) -> bool {
        matches!(self, Verb::Create | Verb::Update | Verb::Patch)
    }
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: Instant,
    /// Its method.
    pub method: Method,
    /// What it asks.
    pub verb: Verb,
    /// Its path, without the query.
    pub path: String,
    /// The resource it names (`rollouts`, `replicasets`...), empty for discovery.
    pub resource: String,
    /// The object it names, if any.
    pub name: Option<String>,
    /// The subresource it names (`status`, `scale`...), if any.
    pub subresource: Option<String>,
    /// The `resourceVersion` it asks from, if any.
    pub resource_version: Option<String>,
    /// The faults it met, in order.
    pub faults: Vec<Fault>,
    /// The status it was answered with (None while it waits, or when it failed with no answer).
    pub status: Option<u16>,
    /// When it was sent on to the API server: None if it never was (answered by a fault, or
    /// held by a partition and abandoned by its client). An audit log of the API server would
    /// show only the requests that have this.
    pub forwarded: Option<Instant>,
    /// When the API server's answer (its status line and headers) came back.
    pub answered: Option<Instant>,
}

/// Requests per second over a stretch of time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rate {
    /// The requests that arrived in each second, in order.
    pub per_second: Vec<u64>,
}

impl Rate {
    /// All the requests.
    pub fn total(&self) -> u64 {
        self.per_second.iter().sum()
    }

    /// The mean rate, per second.
    pub fn mean(&self) -> f64 {
        if self.per_second.is_empty() { 0.0 } else { self.total() as f64 / self.per_second.len() as f64 }
    }

    /// The highest mean rate over any `window` consecutive seconds (over all of them when there
    /// are fewer).
    pub fn peak(&self, window: usize) -> f64 {
        let window = window.clamp(1, self.per_second.len().max(1));
        self.per_second.windows(window).map(|w| w.iter().sum::<u64>() as f64 / window as f64).fold(0.0, f64::max)
    }
}

/// The proxy's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Requests by method.
    pub by_method: BTreeMap<String, u64>,
    /// Requests by verb.
    pub by_verb: BTreeMap<Verb, u64>,
    /// Requests by resource (`rollouts`, `replicasets/status`, `events`...; empty for discovery).
    pub by_resource: BTreeMap<String, u64>,
    /// Injected faults by kind (watch cuts are counted when they happen, and a connection refused
    /// during a partition counts as `Refused` without a request).
    pub by_fault: BTreeMap<Fault, u64>,
    /// The request rate since the proxy started.
    pub rate: Rate,
}

impl Stats {
    /// How many times `fault` was injected.
    pub fn fault(&self, fault: Fault) -> u64 {
        self.by_fault.get(&fault).copied().unwrap_or(0)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.by_fault.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let verbs: Vec<String> = self.by_verb.iter().map(|(k, v)| format!("{k:?}={v}")).collect();
        let resources: Vec<String> = self.by_resource.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(
            f,
            "{} requests over {} s (mean {:.1}/s, peak {:.1}/s over 5 s, {}/s in the busiest second); verbs: {}; resources: {}; faults: {}",
            self.requests,
            self.rate.per_second.len(),
            self.rate.mean(),
            self.rate.peak(5),
            self.rate.per_second.iter().max().copied().unwrap_or(0),
            verbs.join(" "),
            resources.join(" "),
            if faults.is_empty() { "none".to_string() } else { faults.join(" ") },
        )
    }
}

/// Where the proxy forwards to.
#[derive(Clone)]
pub struct Upstream {
    /// `host:port`.
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

impl Upstream {
    /// A plain HTTP server (the tests' own).
    pub fn plain(addr: SocketAddr) -> Self {
        Upstream { authority: addr.to_string(), tls: None }
    }

    /// An HTTPS server at `server` (`https://host:port`) whose certificate the CAs in `roots`
    /// (DER) sign.
    pub fn https(server: &str, roots: &[Vec<u8>]) -> anyhow::Result<Self> {
        let uri: http::Uri = server.parse().with_context(|| format!("server {server}"))?;
        let host = uri.host().context("the server names no host")?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(443);
        let mut store = rustls::RootCertStore::empty();
        for der in roots {
            store.add(CertificateDer::from(der.clone())).context("a CA certificate")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        // One request per connection over HTTP/1.1: the proxy's model is the simplest one.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.clone())?;
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Upstream { authority, tls: Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)) })
    }

    /// The API server of the current context of a kubeconfig, trusting its CA.
    pub async fn from_kubeconfig(path: &Path) -> anyhow::Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("kubeconfig {}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let server = config.cluster_url.to_string();
        Self::https(server.trim_end_matches('/'), &config.root_cert.unwrap_or_default())
    }
}

/// The fault-injecting proxy. Dropping it stops it: open streams are cut and waiting requests
/// fail.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: Upstream,
    plan: watch::Sender<FaultPlan>,
    /// Bumped to cut every open stream at once.
    cuts: watch::Sender<u64>,
    closed: AtomicBool,
    log: Mutex<Log>,
    rng: Mutex<u64>,
    started: Instant,
}

#[derive(Default)]
struct Log {
    records: Vec<RequestRecord>,
    faults: BTreeMap<Fault, u64>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on an ephemeral port of 127.0.0.1, injecting nothing yet. The
    /// random draws are seeded from the clock; [`FaultProxy::start_seeded`] repeats a run.
    pub async fn start(upstream: Upstream) -> std::io::Result<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Self::start_seeded(upstream, seed).await
    }

    /// Starts a proxy whose random draws follow `seed`.
    pub async fn start_seeded(upstream: Upstream, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            plan: watch::Sender::new(FaultPlan::default()),
            cuts: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            log: Mutex::new(Log::default()),
            rng: Mutex::new(seed),
            started: Instant::now(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%addr, upstream = ?shared.upstream, seed, "fault proxy listening");
        Ok(FaultProxy { addr, shared, accept })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for a kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The plan in force.
    pub fn plan(&self) -> FaultPlan {
        self.shared.plan.borrow().clone()
    }

    /// Puts `plan` in force for the requests that arrive from now on. A partition that begins
    /// cuts every open stream; one that heals lets the waiting requests through.
    pub fn set_plan(&self, plan: FaultPlan) {
        let partition_begins = plan.partition.is_some() && self.shared.plan.borrow().partition != plan.partition;
        self.shared.plan.send_replace(plan);
        if partition_begins {
            self.cut_streams();
        }
    }

    /// Changes the plan in force.
    pub fn update_plan(&self, change: impl FnOnce(&mut FaultPlan)) {
        let mut plan = self.plan();
        change(&mut plan);
        self.set_plan(plan);
    }

    /// Cuts every open watch stream now.
    pub fn cut_streams(&self) {
        self.shared.cuts.send_modify(|generation| *generation += 1);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let log = self.shared.lock();
        let mut stats = Stats {
            requests: log.records.len() as u64,
            by_fault: log.faults.clone(),
            rate: rate(&log.records, self.shared.started, Instant::now()),
            ..Stats::default()
        };
        for record in &log.records {
            *stats.by_method.entry(record.method.to_string()).or_default() += 1;
            *stats.by_verb.entry(record.verb).or_default() += 1;
            let resource = match &record.subresource {
                Some(sub) => format!("{}/{sub}", record.resource),
                None => record.resource.clone(),
            };
            *stats.by_resource.entry(resource).or_default() += 1;
        }
        stats
    }

    /// The request rate between two instants.
    pub fn rate(&self, from: Instant, to: Instant) -> Rate {
        rate(&self.shared.lock().records, from, to)
    }

    /// Every request received so far.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.shared.lock().records.clone()
    }

    /// Writes a copy of the kubeconfig at `original` whose current cluster is this proxy (plain
    /// HTTP, so without a CA; the user's credentials pass through the proxy unchanged).
    pub fn write_kubeconfig(&self, original: &Path, out: &Path) -> anyhow::Result<()> {
        let mut kubeconfig =
            Kubeconfig::read_from(original).with_context(|| format!("kubeconfig {}", original.display()))?;
        let current = kubeconfig.current_context.clone().context("the kubeconfig has no current context")?;
        let cluster_name = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == current)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .context("the current context names no cluster")?;
        let cluster = kubeconfig
            .clusters
            .iter_mut()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_mut())
            .with_context(|| format!("no cluster {cluster_name}"))?;
        cluster.server = Some(self.url());
        cluster.certificate_authority = None;
        cluster.certificate_authority_data = None;
        cluster.insecure_skip_tls_verify = None;
        cluster.tls_server_name = None;
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_yaml::to_string(&kubeconfig)?)?;
        Ok(())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.closed.store(true, Ordering::SeqCst);
        self.cut_streams();
        // Wakes the requests a hanging partition holds, which then see the proxy closed.
        self.shared.plan.send_modify(|_| {});
    }
}

fn rate(records: &[RequestRecord], from: Instant, to: Instant) -> Rate {
    let seconds = to.saturating_duration_since(from).as_secs_f64().ceil() as usize;
    let mut per_second = vec![0; seconds.max(1)];
    for record in records.iter().filter(|r| r.at >= from && r.at < to) {
        let second = (record.at - from).as_secs() as usize;
        if let Some(n) = per_second.get_mut(second) {
            *n += 1;
        }
    }
    Rate { per_second }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a request as it arrives; returns its index.
    fn arrived(&self, req: &Request<Incoming>) -> (usize, RequestRecord) {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default();
        let param = |key: &str| {
            query
                .split('&')
                .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
        };
        let target = Target::of(&path);
        let watch = target.watch || matches!(param("watch").as_deref(), Some("true" | "1"));
        let verb = match *req.method() {
            Method::GET if watch => Verb::Watch,
            Method::GET if target.name.is_none() && !target.resource.is_empty() => Verb::List,
            Method::GET => Verb::Get,
            Method::POST => Verb::Create,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            _ => Verb::Other,
        };
        let record = RequestRecord {
            at: Instant::now(),
            method: req.method().clone(),
            verb,
            path,
            resource: target.resource,
            name: target.name,
            subresource: target.subresource,
            resource_version: param("resourceVersion").filter(|v| !v.is_empty()),
            faults: Vec::new(),
            status: None,
            forwarded: None,
            answered: None,
        };
        let mut log = self.lock();
        log.records.push(record.clone());
        (log.records.len() - 1, record)
    }

    fn fault(&self, index: Option<usize>, fault: Fault) {
        let mut log = self.lock();
        *log.faults.entry(fault).or_default() += 1;
        if let Some(record) = index.and_then(|i| log.records.get_mut(i)) {
            record.faults.push(fault);
        }
    }

    fn forwarded(&self, index: usize) {
        if let Some(record) = self.lock().records.get_mut(index) {
            record.forwarded = Some(Instant::now());
        }
    }

    fn upstream_answered(&self, index: usize) {
        if let Some(record) = self.lock().records.get_mut(index) {
            record.answered = Some(Instant::now());
        }
    }

    fn answered(&self, index: usize, status: StatusCode) {
        if let Some(record) = self.lock().records.get_mut(index) {
            record.status = Some(status.as_u16());
        }
    }

    /// SplitMix64: enough randomness for fault draws, and repeatable from a seed.
    fn next(&self) -> u64 {
        let mut state = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&self, probability: f64) -> bool {
        probability > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    fn between(&self, (low, high): (Duration, Duration)) -> Duration {
        if high <= low {
            return low;
        }
        let span = (high - low).as_nanos() as u64;
        low + Duration::from_nanos(self.next() % span)
    }
}

/// The resource, name and subresource a request path names.
#[derive(Debug, Default, PartialEq)]
struct Target {
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
    /// The deprecated `/watch/` form.
    watch: bool,
}

impl Target {
    fn of(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest = match segments.as_slice() {
            ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
            _ => return Target::default(),
        };
        let (watch, rest) = match rest {
            ["watch", rest @ ..] => (true, rest),
            rest => (false, rest),
        };
        // `namespaces/<ns>` scopes what follows, unless nothing follows (a Namespace itself).
        let rest = match rest {
            ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
            rest => rest,
        };
        let owned = |i: usize| rest.get(i).map(|s| s.to_string());
        Target { resource: owned(0).unwrap_or_default(), name: owned(1), subresource: owned(2), watch }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, for instance: wait rather than spin.
                tracing::warn!(error = %e, "fault proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.plan.borrow().partition == Some(Partition::Refuse) {
            shared.fault(None, Fault::Refused);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            // A cut stream ends its connection with an error; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let (index, record) = shared.arrived(&req);
    let result = decide_and_forward(&shared, index, &record, req).await;
    match &result {
        Ok(response) => shared.answered(index, response.status()),
        Err(e) => tracing::debug!(path = %record.path, error = %e, "fault proxy: no answer"),
    }
    result
}

async fn decide_and_forward(
    shared: &Arc<Shared>,
    index: usize,
    record: &RequestRecord,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let mut plans = shared.plan.subscribe();
    let mut hung = false;
    let plan = loop {
        if shared.closed.load(Ordering::SeqCst) {
            return Err("the fault proxy stopped".into());
        }
        let plan = plans.borrow_and_update().clone();
        match plan.partition {
            None => break plan,
            Some(Partition::Refuse) => {
                shared.fault(Some(index), Fault::Refused);
                return Err("refused: the fault proxy partitions the API server away".into());
            }
            Some(Partition::Hang) => {
                if !hung {
                    hung = true;
                    shared.fault(Some(index), Fault::Hung);
                }
                if plans.changed().await.is_err() {
                    return Err("the fault proxy stopped".into());
                }
            }
        }
    };
    if shared.chance(plan.slow) {
        shared.fault(Some(index), Fault::Slowed);
        tokio::time::sleep(shared.between(plan.delay)).await;
    }
    if shared.chance(plan.throttle) {
        shared.fault(Some(index), Fault::Throttled);
        let mut response = status_response(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests, please try again later.",
            serde_json::json!({"retryAfterSeconds": 1}),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(response);
    }
    if shared.chance(plan.server_error) {
        shared.fault(Some(index), Fault::ServerError);
        return Ok(status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: injected by the fault proxy",
            serde_json::json!({"causes": [{"message": "injected by the fault proxy"}]}),
        ));
    }
    if record.verb.is_write() && shared.chance(plan.conflict) {
        shared.fault(Some(index), Fault::Conflict);
        let name = record.name.as_deref().unwrap_or_default();
        return Ok(status_response(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                record.resource
            ),
            serde_json::json!({"name": name, "kind": record.resource}),
        ));
    }
    if record.verb == Verb::Watch
        && let (Some(mark), Some(asked)) =
            (plan.expire_older_than, record.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()))
        // "0" asks for any version: the API server never calls it too old.
        && asked != 0
        && asked < mark
    {
        shared.fault(Some(index), Fault::Expired);
        return Ok(expired_watch(asked, mark));
    }
    let response = forward(&shared.upstream, req, || shared.forwarded(index)).await.map_err(|e| -> BoxError {
        tracing::warn!(path = %record.path, error = %e, "fault proxy: the upstream failed");
        e
    });
    let response = match response {
        Ok(response) => {
            shared.upstream_answered(index);
            response
        }
        // Told as a gateway would, so that a client sees an answer rather than a reset.
        Err(e) => {
            return Ok(status_response(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                &format!("the fault proxy could not reach the API server: {e}"),
                serde_json::json!({}),
            ));
        }
    };
    let (parts, body) = response.into_parts();
    let body = if record.verb == Verb::Watch {
        cuttable(body, shared.clone(), index)
    } else {
        body.map_err(BoxError::from).boxed_unsync()
    };
    Ok(Response::from_parts(parts, body))
}

/// A `Status` answer, as the API server writes them.
fn status_response(code: StatusCode, reason: &str, message: &str, details: serde_json::Value) -> Response<Body> {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    json_response(code, status.to_string())
}

/// What the API server answers a watch from a version that left its watch cache: a 200, one
/// ERROR event whose Status says 410 Expired, and the end of the stream.
fn expired_watch(asked: u64, oldest: u64) -> Response<Body> {
    let event = serde_json::json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {asked} ({oldest})"),
            "reason": "Expired",
            "code": 410,
        },
    });
    json_response(StatusCode::OK, format!("{event}\n"))
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Forwards one request over a connection of its own: the simplest model, and the rates here are
/// a few requests per second. The connection ends with the response.
async fn forward(
    upstream: &Upstream,
    mut req: Request<Incoming>,
    sent: impl FnOnce(),
) -> Result<Response<Incoming>, BoxError> {
    let tcp = TcpStream::connect(&upstream.authority).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match &upstream.tls {
        Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        None => Box::new(tcp),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let headers = req.headers_mut();
    for hop in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE] {
        headers.remove(hop);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.insert(header::HOST, HeaderValue::from_str(&upstream.authority)?);
    sent();
    Ok(sender.send_request(req).await?)
}

/// A streaming body that is cut (ends with an error, as a broken connection does) when every
/// stream is cut, or after a time drawn from the plan's `cut_watches`: the plan in force when the
/// stream opened, or, for a stream opened before, when a plan that cuts watches came into force.
fn cuttable(body: Incoming, shared: Arc<Shared>, index: usize) -> Body {
    struct Feed {
        body: Incoming,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        cuts: watch::Receiver<u64>,
        plans: watch::Receiver<FaultPlan>,
        shared: Arc<Shared>,
        index: usize,
    }
    impl Feed {
        /// Draws a deadline when the plan cuts watches and none is set; drops it when the plan no
        /// longer cuts them.
        fn follow_plan(&mut self) {
            match (self.plans.borrow_and_update().cut_watches, self.deadline.is_some()) {
                (Some(range), false) => self.deadline = Some(Box::pin(tokio::time::sleep(self.shared.between(range)))),
                (None, true) => self.deadline = None,
                _ => {}
            }
        }
    }
    enum Next {
        Frame(Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>),
        Replan,
        Cut,
    }
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let plans = shared.plan.subscribe();
    let mut feed = Feed { body, deadline: None, cuts, plans, shared, index };
    feed.follow_plan();
    let frames = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        loop {
            let next = {
                let deadline = async {
                    match feed.deadline.as_mut() {
                        Some(deadline) => deadline.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    frame = feed.body.frame() => Next::Frame(frame),
                    () = deadline => Next::Cut,
                    _ = feed.cuts.changed() => Next::Cut,
                    changed = feed.plans.changed() => if changed.is_ok() { Next::Replan } else { Next::Cut },
                }
            };
            return match next {
                Next::Frame(Some(Ok(frame))) => Some((Ok(frame), Some(feed))),
                Next::Frame(Some(Err(e))) => Some((Err(BoxError::from(e)), None)),
                Next::Frame(None) => None,
                Next::Replan => {
                    feed.follow_plan();
                    continue;
                }
                Next::Cut => {
                    feed.shared.fault(Some(feed.index), Fault::WatchCut);
                    Some((Err(BoxError::from("watch cut by the fault proxy")), None))
                }
            };
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Starts the controller (`target/debug/stepwise-controller`, or the build
/// `STEPWISE_CHAOS_CONTROLLER` names) for `namespace` through `proxy`, without leader election.
/// Its kubeconfig goes to `target/chaos/`, its log beside the e2e tests' (`target/e2e-logs/`).
pub fn start_controller(proxy: &FaultProxy, namespace: &str, extra: &[&str]) -> anyhow::Result<ControllerProcess> {
    let root = stepwise_e2e::repo_root();
    let bin = std::env::var_os("STEPWISE_CHAOS_CONTROLLER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/stepwise-controller"));
    let dir = root.join("target/chaos");
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join(format!("{namespace}.kubeconfig"));
    proxy.write_kubeconfig(&stepwise_e2e::kubeconfig_path(), &kubeconfig)?;
    let args: Vec<&str> = ["--leader-elect=false"].into_iter().chain(extra.iter().copied()).collect();
    ControllerProcess::start_with_kubeconfig(&bin, &kubeconfig, namespace, "controller", &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    use http_body_util::Empty;
    use hyper::body::Frame;

    /// A tiny API server: a list, a write, and a watch that sends an event every 50 ms forever.
    /// It counts what reaches it and keeps the last Authorization header.
    #[derive(Default)]
    struct Tiny {
        hits: AtomicUsize,
        authorization: Mutex<Option<String>>,
    }

    async fn tiny() -> (SocketAddr, Arc<Tiny>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Tiny::default());
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            state.hits.fetch_add(1, Ordering::SeqCst);
                            *state.authorization.lock().unwrap() = req
                                .headers()
                                .get(header::AUTHORIZATION)
                                .map(|v| v.to_str().unwrap_or_default().to_string());
                            let watch = req.uri().query().unwrap_or_default().contains("watch=");
                            let body: Body = if watch {
                                let events = futures::stream::unfold(0u64, |n| async move {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    let line = format!("{{\"type\":\"ADDED\",\"object\":{{\"n\":{n}}}}}\n");
                                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from(line))), n + 1))
                                });
                                StreamBody::new(events).boxed_unsync()
                            } else {
                                let mut body = b"{\"kind\":\"PodList\",\"method\":\"".to_vec();
                                body.extend(req.method().as_str().as_bytes());
                                body.extend(b"\",\"body\":\"");
                                body.extend(req.into_body().collect().await.unwrap().to_bytes());
                                body.extend(b"\"}");
                                Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync()
                            };
                            Ok::<_, std::convert::Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    const PODS: &str = "/api/v1/namespaces/ns/pods";
    const WATCH_PODS: &str = "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=100";

    async fn proxy() -> (FaultProxy, Arc<Tiny>) {
        let (addr, seen) = tiny().await;
        (FaultProxy::start_seeded(Upstream::plain(addr), 7).await.unwrap(), seen)
    }

    /// Sends one request through the proxy on a connection of its own; returns the response with
    /// its body unread, or the error of a connection that failed.
    async fn send(proxy: &FaultProxy, method: Method, path: &str, body: &str) -> Result<Response<Incoming>, BoxError> {
        let stream = TcpStream::connect(proxy.addr()).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "proxy")
            .header(header::AUTHORIZATION, "Bearer the-users-own")
            .body(Full::new(Bytes::from(body.to_string())))?;
        Ok(sender.send_request(req).await?)
    }

    async fn text(response: Response<Incoming>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn without_faults_a_request_reaches_the_upstream_with_its_authorization_and_comes_back_unchanged() {
        let (proxy, seen) = proxy().await;
        let response = send(&proxy, Method::PATCH, "/api/v1/namespaces/ns/pods/p", "{\"a\":1}").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "{\"kind\":\"PodList\",\"method\":\"PATCH\",\"body\":\"{\"a\":1}\"}");
        assert_eq!(seen.authorization.lock().unwrap().as_deref(), Some("Bearer the-users-own"));
        let stats = proxy.stats();
        assert_eq!((stats.requests, stats.by_method.get("PATCH").copied()), (1, Some(1)));
        assert!(stats.by_fault.is_empty(), "{stats}");
        assert_eq!(proxy.records()[0].status, Some(200));
    }

    #[tokio::test]
    async fn a_throttled_request_is_answered_429_with_retry_after_and_a_status_and_never_reaches_the_server() {
        let (proxy, seen) = proxy().await;
        proxy.set_plan(FaultPlan { throttle: 1.0, ..FaultPlan::default() });
        let response = send(&proxy, Method::GET, PODS, "").await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let status: serde_json::Value = serde_json::from_str(&text(response).await).unwrap();
        assert_eq!(
            (status["kind"].as_str(), status["reason"].as_str(), status["code"].as_u64()),
            (Some("Status"), Some("TooManyRequests"), Some(429))
        );
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.stats().fault(Fault::Throttled), 1);
        assert_eq!(proxy.records()[0].faults, [Fault::Throttled]);
    }

    #[tokio::test]
    async fn a_server_error_is_a_500_status() {
        let (proxy, _) = proxy().await;
        proxy.set_plan(FaultPlan { server_error: 1.0, ..FaultPlan::default() });
        let response = send(&proxy, Method::GET, PODS, "").await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text(response).await.contains("\"reason\":\"InternalError\""));
        assert_eq!(proxy.stats().fault(Fault::ServerError), 1);
    }

    #[tokio::test]
    async fn conflicts_are_injected_into_writes_only() {
        let (proxy, seen) = proxy().await;
        proxy.set_plan(FaultPlan { conflict: 1.0, ..FaultPlan::default() });
        assert_eq!(send(&proxy, Method::GET, PODS, "").await.unwrap().status(), StatusCode::OK);
        assert_eq!(send(&proxy, Method::DELETE, "/api/v1/namespaces/ns/pods/p", "").await.unwrap().status(), 200);
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            let response =
                send(&proxy, method.clone(), "/apis/stepwise.dev/v1alpha1/namespaces/ns/rollouts/app/status", "{}")
                    .await
                    .unwrap();
            assert_eq!(response.status(), StatusCode::CONFLICT, "{method}");
            let body = text(response).await;
            assert!(body.contains("Operation cannot be fulfilled on rollouts \\\"app\\\""), "{body}");
        }
        assert_eq!(seen.hits.load(Ordering::SeqCst), 2, "the GET and the DELETE went through");
        assert_eq!(proxy.stats().fault(Fault::Conflict), 3);
    }

    #[tokio::test]
    async fn a_slow_request_is_delayed_by_the_planned_time_and_then_answered() {
        let (proxy, _) = proxy().await;
        let delay = Duration::from_millis(300);
        proxy.set_plan(FaultPlan { slow: 1.0, delay: (delay, delay), ..FaultPlan::default() });
        let started = Instant::now();
        assert_eq!(send(&proxy, Method::GET, PODS, "").await.unwrap().status(), StatusCode::OK);
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        assert_eq!(proxy.stats().fault(Fault::Slowed), 1);
    }

    #[tokio::test]
    async fn a_watch_stream_is_cut_after_the_planned_time_with_an_error() {
        let (proxy, _) = proxy().await;
        let after = Duration::from_millis(400);
        proxy.set_plan(FaultPlan { cut_watches: Some((after, after)), ..FaultPlan::default() });
        let started = Instant::now();
        let response = send(&proxy, Method::GET, WATCH_PODS, "").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut events = 0;
        let ended = loop {
            match body.frame().await {
                Some(Ok(_)) => events += 1,
                Some(Err(e)) => break e.to_string(),
                None => break "a clean end".into(),
            }
        };
        assert!(started.elapsed() >= after, "cut after {:?}", started.elapsed());
        assert!(events >= 2, "events flowed until the cut: {events}");
        assert_ne!(ended, "a clean end", "a cut connection is not a finished stream");
        assert_eq!(proxy.stats().fault(Fault::WatchCut), 1);
        // Other requests are untouched.
        assert_eq!(send(&proxy, Method::GET, PODS, "").await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_watch_opened_before_the_plan_cuts_watches_is_cut_too_and_one_spared_by_a_later_plan_is_not() {
        let (proxy, _) = proxy().await;
        let mut early = send(&proxy, Method::GET, WATCH_PODS, "").await.unwrap().into_body();
        assert!(early.frame().await.unwrap().is_ok());
        let after = Duration::from_millis(200);
        proxy.set_plan(FaultPlan { cut_watches: Some((after, after)), ..FaultPlan::default() });
        let cut = loop {
            match early.frame().await {
                Some(Ok(_)) => continue,
                other => break other.map(|r| r.is_err()),
            }
        };
        assert_eq!(cut, Some(true));

        let mut spared = send(&proxy, Method::GET, WATCH_PODS, "").await.unwrap().into_body();
        proxy.set_plan(FaultPlan::default());
        let until = Instant::now() + after * 3;
        while Instant::now() < until {
            assert!(spared.frame().await.unwrap().is_ok(), "the plan no longer cuts watches");
        }
        assert_eq!(proxy.stats().fault(Fault::WatchCut), 1);
    }

    #[tokio::test]
    async fn a_watch_from_an_expired_version_gets_a_410_expired_event_and_one_from_a_fresh_version_streams() {
        let (proxy, seen) = proxy().await;
        proxy.set_plan(FaultPlan { expire_older_than: Some(150), ..FaultPlan::default() });
        let response = send(&proxy, Method::GET, WATCH_PODS, "").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the API server tells it inside the stream");
        let event: serde_json::Value = serde_json::from_str(text(response).await.trim()).unwrap();
        assert_eq!(event["type"], "ERROR");
        assert_eq!(
            (event["object"]["code"].as_u64(), event["object"]["reason"].as_str()),
            (Some(410), Some("Expired"))
        );
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0);

        let fresh = send(&proxy, Method::GET, "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=150", "").await;
        let mut body = fresh.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.starts_with(b"{\"type\":\"ADDED\""));
        // A list is never expired, nor is a watch from "any version".
        assert_eq!(send(&proxy, Method::GET, PODS, "").await.unwrap().status(), StatusCode::OK);
        let any = send(&proxy, Method::GET, "/api/v1/namespaces/ns/pods?watch=1&resourceVersion=0", "").await.unwrap();
        assert!(
            any.into_body().frame().await.unwrap().unwrap().into_data().unwrap().starts_with(b"{\"type\":\"ADDED\"")
        );
        assert_eq!(proxy.stats().fault(Fault::Expired), 1);
    }

    #[tokio::test]
    async fn a_hanging_partition_cuts_open_watches_holds_requests_and_lets_them_through_when_it_heals() {
        let (proxy, seen) = proxy().await;
        let watch = send(&proxy, Method::GET, WATCH_PODS, "").await.unwrap();
        let mut watch = watch.into_body();
        assert!(watch.frame().await.unwrap().is_ok());
        proxy.set_plan(FaultPlan { partition: Some(Partition::Hang), ..FaultPlan::default() });
        let cut = loop {
            match watch.frame().await {
                Some(Ok(_)) => continue,
                other => break other.map(|r| r.is_err()),
            }
        };
        assert_eq!(cut, Some(true), "the open watch was cut");

        let hits = seen.hits.load(Ordering::SeqCst);
        let held = tokio::spawn({
            let addr = proxy.addr();
            async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                let req = Request::get(PODS).header(header::HOST, "proxy").body(Empty::<Bytes>::new()).unwrap();
                sender.send_request(req).await.map(|r| r.status())
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "the request waits while the partition lasts");
        assert_eq!(seen.hits.load(Ordering::SeqCst), hits, "and does not reach the server");
        proxy.set_plan(FaultPlan::default());
        assert_eq!(held.await.unwrap().unwrap(), StatusCode::OK);
        let stats = proxy.stats();
        assert_eq!((stats.fault(Fault::Hung), stats.fault(Fault::WatchCut)), (1, 1), "{stats}");
    }

    #[tokio::test]
    async fn a_request_held_by_a_hanging_partition_whose_client_went_away_never_reaches_the_server() {
        let (proxy, seen) = proxy().await;
        proxy.set_plan(FaultPlan { partition: Some(Partition::Hang), ..FaultPlan::default() });
        for (method, body) in [(Method::GET, ""), (Method::PATCH, "{\"spec\":{\"paused\":true}}")] {
            let client = tokio::spawn({
                let addr = proxy.addr();
                async move {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                    let req = Request::builder()
                        .method(method)
                        .uri("/api/v1/namespaces/ns/pods/p")
                        .header(header::HOST, "proxy")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    // The connection lives in this task only, so that aborting it closes it.
                    tokio::select! {
                        _ = sender.send_request(req) => {},
                        _ = connection => {},
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!client.is_finished(), "the request is held");
            // The client's process ends: its connection closes with the request undelivered.
            client.abort();
            let _ = client.await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set_plan(FaultPlan::default());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing held reached the server after the heal");
        let records = proxy.records();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.faults == [Fault::Hung] && r.forwarded.is_none()), "{records:?}");
    }

    #[tokio::test]
    async fn a_forwarded_request_is_recorded_with_when_it_went_to_the_server_and_when_the_answer_came() {
        let (proxy, _) = proxy().await;
        let before = Instant::now();
        assert_eq!(send(&proxy, Method::PATCH, "/api/v1/namespaces/ns/pods/p", "{}").await.unwrap().status(), 200);
        let record = &proxy.records()[0];
        let (forwarded, answered) = (record.forwarded.unwrap(), record.answered.unwrap());
        assert!(before <= record.at && record.at <= forwarded && forwarded <= answered, "{record:?}");
        proxy.set_plan(FaultPlan { throttle: 1.0, ..FaultPlan::default() });
        assert_eq!(send(&proxy, Method::PATCH, "/api/v1/namespaces/ns/pods/p", "{}").await.unwrap().status(), 429);
        assert_eq!((proxy.records()[1].forwarded, proxy.records()[1].answered), (None, None));
    }

    #[tokio::test]
    async fn a_refusing_partition_fails_every_request_until_it_heals() {
        let (proxy, seen) = proxy().await;
        proxy.set_plan(FaultPlan { partition: Some(Partition::Refuse), ..FaultPlan::default() });
        for _ in 0..3 {
            assert!(send(&proxy, Method::GET, PODS, "").await.is_err());
        }
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
        assert!(proxy.stats().fault(Fault::Refused) >= 3);
        proxy.set_plan(FaultPlan::default());
        assert_eq!(send(&proxy, Method::GET, PODS, "").await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn probabilities_inject_faults_in_about_their_share_of_requests() {
        let (proxy, _) = proxy().await;
        proxy.set_plan(FaultPlan { throttle: 0.25, server_error: 0.25, ..FaultPlan::default() });
        for _ in 0..200 {
            let _ = text(send(&proxy, Method::GET, PODS, "").await.unwrap()).await;
        }
        let stats = proxy.stats();
        // 25% of 200 is 50; then 25% of the rest (~38). Wide bounds: the draws are random.
        assert!((30..=70).contains(&stats.fault(Fault::Throttled)), "{stats}");
        assert!((20..=60).contains(&stats.fault(Fault::ServerError)), "{stats}");
        assert_eq!(stats.requests, 200);
        assert_eq!(stats.rate.total(), 200);
    }

    #[test]
    fn paths_name_the_resource_object_and_subresource_and_the_verb_follows() {
        let t = Target::of("/apis/stepwise.dev/v1alpha1/namespaces/ns/rollouts/app/status");
        assert_eq!(
            (t.resource.as_str(), t.name.as_deref(), t.subresource.as_deref(), t.watch),
            ("rollouts", Some("app"), Some("status"), false)
        );
        let t = Target::of("/apis/apps/v1/namespaces/ns/replicasets");
        assert_eq!((t.resource.as_str(), t.name), ("replicasets", None));
        let t = Target::of("/api/v1/namespaces/ns");
        assert_eq!((t.resource.as_str(), t.name.as_deref()), ("namespaces", Some("ns")));
        let t = Target::of("/api/v1/watch/namespaces/ns/pods");
        assert_eq!((t.resource.as_str(), t.watch), ("pods", true));
        assert_eq!(Target::of("/apis/stepwise.dev/v1alpha1").resource, "");
        assert_eq!(Target::of("/version").resource, "");
    }

    #[test]
    fn a_rate_is_counted_per_second_and_its_peak_is_the_busiest_window() {
        let rate = Rate { per_second: vec![1, 9, 1, 1, 0, 0] };
        assert_eq!((rate.total(), rate.mean()), (12, 2.0));
        assert_eq!((rate.peak(1), rate.peak(2), rate.peak(100)), (9.0, 5.0, 2.0));
        assert_eq!(Rate::default().peak(5), 0.0);
    }

    #[test]
    fn metric_samples_are_read_by_label_set() {
        let text = "# HELP stepwise_errors x\nstepwise_errors_total{kind=\"conflict\"} 3\nstepwise_errors_total{kind=\"throttled\"} 1\nstepwise_errors_totally 9\nstepwise_leader 1\n";
        let values = stepwise_e2e::metric_values(text, "stepwise_errors_total");
        assert_eq!(values.len(), 2);
        assert_eq!(values.get("{kind=\"conflict\"}"), Some(&3.0));
        assert_eq!(stepwise_e2e::metric_values(text, "stepwise_leader").get(""), Some(&1.0));
    }
}
