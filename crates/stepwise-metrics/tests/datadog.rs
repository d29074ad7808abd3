//! The Datadog provider against a local server that follows Datadog's published API (the OpenAPI
//! specification of `GET /api/v1/query` and `POST /api/v2/query/scalar`, and the rate-limit
//! headers of docs.datadoghq.com/api/latest/rate-limits). The server checks every request the
//! provider sends against that specification and answers a deviation with a 400 listing it; each
//! test also asserts that there was none. The metrics are Argo Rollouts' own examples
//! (docs/analysis/datadog.md), read from their YAML.
//!
//! The same metrics against the real Datadog: put an API key and an application key (one allowed
//! to query timeseries) in the environment and run the ignored test,
//!
//! ```text
//! DD_API_KEY=… DD_APP_KEY=… DD_ADDRESS=https://api.datadoghq.eu \
//!   cargo test -p stepwise-metrics --test datadog -- --ignored --nocapture real_datadog
//! ```
//!
//! It puts the keys and `DD_ADDRESS` (your site's API address; https://api.datadoghq.com when
//! unset) in the Secret `datadog`, where the controller reads them in a cluster, and measures
//! `DD_QUERY` (default `avg:system.cpu.user{*}`, any agent reports it) with each API version.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Answer, Request, serve, serve_silence};
use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::datadog::DatadogProvider;
use stepwise_metrics::secrets::FixedSecrets;
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Keys of the shape Datadog issues (32 and 40 hex digits); the server accepts only these.
const API_KEY: &str = "0123456789abcdef0123456789abcdef";
const APP_KEY: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// The controller's namespace, and the namespace of the AnalysisRun.
const CONTROLLER_NS: &str = "stepwise-system";
const RUN_NS: &str = "team-a";

// ---------------------------------------------------------------------------------------------
// Argo Rollouts' examples, docs/analysis/datadog.md, as written there.

/// The first example: v2 with one `query`.
const LOQ_ERROR_RATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: loq-error-rate
spec:
  args:
  - name: service-name
  metrics:
  - name: error-rate
    interval: 5m
    successCondition: result <= 0.01
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        query: |
          sum:requests.error.rate{service:{{args.service-name}}}
"#;

/// The namespaced Secret example.
const NAMESPACED_SECRET: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: loq-error-rate
spec:
  args:
  - name: service-name
  metrics:
  - name: error-rate
    interval: 5m
    successCondition: result <= 0.01
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        secretRef:
          name: "mysecret"
          namespaced: true
        query: |
          sum:requests.error.rate{service:{{args.service-name}}}
"#;

/// "Moving to v2", before: a v1 query with a formula in it.
const BEFORE_V1: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: log-error-rate
spec:
  args:
  - name: service-name
  metrics:
  - name: error-rate
    interval: 30s
    successCondition: default(result, 0) < 10
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v1
        interval: 5m
        query: "moving_rollup(sum:requests.errors{service:{{args.service-name}}}.as_count(), 60, 'sum') / sum:requests{service:{{args.service-name}}}.as_count()"
"#;

/// "Moving to v2", after: `queries` and a `formula`.
const AFTER_V2: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: loq-error-rate
spec:
  args:
  - name: service-name
  metrics:
  - name: error-rate
    # Polling rate against the Datadog API
    interval: 30s
    successCondition: default(result, 0) < 10
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        # The window of time we are looking at in DD. Basically we will fetch data from (now-5m) to now.
        interval: 5m
        queries:
          a: sum:requests.errors{service:{{args.service-name}}}.as_count()
          b: sum:requests{service:{{args.service-name}}}.as_count()
        formula: "moving_rollup(a, 60, 'sum') / b"
"#;

/// "Simple v2 query with no formula".
const CONTAINER_RESTARTS: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: canary-container-restarts
spec:
  args:
    # This is set in rollout using the valueFrom: podTemplateHashValue functionality
    - name: canary-hash
    - name: service-name
    - name: restarts.initial-delay
      value: "60s"
    - name: restarts.max-restarts
      value: "4"
  metrics:
    - name: kubernetes.containers.restarts
      initialDelay: "{{ args.restarts.initial-delay }}"
      interval: 15s
      failureCondition: default(result, 0) > {{ args.restarts.max-restarts }}
      failureLimit: 0
      provider:
        datadog:
          apiVersion: v2
          interval: 5m
          queries:
            # The key is arbitrary - you will use this key to refer to the query if you use a formula.
            q: "max:kubernetes.containers.restarts{service-name:{{args.service-name}},rollouts_pod_template_hash:{{args.canary-hash}}}"
"#;

/// "Metric aggregation (v2 only)" (the docs show the metrics list of a template).
const AGGREGATION: &str = r#"
  metrics:
  - name: error-percentage
    interval: 30s
    successCondition: default(result, 0) < 5
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        aggregator: sum # override default aggregator
        queries:
          a: count:requests.errors{service:my-service}.as_count()
          b: count:requests{service:my-service}.as_count()
        formula: "moving_rollup(a, 300, 'sum') / moving_rollup(b, 300, 'sum') * 100" # percentage of requests with errors
"#;

/// "Request timeout" (the docs show the metrics list of a template).
const REQUEST_TIMEOUT: &str = r#"
  metrics:
  - name: error-percentage
    interval: 30s
    successCondition: default(result, 0) < 5
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        requestTimeout: 30s # override the default 10s HTTP client timeout
        queries:
          a: count:requests.errors{service:my-service}.as_count()
          b: count:requests{service:my-service}.as_count()
        formula: "moving_rollup(a, 300, 'sum') / moving_rollup(b, 300, 'sum') * 100"
"#;

/// "Grouped queries with `by {tag}`" (the docs show the metrics list of a template).
const GROUPED: &str = r#"
  metrics:
  - name: per-endpoint-error-rate
    interval: 30s
    successCondition: max(result) < 0.05 # fail if ANY endpoint exceeds the threshold
    failureLimit: 3
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        query: "sum:trace.http.request.errors{service:my-service} by {resource_name}.as_count()"
"#;

/// The first metric of a template (or of a `metrics:` list), its `{{args.*}}` replaced by `args`
/// as the controller replaces them before a measurement.
fn metric(yaml: &str, args: &[(&str, &str)]) -> Metric {
    let mut text = yaml.to_string();
    for (name, value) in args {
        text = text.replace(&format!("{{{{args.{name}}}}}"), value).replace(&format!("{{{{ args.{name} }}}}"), value);
    }
    assert!(!text.contains("{{"), "an argument is left: {text}");
    let document: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let metrics = document.get("spec").unwrap_or(&document).get("metrics").expect("a metrics list");
    serde_yaml::from_value(metrics[0].clone()).unwrap()
}

fn checkout() -> [(&'static str, &'static str); 1] {
    [("service-name", "checkout")]
}

/// `metric` with its datadog block changed by `edit`.
fn edited(mut metric: Metric, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Metric {
    edit(metric.provider.datadog.as_mut().and_then(Value::as_object_mut).unwrap());
    metric
}

// ---------------------------------------------------------------------------------------------
// A local Datadog.

impl Request {
    /// A query parameter's seconds since the Unix epoch.
    fn seconds(&self, name: &str) -> i64 {
        self.param(name).unwrap().parse().unwrap()
    }
}

/// A request and how it deviated from Datadog's API.
#[derive(Clone, Debug)]
struct Exchange {
    request: Request,
    deviations: Vec<String>,
}

/// How the local Datadog answers a request that followed the API, with the right keys.
type Answering = dyn Fn(&Request) -> Answer + Send + Sync;

/// Datadog on 127.0.0.1. Requests that deviate from the API are answered 400 with the deviations
/// as Datadog's `errors`; requests without the right keys 403 `{"errors": ["Forbidden"]}`, as
/// Datadog does; the others as `answer` says.
struct Datadog {
    url: String,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Datadog {
    async fn start(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Datadog {
        let log = Arc::new(Mutex::new(Vec::new()));
        let served = log.clone();
        let url = serve(move |request| {
            let deviations = deviations_from_datadogs_api(request);
            let reply = if !deviations.is_empty() {
                Answer::json(400, json!({"errors": deviations}))
            } else if request.header("dd-api-key") != Some(API_KEY)
                || request.header("dd-application-key") != Some(APP_KEY)
            {
                Answer::json(403, json!({"errors": ["Forbidden"]}))
            } else {
                answer(request)
            };
            served.lock().unwrap().push(Exchange { request: request.clone(), deviations });
            reply
        })
        .await;
        Datadog { url, log }
    }

    /// Every request so far; fails the test if any deviated from Datadog's API.
    fn requests(&self) -> Vec<Request> {
        let log = self.log.lock().unwrap().clone();
        for exchange in &log {
            assert!(
                exchange.deviations.is_empty(),
                "the provider's request deviates from Datadog's API: {:?}\n{:#?}",
                exchange.deviations,
                exchange.request
            );
        }
        log.into_iter().map(|e| e.request).collect()
    }

    /// The one request so far, which followed Datadog's API.
    fn only_request(&self) -> Request {
        let mut requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.remove(0)
    }

    /// The Secret `datadog` in the controller's namespace, pointing at this server.
    fn secret(&self) -> FixedSecrets {
        FixedSecrets::default().with(
            CONTROLLER_NS,
            "datadog",
            &[("api-key", API_KEY), ("app-key", APP_KEY), ("address", &self.url)],
        )
    }
}

fn now_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// How far a request's `to` may be from the server's clock.
const CLOCK_SLACK_SECONDS: i64 = 30;

/// Datadog's metric aggregators (`MetricsAggregator` of the v2 specification).
const AGGREGATORS: [&str; 9] = ["avg", "min", "max", "sum", "last", "percentile", "mean", "l2norm", "area"];

/// What in `request` deviates from Datadog's published API; empty when nothing does.
fn deviations_from_datadogs_api(request: &Request) -> Vec<String> {
    let mut out = Vec::new();
    // Security schemes apiKeyAuth and appKeyAuth: the keys are headers. The query-string
    // variants are deprecated, and would put the keys in every proxy's access log.
    for header in ["dd-api-key", "dd-application-key"] {
        if request.header(header).is_none_or(str::is_empty) {
            out.push(format!("no {header} header"));
        }
    }
    for param in ["api_key", "application_key"] {
        if request.param(param).is_some() {
            out.push(format!("the key {param} is in the query string"));
        }
    }
    if request.header("host").is_none() {
        out.push("no Host header".into());
    }
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/api/v1/query") => check_v1(request, &mut out),
        ("POST", "/api/v2/query/scalar") => check_v2(request, &mut out),
        (method, path) => out.push(format!("{method} {path} is not Datadog's v1 query or v2 scalar query endpoint")),
    }
    out
}

/// `GET /api/v1/query` (operation QueryMetrics): `from`, `to` (int64, seconds since the Unix
/// epoch) and `query`, all required, in the query string.
fn check_v1(request: &Request, out: &mut Vec<String>) {
    for (name, _) in &request.params {
        if !["from", "to", "query"].contains(&name.as_str()) {
            out.push(format!("unknown query parameter {name}"));
        }
        if request.params.iter().filter(|(n, _)| n == name).count() > 1 {
            out.push(format!("query parameter {name} given twice"));
        }
    }
    let int = |name: &str, out: &mut Vec<String>| match request.param(name).map(str::parse::<i64>) {
        None => {
            out.push(format!("required query parameter {name} is missing"));
            None
        }
        Some(Err(_)) => {
            out.push(format!("{name} is not an int64: {:?}", request.param(name).unwrap_or_default()));
            None
        }
        Some(Ok(v)) => Some(v),
    };
    let (from, to) = (int("from", out), int("to", out));
    if let (Some(from), Some(to)) = (from, to) {
        if to > 100_000_000_000 {
            out.push(format!("to {to} is in milliseconds; v1 takes seconds since the Unix epoch"));
        } else if (to - now_seconds()).abs() > CLOCK_SLACK_SECONDS {
            out.push(format!("to {to} is not now ({})", now_seconds()));
        }
        if from >= to {
            out.push(format!("from {from} is not before to {to}"));
        }
    }
    match request.param("query") {
        None => out.push("required query parameter query is missing".into()),
        Some(q) if q.trim().is_empty() => out.push("query is empty".into()),
        Some(_) => {}
    }
    if !request.body.is_empty() {
        out.push("a GET with a body".into());
    }
}

/// `POST /api/v2/query/scalar` (operation QueryScalarData): a JSON `ScalarFormulaQueryRequest`.
fn check_v2(request: &Request, out: &mut Vec<String>) {
    if !request.params.is_empty() {
        out.push(format!("unexpected query string {:?}", request.params));
    }
    if !request.header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        out.push(format!("Content-Type is {:?}, not application/json", request.header("content-type")));
    }
    let body: Value = match serde_json::from_str(&request.text()) {
        Ok(v) => v,
        Err(e) => {
            out.push(format!("the body is not JSON: {e}"));
            return;
        }
    };
    let keys = |v: &Value, allowed: &[&str], at: &str, out: &mut Vec<String>| match v.as_object() {
        None => {
            out.push(format!("{at} is not an object"));
            false
        }
        Some(o) => {
            for k in o.keys().filter(|k| !allowed.contains(&k.as_str())) {
                out.push(format!("{at} has no property {k} in the specification"));
            }
            true
        }
    };
    // ScalarFormulaQueryRequest: {data (required)}.
    if !keys(&body, &["data"], "the body", out) {
        return;
    }
    let Some(data) = body.get("data") else { return out.push("data is required".into()) };
    // ScalarFormulaRequest: {attributes, type}, both required; type is scalar_request.
    if !keys(data, &["attributes", "type"], "data", out) {
        return;
    }
    if data.get("type") != Some(&json!("scalar_request")) {
        out.push(format!("data.type is {:?}, not scalar_request", data.get("type")));
    }
    let Some(attributes) = data.get("attributes") else { return out.push("data.attributes is required".into()) };
    // ScalarFormulaRequestAttributes: from, to (int64 ms, required), queries (required), formulas.
    if !keys(attributes, &["from", "to", "queries", "formulas"], "data.attributes", out) {
        return;
    }
    let ms = |name: &str, out: &mut Vec<String>| match attributes.get(name) {
        None => {
            out.push(format!("data.attributes.{name} is required"));
            None
        }
        Some(v) => v.as_i64().or_else(|| {
            out.push(format!("data.attributes.{name} is not an int64: {v}"));
            None
        }),
    };
    if let (Some(from), Some(to)) = (ms("from", out), ms("to", out)) {
        if to < 100_000_000_000 {
            out.push(format!("data.attributes.to {to} is in seconds; v2 takes milliseconds since the Unix epoch"));
        } else if (to / 1000 - now_seconds()).abs() > CLOCK_SLACK_SECONDS {
            out.push(format!("data.attributes.to {to} is not now"));
        }
        if from >= to {
            out.push(format!("data.attributes.from {from} is not before to {to}"));
        }
    }
    let mut names = Vec::new();
    match attributes.get("queries").and_then(Value::as_array) {
        None => out.push("data.attributes.queries is required, a list".into()),
        Some(queries) if queries.is_empty() => out.push("data.attributes.queries is empty".into()),
        Some(queries) => {
            for (i, q) in queries.iter().enumerate() {
                let at = format!("data.attributes.queries[{i}]");
                // MetricsScalarQuery: aggregator, data_source, query required; name optional.
                if !keys(q, &["aggregator", "cross_org_uuids", "data_source", "name", "query"], &at, out) {
                    continue;
                }
                match q.get("aggregator").and_then(Value::as_str) {
                    Some(a) if AGGREGATORS.contains(&a) => {}
                    other => out.push(format!("{at}.aggregator is {other:?}, not one of {AGGREGATORS:?}")),
                }
                if q.get("data_source") != Some(&json!("metrics")) {
                    out.push(format!("{at}.data_source is {:?}, not metrics", q.get("data_source")));
                }
                if q.get("query").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                    out.push(format!("{at}.query is required, a non-empty string"));
                }
                match q.get("name") {
                    None => names.push(None),
                    Some(Value::String(n)) => names.push(Some(n.clone())),
                    Some(other) => out.push(format!("{at}.name is not a string: {other}")),
                }
            }
        }
    }
    let named: Vec<&String> = names.iter().flatten().collect();
    if named.iter().enumerate().any(|(i, n)| named[..i].contains(n)) {
        out.push(format!("query names repeat: {named:?}"));
    }
    if let Some(formulas) = attributes.get("formulas") {
        let Some(formulas) = formulas.as_array() else {
            return out.push("data.attributes.formulas is not a list".into());
        };
        for (i, f) in formulas.iter().enumerate() {
            let at = format!("data.attributes.formulas[{i}]");
            // QueryFormula: formula (required), limit.
            if keys(f, &["formula", "limit"], &at, out)
                && f.get("formula").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty())
            {
                out.push(format!("{at}.formula is required, a non-empty string"));
            }
        }
        if !formulas.is_empty() && names.iter().any(Option::is_none) {
            out.push("a formula refers to queries by name, and a query has none".into());
        }
    }
}

/// `MetricsQueryResponse`, as Datadog answers `GET /api/v1/query`: one series per list of points.
fn v1_answer(request: &Request, pointlists: &[Value]) -> Answer {
    let (from, to) = (request.seconds("from") * 1000, request.seconds("to") * 1000);
    let query = request.param("query").unwrap_or_default();
    let series: Vec<Value> = pointlists
        .iter()
        .map(|points| {
            json!({
                "aggr": "sum", "display_name": "requests", "expression": query, "metric": "requests",
                "interval": 20, "length": points.as_array().map_or(0, Vec::len), "pointlist": points,
                "scope": "service:checkout", "start": from, "end": to, "query_index": 0, "tag_set": [],
                "unit": [null, null]
            })
        })
        .collect();
    Answer::json(
        200,
        json!({
            "status": "ok", "res_type": "time_series", "query": query, "message": "",
            "from_date": from, "to_date": to, "group_by": [], "series": series
        }),
    )
}

/// `ScalarFormulaQueryResponse`, as Datadog answers `POST /api/v2/query/scalar`.
fn v2_answer(columns: Value) -> Answer {
    Answer::json(200, json!({"data": {"type": "scalar_response", "attributes": {"columns": columns}}}))
}

/// A number column of a scalar answer.
fn number_column(name: &str, values: Value) -> Value {
    json!({"name": name, "type": "number", "values": values, "meta": {"unit": null}})
}

fn run_ref() -> RunRef {
    RunRef { namespace: RUN_NS.into(), name: "checkout-7d9f-2".into(), uid: "0b6f".into() }
}

async fn measure(secrets: FixedSecrets, metric: &Metric) -> Result<Taken, Error> {
    DatadogProvider::new(Arc::new(secrets), CONTROLLER_NS).run(&run_ref(), metric).await
}

fn value(taken: Taken) -> Value {
    match taken.reading {
        Reading::Value(v) => v,
        other => panic!("not a value: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// v1

#[tokio::test]
async fn v1_asks_the_last_interval_in_seconds_and_the_value_is_the_last_point_of_the_first_series() {
    let datadog = Datadog::start(|r| {
        v1_answer(
            r,
            &[
                json!([[1_598_867_910_000.0, 0.0020008318672513122], [1_598_867_925_000.0, 0.0003332881882246533]]),
                json!([[1_598_867_925_000.0, 7.0]]),
            ],
        )
    })
    .await;
    let provider = DatadogProvider::new(Arc::new(datadog.secret()), CONTROLLER_NS);
    assert_eq!(provider.kind(), "datadog");
    let taken = provider.run(&run_ref(), &metric(BEFORE_V1, &checkout())).await.unwrap();
    assert_eq!(value(taken), json!(0.0003332881882246533));

    let request = datadog.only_request();
    assert_eq!(
        request.param("query"),
        Some(
            "moving_rollup(sum:requests.errors{service:checkout}.as_count(), 60, 'sum') / \
             sum:requests{service:checkout}.as_count()"
        )
    );
    assert_eq!(request.seconds("to") - request.seconds("from"), 300, "interval: 5m");
    assert_eq!(request.header("dd-api-key"), Some(API_KEY));
    assert_eq!(request.header("dd-application-key"), Some(APP_KEY));
}

#[tokio::test]
async fn v1_is_argos_default_api_version() {
    let datadog = Datadog::start(|r| v1_answer(r, &[json!([[1.0, 42.5]])])).await;
    let m = edited(metric(BEFORE_V1, &checkout()), |dd| {
        dd.remove("apiVersion");
        dd.insert("interval".into(), json!("10m"));
    });
    assert_eq!(value(measure(datadog.secret(), &m).await.unwrap()), json!(42.5));
    let request = datadog.only_request();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/api/v1/query"));
    assert_eq!(request.seconds("to") - request.seconds("from"), 600);
}

// ---------------------------------------------------------------------------------------------
// v2

#[tokio::test]
async fn v2_sends_one_query_named_query_aggregated_with_last_over_five_minutes_in_milliseconds() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("query", json!([0.0006332881882246533]))]))).await;
    let taken = measure(datadog.secret(), &metric(LOQ_ERROR_RATE, &checkout())).await.unwrap();
    assert_eq!(value(taken), json!(0.0006332881882246533));

    let request = datadog.only_request();
    let attributes = &request.json()["data"]["attributes"];
    assert_eq!(
        attributes["queries"],
        json!([{
            "aggregator": "last", "data_source": "metrics", "name": "query",
            // As written in Argo's example, a YAML block with its newline.
            "query": "sum:requests.error.rate{service:checkout}\n"
        }])
    );
    assert_eq!(attributes["formulas"], json!([]));
    assert_eq!(attributes["to"].as_i64().unwrap() - attributes["from"].as_i64().unwrap(), 300_000);
}

#[tokio::test]
async fn v2_sends_named_queries_and_the_formula_and_the_value_is_the_formulas_number() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("formula", json!([0.0421]))]))).await;
    let taken = measure(datadog.secret(), &metric(AFTER_V2, &checkout())).await.unwrap();
    assert_eq!(value(taken), json!(0.0421));

    let body = datadog.only_request().json();
    assert_eq!(body["data"]["type"], "scalar_request");
    let attributes = &body["data"]["attributes"];
    assert_eq!(
        attributes["queries"],
        json!([
            {"aggregator": "last", "data_source": "metrics", "name": "a",
             "query": "sum:requests.errors{service:checkout}.as_count()"},
            {"aggregator": "last", "data_source": "metrics", "name": "b",
             "query": "sum:requests{service:checkout}.as_count()"}
        ])
    );
    assert_eq!(attributes["formulas"], json!([{"formula": "moving_rollup(a, 60, 'sum') / b"}]));
}

#[tokio::test]
async fn v2_one_named_query_needs_no_formula() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("q", json!([2.0]))]))).await;
    let args = [
        ("service-name", "checkout"),
        ("canary-hash", "7d9f8c"),
        ("restarts.initial-delay", "60s"),
        ("restarts.max-restarts", "4"),
    ];
    let m = metric(CONTAINER_RESTARTS, &args);
    assert_eq!(m.failure_condition.as_deref(), Some("default(result, 0) > 4"));
    assert_eq!(value(measure(datadog.secret(), &m).await.unwrap()), json!(2.0));
    let attributes = datadog.only_request().json()["data"]["attributes"].clone();
    assert_eq!(attributes["queries"][0]["name"], "q");
    assert_eq!(
        attributes["queries"][0]["query"],
        "max:kubernetes.containers.restarts{service-name:checkout,rollouts_pod_template_hash:7d9f8c}"
    );
}

#[tokio::test]
async fn the_aggregator_is_sent_with_every_query() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("formula", json!([1.25]))]))).await;
    assert_eq!(value(measure(datadog.secret(), &metric(AGGREGATION, &[])).await.unwrap()), json!(1.25));
    let attributes = datadog.only_request().json()["data"]["attributes"].clone();
    let aggregators: Vec<&Value> = attributes["queries"].as_array().unwrap().iter().map(|q| &q["aggregator"]).collect();
    assert_eq!(aggregators, [&json!("sum"), &json!("sum")]);
    assert_eq!(
        attributes["formulas"],
        json!([{"formula": "moving_rollup(a, 300, 'sum') / moving_rollup(b, 300, 'sum') * 100"}])
    );
}

#[tokio::test]
async fn a_grouped_query_is_a_list_with_each_groups_name_in_metadata() {
    let datadog = Datadog::start(|_| {
        v2_answer(json!([
            {"name": "resource_name", "type": "group", "values": [["GET /a"], ["GET /b"], ["GET /c"]]},
            number_column("query", json!([0.01, null, 0.08]))
        ]))
    })
    .await;
    let taken = measure(datadog.secret(), &metric(GROUPED, &[])).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&taken.metadata["groups"]).unwrap(),
        json!([{"name": "GET /a", "value": 0.01}, {"name": "GET /c", "value": 0.08}])
    );
    assert_eq!(value(taken), json!([0.01, 0.08]));
    datadog.only_request();
}

#[tokio::test]
async fn request_timeout_bounds_the_wait_for_datadog() {
    // Accepts and never answers.
    let address = serve_silence().await;
    let secrets = FixedSecrets::default().with(
        CONTROLLER_NS,
        "datadog",
        &[("api-key", API_KEY), ("app-key", APP_KEY), ("address", &address)],
    );
    let m = metric(REQUEST_TIMEOUT, &[]);
    assert_eq!(m.provider.datadog.as_ref().unwrap()["requestTimeout"], "30s");
    let m = edited(m, |dd| {
        dd.insert("requestTimeout".into(), json!("1s"));
    });
    let started = Instant::now();
    let err = measure(secrets, &m).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { seconds: 1, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(err.to_string().contains("/api/v2/query/scalar"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Where the keys come from

#[tokio::test]
async fn a_namespaced_secret_ref_is_read_in_the_analysis_runs_namespace() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("query", json!([0.004]))]))).await;
    // Same name in the controller's namespace, with other keys and nowhere to go: not used.
    let secrets = FixedSecrets::default()
        .with(
            CONTROLLER_NS,
            "mysecret",
            &[("api-key", "wrong"), ("app-key", "wrong"), ("address", "http://127.0.0.1:1")],
        )
        .with(
            CONTROLLER_NS,
            "datadog",
            &[("api-key", "wrong"), ("app-key", "wrong"), ("address", "http://127.0.0.1:1")],
        )
        .with(RUN_NS, "mysecret", &[("api-key", API_KEY), ("app-key", APP_KEY), ("address", &datadog.url)]);
    let taken = measure(secrets, &metric(NAMESPACED_SECRET, &checkout())).await.unwrap();
    assert_eq!(value(taken), json!(0.004));
    assert_eq!(datadog.only_request().header("dd-api-key"), Some(API_KEY));
}

#[tokio::test]
async fn a_secret_ref_that_is_not_namespaced_is_read_in_the_controllers_namespace() {
    let datadog = Datadog::start(|_| v2_answer(json!([number_column("query", json!([0.5]))]))).await;
    let secrets = FixedSecrets::default()
        .with(CONTROLLER_NS, "mysecret", &[("api-key", API_KEY), ("app-key", APP_KEY), ("address", &datadog.url)])
        .with(RUN_NS, "mysecret", &[("api-key", "wrong"), ("app-key", "wrong"), ("address", "http://127.0.0.1:1")]);
    let m = edited(metric(NAMESPACED_SECRET, &checkout()), |dd| {
        dd.insert("secretRef".into(), json!({"name": "mysecret"}));
    });
    assert_eq!(value(measure(secrets, &m).await.unwrap()), json!(0.5));
    datadog.only_request();
}

#[tokio::test]
async fn keys_from_the_environment_come_before_the_datadog_secret() {
    let datadog = Datadog::start(|r| v1_answer(r, &[json!([[1.0, 3.0]])])).await;
    let secrets = FixedSecrets::default().with(
        CONTROLLER_NS,
        "datadog",
        &[("api-key", "wrong"), ("app-key", "wrong"), ("address", "http://127.0.0.1:1")],
    );
    let address = datadog.url.clone();
    let provider = DatadogProvider::new(Arc::new(secrets), CONTROLLER_NS).with_environment(move |name| match name {
        "DD_API_KEY" => Some(API_KEY.into()),
        "DD_APP_KEY" => Some(APP_KEY.into()),
        "DD_ADDRESS" => Some(address.clone()),
        _ => None,
    });
    let taken = provider.run(&run_ref(), &metric(BEFORE_V1, &checkout())).await.unwrap();
    assert_eq!(value(taken), json!(3.0));
    datadog.only_request();
}

#[tokio::test]
async fn a_missing_secret_is_named_and_nothing_is_sent() {
    let datadog = Datadog::start(|_| panic!("nothing may be sent without keys")).await;
    let err = measure(FixedSecrets::default(), &metric(LOQ_ERROR_RATE, &checkout())).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Datadog credentials: Secret stepwise-system/datadog was not found; it must hold the keys api-key and \
         app-key (and optionally address); create it in the controller's namespace, or name another with \
         provider.datadog.secretRef"
    );

    let err = measure(FixedSecrets::default(), &metric(NAMESPACED_SECRET, &checkout())).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.datadog.secretRef", .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "provider.datadog.secretRef: Secret team-a/mysecret was not found; it must hold the keys api-key and \
         app-key (and optionally address) (secretRef is read in the AnalysisRun's namespace)"
    );
    assert!(datadog.requests().is_empty());
}

#[tokio::test]
async fn a_secret_without_a_key_names_the_key() {
    let secrets = FixedSecrets::default().with(CONTROLLER_NS, "datadog", &[("api-key", API_KEY), ("app-key", "")]);
    let err = measure(secrets, &metric(BEFORE_V1, &checkout())).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Secret stepwise-system/datadog has no app-key (it needs both api-key and app-key)"),
        "{text}"
    );
    assert!(!text.contains(API_KEY), "{text}");
}

#[tokio::test]
async fn a_key_that_cannot_be_a_header_is_refused_without_quoting_it() {
    let secrets =
        FixedSecrets::default().with(CONTROLLER_NS, "datadog", &[("api-key", "bad\nkey"), ("app-key", APP_KEY)]);
    let err = measure(secrets, &metric(BEFORE_V1, &checkout())).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "Datadog credentials: the api-key of Secret stepwise-system/datadog is not a valid HTTP header value"
    );
}

// ---------------------------------------------------------------------------------------------
// Datadog's refusals

#[tokio::test]
async fn a_rate_limited_answer_is_an_error_saying_so_and_when_the_limit_resets() {
    // docs.datadoghq.com/api/latest/rate-limits: a 429 with the X-RateLimit-* headers.
    let datadog = Datadog::start(|_| {
        Answer::json(429, json!({"errors": ["Too many requests"]}))
            .with_header("X-RateLimit-Limit", "100")
            .with_header("X-RateLimit-Period", "60")
            .with_header("X-RateLimit-Remaining", "0")
            .with_header("X-RateLimit-Reset", "17")
            .with_header("X-RateLimit-Name", "query_scalar_public")
    })
    .await;
    let err = measure(datadog.secret(), &metric(AFTER_V2, &checkout())).await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "Datadog POST {}/api/v2/query/scalar: HTTP 429 Too Many Requests: rate limited by Datadog on \
             query_scalar_public (100 requests per 60 s); the limit resets in 17 s: Too many requests",
            datadog.url
        )
    );
    datadog.only_request();
}

#[tokio::test]
async fn keys_datadog_refuses_are_a_403_with_datadogs_message() {
    let datadog = Datadog::start(|_| panic!("wrong keys are refused before")).await;
    let secrets = FixedSecrets::default().with(
        CONTROLLER_NS,
        "datadog",
        &[("api-key", API_KEY), ("app-key", "00000000000000000000000000000000deadbeef"), ("address", &datadog.url)],
    );
    let err = measure(secrets, &metric(BEFORE_V1, &checkout())).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.ends_with(
            "HTTP 403 Forbidden: Datadog refused the keys of Secret stepwise-system/datadog (check its api-key and \
             app-key, and that the application key may query timeseries): Forbidden"
        ),
        "{text}"
    );
    assert!(!text.contains("deadbeef") && !text.contains(API_KEY), "{text}");
    datadog.only_request();
}

#[tokio::test]
async fn a_query_datadog_cannot_parse_keeps_datadogs_error_text() {
    let datadog = Datadog::start(|_| {
        Answer::json(
            400,
            json!({"errors": ["Error parsing query: unable to parse sum:requests{: Rule 'scope_expr' didn't match"]}),
        )
    })
    .await;
    let err = measure(datadog.secret(), &metric(BEFORE_V1, &checkout())).await.unwrap_err();
    assert!(
        err.to_string().ends_with(
            "/api/v1/query: HTTP 400 Bad Request: Error parsing query: unable to parse sum:requests{: Rule \
             'scope_expr' didn't match"
        ),
        "{err}"
    );
    // The query is not repeated in the target: it may carry arguments from Secrets.
    assert!(!err.to_string().contains("?"), "{err}");
}

#[tokio::test]
async fn errors_datadog_puts_in_a_scalar_answer_are_an_error() {
    let datadog =
        Datadog::start(|_| Answer::json(200, json!({"errors": "query exceeded the maximum allowed time range"}))).await;
    let err = measure(datadog.secret(), &metric(LOQ_ERROR_RATE, &checkout())).await.unwrap_err();
    assert!(
        err.to_string().ends_with("there were errors in the query: query exceeded the maximum allowed time range"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// No data

#[tokio::test]
async fn no_series_no_points_and_null_values_are_a_null_result() {
    let answers: Vec<(Metric, Box<Answering>)> = vec![
        (metric(BEFORE_V1, &checkout()), Box::new(|r| v1_answer(r, &[]))),
        (metric(BEFORE_V1, &checkout()), Box::new(|r| v1_answer(r, &[json!([])]))),
        (metric(BEFORE_V1, &checkout()), Box::new(|r| v1_answer(r, &[json!([[1.0, 0.2], [2.0, null]])]))),
        (metric(LOQ_ERROR_RATE, &checkout()), Box::new(|_| v2_answer(json!([number_column("query", json!([]))])))),
        (metric(LOQ_ERROR_RATE, &checkout()), Box::new(|_| v2_answer(json!([number_column("query", json!([null]))])))),
        (metric(LOQ_ERROR_RATE, &checkout()), Box::new(|_| v2_answer(json!([])))),
    ];
    for (i, (m, answer)) in answers.into_iter().enumerate() {
        let datadog = Datadog::start(answer).await;
        let taken = measure(datadog.secret(), &m).await.unwrap_or_else(|e| panic!("answer {i}: {e}"));
        // `default(result, 0)` makes it a number, as Argo's nil; comparing it is an Error.
        assert_eq!(value(taken), Value::Null, "answer {i}");
        datadog.only_request();
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

#[tokio::test]
async fn keys_never_appear_in_an_error() {
    // A proxy that echoes the request it got, in each way an answer reaches an error.
    let echo = |status: u16| {
        move |r: &Request| {
            Answer::json(status, json!({"errors": [format!("{:?}", r.headers)]}))
                .with_header("X-RateLimit-Reset", r.header("dd-api-key").unwrap_or_default())
        }
    };
    let mut errors = Vec::new();
    for status in [400, 403, 429, 500] {
        let datadog = Datadog::start(echo(status)).await;
        errors.push(measure(datadog.secret(), &metric(AFTER_V2, &checkout())).await.unwrap_err());
    }
    let datadog = Datadog::start(|r| Answer::new(200, "application/json", format!("not json {:?}", r.headers))).await;
    errors.push(measure(datadog.secret(), &metric(AFTER_V2, &checkout())).await.unwrap_err());
    let datadog =
        Datadog::start(|r| v2_answer(json!([number_column("query", json!([r.header("dd-application-key")]))]))).await;
    errors.push(measure(datadog.secret(), &metric(LOQ_ERROR_RATE, &checkout())).await.unwrap_err());
    let datadog =
        Datadog::start(|r| Answer::json(200, json!({"status": "error", "error": format!("{:?}", r.headers)}))).await;
    errors.push(measure(datadog.secret(), &metric(BEFORE_V1, &checkout())).await.unwrap_err());
    // Nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed = FixedSecrets::default().with(
        CONTROLLER_NS,
        "datadog",
        &[("api-key", API_KEY), ("app-key", APP_KEY), ("address", &format!("http://127.0.0.1:{port}"))],
    );
    errors.push(measure(closed, &metric(AFTER_V2, &checkout())).await.unwrap_err());

    assert_eq!(errors.len(), 8);
    for err in &errors {
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        for key in [API_KEY, APP_KEY] {
            assert!(!text.contains(key) && !debug.contains(key), "a key in {text}");
        }
    }
    // The echoes did reach the errors, with the keys cut out.
    assert!(errors.iter().any(|e| e.to_string().contains("*****")), "{errors:#?}");
    assert!(errors[2].to_string().contains("the limit resets in ***** s"), "{}", errors[2]);
    let provider = DatadogProvider::new(Arc::new(datadog.secret()), CONTROLLER_NS);
    assert!(!format!("{provider:?}").contains(API_KEY));
}

// ---------------------------------------------------------------------------------------------
// The local Datadog itself

/// Sends `raw` (a request head, `{host}` filled in, and body) and returns the deviations the
/// server found.
async fn deviations_of(raw: &str) -> Vec<String> {
    let datadog = Datadog::start(|_| v2_answer(json!([]))).await;
    let host = datadog.url.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&host).await.unwrap();
    conn.write_all(raw.replace("{host}", &host).as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let log = datadog.log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{answer}");
    if !log[0].deviations.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }
    log[0].deviations.clone()
}

fn keys() -> String {
    format!("dd-api-key: {API_KEY}\r\ndd-application-key: {APP_KEY}\r\n")
}

fn post(body: &Value, content_type: &str) -> String {
    let body = body.to_string();
    format!(
        "POST /api/v2/query/scalar HTTP/1.1\r\nhost: {{host}}\r\n{}content-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        keys(),
        body.len()
    )
}

fn scalar_request(from: i64, to: i64, query: Value) -> Value {
    json!({"data": {"type": "scalar_request", "attributes": {"from": from, "to": to, "queries": [query], "formulas": []}}})
}

#[tokio::test]
async fn the_local_datadog_refuses_what_datadogs_api_does_not_describe() {
    let now = now_seconds();
    let get =
        |query: &str, headers: &str| format!("GET /api/v1/query?{query} HTTP/1.1\r\nhost: {{host}}\r\n{headers}\r\n");
    let good_v1 = format!("query=avg%3Asystem.cpu.user%7B%2A%7D&from={}&to={now}", now - 300);
    assert_eq!(deviations_of(&get(&good_v1, &keys())).await, Vec::<String>::new());
    let query = json!({"aggregator": "last", "data_source": "metrics", "name": "query", "query": "avg:x{*}"});
    let good_v2 = scalar_request((now - 300) * 1000, now * 1000, query.clone());
    assert_eq!(deviations_of(&post(&good_v2, "application/json")).await, Vec::<String>::new());

    let cases: Vec<(String, &str)> = vec![
        (get(&format!("query=q&from={}&to={}", (now - 300) * 1000, now * 1000), &keys()), "in milliseconds"),
        (get(&format!("query=q&from={now}&to={}", now - 300), &keys()), "is not before"),
        (get(&format!("query=q&from={}&to={}", now - 7300, now - 7000), &keys()), "is not now"),
        (get(&format!("from={}&to={now}", now - 300), &keys()), "query is missing"),
        (get(&format!("query=q&from={}&to={now}&api_key={API_KEY}", now - 300), &keys()), "in the query string"),
        (
            get(&format!("query=q&from={}&to={now}", now - 300), &format!("dd-api-key: {API_KEY}\r\n")),
            "no dd-application-key",
        ),
        (
            get(&format!("query=q&from={}&to={now}", now - 300), "").replace("GET /api/v1/query", "GET /api/v1/series"),
            "is not Datadog's",
        ),
        (post(&good_v2, "text/plain"), "not application/json"),
        (post(&scalar_request(now - 300, now, query.clone()), "application/json"), "in seconds"),
        (
            post(
                &json!({"data": {"type": "timeseries_request", "attributes": good_v2["data"]["attributes"]}}),
                "application/json",
            ),
            "not scalar_request",
        ),
        (
            post(
                &scalar_request((now - 300) * 1000, now * 1000, json!({"data_source": "metrics", "query": "q"})),
                "application/json",
            ),
            "aggregator",
        ),
        (
            post(
                &scalar_request(
                    (now - 300) * 1000,
                    now * 1000,
                    json!({"aggregator": "median", "data_source": "metrics", "query": "q"}),
                ),
                "application/json",
            ),
            "aggregator",
        ),
        (
            post(
                &scalar_request(
                    (now - 300) * 1000,
                    now * 1000,
                    json!({"aggregator": "sum", "data_source": "logs", "query": "q"}),
                ),
                "application/json",
            ),
            "data_source",
        ),
        (
            post(
                &scalar_request(
                    (now - 300) * 1000,
                    now * 1000,
                    json!({"aggregator": "sum", "data_source": "metrics", "query": "q", "interval": 60}),
                ),
                "application/json",
            ),
            "no property interval",
        ),
        (
            post(
                &json!({"data": {"type": "scalar_request", "attributes": {"from": (now - 300) * 1000, "to": now * 1000, "queries": []}}}),
                "application/json",
            ),
            "queries is empty",
        ),
        (
            post(
                &json!({"data": {"type": "scalar_request", "attributes": {
                    "from": (now - 300) * 1000, "to": now * 1000,
                    "queries": [{"aggregator": "sum", "data_source": "metrics", "query": "q"}],
                    "formulas": [{"formula": "a"}]}}}),
                "application/json",
            ),
            "has none",
        ),
    ];
    for (raw, expected) in cases {
        let found = deviations_of(&raw).await;
        assert!(
            found.iter().any(|d| d.contains(expected)),
            "expected a deviation about {expected:?} in {found:?} for\n{raw}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The real Datadog

#[tokio::test]
#[ignore = "needs Datadog keys: DD_API_KEY, DD_APP_KEY (and DD_ADDRESS for another site)"]
async fn real_datadog() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(api_key), Some(app_key)) = (env("DD_API_KEY"), env("DD_APP_KEY")) else {
        panic!("set DD_API_KEY and DD_APP_KEY");
    };
    let address = env("DD_ADDRESS").unwrap_or_else(|| "https://api.datadoghq.com".into());
    let query = env("DD_QUERY").unwrap_or_else(|| "avg:system.cpu.user{*}".into());
    let secrets = || {
        FixedSecrets::default().with(
            CONTROLLER_NS,
            "datadog",
            &[("api-key", &api_key), ("app-key", &app_key), ("address", &address)],
        )
    };
    let with_query = |yaml: &str, version: &str| {
        edited(metric(yaml, &checkout()), |dd| {
            dd.insert("apiVersion".into(), json!(version));
            dd.insert("query".into(), json!(query));
        })
    };
    for (name, m) in [("v1", with_query(BEFORE_V1, "v1")), ("v2", with_query(LOQ_ERROR_RATE, "v2"))] {
        let taken = measure(secrets(), &m).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name} {query}: {:?} {:?}", taken.reading, taken.metadata);
    }
    // Argo's own formula example, whatever its metrics hold in this account (often no data).
    let taken = measure(secrets(), &metric(AFTER_V2, &checkout())).await.unwrap();
    println!("v2 formula: {:?}", taken.reading);
    // And a refusal, as Datadog words it.
    let wrong = FixedSecrets::default().with(
        CONTROLLER_NS,
        "datadog",
        &[("api-key", &api_key), ("app-key", "0000000000000000000000000000000000000000"), ("address", &address)],
    );
    let err = measure(wrong, &with_query(LOQ_ERROR_RATE, "v2")).await.unwrap_err();
    println!("wrong app-key: {err}");
    assert!(err.to_string().contains("HTTP 403") || err.to_string().contains("HTTP 401"), "{err}");
}
