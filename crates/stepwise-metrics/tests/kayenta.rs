//! The Kayenta provider against a stand-in for Kayenta's REST API on 127.0.0.1 that holds every
//! request to its swagger: `GET /canaryConfig` (query parameters `configurationAccountName`,
//! `application` only), `POST /canary/{canaryConfigId}` (query parameters `application`,
//! `parentPipelineExecutionId`, `metricsAccountName`, `configurationAccountName`,
//! `storageAccountName` only; a JSON `CanaryExecutionRequest` body: `scopes` (required, a map of
//! `CanaryScopePair {controlScope, experimentScope}`, each a `CanaryScope {scope, location,
//! start, end, step, extendedScopeParams}` with RFC 3339 instants), `thresholds` (required,
//! `{pass, marginal}` numbers), `siteLocal`) and `GET /canary/{canaryExecutionId}` (query
//! parameter `storageAccountName` only), each parameter at most once, no body on a GET, ids that
//! exist. Any deviation is recorded and fails the test. Its answers have the documented shapes:
//! a list of `{id, name, updatedTimestamp, updatedTimestampIso, applications}`,
//! `CanaryExecutionResponse {canaryExecutionId}`, `CanaryExecutionStatusResponse {complete,
//! status, result: {judgeResult: {score: {score, classification}}}, exception, …}`, and Spring's
//! error JSON `{timestamp, status, error, message, path}`.
//!
//! The metrics are Argo Rollouts' examples (docs/analysis/kayenta.md and its provider's tests),
//! read from their YAML, with the address pointed at the stand-in.
//!
//! The same measurement against a real Kayenta with a canary config (the run starts an
//! execution and follows it to its judgement):
//!
//! ```sh
//! STEPWISE_KAYENTA_ADDRESS=http://kayenta.spinnaker:8090 STEPWISE_KAYENTA_APPLICATION=guestbook \
//! STEPWISE_KAYENTA_CONFIG=my-test STEPWISE_KAYENTA_CONTROL='app=guestbook,version=v1' \
//! STEPWISE_KAYENTA_EXPERIMENT='app=guestbook,version=v2' \
//!   cargo test -p stepwise-metrics --test kayenta -- --ignored --nocapture against_a_real_kayenta
//! ```
//!
//! (optionally STEPWISE_KAYENTA_METRICS_ACCOUNT, STEPWISE_KAYENTA_CONFIGURATION_ACCOUNT and
//! STEPWISE_KAYENTA_STORAGE_ACCOUNT; the window is the last 30 minutes.)

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use common::{Answer, Refusal, Request, StandIn};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, Measurement, Metric};
use stepwise_metrics::kayenta::{EXECUTION_ID_KEY, KayentaProvider, SCORE_KEY};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

/// Argo Rollouts' first Kayenta example, docs/analysis/kayenta.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: mann-whitney
spec:
  args:
  - name: start-time
  - name: end-time
  - name: stable-hash
  - name: canary-hash
  metrics:
  - name: mann-whitney
    provider:
      kayenta:
        address: https://kayenta.example.com
        application: guestbook
        canaryConfigName: my-test
        thresholds:
          pass: 90
          marginal: 75
        scopes:
        - name: default
          controlScope:
            scope: app=guestbook and rollouts-pod-template-hash={{args.stable-hash}}
            step: 60
            start: "{{args.start-time}}"
            end: "{{args.end-time}}"
          experimentScope:
            scope: app=guestbook and rollouts-pod-template-hash={{args.canary-hash}}
            step: 60
            start: "{{args.start-time}}"
            end: "{{args.end-time}}"
"#;

/// Argo Rollouts' second Kayenta example, docs/analysis/kayenta.md: scopes without times, run
/// every `interval` (which the example puts under `kayenta`, where Argo ignores it).
const ARGO_INTERVAL_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: mann-whitney
spec:
  args:
  - name: stable-hash
  - name: canary-hash
  metrics:
  - name: mann-whitney
    provider:
      kayenta:
        address: https://kayenta.intuit.com
        application: guestbook
        canaryConfigName: my-test
        interval: 3600
        count: 3
        # loopback will cause start time value to be equal to start of analysis
        # lookback: true
        thresholds:
          pass: 90
          marginal: 75
        scopes:
        - name: default
          controlScope:
            scope: app=guestbook and rollouts-pod-template-hash={{args.stable-hash}}
            step: 60
          experimentScope:
            scope: app=guestbook and rollouts-pod-template-hash={{args.canary-hash}}
            step: 60
"#;

/// The metric of Argo's Kayenta provider tests (metricproviders/kayenta/kayenta_test.go), with
/// every account and a region.
const ARGO_TEST_METRIC: &str = r#"
name: mann-whitney
provider:
  kayenta:
    address: https://kayenta.example.oom
    application: guestbook
    canaryConfigName: ValidationCanaryConfigTest3
    metricsAccountName: wavefront-prod
    configurationAccountName: intuit-kayenta
    storageAccountName: intuit-kayenta
    threshold:
      pass: 90
      marginal: 75
    scopes:
    - name: default
      controlScope:
        scope: app=guestbook and rollouts-pod-template-hash=xxxx
        step: 60
        region: us-=west-2
        start: "2019-03-29T01:08:34Z"
        end: "2019-03-29T01:38:34Z"
      experimentScope:
        scope: app=guestbook and rollouts-pod-template-hash=yyyy
        step: 60
        region: us-=west-2
        start: "2019-03-29T01:08:34Z"
        end: "2019-03-29T01:38:34Z"
"#;

/// The first example's metric, its arguments substituted as the controller does.
fn example(address: &str) -> Metric {
    let yaml = ARGO_TEMPLATE
        .replace("{{args.start-time}}", "2019-03-29T01:08:34Z")
        .replace("{{args.end-time}}", "2019-03-29T01:38:34Z")
        .replace("{{args.stable-hash}}", "xxxx")
        .replace("{{args.canary-hash}}", "yyyy")
        .replace("https://kayenta.example.com", address);
    metric_of_template(&yaml)
}

fn metric_of_template(yaml: &str) -> Metric {
    let template: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

fn argo_test_metric(address: &str) -> Metric {
    serde_yaml::from_str(&ARGO_TEST_METRIC.replace("https://kayenta.example.oom", address)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The Kayenta stand-in.

/// The canary configs the stand-in knows (Argo's test's list).
fn configs() -> Value {
    json!([
        {"id": "69a6c352-7033-4ca1-858b-02497e5cc672", "name": "ValidationCanaryConfigWF",
         "updatedTimestamp": 1556747152000u64, "updatedTimestampIso": "2019-05-01T21:45:52Z", "applications": ["guestbook"]},
        {"id": "bf9795c0-170f-403e-bb7f-fef3f9a44d42", "name": "ValidationCanaryConfigTest3",
         "updatedTimestamp": 1553707842000u64, "updatedTimestampIso": "2019-03-27T17:30:42Z", "applications": ["guestbook"]},
        {"id": "872bb4d3-3309-48e6-9203-2a456a5c2ce7", "name": "my-test",
         "updatedTimestamp": 1542306335000u64, "updatedTimestampIso": "2018-11-15T18:25:35Z", "applications": ["guestbook"]}
    ])
}

const EXECUTION_ID: &str = "01DS50WVHAWSTAQACJKB1VKDQB";

/// A request that passed every check.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    ListConfigs { params: BTreeMap<String, String> },
    Start { config_id: String, params: BTreeMap<String, String>, body: Value },
    Status { execution_id: String },
}

/// How the stand-in answers: the config list, the start of an execution, and the execution's
/// successive statuses (the last one repeats).
struct Script {
    configs: (u16, Value),
    start: (u16, Value),
    statuses: VecDeque<(u16, Value)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            configs: (200, configs()),
            start: (200, json!({"canaryExecutionId": EXECUTION_ID})),
            statuses: VecDeque::from([(200, complete(100.0))]),
        }
    }
}

/// Spring's error answer.
fn spring_error(status: u16, error: &str, message: &str, path: &str) -> (u16, Value) {
    (status, json!({"timestamp": 1556747152000u64, "status": status, "error": error, "message": message, "path": path}))
}

/// A complete `CanaryExecutionStatusResponse` with this score.
fn complete(score: f64) -> Value {
    json!({
        "application": "guestbook", "parentPipelineExecutionId": null, "pipelineId": EXECUTION_ID,
        "stageStatus": {"fetchControl0": "succeeded", "fetchExperiment0": "succeeded", "mixMetrics": "succeeded",
                        "judge": "succeeded"},
        "complete": true, "status": "succeeded", "exception": null,
        "result": {"judgeResult": {"judgeName": "NetflixACAJudge-v1.0", "results": [], "groupScores": [],
                   "score": {"score": score, "classification": "Pass", "classificationReason": ""}}},
        "canaryConfigId": "872bb4d3-3309-48e6-9203-2a456a5c2ce7", "storageAccountName": "intuit-kayenta"
    })
}

/// A `CanaryExecutionStatusResponse` of an execution still running.
fn running() -> Value {
    json!({"application": "guestbook", "pipelineId": EXECUTION_ID,
           "stageStatus": {"fetchControl0": "running", "judge": "not_started"},
           "complete": false, "status": "running"})
}

/// Kayenta's API on 127.0.0.1: checks every request, answers valid ones as `script` says.
type Kayenta = StandIn<Call>;

impl Kayenta {
    async fn start(script: Script) -> Kayenta {
        let script = Mutex::new(script);
        let checked = |request: &Request| {
            check(request).map_err(|(status, problems)| {
                Refusal::off_spec(&problems, |text| {
                    let (status, body) =
                        spring_error(status, "Bad Request", &format!("off the API: {text}"), &request.target);
                    Answer::json(status, body)
                })
            })
        };
        StandIn::serve("Kayenta's API", checked, move |call| {
            let mut script = script.lock().unwrap();
            let (status, body) = match call {
                Call::ListConfigs { .. } => script.configs.clone(),
                Call::Start { .. } => script.start.clone(),
                Call::Status { .. } if script.statuses.len() > 1 => script.statuses.pop_front().unwrap(),
                Call::Status { .. } => script.statuses[0].clone(),
            };
            Answer::json(status, body)
        })
        .await
    }
}

/// The query parameters, each documented for the operation and given once.
fn params(request: &Request, documented: &[&str], problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (name, value) in &request.params {
        if !documented.contains(&name.as_str()) {
            problems.push(format!("parameter {name} is not documented for {}", request.path));
        }
        if params.insert(name.clone(), value.clone()).is_some() {
            problems.push(format!("parameter {name} is given twice"));
        }
    }
    params
}

/// A `CanaryScope`'s problems.
fn check_scope(at: &str, scope: &Value, problems: &mut Vec<String>) {
    let Some(fields) = scope.as_object() else {
        problems.push(format!("{at} is not a CanaryScope object"));
        return;
    };
    for (key, value) in fields {
        let ok = match key.as_str() {
            "scope" | "location" => value.is_string(),
            "start" | "end" => value.as_str().is_some_and(|t| t.parse::<Timestamp>().is_ok()),
            "step" => value.is_i64(),
            "extendedScopeParams" => value.as_object().is_some_and(|m| m.values().all(Value::is_string)),
            _ => {
                problems.push(format!("{at}.{key} is not a CanaryScope field"));
                continue;
            }
        };
        if !ok {
            problems.push(format!("{at}.{key} = {value} has the wrong type"));
        }
    }
    let instant = |k: &str| fields.get(k).and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
    match (instant("start"), instant("end")) {
        (Some(s), Some(e)) if s < e => {}
        (Some(s), Some(e)) => problems.push(format!("{at}: start {s} is not before end {e}")),
        _ => problems.push(format!("{at}: start and end are required instants")),
    }
}

/// Every rule of the API that the request must follow; the status of a refusal.
fn check(request: &Request) -> Result<Call, (u16, Vec<String>)> {
    let mut problems = Vec::new();
    let segments: Vec<&str> = request.path.split('/').skip(1).collect();
    let ids: Vec<String> =
        configs().as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    let no_body = |problems: &mut Vec<String>| {
        if !request.body.is_empty() || !request.headers("transfer-encoding").is_empty() {
            problems.push(format!("a body on GET {}", request.path));
        }
    };
    let call = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["canaryConfig"]) => {
            no_body(&mut problems);
            Call::ListConfigs { params: params(request, &["configurationAccountName", "application"], &mut problems) }
        }
        ("POST", ["canary", config_id]) => {
            let params = params(
                request,
                &[
                    "application",
                    "parentPipelineExecutionId",
                    "metricsAccountName",
                    "configurationAccountName",
                    "storageAccountName",
                ],
                &mut problems,
            );
            if !ids.iter().any(|id| id == config_id) {
                return Err((404, vec![format!("no canary config {config_id}")]));
            }
            match request.headers("content-type").as_slice() {
                [t] if t.split(';').next().map(str::trim) == Some("application/json") => {}
                other => problems.push(format!("Content-Type {other:?} (application/json is needed)")),
            }
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            match body.as_object() {
                None => problems.push("the body is not a CanaryExecutionRequest object".into()),
                Some(fields) => {
                    for key in fields.keys() {
                        if !matches!(key.as_str(), "scopes" | "thresholds" | "siteLocal") {
                            problems.push(format!("{key} is not a CanaryExecutionRequest field"));
                        }
                    }
                    match fields.get("scopes").and_then(Value::as_object) {
                        Some(scopes) if !scopes.is_empty() => {
                            for (name, pair) in scopes {
                                let keys: Vec<&str> = pair
                                    .as_object()
                                    .map(|p| p.keys().map(String::as_str).collect())
                                    .unwrap_or_default();
                                if keys != ["controlScope", "experimentScope"] {
                                    problems.push(format!("scopes.{name} is not a CanaryScopePair: {keys:?}"));
                                }
                                check_scope(
                                    &format!("scopes.{name}.controlScope"),
                                    &pair["controlScope"],
                                    &mut problems,
                                );
                                check_scope(
                                    &format!("scopes.{name}.experimentScope"),
                                    &pair["experimentScope"],
                                    &mut problems,
                                );
                            }
                        }
                        _ => problems.push("scopes is required: a map of CanaryScopePair".into()),
                    }
                    match fields.get("thresholds").and_then(Value::as_object) {
                        Some(t)
                            if t.keys().all(|k| k == "pass" || k == "marginal")
                                && t.get("pass").is_some_and(Value::is_number)
                                && t.get("marginal").is_some_and(Value::is_number) => {}
                        _ => problems.push(format!("thresholds {} is not {{pass, marginal}}", body["thresholds"])),
                    }
                }
            }
            Call::Start { config_id: config_id.to_string(), params, body }
        }
        ("GET", ["canary", execution_id]) => {
            no_body(&mut problems);
            params(request, &["storageAccountName"], &mut problems);
            if *execution_id != EXECUTION_ID {
                return Err((404, vec![format!("no canary execution {execution_id}")]));
            }
            Call::Status { execution_id: execution_id.to_string() }
        }
        (method, _) => return Err((404, vec![format!("{method} {} is not an operation", request.path)])),
    };
    if problems.is_empty() { Ok(call) } else { Err((400, problems)) }
}

// ---------------------------------------------------------------------------------------------

async fn run(metric: &Metric) -> Result<Taken, Error> {
    KayentaProvider::new().run(&RunRef::default(), metric).await
}

async fn resume(metric: &Metric, after: &Taken) -> Result<Taken, Error> {
    let measurement =
        Measurement { phase: AnalysisPhase::Running, metadata: Some(after.metadata.clone()), ..Measurement::default() };
    KayentaProvider::new().resume(&RunRef::default(), metric, &measurement).await
}

fn params_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn argos_example_starts_an_execution_and_follows_it_to_its_verdict() {
    let server = Kayenta::start(Script {
        statuses: VecDeque::from([(200, running()), (200, complete(100.0))]),
        ..Script::default()
    })
    .await;
    let metric = example(&server.address);
    let before = Timestamp::now();
    let started = run(&metric).await.unwrap();
    let Reading::InProgress { resume_at } = started.reading else { panic!("{started:?}") };
    let wait = resume_at.as_second() - before.as_second();
    assert!((14..=16).contains(&wait), "resumes in {wait} s, not 15");
    assert_eq!(started.metadata, params_of(&[(EXECUTION_ID_KEY, EXECUTION_ID)]));

    // Still running: look again.
    let again = resume(&metric, &started).await.unwrap();
    assert!(matches!(again.reading, Reading::InProgress { .. }), "{again:?}");
    assert_eq!(again.metadata.get(EXECUTION_ID_KEY).map(String::as_str), Some(EXECUTION_ID));
    // Complete: judged.
    let done = resume(&metric, &again).await.unwrap();
    assert_eq!(
        done.reading,
        Reading::Verdict { phase: AnalysisPhase::Successful, message: Some("score 100 (pass 90, marginal 75)".into()) }
    );
    assert_eq!(done.metadata.get(SCORE_KEY).map(String::as_str), Some("100"));

    let scope = |hash: &str| {
        json!({"scope": format!("app=guestbook and rollouts-pod-template-hash={hash}"), "location": "", "step": 60,
               "start": "2019-03-29T01:08:34Z", "end": "2019-03-29T01:38:34Z"})
    };
    let accounts = [("configurationAccountName", ""), ("metricsAccountName", ""), ("storageAccountName", "")];
    assert_eq!(
        server.calls(),
        [
            Call::ListConfigs { params: params_of(&[("application", "guestbook"), ("configurationAccountName", "")]) },
            Call::Start {
                config_id: "872bb4d3-3309-48e6-9203-2a456a5c2ce7".into(),
                params: params_of(&[[("application", "guestbook")].as_slice(), &accounts].concat()),
                body: json!({
                    "scopes": {"default": {"controlScope": scope("xxxx"), "experimentScope": scope("yyyy")}},
                    "thresholds": {"pass": 90, "marginal": 75}
                }),
            },
            Call::Status { execution_id: EXECUTION_ID.into() },
            Call::Status { execution_id: EXECUTION_ID.into() },
        ]
    );
}

#[tokio::test]
async fn argos_test_metric_sends_its_accounts_and_region() {
    let server = Kayenta::start(Script::default()).await;
    let metric = argo_test_metric(&server.address);
    let started = run(&metric).await.unwrap();
    assert!(matches!(started.reading, Reading::InProgress { .. }));
    let calls = server.calls();
    // As Argo's test: the lookup and the execution URLs (the lookup with the configuration
    // account, which is also the storage account there).
    assert_eq!(
        calls[0],
        Call::ListConfigs {
            params: params_of(&[("application", "guestbook"), ("configurationAccountName", "intuit-kayenta")])
        }
    );
    let Call::Start { config_id, params, body } = &calls[1] else { panic!("{calls:?}") };
    assert_eq!(config_id, "bf9795c0-170f-403e-bb7f-fef3f9a44d42");
    assert_eq!(
        params,
        &params_of(&[
            ("application", "guestbook"),
            ("metricsAccountName", "wavefront-prod"),
            ("configurationAccountName", "intuit-kayenta"),
            ("storageAccountName", "intuit-kayenta"),
        ])
    );
    // Argo's expectedBody.
    let expected: Value = serde_json::from_str(
        r#"{"scopes": {"default":{
            "controlScope": {"scope":"app=guestbook and rollouts-pod-template-hash=xxxx","location":"us-=west-2",
                             "step":60,"start":"2019-03-29T01:08:34Z","end":"2019-03-29T01:38:34Z"},
            "experimentScope": {"scope":"app=guestbook and rollouts-pod-template-hash=yyyy","location":"us-=west-2",
                                "step":60,"start":"2019-03-29T01:08:34Z","end":"2019-03-29T01:38:34Z"}}},
            "thresholds" : {"pass": 90, "marginal": 75}}"#,
    )
    .unwrap();
    assert_eq!(body, &expected);
}

#[tokio::test]
async fn the_score_is_pass_marginal_or_fail_by_the_thresholds() {
    for (score, phase) in [
        (95.5, AnalysisPhase::Successful),
        (90.0, AnalysisPhase::Successful),
        (89.9, AnalysisPhase::Inconclusive),
        (75.0, AnalysisPhase::Inconclusive),
        (74.99, AnalysisPhase::Failed),
        (12.0, AnalysisPhase::Failed),
    ] {
        let server =
            Kayenta::start(Script { statuses: VecDeque::from([(200, complete(score))]), ..Script::default() }).await;
        let metric = example(&server.address);
        let started = run(&metric).await.unwrap();
        let done = resume(&metric, &started).await.unwrap();
        let Reading::Verdict { phase: got, message } = done.reading else { panic!("{score}: {done:?}") };
        assert_eq!(got, phase, "score {score}");
        let whole = (score as i64).to_string();
        assert_eq!(message, Some(format!("score {whole} (pass 90, marginal 75)")));
        assert_eq!(done.metadata.get(SCORE_KEY), Some(&whole));
        assert_eq!(server.calls().len(), 3);
    }
}

#[tokio::test]
async fn scopes_without_times_span_the_metrics_interval_before_now() {
    let server = Kayenta::start(Script::default()).await;
    let yaml = ARGO_INTERVAL_TEMPLATE
        .replace("{{args.stable-hash}}", "xxxx")
        .replace("{{args.canary-hash}}", "yyyy")
        .replace("https://kayenta.intuit.com", &server.address);
    // As written, interval and count sit under kayenta: named, nothing sent.
    let err = run(&metric_of_template(&yaml)).await.unwrap_err().to_string();
    assert!(err.starts_with("provider.kayenta: unknown field"), "{err}");
    assert!(err.ends_with("belongs to the metric, beside provider"), "{err}");
    assert!(server.calls().is_empty());
    // Where Argo reads them, on the metric.
    let moved = yaml.replace("        interval: 3600\n        count: 3\n", "").replace(
        "  - name: mann-whitney\n    provider:",
        "  - name: mann-whitney\n    interval: 3600\n    count: 3\n    provider:",
    );
    let metric = metric_of_template(&moved);
    assert!(metric.interval.is_some());
    let before = Timestamp::now().as_second();
    run(&metric).await.unwrap();
    let after = Timestamp::now().as_second();
    let calls = server.calls();
    let Call::Start { body, .. } = &calls[1] else { panic!("{calls:?}") };
    for side in ["controlScope", "experimentScope"] {
        let at =
            |k: &str| body["scopes"]["default"][side][k].as_str().unwrap().parse::<Timestamp>().unwrap().as_second();
        assert!((before..=after).contains(&at("end")), "{body}");
        assert_eq!(at("end") - at("start"), 3600, "{body}");
    }
}

#[tokio::test]
async fn an_unknown_canary_config_is_named_with_those_there_are() {
    let server = Kayenta::start(Script::default()).await;
    let mut metric = example(&server.address);
    metric.provider.kayenta.as_mut().unwrap()["canaryConfigName"] = json!("my-tset");
    let err = run(&metric).await.unwrap_err().to_string();
    assert!(err.starts_with("provider.kayenta.canaryConfigName: Canary config not found"), "{err}");
    assert!(err.contains("ValidationCanaryConfigWF, ValidationCanaryConfigTest3, my-test"), "{err}");
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test]
async fn server_errors_are_errors_with_kayentas_message() {
    let cases = [
        (
            Script {
                configs: spring_error(
                    500,
                    "Internal Server Error",
                    "Unable to resolve account intuit-kayenta.",
                    "/canaryConfig",
                ),
                ..Script::default()
            },
            "GET /canaryConfig: HTTP 500: Unable to resolve account intuit-kayenta.",
            1,
        ),
        (
            Script {
                start: spring_error(
                    400,
                    "Bad Request",
                    "Canary config '872bb4d3' has no metrics for scope default.",
                    "/canary/872bb4d3",
                ),
                ..Script::default()
            },
            "POST /canary/872bb4d3-3309-48e6-9203-2a456a5c2ce7: HTTP 400: Canary config '872bb4d3' has no metrics",
            2,
        ),
        (
            Script { start: (200, json!({"canaryExecutionId": ""})), ..Script::default() },
            "Invalid canaryExecutionId",
            2,
        ),
    ];
    for (script, expected, calls) in cases {
        let server = Kayenta::start(script).await;
        let err = run(&example(&server.address)).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert_eq!(server.calls().len(), calls, "{expected}");
    }
    // The execution's status cannot be read.
    let server = Kayenta::start(Script {
        statuses: VecDeque::from([spring_error(500, "Internal Server Error", "Storage unavailable", "/canary/x")]),
        ..Script::default()
    })
    .await;
    let metric = example(&server.address);
    let started = run(&metric).await.unwrap();
    let err = resume(&metric, &started).await.unwrap_err().to_string();
    assert!(err.contains(&format!("GET /canary/{EXECUTION_ID}: HTTP 500: Storage unavailable")), "{err}");
}

#[tokio::test]
async fn an_execution_without_a_score_is_an_error_saying_why() {
    let failed = json!({"application": "guestbook", "pipelineId": EXECUTION_ID, "complete": true, "status": "terminal",
        "stageStatus": {"fetchControl0": "terminal"},
        "exception": {"timestamp": 1556747152000u64, "exceptionType": "IllegalArgumentException",
                      "details": {"error": "Unexpected Task Failure",
                                  "errors": ["No data was returned for metric cpu in scope default."]}}});
    let server = Kayenta::start(Script { statuses: VecDeque::from([(200, failed)]), ..Script::default() }).await;
    let metric = example(&server.address);
    let started = run(&metric).await.unwrap();
    let err = resume(&metric, &started).await.unwrap_err().to_string();
    assert!(err.contains("Missing Score"), "{err}");
    assert!(err.contains("terminal") && err.contains("No data was returned for metric cpu"), "{err}");
    // No `complete` at all.
    let server = Kayenta::start(Script { statuses: VecDeque::from([(200, json!({}))]), ..Script::default() }).await;
    let metric = example(&server.address);
    let started = run(&metric).await.unwrap();
    let err = resume(&metric, &started).await.unwrap_err().to_string();
    assert!(err.contains("Missing Complete Status"), "{err}");
    server.calls();
}

#[tokio::test]
async fn resume_needs_the_execution_id_in_the_metadata() {
    let server = Kayenta::start(Script::default()).await;
    let metric = example(&server.address);
    let err = resume(&metric, &Taken::new(Reading::InProgress { resume_at: Timestamp::now() })).await.unwrap_err();
    assert!(err.to_string().contains("metadata canaryExecutionId"), "{err}");
    assert!(server.calls().is_empty());
}

/// See the top of this file.
#[tokio::test]
#[ignore = "needs a Kayenta: STEPWISE_KAYENTA_ADDRESS"]
async fn against_a_real_kayenta() {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let address = std::env::var("STEPWISE_KAYENTA_ADDRESS").expect("STEPWISE_KAYENTA_ADDRESS");
    let scope = |selector: String| json!({"scope": selector, "step": 60});
    let kayenta = json!({
        "address": address, "application": env("STEPWISE_KAYENTA_APPLICATION"),
        "canaryConfigName": env("STEPWISE_KAYENTA_CONFIG"),
        "metricsAccountName": env("STEPWISE_KAYENTA_METRICS_ACCOUNT"),
        "configurationAccountName": env("STEPWISE_KAYENTA_CONFIGURATION_ACCOUNT"),
        "storageAccountName": env("STEPWISE_KAYENTA_STORAGE_ACCOUNT"),
        "threshold": {"pass": 90, "marginal": 75},
        "scopes": [{"name": "default", "controlScope": scope(env("STEPWISE_KAYENTA_CONTROL")),
                    "experimentScope": scope(env("STEPWISE_KAYENTA_EXPERIMENT"))}]
    });
    let metric: Metric =
        serde_json::from_value(json!({"name": "mann-whitney", "interval": "30m", "provider": {"kayenta": kayenta}}))
            .unwrap();
    let mut taken = run(&metric).await.expect("the execution starts");
    println!("{taken:#?}");
    for _ in 0..40 {
        let Reading::InProgress { .. } = taken.reading else { break };
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        taken = resume(&metric, &taken).await.expect("the execution's status");
        println!("{taken:#?}");
    }
    assert!(matches!(taken.reading, Reading::Verdict { .. }), "{taken:?}");
}
