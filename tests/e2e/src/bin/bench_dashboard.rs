//! `just bench-dashboard`: the dashboard (`kubectl stepwise dashboard`, release build) under load
//! on the local control plane. N Rollouts of 1 replica (steps setWeight 25, pause 5s, setWeight
//! 50, pause 5s, setWeight 100) are created and made Healthy by the release controller; then the
//! dashboard starts on the whole cluster, and P pages (server-sent event streams of the list, read
//! by a small HTTP/1.1 client here) and D detail streams are opened. Measured:
//!
//! - the dashboard's RSS at rest (VmRSS, VmHWM), with no page and with P pages;
//! - the API server's open watches (`apiserver_longrunning_requests`, verb WATCH) of rollouts,
//!   replicasets, analysisruns and events: before the dashboard, with it and no page, with P pages,
//!   to show that the pages do not add watches;
//! - a page's first snapshot: connect to snapshot parsed, and its size;
//! - while all N Rollouts are updated at once (a new image) and walk to Healthy: the dashboard's
//!   RSS sampled every second (peak), its CPU seconds, the events each page received, and the delay
//!   from each Rollout's phase turning Healthy (seen by this bench's own watch of the API) to each
//!   page receiving the upsert that shows it Healthy (p50/p99/max over pages x Rollouts);
//! - after the update: its RSS with the pages open and once they closed, beside the RSS of a new
//!   dashboard started on the same objects (what the objects alone cost), and the objects counted.
//!
//! It measures and prints a markdown table (also written to `target/bench/dashboard-N.md`); it
//! asserts nothing about speed.
//!
//! Usage: `bench_dashboard [--rollouts N] [--pages P] [--details D]` (1000, 20, 4).
//! `STEPWISE_BENCH_BIN` and `STEPWISE_BENCH_PLUGIN_BIN` choose other builds of the controller and
//! of the plugin (the release builds by default). The local control plane's 3 fake nodes hold
//! 3,000 pods: N up to about 1,400 (each Rollout has 2 pods during its update).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use stepwise_e2e::{ControllerProcess, client, cluster_dir, eventually, install_crds, kubeconfig_path, repo_root};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const STRATEGY: &str = "canary:\n  steps:\n  - setWeight: 25\n  - pause: {duration: 5s}\n  - setWeight: 50\n  - pause: {duration: 5s}\n  - setWeight: 100\n";
/// The resources whose watches are counted.
const WATCHED: [&str; 4] = ["rollouts", "replicasets", "analysisruns", "events"];

fn rollout(i: usize) -> anyhow::Result<Rollout> {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: d{i}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: d{i}}}}}\n  template:\n    metadata: {{labels: {{app: d{i}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/bench:1'}}]}}\n  strategy:\n{}",
        STRATEGY.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

/// When each Rollout turned Healthy after the update: the first time it is seen Healthy after
/// having been seen in another phase since the update started. The API side (this bench's watch)
/// and each page use the same rule, so the two times are of the same transition.
#[derive(Default)]
struct Transitions {
    /// Rollouts seen in a phase other than Healthy since the update started.
    left_healthy: HashSet<String>,
    /// When each turned Healthy again.
    healthy_at: HashMap<String, Instant>,
    /// Whether each is Healthy at full size (the API side only).
    full: HashMap<String, bool>,
}

impl Transitions {
    fn see(&mut self, name: &str, phase: &str, armed: bool, at: Instant) {
        if !armed {
            return;
        }
        if phase != "Healthy" {
            self.left_healthy.insert(name.to_string());
        } else if self.left_healthy.contains(name) && !self.healthy_at.contains_key(name) {
            self.healthy_at.insert(name.to_string(), at);
        }
    }

    fn full(&self) -> usize {
        self.full.values().filter(|f| **f).count()
    }
}

/// This bench's own watch of the namespace's Rollouts, recording the transitions.
fn watch_api(api: Api<Rollout>, armed: Arc<AtomicBool>) -> (Arc<Mutex<Transitions>>, tokio::task::JoinHandle<()>) {
    let transitions = Arc::new(Mutex::new(Transitions::default()));
    let recorded = transitions.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = events.next().await {
            let Ok(ro) = event else { continue };
            let now = Instant::now();
            let st = ro.status.clone().unwrap_or_default();
            let phase = st.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "None".into());
            // Healthy at full size, as `bench --scale` counts it: what the initial deploy waits for.
            let full = st.phase == Some(RolloutPhase::Healthy)
                && st.available_replicas == Some(1)
                && st.stable_rs.is_some()
                && st.stable_rs == st.current_pod_hash;
            let armed = armed.load(Ordering::SeqCst);
            let mut recorded = recorded.lock().unwrap_or_else(|e| e.into_inner());
            recorded.see(&ro.name_any(), &phase, armed, now);
            recorded.full.insert(ro.name_any(), full);
        }
    });
    (transitions, task)
}

/// A dashboard process.
struct Dashboard {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Dashboard {
    /// Starts it on the whole cluster; its log is `target/e2e-logs/<name>.log`.
    fn start(bin: &str, name: &str) -> anyhow::Result<Self> {
        let bin = repo_root().join(bin);
        if !bin.exists() {
            bail!("{} not built: cargo build --release -p kubectl-stepwise", bin.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("dashboard")
            .arg(format!("--kubeconfig={}", kubeconfig_path().display()))
            .arg("--address")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .context("start kubectl-stepwise dashboard")?;
        Ok(Dashboard { child, port, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until it lists all `n` Rollouts.
    async fn synced(&self, n: usize) -> anyhow::Result<()> {
        let synced = eventually("the dashboard to list every Rollout", Duration::from_secs(300), || async {
            let (code, body) = self.get("/api/rollouts").await?;
            let listed = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["rollouts"].as_array().map(Vec::len))
                .unwrap_or(0);
            Ok(code == 200 && listed == n)
        })
        .await;
        if let Err(e) = synced {
            bail!("{e}\ndashboard log:\n{}", self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// GET over HTTP/1.0 (neither chunked nor kept alive): the status and the body.
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let exchange = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).await?;
            anyhow::Ok(String::from_utf8_lossy(&answer).to_string())
        };
        let answer = tokio::time::timeout(Duration::from_secs(60), exchange).await.context("no answer in 60 s")??;
        let (head, body) = answer.split_once("\r\n\r\n").context("an answer without a head")?;
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, body.to_string()))
    }

    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        Ok(stepwise_e2e::metric_values(&body, name).values().sum())
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many objects of each kind the dashboard watches the namespace holds: Rollouts, ReplicaSets
/// with a pod-template-hash, Events about Rollouts.
async fn objects(client: &kube::Client, ns: &str) -> anyhow::Result<[usize; 3]> {
    let all = ListParams::default();
    let rollouts = Api::<Rollout>::namespaced(client.clone(), ns).list_metadata(&all).await?.items.len();
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
        .await?
        .items
        .len();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().fields("involvedObject.kind=Rollout"))
        .await?
        .items
        .len();
    Ok([rollouts, replica_sets, events])
}

/// A field (in KiB) of /proc/PID/status: VmRSS, VmHWM.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (utime + stime) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = 100.0; // USER_HZ on Linux
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / ticks
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The API server's open watches of the resources counted, summed over groups and scopes.
async fn watches(client: &kube::Client) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let body = client.request_text(request).await?;
    let mut out: BTreeMap<&'static str, f64> = WATCHED.iter().map(|r| (*r, 0.0)).collect();
    for (labels, value) in stepwise_e2e::metric_values(&body, "apiserver_longrunning_requests") {
        if !labels.contains("verb=\"WATCH\"") {
            continue;
        }
        for resource in WATCHED {
            if labels.contains(&format!("resource=\"{resource}\"")) {
                *out.entry(resource).or_default() += value;
            }
        }
    }
    Ok(out)
}

/// The watches, read three times a second apart, keeping the largest count per resource: a watch
/// that is being renewed (kube's watcher times its watches out every few minutes) is not counted
/// as gone.
async fn watches_steady(client: &kube::Client) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut most = watches(client).await?;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (resource, count) in watches(client).await? {
            let held = most.entry(resource).or_default();
            *held = held.max(count);
        }
    }
    Ok(most)
}

fn watches_text(w: &BTreeMap<&'static str, f64>) -> String {
    WATCHED.iter().map(|r| format!("{r} {}", w.get(r).copied().unwrap_or(0.0))).collect::<Vec<_>>().join(", ")
}

/// What one stream received.
#[derive(Default)]
struct PageLog {
    /// Connect to the first snapshot (or first detail) parsed.
    first: Option<Duration>,
    /// The size of the first snapshot's data, and its rows.
    snapshot_bytes: usize,
    snapshot_rows: usize,
    /// Messages received since the update started, by event name, and their bytes.
    events: BTreeMap<String, usize>,
    bytes: usize,
    /// Heartbeat comments received.
    heartbeats: usize,
    /// The last row received for each Rollout, and how many upserts since the update started
    /// repeated it byte for byte.
    rows: HashMap<String, String>,
    unchanged: usize,
    transitions: Transitions,
    /// Why the stream ended, if it did.
    ended: Option<String>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    phase: Option<String>,
}

#[derive(Deserialize)]
struct Snapshot {
    rollouts: Vec<Row>,
}

/// One SSE client of `path`: an HTTP/1.1 GET, its chunked body decoded, its messages parsed and
/// logged. Runs until the stream ends or the task is aborted.
async fn page(port: u16, path: String, armed: Arc<AtomicBool>, log: Arc<Mutex<PageLog>>) {
    let result = read_stream(port, &path, &armed, &log).await;
    let why = match result {
        Ok(()) => "the server ended the stream".to_string(),
        Err(e) => format!("{e:#}"),
    };
    log.lock().unwrap_or_else(|e| e.into_inner()).ended = Some(why);
}

async fn read_stream(port: u16, path: &str, armed: &AtomicBool, log: &Mutex<PageLog>) -> anyhow::Result<()> {
    let connect = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut reader = BufReader::with_capacity(64 * 1024, conn);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.contains(" 200 ") {
        bail!("GET {path}: {}", line.trim());
    }
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the head of {path} ended early");
        }
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = Vec::new();
    loop {
        if chunked {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
                .with_context(|| format!("a chunk size {line:?}"))?;
            if size == 0 {
                return Ok(());
            }
            chunk.resize(size + 2, 0);
            reader.read_exact(&mut chunk).await?;
            pending.extend_from_slice(&chunk[..size]);
        } else {
            chunk.resize(64 * 1024, 0);
            let read = reader.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..read]);
        }
        // Complete messages end with a blank line.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = pending.drain(..end + 2).collect();
            handle_message(&String::from_utf8_lossy(&message), connect, armed.load(Ordering::SeqCst), log)?;
        }
    }
}

fn handle_message(message: &str, connect: Instant, armed: bool, log: &Mutex<PageLog>) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut event = None;
    let mut data = String::new();
    let mut comment = false;
    for line in message.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if line.starts_with(':') {
            comment = true;
        }
    }
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if comment && event.is_none() {
        log.heartbeats += 1;
        return Ok(());
    }
    let Some(event) = event else { return Ok(()) }; // an id alone, or retry:
    if armed {
        *log.events.entry(event.clone()).or_default() += 1;
        log.bytes += message.len();
    }
    match event.as_str() {
        "snapshot" => {
            let snapshot: Snapshot = serde_json::from_str(&data).context("a snapshot")?;
            if log.first.is_none() {
                log.first = Some(now - connect);
                log.snapshot_bytes = data.len();
                log.snapshot_rows = snapshot.rollouts.len();
            }
            for row in snapshot.rollouts {
                log.transitions.see(&row.name, row.phase.as_deref().unwrap_or("None"), armed, now);
            }
        }
        "upsert" => {
            let row: Row = serde_json::from_str(&data).context("an upsert")?;
            log.transitions.see(&row.name, row.phase.as_deref().unwrap_or("None"), armed, now);
            if log.rows.get(&row.name) == Some(&data) {
                log.unchanged += usize::from(armed);
            } else {
                log.rows.insert(row.name, data);
            }
        }
        "detail" if log.first.is_none() => {
            log.first = Some(now - connect);
            log.snapshot_bytes = data.len();
        }
        _ => {}
    }
    Ok(())
}

/// Opens a stream of `path`, read by a task of its own.
fn open_page(port: u16, path: String, armed: &Arc<AtomicBool>) -> (Arc<Mutex<PageLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(PageLog::default()));
    let task = tokio::spawn(page(port, path, armed.clone(), log.clone()));
    (log, task)
}

async fn first_received(logs: &[Arc<Mutex<PageLog>>], timeout: Duration) -> anyhow::Result<()> {
    eventually("every stream's first message", timeout, || async {
        for log in logs {
            let log = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = &log.ended {
                bail!("a stream ended: {why}");
            }
            if log.first.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// The value at quantile q (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Args {
    rollouts: usize,
    pages: usize,
    details: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args { rollouts: 1000, pages: 20, details: 4 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || -> anyhow::Result<usize> {
            let v = inline.clone().or_else(|| args.next()).with_context(|| format!("{flag} needs a number"))?;
            v.parse().with_context(|| format!("{flag} {v:?}: not a number"))
        };
        match flag.as_str() {
            "--rollouts" => parsed.rollouts = value()?,
            "--pages" => parsed.pages = value()?,
            "--details" => parsed.details = value()?,
            _ => bail!("unknown argument {arg:?}: usage: bench_dashboard [--rollouts N] [--pages P] [--details D]"),
        }
    }
    if parsed.rollouts == 0 {
        bail!("--rollouts must be at least 1");
    }
    parsed.details = parsed.details.min(parsed.rollouts);
    Ok(parsed)
}

/// CPU seconds so far of the control plane's API server, from the pid file `tests/cluster/up.sh`
/// writes.
fn apiserver_cpu() -> Option<f64> {
    let pid = std::fs::read_to_string(cluster_dir().join("run/kube-apiserver.pid")).ok()?;
    Some(cpu_seconds(pid.split_whitespace().next()?.parse().ok()?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { rollouts: n, pages: p, details: d } = args()?;
    let controller_bin =
        std::env::var("STEPWISE_BENCH_BIN").unwrap_or_else(|_| "target/release/stepwise-controller".into());
    let plugin_bin =
        std::env::var("STEPWISE_BENCH_PLUGIN_BIN").unwrap_or_else(|_| "target/release/kubectl-stepwise".into());
    let client = client().await?;
    install_crds(&client).await?;

    // ---- N Rollouts, Healthy under the controller ----
    let ns = format!("bench-dash-{n}");
    let nss: Api<Namespace> = Api::all(client.clone());
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    eventually("old namespace gone", Duration::from_secs(600), || async { Ok(nss.get_opt(&ns).await?.is_none()) })
        .await?;
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let armed = Arc::new(AtomicBool::new(false));
    let (api_transitions, api_watch) = watch_api(api.clone(), armed.clone());
    let mut controller = ControllerProcess::start_binary(
        &controller_bin,
        &ns,
        "bench-dashboard",
        &["--leader-elect=false", "--qps=1000", "--burst=2000", "--concurrency=32"],
    )?;
    eprintln!("bench-dashboard: creating {n} Rollouts in {ns}");
    let t = Instant::now();
    let created: Vec<kube::Result<Rollout>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = &api;
            async move { api.create(&PostParams::default(), &rollout(i).expect("a valid Rollout")).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect::<kube::Result<Vec<_>>>()?;
    let healthy = || api_transitions.lock().unwrap_or_else(|e| e.into_inner()).full();
    let mut last_report = Instant::now();
    while healthy() < n {
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("{} of {n} Rollouts Healthy after 30 min\n{}", healthy(), controller.log_tail());
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!("  … {} of {n} Healthy after {:.0} s", healthy(), t.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let initial = t.elapsed().as_secs_f64();
    eprintln!("bench-dashboard: {n} Healthy in {initial:.1} s");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let watches_before = watches_steady(&client).await?;
    let objects_before = objects(&client, &ns).await?;

    // ---- the dashboard, synced, at rest ----
    let t = Instant::now();
    let dashboard = Dashboard::start(&plugin_bin, &format!("bench-dashboard-{n}"))?;
    let pid = dashboard.pid();
    dashboard.synced(n).await?;
    let synced_in = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_rest, hwm_rest) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    let watches_0 = watches_steady(&client).await?;
    let store_rollouts = dashboard.metric("stepwise_dashboard_rollouts").await?;
    eprintln!(
        "bench-dashboard: dashboard synced in {synced_in:.1} s; RSS {} (HWM {}); {store_rollouts} Rollouts held",
        mib(rss_rest),
        mib(hwm_rest)
    );

    // ---- one page alone, then P pages and D detail streams ----
    let (solo, solo_task) = open_page(dashboard.port, "/api/stream/rollouts".into(), &armed);
    first_received(std::slice::from_ref(&solo), Duration::from_secs(120)).await?;
    solo_task.abort();
    let rss_solo = status_kib(pid, "VmRSS");
    let (solo_time, snapshot_bytes, snapshot_rows) = {
        let log = solo.lock().unwrap_or_else(|e| e.into_inner());
        (log.first.unwrap_or_default(), log.snapshot_bytes, log.snapshot_rows)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut pages = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..p {
        let (log, task) = open_page(dashboard.port, "/api/stream/rollouts".into(), &armed);
        pages.push(log);
        tasks.push(task);
    }
    let mut details = Vec::new();
    for i in 0..d {
        let path = format!("/api/stream/rollouts/{ns}/d{}", i * n / d.max(1));
        let (log, task) = open_page(dashboard.port, path, &armed);
        details.push(log);
        tasks.push(task);
    }
    first_received(&pages, Duration::from_secs(300)).await?;
    first_received(&details, Duration::from_secs(120)).await?;
    let mut together: Vec<f64> = pages
        .iter()
        .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).first.unwrap_or_default().as_secs_f64() * 1000.0)
        .collect();
    together.sort_by(f64::total_cmp);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let streams = dashboard.metric("stepwise_dashboard_streams").await?;
    let watches_p = watches_steady(&client).await?;
    let (rss_pages, hwm_pages) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    // CPU at rest with the pages open: heartbeats only.
    let idle_cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = cpu_seconds(pid) - idle_cpu_before;
    eprintln!(
        "bench-dashboard: {p} pages and {d} detail streams open ({streams} streams); RSS {}; updating all {n}",
        mib(rss_pages)
    );

    // ---- the update, all at once ----
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                samples.push(status_kib(pid, "VmRSS"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };
    let cpu_before = cpu_seconds(pid);
    let apiserver_before = apiserver_cpu();
    let t1 = Instant::now();
    armed.store(true, Ordering::SeqCst);
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.invalid/bench:2"}]}}}});
    let patched: Vec<kube::Result<Rollout>> = futures::stream::iter(0..n)
        .map(|i| {
            let (api, patch) = (&api, &patch);
            async move { api.patch(&format!("d{i}"), &PatchParams::default(), &Patch::Merge(patch)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    patched.into_iter().collect::<kube::Result<Vec<_>>>()?;
    let patched_in = t1.elapsed().as_secs_f64();
    let api_healthy = || api_transitions.lock().unwrap_or_else(|e| e.into_inner()).healthy_at.len();
    let mut last_report = Instant::now();
    while api_healthy() < n {
        if t1.elapsed() > Duration::from_secs(1800) {
            bail!("{} of {n} Rollouts Healthy again after 30 min\n{}", api_healthy(), controller.log_tail());
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!("  … {} of {n} Healthy again after {:.0} s", api_healthy(), t1.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let update_total = t1.elapsed().as_secs_f64();
    // Then until every page shows every Rollout Healthy (or 60 s more).
    let t2 = Instant::now();
    let pages_done =
        || pages.iter().all(|l| l.lock().unwrap_or_else(|e| e.into_inner()).transitions.healthy_at.len() >= n);
    while !pages_done() && t2.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pages_total = t1.elapsed().as_secs_f64();
    // A little more for the events that follow Healthy (scale-down of the old ReplicaSet).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = t1.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let apiserver = apiserver_cpu().zip(apiserver_before).map(|(a, b)| a - b);
    sampling.store(false, Ordering::SeqCst);
    let samples = sampler.await?;
    let peak_sampled = samples.iter().copied().max().unwrap_or(0);
    let hwm_update = status_kib(pid, "VmHWM");
    armed.store(false, Ordering::SeqCst);

    // ---- after: at rest again ----
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_after = status_kib(pid, "VmRSS");
    let streams_after = dashboard.metric("stepwise_dashboard_streams").await?;
    for task in &tasks {
        task.abort();
    }
    // Every page closed: a stream notices when it next writes (a heartbeat within 15 s).
    let closed = eventually("the dashboard to count no stream", Duration::from_secs(45), || async {
        Ok(dashboard.metric("stepwise_dashboard_streams").await? == 0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed = closed.map(|_| status_kib(pid, "VmRSS"));
    // What the objects alone cost: a new dashboard on the same objects, no page ever opened.
    let objects_after = objects(&client, &ns).await?;
    let fresh = Dashboard::start(&plugin_bin, &format!("bench-dashboard-{n}-fresh"))?;
    fresh.synced(n).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_fresh, hwm_fresh) = (status_kib(fresh.pid(), "VmRSS"), status_kib(fresh.pid(), "VmHWM"));
    drop(fresh);

    // ---- the figures ----
    let api_at = api_transitions.lock().unwrap_or_else(|e| e.into_inner()).healthy_at.clone();
    let mut delays = Vec::new();
    let mut missed = 0;
    let mut per_page_events = Vec::new();
    let mut per_page_unchanged = Vec::new();
    let mut per_page_bytes = Vec::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut ended = Vec::new();
    for log in &pages {
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        for (name, at) in &api_at {
            match log.transitions.healthy_at.get(name) {
                Some(seen) => delays.push(if seen >= at {
                    (*seen - *at).as_secs_f64() * 1000.0
                } else {
                    -(*at - *seen).as_secs_f64() * 1000.0
                }),
                None => missed += 1,
            }
        }
        per_page_events.push(log.events.values().sum::<usize>());
        per_page_unchanged.push(log.unchanged);
        per_page_bytes.push(log.bytes);
        for (kind, count) in &log.events {
            *kinds.entry(kind.clone()).or_default() += count;
        }
        ended.extend(log.ended.clone());
    }
    let detail_events: Vec<usize> = details
        .iter()
        .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).events.get("detail").copied().unwrap_or(0))
        .collect();
    for log in &details {
        ended.extend(log.lock().unwrap_or_else(|e| e.into_inner()).ended.clone());
    }
    delays.sort_by(f64::total_cmp);
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let range =
        |v: &[usize]| format!("{}–{}", v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
    let kinds_text =
        kinds.iter().map(|(k, c)| format!("{k} {:.0}", *c as f64 / p.max(1) as f64)).collect::<Vec<_>>().join(", ");
    let watch_delta = |w: &BTreeMap<&'static str, f64>| {
        WATCHED
            .iter()
            .map(|r| {
                format!("{r} {:+}", w.get(r).copied().unwrap_or(0.0) - watches_before.get(r).copied().unwrap_or(0.0))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut rows: Vec<(String, String)> = vec![
        ("Rollouts (N), 1 replica each".into(), n.to_string()),
        ("pages (P): list streams open".into(), format!("{p} (+ {d} detail streams)")),
        (
            "streams the dashboard counts: at rest / after the update".into(),
            format!(
                "{streams} / {streams_after}{}",
                if streams > (p + d) as f64 {
                    " (the page closed after the solo snapshot counts until its stream next writes)"
                } else {
                    ""
                }
            ),
        ),
        ("dashboard start → synced (all N listed)".into(), format!("{synced_in:.1} s")),
        ("RSS at rest, synced, no page (VmRSS / VmHWM)".into(), format!("{} / {}", mib(rss_rest), mib(hwm_rest))),
        ("RSS after one page's snapshot".into(), mib(rss_solo)),
        ("RSS at rest, P pages open (VmRSS / VmHWM)".into(), format!("{} / {}", mib(rss_pages), mib(hwm_pages))),
        (
            "peak RSS during the update (1 s samples / VmHWM)".into(),
            format!("{} / {}", mib(peak_sampled), mib(hwm_update)),
        ),
        ("RSS 15 s after the update".into(), mib(rss_after)),
        ("RSS once every page closed".into(), rss_closed.map(mib).unwrap_or_else(|e| format!("? ({e})"))),
        (
            "RSS of a new dashboard on the objects after the update, no page (VmRSS / VmHWM)".into(),
            format!("{} / {}", mib(rss_fresh), mib(hwm_fresh)),
        ),
        (
            "objects watched in the namespace: before → after the update".into(),
            format!(
                "{} → {} (Rollouts / ReplicaSets / Events about Rollouts)",
                objects_before.iter().map(usize::to_string).collect::<Vec<_>>().join(" / "),
                objects_after.iter().map(usize::to_string).collect::<Vec<_>>().join(" / ")
            ),
        ),
        (
            "dashboard CPU during the update".into(),
            format!("{cpu:.2} s over {window:.1} s ({:.0} % of one core)", 100.0 * cpu / window),
        ),
        ("dashboard CPU at rest, P pages open".into(), format!("{idle_cpu:.2} s per 10 s")),
        (
            "kube-apiserver CPU during the update".into(),
            apiserver.map(|a| format!("{a:.1} s")).unwrap_or_else(|| "?".into()),
        ),
        ("API watches before the dashboard".into(), watches_text(&watches_before)),
        (
            "API watches, dashboard at 0 pages".into(),
            format!("{} ({})", watches_text(&watches_0), watch_delta(&watches_0)),
        ),
        (
            format!("API watches, dashboard at {p} pages"),
            format!("{} ({})", watches_text(&watches_p), watch_delta(&watches_p)),
        ),
        (
            "update: patched in / API all Healthy / pages all Healthy".into(),
            format!("{patched_in:.1} s / {update_total:.1} s / {pages_total:.1} s"),
        ),
        (
            "events per page during the update (mean, range)".into(),
            format!("{:.0} ({}): {kinds_text}", mean(&per_page_events), range(&per_page_events)),
        ),
        (
            "upserts repeating the page's previous row for that Rollout byte for byte (mean)".into(),
            format!(
                "{:.0} per page ({:.0} %)",
                mean(&per_page_unchanged),
                100.0 * mean(&per_page_unchanged) / mean(&per_page_events).max(1.0)
            ),
        ),
        ("bytes per page during the update (mean)".into(), format!("{:.1} MiB", mean(&per_page_bytes) / 1048576.0)),
        (
            "detail events per detail stream (mean, range)".into(),
            format!("{:.0} ({})", mean(&detail_events), range(&detail_events)),
        ),
        (
            "Healthy in API → upsert on page: p50 / p99 / max".into(),
            format!(
                "{:.0} / {:.0} / {:.0} ms ({} pairs, {missed} missed)",
                quantile(&delays, 0.5),
                quantile(&delays, 0.99),
                delays.last().copied().unwrap_or(f64::NAN),
                delays.len()
            ),
        ),
        (
            "first snapshot: one page alone (connect → parsed)".into(),
            format!(
                "{:.0} ms, {:.1} KiB, {snapshot_rows} rows",
                solo_time.as_secs_f64() * 1000.0,
                snapshot_bytes as f64 / 1024.0
            ),
        ),
        (
            format!("first snapshot: {p} pages at once, p50 / max"),
            format!("{:.0} / {:.0} ms", quantile(&together, 0.5), together.last().copied().unwrap_or(f64::NAN)),
        ),
    ];
    if !ended.is_empty() {
        rows.push(("streams that ended early".into(), format!("{}: {}", ended.len(), ended[0])));
    }
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut table = format!(
        "bench-dashboard: N={n} Rollouts x 1 replica, P={p} pages; steps setWeight 25 / pause 5s / setWeight 50 / pause 5s / 100; all updated at once; initial deploy {initial:.1} s\n\n"
    );
    table.push_str(&format!("| {:width$} | value |\n|{}|-------|\n", "measure", "-".repeat(width + 2)));
    for (k, v) in &rows {
        table.push_str(&format!("| {k:width$} | {v} |\n"));
    }
    print!("{table}");
    std::fs::create_dir_all(repo_root().join("target/bench"))?;
    let file = repo_root().join(format!("target/bench/dashboard-{n}.md"));
    std::fs::write(&file, &table)?;
    println!("\nwritten to {}", file.display());

    // ---- cleanup ----
    drop(dashboard);
    api_watch.abort();
    controller.kill_hard();
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    eprintln!("bench-dashboard: deleting namespace {ns}…");
    eventually("namespace deleted", Duration::from_secs(1200), || async { Ok(nss.get_opt(&ns).await?.is_none()) })
        .await?;
    Ok(())
}
