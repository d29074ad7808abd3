//! A real Prometheus server scraping an in-process test exporter, for tests of the Prometheus
//! provider and of analyses that query it. No cluster needed; everything binds to 127.0.0.1.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use stepwise_e2e::prometheus::{Prometheus, TestExporter, success_rate_query};
//! let exporter = TestExporter::start(&["canary", "stable"])?;
//! let prometheus = Prometheus::start(&exporter).await?; // needs tests/cluster/prometheus.sh
//! prometheus.wait_for_data(&success_rate_query("canary"), stepwise_e2e::secs(30)).await?;
//! exporter.set_app_error_rate("canary", 0.3); // the canary now fails 30% of its requests
//! // metrics use `prometheus.address()` and `success_rate_query("canary")`.
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests each app is counted to have served between two scrapes.
pub const REQUESTS_PER_SCRAPE: u64 = 100;

/// Seconds between scrapes.
pub const SCRAPE_INTERVAL_SECONDS: u64 = 1;

/// The window of [`success_rate_query`]: five scrapes, so a rate always has samples to compare
/// even when a scrape is late, and it follows a new error rate within a few seconds.
pub const RATE_WINDOW: &str = "5s";

/// The share of an app's requests that did not fail (code not 5xx) over the last
/// [`RATE_WINDOW`]: a one-element vector, or an empty one before two scrapes landed.
pub fn success_rate_query(app: &str) -> String {
    format!(
        "sum(rate(http_requests_total{{app=\"{app}\",code!~\"5..\"}}[{RATE_WINDOW}])) / \
         sum(rate(http_requests_total{{app=\"{app}\"}}[{RATE_WINDOW}]))"
    )
}

/// The counters of one app.
#[derive(Debug, Default)]
struct App {
    error_rate: f64,
    ok: u64,
    errors: u64,
}

/// An HTTP server on 127.0.0.1 serving `/metrics` in Prometheus' text format: for each app, the
/// counters `http_requests_total{app="<app>",code="200"}` and `{code="500"}`, which grow by
/// [`REQUESTS_PER_SCRAPE`] per scrape, split by the app's error rate. Runs on its own thread, so
/// it answers whatever the test's runtime is doing. Stopped on drop.
pub struct TestExporter {
    address: SocketAddr,
    apps: Arc<Mutex<BTreeMap<String, App>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestExporter {
    /// Starts serving `apps`, each with an error rate of 0.
    pub fn start(apps: &[&str]) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the test exporter")?;
        let address = listener.local_addr()?;
        let apps = Arc::new(Mutex::new(apps.iter().map(|a| (a.to_string(), App::default())).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("test-exporter".into()).spawn({
            let (apps, stop) = (apps.clone(), stop.clone());
            move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        // A broken scrape is Prometheus' problem to report, not ours.
                        let _ = answer(conn, &apps);
                    }
                }
            }
        })?;
        Ok(TestExporter { address, apps, stop, thread: Some(thread) })
    }

    /// `127.0.0.1:PORT`, the scrape target.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Sets the error rate (0.0 to 1.0) of every app from the next scrape on.
    pub fn set_error_rate(&self, rate: f64) {
        for app in self.apps.lock().expect("apps lock").values_mut() {
            app.error_rate = rate.clamp(0.0, 1.0);
        }
    }

    /// Sets the error rate (0.0 to 1.0) of one app from the next scrape on, adding the app if new.
    pub fn set_app_error_rate(&self, app: &str, rate: f64) {
        self.apps.lock().expect("apps lock").entry(app.to_string()).or_default().error_rate = rate.clamp(0.0, 1.0);
    }
}

impl Drop for TestExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one HTTP request: `/metrics` counts a scrape, anything else is a 404.
fn answer(conn: TcpStream, apps: &Mutex<BTreeMap<String, App>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; scrapes have no body.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        ("200 OK", scrape(&mut apps.lock().expect("apps lock")))
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// Counts [`REQUESTS_PER_SCRAPE`] more requests per app and renders the counters.
fn scrape(apps: &mut BTreeMap<String, App>) -> String {
    let mut text = String::from(
        "# HELP http_requests_total Requests served, by app and status code.\n# TYPE http_requests_total counter\n",
    );
    for (name, app) in apps.iter_mut() {
        let errors = (REQUESTS_PER_SCRAPE as f64 * app.error_rate).round() as u64;
        app.errors += errors;
        app.ok += REQUESTS_PER_SCRAPE - errors;
        text.push_str(&format!("http_requests_total{{app=\"{name}\",code=\"200\"}} {}\n", app.ok));
        text.push_str(&format!("http_requests_total{{app=\"{name}\",code=\"500\"}} {}\n", app.errors));
    }
    text
}

/// The Prometheus binary unpacked by `tests/cluster/prometheus.sh` (the newest, if several).
pub fn binary() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("STEPWISE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/stepwise")))
        .context("neither STEPWISE_CACHE nor HOME is set")?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("prometheus-"))
        .map(|e| e.path().join("usr/bin/prometheus"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "no Prometheus binary under {}/prometheus-*/usr/bin/: run tests/cluster/prometheus.sh first (`just e2e` does)",
            cache.display()
        )
    })
}

/// A Prometheus server on 127.0.0.1 scraping a [`TestExporter`] every second, with its storage
/// in a temporary directory. Killed, and its directory removed, on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `exporter` and waits until it is ready and its first scrape
    /// landed (`up == 1`). Rates need two scrapes more: see [`Prometheus::wait_for_data`].
    pub async fn start(exporter: &TestExporter) -> anyhow::Result<Self> {
        let binary = binary()?;
        // Another test may take the free port between our check and Prometheus' bind: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut prometheus = Self::spawn(&binary, &exporter.address())?;
            match prometheus.wait_started(Duration::from_secs(30)).await {
                Ok(()) => return Ok(prometheus),
                Err(e) if attempt < 3 && prometheus.log().contains("address already in use") => {
                    eprintln!("prometheus: port {} taken, retrying: {e}", prometheus.port);
                }
                Err(e) => bail!("{e}\n----- Prometheus log -----\n{}", tail(&prometheus.log(), 30)),
            }
        }
    }

    fn spawn(binary: &Path, target: &str) -> anyhow::Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("stepwise-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s\n  scrape_timeout: {SCRAPE_INTERVAL_SECONDS}s\n  evaluation_interval: {SCRAPE_INTERVAL_SECONDS}s\n\
                 scrape_configs:\n  - job_name: stepwise-test-exporter\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Prometheus { child, port, dir })
    }

    async fn wait_started(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("Prometheus exited ({status}) before it was ready");
            }
            let last = match self.query("up == 1").await {
                Ok(Value::Array(result)) if !result.is_empty() => return Ok(()),
                Ok(other) => format!("no scrape yet (up == 1 is {other})"),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > timeout {
                bail!("Prometheus at {} not ready after {timeout:?}: {last}", self.address());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://127.0.0.1:PORT`, the `address` of metrics.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The `data.result` of an instant query (an array for vectors and matrices).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Value> {
        let body = http_get(self.port, &format!("/api/v1/query?query={}", percent_encode(promql))).await?;
        let answer: Value = serde_json::from_str(&body).with_context(|| format!("Prometheus answered {body:?}"))?;
        if answer["status"] != "success" {
            bail!("query {promql:?} failed: {} {}", answer["errorType"], answer["error"]);
        }
        Ok(answer["data"]["result"].clone())
    }

    /// Waits until `promql` returns a non-empty result (e.g. [`success_rate_query`], which needs
    /// two scrapes of the app).
    pub async fn wait_for_data(&self, promql: &str, timeout: Duration) -> anyhow::Result<()> {
        crate::eventually(&format!("data for {promql}"), timeout, || async {
            Ok(self.query(promql).await?.as_array().is_some_and(|r| !r.is_empty()))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Only the directory this fixture made.
        if self.dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("stepwise-prometheus-")) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// GET over plain HTTP/1.0, so the answer is neither chunked nor kept alive; the body of a 2xx
/// or 4xx (Prometheus explains bad queries with a 400).
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).to_string())
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange).await.context("no answer within 5 s")??;
    let (head, body) = answer.split_once("\r\n\r\n").context("an answer without a head")?;
    let status = head.lines().next().unwrap_or_default();
    if !(status.contains(" 2") || status.contains(" 400 ") || status.contains(" 422 ")) {
        bail!("GET {path}: {status}");
    }
    Ok(body.to_string())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn each_scrape_counts_a_hundred_requests_split_by_the_error_rate() {
        let mut apps: BTreeMap<String, App> = [("a".to_string(), App::default())].into();
        scrape(&mut apps);
        apps.get_mut("a").unwrap().error_rate = 0.3;
        let text = scrape(&mut apps);
        assert!(text.contains("http_requests_total{app=\"a\",code=\"200\"} 170\n"), "{text}");
        assert!(text.contains("http_requests_total{app=\"a\",code=\"500\"} 30\n"), "{text}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode("up{a=\"b\"} == 1"), "up%7Ba%3D%22b%22%7D%20%3D%3D%201");
    }

    #[test]
    fn the_exporter_serves_metrics_and_counts_scrapes() {
        let exporter = TestExporter::start(&["x"]).unwrap();
        exporter.set_error_rate(1.0);
        let get = || {
            let mut conn = TcpStream::connect(exporter.address()).unwrap();
            conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).unwrap();
            answer
        };
        get();
        let answer = get();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("http_requests_total{app=\"x\",code=\"500\"} 200\n"), "{answer}");
    }
}
