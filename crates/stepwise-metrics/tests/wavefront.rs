//! The Wavefront provider against a stand-in for Wavefront's chart API on 127.0.0.1 that holds
//! every request to the published REST API (`GET /api/v2/chart/api`, Operations for Applications
//! REST API, Query API): the token as `Authorization: Bearer`, only documented query parameters,
//! each once, with documented values (`q`, `s` and `g` required; `s`, `e` epoch milliseconds, `g`
//! one of d/h/m/s, booleans `true`/`false`, …), no body. Any deviation is recorded and fails the
//! test. Its answers are the documented `QueryResult`: `{"timeseries":[{"label","host","tags",
//! "data":[[epoch seconds, value], …]}], "warnings", "errorType", "errorMessage", …}`.
//!
//! The metric is Argo Rollouts' own example (docs/analysis/wavefront.md), read from its YAML, with
//! its address pointed at the stand-in (`http://127.0.0.1:PORT`: stepwise lets an address carry a
//! scheme; Argo always uses `https://`).
//!
//! The same measurement against a real Wavefront, with an API token:
//!
//! ```sh
//! STEPWISE_WAVEFRONT_ADDRESS=example.wavefront.com STEPWISE_WAVEFRONT_TOKEN=… \
//! STEPWISE_WAVEFRONT_QUERY='ts(~sample.cpu.usage.percentage)' \
//!   cargo test -p stepwise-metrics --test wavefront -- --ignored --nocapture against_a_real_wavefront
//! ```
//!
//! (the query is optional and defaults to that one, of Wavefront's sample data.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Answer, Refusal, Request, StandIn};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::secrets::FixedSecrets;
use stepwise_metrics::wavefront::{DRIFT_KEY, TIMESTAMPS_KEY, WARNINGS_KEY, WavefrontMetric, WavefrontProvider};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

const NAMESPACE: &str = "stepwise-system";
const TOKEN: &str = "4f7a0d5c-1b2e-4c3d-9e8f-0a1b2c3d4e5f";

/// Argo Rollouts' Wavefront example, docs/analysis/wavefront.md, as written there.
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
    successCondition: result >= 0.95
    failureLimit: 3
    provider:
      wavefront:
        address: example.wavefront.com
        query: |
          sum(rate(
            5m, ts("istio.requestcount.count", response_code!=500 and destination_service="{{args.service-name}}"
          ))) /
          sum(rate(
            5m, ts("istio.requestcount.count", reporter=client and destination_service="{{args.service-name}}"
          )))
"#;

/// The query of the example once the controller substituted `service-name: checkout`.
const ARGO_QUERY: &str = "sum(rate(\n  5m, ts(\"istio.requestcount.count\", response_code!=500 and \
                          destination_service=\"checkout\"\n))) /\nsum(rate(\n  5m, ts(\"istio.requestcount.count\", \
                          reporter=client and destination_service=\"checkout\"\n)))\n";

/// The example's metric, its argument substituted as the controller does, its address `address`.
fn example(address: &str) -> Metric {
    let yaml = ARGO_TEMPLATE.replace("{{args.service-name}}", "checkout").replace("example.wavefront.com", address);
    let template: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The chart API stand-in.

/// A request that passed every check: its query parameters.
#[derive(Clone, Debug)]
struct Call {
    params: BTreeMap<String, String>,
}

impl Call {
    fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The query window's start, epoch seconds.
    fn start_seconds(&self) -> f64 {
        self.param("s").parse::<f64>().unwrap() / 1000.0
    }
}

/// A Wavefront chart API on 127.0.0.1 that checks every request and answers valid ones with
/// `answer`.
type ChartApi = StandIn<Call>;

impl ChartApi {
    async fn start(answer: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static) -> ChartApi {
        let refuse = |problems: Vec<String>| {
            Refusal::off_spec(&problems, |text| {
                Answer::json_or_text(400, format!("Bad Request: status=400, message='off the chart API spec: {text}'"))
            })
        };
        StandIn::serve(
            "the chart API spec",
            move |request| check(request).map_err(refuse),
            move |call| {
                let (status, body) = answer(call);
                Answer::json_or_text(status, body)
            },
        )
        .await
    }
}

/// The query parameters of `GET /api/v2/chart/api` in Wavefront's REST API reference.
const DOCUMENTED: [&str; 18] = [
    "n",
    "q",
    "queryType",
    "s",
    "e",
    "g",
    "p",
    "i",
    "autoEvents",
    "summarization",
    "listMode",
    "strict",
    "view",
    "includeObsoleteMetrics",
    "sorted",
    "cached",
    "dimensionTuples",
    "useRawQK",
];

/// Every rule of the chart API that the request must follow.
fn check(request: &Request) -> Result<Call, Vec<String>> {
    let mut problems = Vec::new();
    if request.method != "GET" {
        problems.push(format!("method {} (the chart API is GET)", request.method));
    }
    if request.path != "/api/v2/chart/api" {
        problems.push(format!("path {} (the chart API is /api/v2/chart/api)", request.path));
    }
    match request.headers("authorization").as_slice() {
        [value] if *value == format!("Bearer {TOKEN}") => {}
        [_] => problems.push("Authorization is not `Bearer <the address's token>`".into()),
        values => problems.push(format!("{} Authorization headers (one is needed)", values.len())),
    }
    if let [accept] = request.headers("accept").as_slice()
        && !accept.split(',').any(|m| matches!(m.split(';').next().map(str::trim), Some("application/json" | "*/*")))
    {
        problems.push(format!("Accept {accept} (the API answers application/json)"));
    }
    if !request.body.is_empty() || !request.headers("transfer-encoding").is_empty() {
        problems.push("a body (the chart API takes none)".into());
    }
    let mut params = BTreeMap::new();
    for (name, value) in &request.params {
        if !DOCUMENTED.contains(&name.as_str()) {
            problems.push(format!("parameter {name} is not documented"));
        }
        if name != "dimensionTuples" && params.insert(name.clone(), value.clone()).is_some() {
            problems.push(format!("parameter {name} is given twice"));
        }
    }
    for required in ["q", "s", "g"] {
        if params.get(required).is_none_or(|v| v.trim().is_empty()) {
            problems.push(format!("parameter {required} is required"));
        }
    }
    let millis = |name: &str, problems: &mut Vec<String>| {
        let value = params.get(name)?;
        let parsed = value.parse::<i64>().ok().filter(|v| *v >= 0);
        if parsed.is_none() {
            problems.push(format!("{name}={value} is not epoch milliseconds"));
        }
        parsed
    };
    if let (Some(s), Some(e)) = (millis("s", &mut problems), millis("e", &mut problems))
        && e < s
    {
        problems.push(format!("the window ends (e={e}) before it starts (s={s})"));
    }
    for (name, allowed) in [
        ("g", &["d", "h", "m", "s"][..]),
        ("summarization", &["MEAN", "MEDIAN", "MIN", "MAX", "SUM", "COUNT", "LAST", "FIRST"][..]),
        ("view", &["METRIC", "HISTOGRAM", "AUTO"][..]),
        ("queryType", &["WQL", "PROMQL", "HYBRID"][..]),
    ] {
        if let Some(value) = params.get(name)
            && !allowed.contains(&value.as_str())
        {
            problems.push(format!("{name}={value} is not one of {allowed:?}"));
        }
    }
    for name in ["i", "autoEvents", "listMode", "strict", "includeObsoleteMetrics", "sorted", "cached", "useRawQK"] {
        if let Some(value) = params.get(name)
            && !matches!(value.as_str(), "true" | "false")
        {
            problems.push(format!("{name}={value} is not a boolean"));
        }
    }
    if let Some(p) = params.get("p")
        && p.parse::<u64>().ok().is_none_or(|p| p == 0)
    {
        problems.push(format!("p={p} is not a positive number of points"));
    }
    if problems.is_empty() { Ok(Call { params }) } else { Err(problems) }
}

// ---------------------------------------------------------------------------------------------
// Answers in the documented `QueryResult` shape.

/// A `QueryResult` with these series, each `(label, [(seconds from the window's start, value)])`.
fn series(call: &Call, series: &[(&str, &[(f64, f64)])]) -> Value {
    let start = call.start_seconds();
    let timeseries: Vec<Value> = series
        .iter()
        .map(|(label, points)| {
            let data: Vec<Value> = points.iter().map(|(dt, v)| json!([start + dt, v])).collect();
            let tags = json!({"destination_service": "checkout"});
            json!({"label": label, "host": "istio-telemetry", "tags": tags, "data": data})
        })
        .collect();
    json!({
        "name": "success-rate",
        "query": call.param("q"),
        "granularity": 1,
        "timeseries": timeseries,
        "stats": {"keys": 12, "points": 240, "summaries": 12, "buffer_keys": 12, "compacted_keys": 0, "latency": 3},
    })
}

fn ok(body: Value) -> (u16, String) {
    (200, body.to_string())
}

fn provider(secrets: FixedSecrets) -> WavefrontProvider {
    WavefrontProvider::new(Arc::new(secrets), NAMESPACE)
}

/// The Secret `wavefront-api-tokens` with the token under `key`.
fn tokens(key: &str) -> FixedSecrets {
    FixedSecrets::default().with(NAMESPACE, "wavefront-api-tokens", &[(key, TOKEN)])
}

async fn measure(provider: &WavefrontProvider, metric: &Metric) -> Result<Taken, Error> {
    provider.run(&RunRef::default(), metric).await
}

/// The error of a measurement, checked not to hold the token.
async fn failure(provider: &WavefrontProvider, metric: &Metric) -> Error {
    let err = measure(provider, metric).await.expect_err("the measurement should fail");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(TOKEN), "the token is in the error: {text}");
    err
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn argos_example_measures_the_point_nearest_the_measurement() {
    let server =
        ChartApi::start(|call| ok(series(call, &[("success-rate", &[(-60.0, 0.91), (-5.0, 0.97), (40.0, 0.5)])])))
            .await;
    let before = Timestamp::now().as_second();
    let taken = measure(&provider(tokens("127.0.0.1")), &example(&server.address)).await.unwrap();
    let after = Timestamp::now().as_second();
    // `result >= 0.95`: one series is one number.
    assert_eq!(taken.reading, Reading::Value(json!(0.97)));
    let call = server.call();
    // Exactly what Argo's client sends (with the documented spelling listMode).
    let sent: Vec<&str> = call.params.keys().map(String::as_str).collect();
    assert_eq!(sent, ["autoEvents", "e", "g", "i", "includeObsoleteMetrics", "listMode", "p", "q", "s", "strict"]);
    assert_eq!(call.param("q"), ARGO_QUERY);
    assert_eq!((call.param("g"), call.param("p"), call.param("i")), ("s", "1", "true"));
    for off in ["autoEvents", "includeObsoleteMetrics", "listMode", "strict"] {
        assert_eq!(call.param(off), "false", "{off}");
    }
    // The window is the measurement's second, in milliseconds, at both ends.
    assert_eq!(call.param("s"), call.param("e"));
    let start = call.param("s").parse::<i64>().unwrap();
    assert_eq!(start % 1000, 0);
    assert!((before..=after).contains(&(start / 1000)), "{start} not within {before}..={after}");
    assert_eq!(taken.metadata.get(TIMESTAMPS_KEY), Some(&(start / 1000 - 5).to_string()));
    assert_eq!(taken.metadata.get(DRIFT_KEY).map(String::as_str), Some("-5"));
    assert_eq!(taken.metadata.get(WARNINGS_KEY), None);
}

#[tokio::test]
async fn several_series_are_a_list_with_their_times_and_drifts() {
    let server = ChartApi::start(|call| {
        let mut body = series(call, &[("canary", &[(-2.0, 0.99)]), ("stable", &[(-30.0, 0.8), (3.0, 0.96)])]);
        body["warnings"] = json!("query matched series that stopped reporting");
        ok(body)
    })
    .await;
    let taken = measure(&provider(tokens("127.0.0.1")), &example(&server.address)).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([0.99, 0.96])));
    let start = server.call().start_seconds() as i64;
    assert_eq!(taken.metadata.get(TIMESTAMPS_KEY), Some(&format!("[{},{}]", start - 2, start + 3)));
    assert_eq!(taken.metadata.get(DRIFT_KEY).map(String::as_str), Some("[-2,3]"));
    assert_eq!(
        taken.metadata.get(WARNINGS_KEY).map(String::as_str),
        Some("query matched series that stopped reporting")
    );
}

#[tokio::test]
async fn no_series_is_no_data_and_a_series_without_points_an_error() {
    for body in [json!({"name": "q", "query": "q", "timeseries": []}), json!({"name": "q", "query": "q"})] {
        let b = body.clone();
        let server = ChartApi::start(move |_| ok(b.clone())).await;
        let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
        assert!(matches!(&err, Error::NoData { metric } if metric == "success-rate"), "{body}: {err:?}");
        server.call();
    }
    let server = ChartApi::start(|call| ok(series(call, &[("success-rate", &[])]))).await;
    let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
    assert!(matches!(err, Error::Answer { .. }), "{err:?}");
    assert_eq!(err.to_string(), r#"series "success-rate": no points"#);
}

#[tokio::test]
async fn wavefronts_errors_keep_their_message() {
    // A query that does not parse: 400 with Wavefront's text.
    let server = ChartApi::start(|_| {
        (400, "Bad Request: status=400, message='Query syntax error: Unknown function: rat'".into())
    })
    .await;
    let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("Wavefront at {}: HTTP 400 Bad Request: Query syntax error: Unknown function: rat", server.address)
    );
    server.call();

    let server = ChartApi::start(|_| (401, json!({"message": "Invalid API token"}).to_string())).await;
    let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
    assert_eq!(err.to_string(), format!("Wavefront at {}: HTTP 401 Unauthorized: Invalid API token", server.address));

    // An answer that says the query did not finish.
    let server = ChartApi::start(|_| {
        ok(json!({"query": "q", "errorType": "QueryTimeout", "errorMessage": "query timed out after 60s"}))
    })
    .await;
    let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
    assert_eq!(err.to_string(), format!("Wavefront at {}: QueryTimeout: query timed out after 60s", server.address));
}

#[tokio::test]
async fn an_answer_that_echoes_the_token_is_scrubbed() {
    let server = ChartApi::start(|_| (401, json!({"message": format!("token {TOKEN} is revoked")}).to_string())).await;
    let err = failure(&provider(tokens("127.0.0.1")), &example(&server.address)).await;
    assert!(err.to_string().ends_with("token ***** is revoked"), "{err}");
}

#[tokio::test]
async fn the_token_is_keyed_by_the_address_as_written_first() {
    let server = ChartApi::start(|call| ok(series(call, &[("s", &[(0.0, 1.0)])]))).await;
    // Argo's key (the address as written) wins over the host's; the stand-in only takes TOKEN.
    let secrets = FixedSecrets::default().with(
        NAMESPACE,
        "wavefront-api-tokens",
        &[(server.address.as_str(), TOKEN), ("127.0.0.1", "the-host-token")],
    );
    measure(&provider(secrets), &example(&server.address)).await.unwrap();
    server.call();
    // As Argo: a name with no scheme is an HTTPS address.
    let argo = WavefrontMetric::from_metric(&example("example.wavefront.com")).unwrap();
    assert_eq!(argo.chart_api_url().unwrap().as_str(), "https://example.wavefront.com/api/v2/chart/api");
    assert_eq!(argo.token_keys(), ["example.wavefront.com"]);
}

#[tokio::test]
async fn a_missing_secret_or_token_names_the_address_and_sends_nothing() {
    let server = ChartApi::start(|call| ok(series(call, &[("s", &[(0.0, 1.0)])]))).await;
    let err = failure(&provider(FixedSecrets::default()), &example(&server.address)).await;
    assert!(matches!(err, Error::Config { field: "provider.wavefront.address", .. }), "{err:?}");
    assert!(err.to_string().contains("Secret stepwise-system/wavefront-api-tokens does not exist"), "{err}");

    let other = tokens("example2.wavefront.com");
    let err = failure(&provider(other), &example(&server.address)).await;
    assert_eq!(
        err.to_string(),
        format!(
            "provider.wavefront.address: Secret stepwise-system/wavefront-api-tokens has no API token for this \
             address (keys tried: {}, 127.0.0.1)",
            server.address
        )
    );
    // In another namespace, it is not the controller's.
    let elsewhere = FixedSecrets::default().with("default", "wavefront-api-tokens", &[("127.0.0.1", TOKEN)]);
    let err = failure(&provider(elsewhere), &example(&server.address)).await;
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn a_bad_metric_is_refused_before_any_request() {
    let server = ChartApi::start(|call| ok(series(call, &[("s", &[(0.0, 1.0)])]))).await;
    let mut metric = example(&server.address);
    metric.provider.wavefront = Some(json!({"address": server.address, "query": ""}));
    let err = failure(&provider(tokens("127.0.0.1")), &metric).await;
    assert_eq!(err.to_string(), "provider.wavefront.query: is empty");
    metric.provider.wavefront = Some(json!({"query": "ts(x)"}));
    let err = failure(&provider(tokens("127.0.0.1")), &metric).await;
    assert!(matches!(err, Error::Config { field: "provider.wavefront", .. }), "{err:?}");
    assert!(err.to_string().contains("address"), "{err}");
    assert!(server.calls().is_empty());
}

/// The stand-in itself must refuse what Wavefront's API does not document: otherwise the tests
/// above prove nothing.
#[tokio::test]
async fn the_stand_in_refuses_requests_off_the_spec() {
    let server = ChartApi::start(|call| ok(series(call, &[("s", &[(0.0, 1.0)])]))).await;
    // reqwest is built without a TLS provider of its own (see web.rs); ring is the crate's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/chart/api", server.address);
    let get = |params: &[(&str, &str)], token: &str| {
        let request = client.get(&url).query(params).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let good = [("q", "ts(x)"), ("s", "1700000000000"), ("e", "1700000000000"), ("g", "s"), ("p", "1"), ("i", "true")];
    assert_eq!(get(&good, TOKEN).await, 200);
    assert_eq!(server.calls().len(), 1);

    let off_spec: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (good.to_vec(), "another-token"),
        (good[1..].to_vec(), TOKEN),
        ([&good[..], &[("listmode", "false")]].concat(), TOKEN),
        ([&good[..3], &[("g", "x")]].concat(), TOKEN),
        ([&good[..1], &[("s", "now"), ("g", "s")]].concat(), TOKEN),
        ([&good[..], &[("strict", "no")]].concat(), TOKEN),
        ([&good[..], &[("p", "0")]].concat(), TOKEN),
        ([&good[..], &[("q", "ts(y)")]].concat(), TOKEN),
        ([&good[..2], &[("e", "1600000000000")], &good[3..]].concat(), TOKEN),
    ];
    for (params, token) in &off_spec {
        assert_eq!(get(params, token).await, 400, "{params:?}");
    }
    let post = client.post(&url).query(&good).bearer_auth(TOKEN).body("{}").send().await.unwrap();
    assert_eq!(post.status().as_u16(), 400);
    let violations = server.violations.lock().unwrap().clone();
    assert_eq!(violations.len(), off_spec.len() + 1, "{violations:#?}");
    assert!(violations[0].contains("Authorization"), "{}", violations[0]);
    assert!(violations[2].contains("listmode is not documented"), "{}", violations[2]);
}

/// Argo's example shape against a real Wavefront: see the comment at the top of this file.
#[tokio::test]
#[ignore = "needs a Wavefront instance: STEPWISE_WAVEFRONT_ADDRESS and STEPWISE_WAVEFRONT_TOKEN"]
async fn against_a_real_wavefront() {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(address), Some(token)) = (env("STEPWISE_WAVEFRONT_ADDRESS"), env("STEPWISE_WAVEFRONT_TOKEN")) else {
        panic!("set STEPWISE_WAVEFRONT_ADDRESS and STEPWISE_WAVEFRONT_TOKEN (see the top of tests/wavefront.rs)");
    };
    let query = env("STEPWISE_WAVEFRONT_QUERY").unwrap_or_else(|| "ts(~sample.cpu.usage.percentage)".into());
    let mut metric = example(&address);
    metric.provider.wavefront = Some(json!({"address": address, "query": query}));
    let spec = WavefrontMetric::from_metric(&metric).unwrap();
    let secrets =
        FixedSecrets::default().with(NAMESPACE, "wavefront-api-tokens", &[(spec.token_keys()[0].as_str(), &token)]);
    match measure(&provider(secrets), &metric).await {
        Ok(taken) => println!("value: {:?}\nmetadata: {:?}", taken.reading, taken.metadata),
        Err(err) => {
            assert!(!err.to_string().contains(&token), "the token is in the error");
            panic!("{err}");
        }
    }
}
