//! The load generator: sends HTTP requests to one URL (typically a router in front of a canary
//! and a stable version) and reports which versions answered, which requests failed and how,
//! second by second.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// What to send, and when to stop: at whichever of `requests` and `duration` comes first, or when
/// the caller says so. With neither bound, only the caller stops it.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The URL requested: an absolute `http://` URL.
    pub url: String,
    /// The Host header to send instead of the URL's authority, to reach a virtual host.
    pub host: Option<String>,
    /// How many requests to send at most.
    pub requests: Option<u64>,
    /// How long to send at most.
    pub duration: Option<Duration>,
    /// Requests per second, paced evenly; 0 sends as fast as `concurrency` allows.
    pub rate: f64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// How long one request may take, connecting and reading the body included.
    pub timeout: Duration,
}

/// Why a URL cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot send load to {:?}: {}", self.url, self.reason)
    }
}

impl std::error::Error for UrlError {}

impl LoadConfig {
    /// Load for `url`, unbounded, unpaced, 8 in flight, with a 5 s timeout.
    pub fn new(url: impl Into<String>) -> LoadConfig {
        LoadConfig {
            url: url.into(),
            host: None,
            requests: None,
            duration: None,
            rate: 0.0,
            concurrency: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Parses a URL load can be sent to: absolute, `http://`.
pub fn parse_url(url: &str) -> Result<Uri, UrlError> {
    let error = |reason: &str| UrlError { url: url.to_owned(), reason: reason.to_owned() };
    let parsed: Uri = url.parse().map_err(|e: http::uri::InvalidUri| error(&e.to_string()))?;
    if parsed.scheme_str() != Some("http") {
        return Err(error("only http:// URLs are supported"));
    }
    if parsed.authority().is_none() {
        return Err(error("the URL names no host"));
    }
    Ok(parsed)
}

/// Checks the settings that would otherwise only fail request by request.
fn check(config: &LoadConfig) -> anyhow::Result<(Uri, Option<HeaderValue>)> {
    let url = parse_url(&config.url)?;
    let host = match &config.host {
        Some(host) => Some(HeaderValue::from_str(host).map_err(|_| anyhow::anyhow!("invalid Host header {host:?}"))?),
        None => None,
    };
    anyhow::ensure!(config.rate.is_finite() && config.rate >= 0.0, "the rate must be 0 or more, not {}", config.rate);
    Ok((url, host))
}

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Answered with a 5xx status.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// Answered with a 4xx status.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// Refused, reset or closed before any response.
    #[serde(rename = "connect")]
    Connect,
    /// No complete answer within the timeout.
    #[serde(rename = "timeout")]
    Timeout,
    /// Anything else, such as a malformed response or a failure while reading the body.
    #[serde(rename = "other")]
    Other,
}

impl ErrorKind {
    /// The name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version recorded for a successful answer that names none.
pub const UNKNOWN_VERSION: &str = "unknown";

/// What happened in one second of the run (second `second`, counted from 0 at the start), by the
/// time each request completed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    /// Index of the second since the start.
    pub second: u64,
    /// Requests completed in this second, failed ones included.
    pub requests: u64,
    /// Successful answers by version.
    pub versions: BTreeMap<String, u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl SecondReport {
    /// Failed requests of this second.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The fraction of this second's successful answers that came from `version` (0 when none
    /// succeeded).
    pub fn share(&self, version: &str) -> f64 {
        share(&self.versions, version)
    }
}

impl fmt::Display for SecondReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}s  {} req", self.second, self.requests)?;
        write_shares(f, &self.versions)?;
        write!(f, "  errors {}", self.failed())
    }
}

/// What a run of load saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests completed, failed ones included; requests cut off by the end of the run are not
    /// counted.
    pub requests: u64,
    /// Requests answered with a status below 400.
    pub succeeded: u64,
    /// How long the run took, in seconds.
    pub elapsed_seconds: f64,
    /// Successful answers by version (from the `x-version` header, else the body's `version`).
    pub versions: BTreeMap<String, u64>,
    /// Answers with a 4xx or 5xx status by the version they named, to tell which version fails.
    pub failed_versions: BTreeMap<String, u64>,
    /// Answers by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Every second of the run, in order, including seconds without any completion.
    pub seconds: Vec<SecondReport>,
}

impl LoadReport {
    /// Requests completed, failed ones included.
    pub fn total(&self) -> u64 {
        self.requests
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Failed requests of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }

    /// The fraction of successful answers that came from `version` (0 when none succeeded).
    pub fn share(&self, version: &str) -> f64 {
        share(&self.versions, version)
    }

    /// The one-line summary that ends the human report.
    pub fn summary(&self) -> String {
        struct Summary<'a>(&'a LoadReport);
        impl fmt::Display for Summary<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let report = self.0;
                let per_second =
                    if report.elapsed_seconds > 0.0 { report.requests as f64 / report.elapsed_seconds } else { 0.0 };
                write!(f, "total  {} req in {:.1}s ({per_second:.1} req/s)", report.requests, report.elapsed_seconds)?;
                write_shares(f, &report.versions)?;
                write!(f, "  errors {}", report.failed())?;
                if !report.errors.is_empty() {
                    let kinds: Vec<String> = report.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
                    write!(f, " ({})", kinds.join(", "))?;
                }
                Ok(())
            }
        }
        Summary(self).to_string()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for second in &self.seconds {
            writeln!(f, "{second}")?;
        }
        write!(f, "{}", self.summary())
    }
}

fn share(versions: &BTreeMap<String, u64>, version: &str) -> f64 {
    let total: u64 = versions.values().sum();
    if total == 0 { 0.0 } else { versions.get(version).copied().unwrap_or(0) as f64 / total as f64 }
}

fn write_shares(f: &mut fmt::Formatter<'_>, versions: &BTreeMap<String, u64>) -> fmt::Result {
    for version in versions.keys() {
        write!(f, "  {version} {:.1}%", share(versions, version) * 100.0)?;
    }
    Ok(())
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    Answer { status: u16, version: Option<String> },
    Failure(ErrorKind),
}

/// The report being built; completion times are taken under its lock, so that once the clock
/// has passed a second, that second can no longer change.
struct Recorder {
    start: Instant,
    report: LoadReport,
}

impl Recorder {
    fn second(&mut self, index: u64) -> &mut SecondReport {
        let seconds = &mut self.report.seconds;
        while seconds.len() as u64 <= index {
            let second = seconds.len() as u64;
            seconds.push(SecondReport { second, ..SecondReport::default() });
        }
        &mut seconds[index as usize]
    }

    fn record(&mut self, outcome: Outcome) {
        let index = self.start.elapsed().as_secs();
        let report = &mut self.report;
        report.requests += 1;
        let error = match outcome {
            Outcome::Answer { status, version } => {
                *report.codes.entry(status).or_default() += 1;
                let kind = match status {
                    500.. => Some(ErrorKind::Http5xx),
                    400..500 => Some(ErrorKind::Http4xx),
                    _ => None,
                };
                match kind {
                    Some(kind) => {
                        if let Some(version) = version {
                            *report.failed_versions.entry(version).or_default() += 1;
                        }
                        Err(kind)
                    }
                    None => Ok(version.unwrap_or_else(|| UNKNOWN_VERSION.to_owned())),
                }
            }
            Outcome::Failure(kind) => Err(kind),
        };
        match &error {
            Ok(version) => {
                report.succeeded += 1;
                *report.versions.entry(version.clone()).or_default() += 1;
            }
            Err(kind) => *report.errors.entry(*kind).or_default() += 1,
        }
        let second = self.second(index);
        second.requests += 1;
        match error {
            Ok(version) => *second.versions.entry(version).or_default() += 1,
            Err(kind) => *second.errors.entry(kind).or_default() += 1,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends the load `config` describes and reports what answered. Stops at the first bound
/// reached, or when `stop` turns true; requests in flight then are abandoned and not counted.
/// Fails only if `config` is invalid (a URL that is not `http://`, a bad Host, a negative rate);
/// failed requests are counted in the report, not returned as errors.
pub async fn run(config: LoadConfig, stop: Option<watch::Receiver<bool>>) -> anyhow::Result<LoadReport> {
    run_with_progress(config, stop, None).await
}

/// [`run`], also sending each second's report to `progress` as soon as the second is over (and
/// the last, partial one at the end), to show the load live.
pub async fn run_with_progress(
    config: LoadConfig,
    stop: Option<watch::Receiver<bool>>,
    progress: Option<mpsc::UnboundedSender<SecondReport>>,
) -> anyhow::Result<LoadReport> {
    let (url, host) = check(&config)?;
    let target = Arc::new(Target { url, host, timeout: config.timeout });
    let concurrency = config.concurrency.max(1);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);

    let start = Instant::now();
    let recorder = Arc::new(Mutex::new(Recorder { start, report: LoadReport::default() }));
    let next_ticket = Arc::new(AtomicU64::new(0));

    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, target, recorder, next_ticket) =
            (client.clone(), Arc::clone(&target), Arc::clone(&recorder), Arc::clone(&next_ticket));
        let (requests, rate) = (config.requests, config.rate);
        workers.spawn(async move {
            loop {
                let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                if requests.is_some_and(|requests| ticket >= requests) {
                    return;
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(ticket as f64 / rate)).await;
                }
                let outcome = send(&client, &target).await;
                lock(&recorder).record(outcome);
            }
        });
    }

    let deadline = config.duration.map(|duration| start + duration);
    let end = async move {
        let deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => {}
            () = stopped(stop) => {}
        }
    };
    tokio::pin!(end);
    let mut ticks = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut reported = 0u64;
    let mut report_until = |recorder: &mut Recorder, until: u64| {
        while reported < until {
            let second = recorder.second(reported).clone();
            if let Some(progress) = &progress {
                // A closed receiver only means nobody watches any more.
                let _ = progress.send(second);
            }
            reported += 1;
        }
    };

    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Some(_) => {}
            },
            () = &mut end => break,
            _ = ticks.tick() => {
                let mut recorder = lock(&recorder);
                let over = recorder.start.elapsed().as_secs();
                report_until(&mut recorder, over);
            }
        }
    }
    workers.abort_all();

    let mut recorder = lock(&recorder);
    let elapsed = start.elapsed();
    let seconds = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0);
    let seconds = seconds.max(recorder.report.seconds.len() as u64);
    report_until(&mut recorder, seconds);
    recorder.report.elapsed_seconds = elapsed.as_secs_f64();
    Ok(std::mem::take(&mut recorder.report))
}

/// What every request is sent to, checked once.
struct Target {
    url: Uri,
    host: Option<HeaderValue>,
    timeout: Duration,
}

/// Resolves once `stop` turns true; never if there is none or its sender is gone.
async fn stopped(stop: Option<watch::Receiver<bool>>) {
    if let Some(mut stop) = stop
        && stop.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn send(client: &Client<HttpConnector, Empty<Bytes>>, target: &Target) -> Outcome {
    let mut request = Request::get(target.url.clone()).body(Empty::new()).expect("a GET of a valid URI");
    if let Some(host) = &target.host {
        request.headers_mut().insert(HOST, host.clone());
    }
    let exchange = async {
        let response = client.request(request).await.map_err(|error| classify(&error))?;
        let status = response.status().as_u16();
        let header = response.headers().get("x-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await.map_err(|_| ErrorKind::Other)?.to_bytes();
        let version = header.or_else(|| {
            let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
            json.get("version")?.as_str().map(str::to_owned)
        });
        Ok::<_, ErrorKind>(Outcome::Answer { status, version })
    };
    match tokio::time::timeout(target.timeout, exchange).await {
        Err(_elapsed) => Outcome::Failure(ErrorKind::Timeout),
        Ok(Err(kind)) => Outcome::Failure(kind),
        Ok(Ok(outcome)) => outcome,
    }
}

/// Sorts a client error: no connection, or a connection that ended before any response, counts as
/// `connect`, the way a router would see a backend that is gone.
fn classify(error: &hyper_util::client::legacy::Error) -> ErrorKind {
    if error.is_connect() {
        return ErrorKind::Connect;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed())
        {
            return ErrorKind::Connect;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return ErrorKind::Connect;
        }
        source = cause.source();
    }
    ErrorKind::Other
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1h` or `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        Recorder { start: Instant::now(), report: LoadReport::default() }
    }

    fn answer(status: u16, version: Option<&str>) -> Outcome {
        Outcome::Answer { status, version: version.map(str::to_owned) }
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(parse_url("http://127.0.0.1:8080/path").is_ok());
        for url in ["https://example.com/", "127.0.0.1:8080", "/path", "not a url", "ftp://host/"] {
            let error = parse_url(url).unwrap_err();
            assert_eq!(error.url, url);
        }
    }

    #[tokio::test]
    async fn an_invalid_config_fails_the_run_before_sending() {
        for config in [
            LoadConfig::new("https://127.0.0.1/"),
            LoadConfig { host: Some("bad\nhost".into()), ..LoadConfig::new("http://127.0.0.1/") },
            LoadConfig { rate: -1.0, ..LoadConfig::new("http://127.0.0.1/") },
        ] {
            assert!(run(config.clone(), None).await.is_err(), "{config:?}");
        }
    }

    #[test]
    fn a_new_config_is_unbounded_unpaced_with_eight_in_flight_and_a_five_second_timeout() {
        let config = LoadConfig::new("http://127.0.0.1/");
        assert_eq!((config.requests, config.duration, config.rate), (None, None, 0.0));
        assert_eq!((config.concurrency, config.timeout), (8, Duration::from_secs(5)));
    }

    #[test]
    fn successes_count_by_version_and_failures_by_kind_and_version() {
        let mut recorder = recorder();
        for outcome in [
            answer(200, Some("v1")),
            answer(200, Some("v1")),
            answer(204, Some("v2")),
            answer(200, None),
            answer(500, Some("v2")),
            answer(503, None),
            answer(404, Some("v1")),
            Outcome::Failure(ErrorKind::Connect),
            Outcome::Failure(ErrorKind::Timeout),
        ] {
            recorder.record(outcome);
        }
        let report = recorder.report;
        assert_eq!((report.total(), report.succeeded, report.failed()), (9, 4, 5));
        assert_eq!(report.versions, BTreeMap::from([("v1".into(), 2), ("v2".into(), 1), ("unknown".into(), 1)]));
        assert_eq!(report.failed_versions, BTreeMap::from([("v1".into(), 1), ("v2".into(), 1)]));
        assert_eq!(report.codes, BTreeMap::from([(200, 3), (204, 1), (404, 1), (500, 1), (503, 1)]));
        assert_eq!(
            report.errors,
            BTreeMap::from([
                (ErrorKind::Http5xx, 2),
                (ErrorKind::Http4xx, 1),
                (ErrorKind::Connect, 1),
                (ErrorKind::Timeout, 1)
            ])
        );
        assert_eq!(report.share("v1"), 0.5);
        assert_eq!(report.share("v3"), 0.0);
        assert_eq!(report.seconds.len(), 1);
        assert_eq!((report.seconds[0].requests, report.seconds[0].failed()), (9, 5));
    }

    #[test]
    fn the_share_of_a_report_without_successes_is_zero() {
        let mut recorder = recorder();
        recorder.record(Outcome::Failure(ErrorKind::Connect));
        assert_eq!(recorder.report.share("v1"), 0.0);
    }

    #[test]
    fn the_human_report_has_a_line_per_second_and_a_summary() {
        let report = LoadReport {
            requests: 201,
            succeeded: 200,
            elapsed_seconds: 2.0,
            versions: BTreeMap::from([("v1".into(), 159), ("v2".into(), 41)]),
            errors: BTreeMap::from([(ErrorKind::Timeout, 1)]),
            seconds: vec![
                SecondReport { second: 0, requests: 0, ..SecondReport::default() },
                SecondReport {
                    second: 1,
                    requests: 201,
                    versions: BTreeMap::from([("v1".into(), 159), ("v2".into(), 41)]),
                    errors: BTreeMap::from([(ErrorKind::Timeout, 1)]),
                },
            ],
            ..LoadReport::default()
        };
        assert_eq!(
            report.to_string(),
            "t=0s  0 req  errors 0\n\
             t=1s  201 req  v1 79.5%  v2 20.5%  errors 1\n\
             total  201 req in 2.0s (100.5 req/s)  v1 79.5%  v2 20.5%  errors 1 (timeout 1)"
        );
    }

    #[test]
    fn the_json_report_names_error_kinds_as_in_the_human_report() {
        let report = LoadReport {
            errors: BTreeMap::from([(ErrorKind::Http5xx, 2), (ErrorKind::Connect, 1)]),
            ..LoadReport::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"], serde_json::json!({"http_5xx": 2, "connect": 1}));
        let back: LoadReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn durations_take_common_units_and_bare_seconds() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("3", Duration::from_secs(3)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        for text in ["", "s", "10x", "-1s", "1e3s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
