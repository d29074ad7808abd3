//! The SkyWalking provider against a stand-in for a SkyWalking OAP server's GraphQL query API on
//! 127.0.0.1, which holds every request to the published protocol (SkyWalking's query protocol,
//! GraphQL over HTTP): `POST /graphql`, `Content-Type: application/json`, a body of only `query`
//! (a document declaring `$duration: Duration!`), `variables` and optionally `operationName`,
//! and a `duration` variable of SkyWalking's `Duration` input: `start`, `end` (strings in the
//! step's format, `yyyy-MM-dd HHmm` for `MINUTE`, start not after end), `step` (one of DAY,
//! HOUR, MINUTE, SECOND) and optionally `coldStage`. Any deviation is recorded and fails the
//! test. Its answers have GraphQL's shape: `{"data": …}` and/or `{"errors": [{"message", …}]}`.
//!
//! The metric is Argo Rollouts' own example (docs/analysis/skywalking.md), read from its YAML,
//! with its address pointed at the stand-in.
//!
//! The same measurement against a real OAP server (its query port, 12800):
//!
//! ```sh
//! STEPWISE_SKYWALKING_ADDRESS=http://skywalking-oap.istio-system:12800 \
//! STEPWISE_SKYWALKING_SERVICE=productpage.default \
//!   cargo test -p stepwise-metrics --test skywalking -- --ignored --nocapture against_a_real_skywalking
//! ```

mod common;

use common::{Answer, Refusal, Request, StandIn};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::skywalking::SkywalkingProvider;
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};
use tokio::net::TcpListener;

/// Argo Rollouts' SkyWalking example, docs/analysis/skywalking.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: apdex
spec:
  args:
  - name: service-name
  metrics:
  - name: apdex
    interval: 5m
    successCondition: "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})"
    failureLimit: 3
    provider:
      skywalking:
        interval: 3m
        address: http://skywalking-oap.istio-system:12800
        query: |
          query queryData($duration: Duration!) {
            service_apdex: readMetricsValues(
              condition: { name: "service_apdex", entity: { scope: Service, serviceName: "{{ args.service-name }}", normal: true } },
              duration: $duration) {
                label values { values { value } }
              }
          }
"#;

/// The example's metric, its argument substituted as the controller does, its address `address`.
fn example(address: &str, service: &str) -> Metric {
    let yaml = ARGO_TEMPLATE
        .replace("{{ args.service-name }}", service)
        .replace("http://skywalking-oap.istio-system:12800", address);
    let template: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The GraphQL stand-in.

/// A request that passed every check.
#[derive(Clone, Debug)]
struct Call {
    query: String,
    duration: Value,
}

impl Call {
    /// The window's ends, as UTC times (the provider's time zone).
    fn window(&self) -> (Timestamp, Timestamp) {
        let at = |key: &str| {
            let text = self.duration[key].as_str().unwrap();
            DateTime::strptime("%Y-%m-%d %H%M", text).unwrap().to_zoned(TimeZone::UTC).unwrap().timestamp()
        };
        (at("start"), at("end"))
    }
}

/// An OAP GraphQL endpoint on 127.0.0.1 that checks every request and answers valid ones with
/// `answer`.
type Oap = StandIn<Call>;

impl Oap {
    async fn start(answer: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static) -> Oap {
        let refuse = |problems: Vec<String>| {
            Refusal::off_spec(&problems, |text| {
                Answer::json(400, json!({"errors": [{"message": format!("off the protocol: {text}")}]}))
            })
        };
        StandIn::serve(
            "SkyWalking's GraphQL protocol",
            move |request| check(request).map_err(refuse),
            move |call| {
                let (status, body) = answer(call);
                Answer::json_or_text(status, body)
            },
        )
        .await
    }
}

/// The format of each `Step` of SkyWalking's `Duration`.
fn step_format(step: &str) -> Option<&'static str> {
    match step {
        "DAY" => Some("%Y-%m-%d"),
        "HOUR" => Some("%Y-%m-%d %H"),
        "MINUTE" => Some("%Y-%m-%d %H%M"),
        "SECOND" => Some("%Y-%m-%d %H%M%S"),
        _ => None,
    }
}

/// Every rule of the protocol that the request must follow.
fn check(request: &Request) -> Result<Call, Vec<String>> {
    let mut problems = Vec::new();
    if request.method != "POST" {
        problems.push(format!("method {} (queries are POSTed)", request.method));
    }
    if request.target != "/graphql" {
        problems.push(format!("target {} (the query endpoint is /graphql)", request.target));
    }
    match request.headers("content-type").as_slice() {
        [t] if t.split(';').next().map(str::trim) == Some("application/json") => {}
        other => problems.push(format!("Content-Type {other:?} (application/json is needed)")),
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(Value::Object(body)) => Value::Object(body),
        _ => {
            problems.push("the body is not a JSON object".into());
            return Err(problems);
        }
    };
    for key in body.as_object().unwrap().keys() {
        if !matches!(key.as_str(), "query" | "variables" | "operationName") {
            problems.push(format!("body field {key} is not GraphQL's"));
        }
    }
    let query = body["query"].as_str().unwrap_or_default().to_string();
    if query.trim().is_empty() {
        problems.push("no query".into());
    }
    let duration = body["variables"]["duration"].clone();
    if let Some(variables) = body.get("variables").and_then(Value::as_object) {
        for name in variables.keys() {
            if !query.contains(&format!("${name}")) {
                problems.push(format!("variable {name} is not declared by the query"));
            }
        }
    } else {
        problems.push("no variables object".into());
    }
    if !query.contains("$duration: Duration!") {
        problems.push("the query does not declare $duration: Duration!".into());
    }
    match duration.as_object() {
        None => problems.push("variable duration is not a Duration object".into()),
        Some(fields) => {
            for key in fields.keys() {
                if !matches!(key.as_str(), "start" | "end" | "step" | "coldStage") {
                    problems.push(format!("Duration has no field {key}"));
                }
            }
            let step = fields.get("step").and_then(Value::as_str).unwrap_or_default();
            match step_format(step) {
                None => problems.push(format!("step {step:?} is not one of DAY, HOUR, MINUTE, SECOND")),
                Some(format) => {
                    let mut times = Vec::new();
                    for key in ["start", "end"] {
                        let text = fields.get(key).and_then(Value::as_str).unwrap_or_default();
                        match DateTime::strptime(format, text) {
                            Ok(t) if t.strftime(format).to_string() == text => times.push(t),
                            _ => problems.push(format!("{key} {text:?} is not in the {step} format {format}")),
                        }
                    }
                    if let [start, end] = times[..]
                        && start > end
                    {
                        problems.push(format!("the window ends ({end}) before it starts ({start})"));
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(Call { query, duration }) } else { Err(problems) }
}

// ---------------------------------------------------------------------------------------------

/// SkyWalking's answer to the example's `readMetricsValues` (a `MetricsValues` with labelled
/// values; `value` is a Long, in apdex ten-thousandths).
fn apdex_answer(values: &[i64]) -> Value {
    let values: Vec<Value> = values.iter().map(|v| json!({"value": v})).collect();
    json!({"data": {"service_apdex": {"label": null, "values": {"values": values}}}})
}

async fn measure(address: &str) -> Result<Taken, Error> {
    SkywalkingProvider::new().run(&RunRef::default(), &example(address, "checkout")).await
}

#[tokio::test]
async fn argos_example_measures_the_answers_data_over_its_window() {
    let server = Oap::start(|_| (200, apdex_answer(&[9950, 9980, 10000]).to_string())).await;
    let before = Timestamp::now();
    let taken = measure(&server.address).await.unwrap();
    let after = Timestamp::now();
    assert_eq!(taken.reading, Reading::Value(apdex_answer(&[9950, 9980, 10000])["data"].clone()));
    assert!(taken.metadata.is_empty());

    let call = server.call();
    assert!(call.query.contains(r#"serviceName: "checkout""#), "{}", call.query);
    assert!(call.query.starts_with("query queryData($duration: Duration!) {"), "{}", call.query);
    assert_eq!(call.duration["step"], "MINUTE");
    // The provider's 3m window ending at the measurement's minute (Argo's start/end).
    let (start, end) = call.window();
    let minute = |t: Timestamp| t.as_second() - t.as_second().rem_euclid(60);
    assert!((minute(before)..=minute(after)).contains(&end.as_second()), "{end} not the minute of {before}");
    assert_eq!(end.as_second() - start.as_second(), 180);
}

#[tokio::test]
async fn graphql_errors_are_the_error_text() {
    let server = Oap::start(|_| {
        let errors = json!({"data": {"service_apdex": null}, "errors": [
            {"message": "Exception while fetching data (/service_apdex) : Metrics service_apdex doesn't exist",
             "locations": [{"line": 2, "column": 3}], "path": ["service_apdex"]}
        ]});
        (200, errors.to_string())
    })
    .await;
    let err = measure(&server.address).await.unwrap_err();
    server.call();
    let text = err.to_string();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(text.contains("Metrics service_apdex doesn't exist"), "{text}");
    assert!(text.starts_with(&format!("SkyWalking at {}", server.address)), "{text}");
}

#[tokio::test]
async fn a_rejected_query_is_an_error_with_its_messages() {
    let server = Oap::start(|_| {
        let errors = json!({"errors": [
            {"message": "Validation error of type FieldUndefined: Field 'readMetricsValue' in type 'Query' is undefined"},
            {"message": "Validation error of type UnusedVariable"}
        ]});
        (400, errors.to_string())
    })
    .await;
    let text = measure(&server.address).await.unwrap_err().to_string();
    server.call();
    assert!(
        text.ends_with(
            "Field 'readMetricsValue' in type 'Query' is undefined; Validation error of type UnusedVariable"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_error_is_an_error_with_its_status_and_body() {
    let server = Oap::start(|_| (500, "OAP storage unavailable: Elasticsearch cluster is red".into())).await;
    let text = measure(&server.address).await.unwrap_err().to_string();
    server.call();
    assert!(text.contains("HTTP 500") && text.contains("Elasticsearch cluster is red"), "{text}");
}

#[tokio::test]
async fn an_answer_without_data_is_no_data() {
    for answer in [json!({"data": null}), json!({})] {
        let body = answer.to_string();
        let server = Oap::start(move |_| (200, body.clone())).await;
        let err = measure(&server.address).await.unwrap_err();
        server.call();
        assert!(matches!(&err, Error::NoData { metric } if metric == "apdex"), "{answer}: {err:?}");
    }
    // Data with nothing in it is a value: the conditions decide (Argo passes it on).
    let server = Oap::start(|_| (200, apdex_answer(&[]).to_string())).await;
    let taken = measure(&server.address).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!({"service_apdex": {"label": null, "values": {"values": []}}})));
}

#[tokio::test]
async fn an_unusable_metric_sends_nothing() {
    let server = Oap::start(|_| (200, apdex_answer(&[1]).to_string())).await;
    let mut metric = example(&server.address, "checkout");
    metric.provider.skywalking.as_mut().unwrap().as_object_mut().unwrap().remove("interval");
    let err = SkywalkingProvider::new().run(&RunRef::default(), &metric).await.unwrap_err();
    assert!(err.to_string().starts_with("provider.skywalking.interval: is required"), "{err}");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = measure(&address).await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

/// See the top of this file.
#[tokio::test]
#[ignore = "needs a SkyWalking OAP server: STEPWISE_SKYWALKING_ADDRESS"]
async fn against_a_real_skywalking() {
    let address = std::env::var("STEPWISE_SKYWALKING_ADDRESS").expect("STEPWISE_SKYWALKING_ADDRESS");
    let service = std::env::var("STEPWISE_SKYWALKING_SERVICE").unwrap_or_else(|_| "productpage.default".into());
    let metric = example(&address, &service);
    let taken = SkywalkingProvider::new().run(&RunRef::default(), &metric).await;
    println!("{taken:#?}");
    let taken = taken.expect("the measurement");
    let Reading::Value(data) = taken.reading else { panic!("not a value") };
    assert!(data.get("service_apdex").is_some(), "{data}");
}
