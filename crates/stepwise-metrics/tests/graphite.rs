//! The Graphite provider against a real Graphite: Debian's graphite-carbon (carbon-cache, which
//! receives points over its plain-text protocol and writes them to whisper files) and
//! graphite-web (the render API, a Django app), which scripts/graphite.sh installs. Each test run
//! starts both in a temporary directory, on 127.0.0.1 and free ports, with Debian's
//! /usr/bin/python3 (carbon-cache, then graphite-web's `graphite-manage migrate` and `runserver`
//! with a settings module of the test's pointing at that directory), feeds known points, waits
//! until the render API answers them, and stops both at the end.
//!
//! The metric is Argo Rollouts' own example (docs/analysis/graphite.md), read from its YAML, with
//! its address pointed at the test's graphite-web.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::graphite::{GraphiteMetric, GraphiteProvider};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

/// Debian's python, for which graphite-carbon and graphite-web are installed (the one first on
/// PATH may be another).
const PYTHON: &str = "/usr/bin/python3";
const CARBON_CACHE: &str = "/usr/bin/carbon-cache";
const GRAPHITE_MANAGE: &str = "/usr/bin/graphite-manage";

/// Argo Rollouts' Graphite example, docs/analysis/graphite.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
  - name: service-name
  metrics:
  - name: success-rate
    interval: 5m
    # Note that the Argo Rollouts Graphite metrics provider returns results as an array of float64s with 6 decimal places.
    successCondition: results[0] >= 90.000000
    failureLimit: 3
    provider:
      graphite:
        address: http://graphite.example.com:9090
        query: |
          target=summarize(
            asPercent(
              sumSeries(
                stats.timers.httpServerRequests.app.{{args.service-name}}.exception.*.method.*.outcome.{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}.status.*.uri.*.count
              ),
              sumSeries(
                stats.timers.httpServerRequests.app.{{args.service-name}}.exception.*.method.*.outcome.*.status.*.uri.*.count
              )
            ),
            '5min',
            'avg'
          )
"#;

/// The example's metric, its argument substituted as the controller does, its address `address`.
fn example(address: &str) -> Metric {
    let yaml =
        ARGO_TEMPLATE.replace("{{args.service-name}}", "checkout").replace("http://graphite.example.com:9090", address);
    let template: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

/// The example's metric with another query.
fn with_query(address: &str, query: &str) -> Metric {
    let mut metric = example(address);
    metric.provider.graphite = Some(json!({"address": address, "query": query}));
    metric
}

async fn measure(metric: &Metric) -> Result<Taken, Error> {
    GraphiteProvider::new().run(&RunRef::default(), metric).await
}

/// The numbers of a reading that is a list of numbers.
fn numbers(taken: &Taken) -> Vec<f64> {
    match &taken.reading {
        Reading::Value(Value::Array(values)) => {
            values.iter().map(|v| v.as_f64().unwrap_or_else(|| panic!("{v} in {:?}", taken.reading))).collect()
        }
        other => panic!("not a list: {other:?}"),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// A Graphite of the test's own.

/// carbon-cache and graphite-web in a temporary directory, killed and removed on drop.
struct Graphite {
    dir: PathBuf,
    carbon: Child,
    web: Option<Child>,
    /// carbon's plain-text receiver.
    line: SocketAddr,
    /// `http://127.0.0.1:PORT`, graphite-web.
    address: String,
}

/// A port free on 127.0.0.1 (the listener is closed before the server binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Graphite {
    fn start() -> Graphite {
        for program in [PYTHON, CARBON_CACHE, GRAPHITE_MANAGE] {
            assert!(Path::new(program).exists(), "{program} is missing: run scripts/graphite.sh");
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("stepwise-graphite-{}-{nanos}", std::process::id()));
        for sub in ["whisper", "log/carbon", "log/webapp", "lists"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let (line, pickle, query, http) = (free_port(), free_port(), free_port(), free_port());
        std::fs::write(
            dir.join("carbon.conf"),
            format!(
                "[cache]\nSTORAGE_DIR = {d}\nLOCAL_DATA_DIR = {d}/whisper\nWHITELISTS_DIR = {d}/lists\nCONF_DIR = \
                 {d}\nLOG_DIR = {d}/log/carbon\nPID_DIR = {d}\nENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = \
                 inf\nMAX_UPDATES_PER_SECOND = inf\nMAX_CREATES_PER_MINUTE = inf\nLINE_RECEIVER_INTERFACE = \
                 127.0.0.1\nLINE_RECEIVER_PORT = {line}\nENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = \
                 127.0.0.1\nPICKLE_RECEIVER_PORT = {pickle}\nCACHE_QUERY_INTERFACE = 127.0.0.1\nCACHE_QUERY_PORT = \
                 {query}\nLOG_LISTENER_CONN_SUCCESS = False\nLOG_UPDATES = False\nLOG_CREATES = False\n"
            ),
        )
        .unwrap();
        // Ten-second points for a day: the example's default window (no `from`) is 24 hours.
        std::fs::write(dir.join("storage-schemas.conf"), "[default]\npattern = .*\nretentions = 10s:1d\n").unwrap();
        std::fs::write(
            dir.join("stepwise_graphite_local.py"),
            format!(
                "SECRET_KEY = 'stepwise-graphite-test'\nSTORAGE_DIR = '{d}'\nWHISPER_DIR = '{d}/whisper'\nLOG_DIR = \
                 '{d}/log/webapp'\nINDEX_FILE = '{d}/index'\nCARBONLINK_HOSTS = ['127.0.0.1:{query}:a']\nDATABASES = \
                 {{'default': {{'NAME': '{d}/graphite.db', 'ENGINE': 'django.db.backends.sqlite3'}}}}\n"
            ),
        )
        .unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
        let carbon = Command::new(PYTHON)
            .arg(CARBON_CACHE)
            .arg(format!("--config={d}/carbon.conf"))
            .arg(format!("--pidfile={d}/carbon.pid"))
            .arg(format!("--logdir={d}/log/carbon"))
            .args(["--nodaemon", "start"])
            .stdin(Stdio::null())
            .stdout(log("carbon.out"))
            .stderr(log("carbon.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("{CARBON_CACHE} does not start ({e}): run scripts/graphite.sh"));
        let mut graphite = Graphite {
            dir: dir.clone(),
            carbon,
            web: None,
            line: ([127, 0, 0, 1], line).into(),
            address: format!("http://127.0.0.1:{http}"),
        };
        let manage = |args: &[&str]| {
            let mut command = Command::new(PYTHON);
            command
                .arg(GRAPHITE_MANAGE)
                .args(args)
                .env("PYTHONPATH", &graphite.dir)
                .env("GRAPHITE_SETTINGS_MODULE", "stepwise_graphite_local")
                .env("DJANGO_SETTINGS_MODULE", "graphite.settings")
                .stdin(Stdio::null());
            command
        };
        let migrate = manage(&["migrate", "--run-syncdb", "--noinput"]).output().unwrap();
        assert!(
            migrate.status.success(),
            "graphite-manage migrate failed: {}{}",
            String::from_utf8_lossy(&migrate.stdout),
            String::from_utf8_lossy(&migrate.stderr)
        );
        let web = manage(&["runserver", &format!("127.0.0.1:{http}"), "--noreload"])
            .stdout(log("web.out"))
            .stderr(log("web.err"))
            .spawn()
            .unwrap();
        graphite.web = Some(web);
        let (line, web) = (graphite.line, SocketAddr::from(([127, 0, 0, 1], http)));
        graphite.wait_for("carbon's line receiver", || TcpStream::connect(line).is_ok());
        graphite.wait_for("graphite-web", || TcpStream::connect(web).is_ok());
        graphite
    }

    /// Waits up to a minute for `ready`, failing with the servers' logs.
    fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            let exited = [Some(&mut self.carbon), self.web.as_mut()]
                .into_iter()
                .flatten()
                .any(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                panic!("{what} is not ready{}: {}", if exited { " (a server exited)" } else { "" }, self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The servers' output, for failures.
    fn logs(&self) -> String {
        ["carbon.out", "carbon.err", "web.out", "web.err"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!("\n--- {f}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect()
    }

    /// Sends `points` (`(path, value, epoch seconds)`) over carbon's plain-text protocol.
    fn feed(&self, points: &[(String, f64, i64)]) {
        let mut conn = TcpStream::connect(self.line).unwrap();
        let text: String = points.iter().map(|(path, value, time)| format!("{path} {value} {time}\n")).collect();
        conn.write_all(text.as_bytes()).unwrap();
    }

    /// Asks the render API until `done` holds for its answer to `query` (up to a minute).
    async fn until(&self, query: &str, done: impl Fn(&Value) -> bool) {
        let client = reqwest_client();
        let url = format!("{}/render?{query}&format=json", self.address);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(response) = client.get(&url).send().await
                && let Ok(answer) = response.json::<Value>().await
            {
                if done(&answer) {
                    return;
                }
                last = answer;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("the render API did not answer the points fed for {query}: last answer {last}{}", self.logs());
    }
}

impl Drop for Graphite {
    fn drop(&mut self) {
        for child in [Some(&mut self.carbon), self.web.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn reqwest_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (see web.rs); ring is the crate's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A series of the example: `stats.timers.httpServerRequests.app.checkout…` with this outcome
/// and status.
fn request_count(outcome: &str, status: u16) -> String {
    format!(
        "stats.timers.httpServerRequests.app.checkout.exception.None.method.GET.outcome.{outcome}.status.{status}.uri.\
         root.count"
    )
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_graphite() {
    let graphite = Graphite::start();
    let now = now();

    // The example's series: in one whole five-minute bucket in the past (the example summarizes
    // by 5min, aligned to the epoch), 90 successes, 4 redirections and 6 server errors every ten
    // seconds: 94 % of the requests are in the example's numerator.
    let bucket = (now - 300) - (now - 300).rem_euclid(300);
    let mut points = Vec::new();
    for t in (bucket..bucket + 300).step_by(10) {
        points.push((request_count("SUCCESS", 200), 90.0, t));
        points.push((request_count("REDIRECTION", 302), 4.0, t));
        points.push((request_count("SERVER_ERROR", 500), 6.0, t));
    }
    // A plain series of the last minute with gaps: 1, 2 and 3, twenty seconds apart.
    let recent = now - now.rem_euclid(10) - 60;
    for (i, t) in [recent, recent + 20, recent + 40].into_iter().enumerate() {
        points.push(("app.requests.count".into(), i as f64 + 1.0, t));
    }
    graphite.feed(&points);
    let full = |answer: &Value, count: usize| {
        answer.as_array().is_some_and(|series| {
            series.len() == count
                && series.iter().all(|s| {
                    let points = s["datapoints"].as_array().map(Vec::as_slice).unwrap_or_default();
                    points.iter().filter(|p| !p[0].is_null()).count() == if count == 3 { 30 } else { 3 }
                })
        })
    };
    let example_series =
        "stats.timers.httpServerRequests.app.checkout.exception.*.method.*.outcome.*.status.*.uri.*.count";
    graphite.until(&format!("target={example_series}&from=-24h"), |a| full(a, 3)).await;
    graphite.until("target=app.requests.count&from=-5min", |a| full(a, 1)).await;

    // Argo's example: one bucket of the summary has values, 94 %; the others are null, dropped.
    let taken = measure(&example(&graphite.address)).await.unwrap();
    let values = numbers(&taken);
    assert_eq!(values.len(), 1, "{values:?}");
    assert!((values[0] - 94.0).abs() < 1e-9, "{values:?}");
    assert!(taken.metadata.is_empty(), "{:?}", taken.metadata);

    // The non-null values of the first series, in time order; `from` is the query's.
    let taken = measure(&with_query(&graphite.address, "target=app.requests.count&from=-5min")).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([1.0, 2.0, 3.0])));
    // Only the first series counts: here of the example's series sorted by name, REDIRECTION's.
    let many = format!("target=sortByName({example_series})&from=-24h");
    let taken = measure(&with_query(&graphite.address, &many)).await.unwrap();
    assert_eq!(numbers(&taken), vec![4.0; 30]);
    // A window without points: the series is only nulls, an empty list (Argo's empty results).
    let before = format!("target=app.requests.count&from={}&until={}", recent - 600, recent - 300);
    let taken = measure(&with_query(&graphite.address, &before)).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([])));

    // A metric Graphite does not have: no series, no data.
    let err = measure(&with_query(&graphite.address, "target=app.no.such.metric&from=-5min")).await.unwrap_err();
    assert!(matches!(&err, Error::NoData { metric } if metric == "success-rate"), "{err:?}");
    assert_eq!(err.to_string(), "metric success-rate returned no data");

    // A query Graphite refuses: its HTTP status and its words.
    let err = measure(&with_query(&graphite.address, "target=noSuchFunction(app.requests.count)&from=-5min"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("Graphite at {}: HTTP 400 Bad Request: ", graphite.address)), "{text}");
    assert!(text.contains("unknown function: noSuchFunction"), "{text}");

    // The example's query string as Argo reads it: whitespace gone, format=json, sorted.
    let url = GraphiteMetric::from_metric(&example(&graphite.address)).unwrap().render_url().unwrap();
    assert_eq!(url.path(), "/render");
    assert!(url.query().unwrap().starts_with("format=json&target=summarize%28asPercent%28sumSeries%28stats."), "{url}");
    drop(graphite);
}

#[tokio::test]
async fn an_unreachable_graphite_is_an_error_naming_it() {
    let address = format!("http://127.0.0.1:{}", free_port());
    let err = measure(&example(&address)).await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("Graphite at {address}: cannot connect")), "{err}");
}

#[tokio::test]
async fn a_bad_metric_is_refused_before_any_request() {
    let metric = with_query("http://127.0.0.1:9", "sumSeries(app.*.count)");
    let err = measure(&metric).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.graphite.query", .. }), "{err:?}");
    let mut metric = example("http://127.0.0.1:9");
    metric.provider.graphite = Some(json!({"query": "target=a"}));
    let err = measure(&metric).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.graphite", .. }), "{err:?}");
}
