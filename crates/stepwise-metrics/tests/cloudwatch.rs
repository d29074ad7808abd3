//! The CloudWatch provider against a local server on 127.0.0.1 that plays CloudWatch's
//! GetMetricData (the AWS JSON 1.0 protocol) and STS's AssumeRoleWithWebIdentity as AWS's API
//! references describe them. The server checks every request it gets: method and path, the
//! protocol's headers, the Signature Version 4 Authorization (credential scope, signed headers, and
//! the signature itself, recomputed here from the request as it arrived with the test's secret key,
//! by code independent of the provider's), and the body against GetMetricData's input schema. A
//! request that fails a check is answered as AWS would refuse it and recorded, so a test fails
//! either way.
//!
//! Against real CloudWatch, the ignored test at the end measures with the controller's own
//! environment (keys, or `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`), with an identity
//! allowed `cloudwatch:GetMetricData`:
//!
//! ```text
//! AWS_REGION=eu-west-1 AWS_ACCESS_KEY_ID=AKIA… AWS_SECRET_ACCESS_KEY=… [AWS_SESSION_TOKEN=…] \
//!   cargo test -p stepwise-metrics --test cloudwatch -- --ignored --nocapture
//! ```
//!
//! It reads the account's own count of GetMetricData calls (`AWS/Usage`, `CallCount`), which
//! exists in every account that ran it before; an empty answer still proves the call and its
//! signature.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Answer, Request};
use k8s_openapi::jiff::Timestamp;
use ring::{digest, hmac};
use serde_json::{Value, json};
use stepwise_api::{Metric, MetricProvider as Spec};
use stepwise_metrics::cloudwatch::{CloudWatchProvider, Credentials, CredentialsSource, Settings, WebIdentity};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

const REGION: &str = "eu-central-1";
const ACCESS_KEY: &str = "AKIDSTEPWISETEST";
const SECRET_KEY: &str = "test/secret+key-that-must-never-show";
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";

/// The AnalysisTemplate of Argo Rollouts' docs/analysis/cloudwatch.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  metrics:
  - name: success-rate
    interval: 1m
    successCondition: "len(result[0].Values) >= 5 and all(result[0].Values, {# <= 0.01})"
    failureLimit: 3
    provider:
      cloudWatch:
        interval: 30m
        metricDataQueries:
        - {
            "id": "rate",
            "expression": "errors / requests"
          }
        - {
            "id": "errors",
            "metricStat": {
              "metric": {
                "namespace": "app",
                "metricName": "errors"
              },
              "period": 300,
              "stat": "Sum",
              "unit": "Count"
            },
            "returnData": false
          }
        - {
            "id": "requests",
            "metricStat": {
              "metric": {
                "namespace": "app",
                "metricName": "requests"
              },
              "period": 300,
              "stat": "Sum",
              "unit": "Count"
            },
            "returnData": false
          }
"#;

fn argo_metric() -> Metric {
    let template: serde_yaml::Value = serde_yaml::from_str(ARGO_TEMPLATE).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

fn metric_of(cloud_watch: Value) -> Metric {
    Metric {
        name: "m".into(),
        provider: Spec { cloud_watch: Some(cloud_watch), ..Default::default() },
        ..Default::default()
    }
}

fn one_query() -> Metric {
    metric_of(json!({"interval": "10m", "metricDataQueries": [{"id": "p99", "metricStat": {
        "metric": {"namespace": "AWS/ApplicationELB", "metricName": "TargetResponseTime",
                   "dimensions": [{"name": "LoadBalancer", "value": "app/web/50dc6c495c0c9188"}]},
        "period": 60, "stat": "p99", "unit": "Seconds"}}]}))
}

// ------------------------------------------------------------------------------------------------
// An HTTP server of one answer per connection
// ------------------------------------------------------------------------------------------------

/// An answer in the AWS JSON 1.0 protocol.
fn aws_json(status: u16, body: Value) -> Answer {
    Answer::new(status, "application/x-amz-json-1.0", body.to_string())
}

/// An error as the AWS JSON protocols write it.
fn aws_error(status: u16, kind: &str, message: &str) -> Answer {
    aws_json(status, json!({"__type": format!("com.amazonaws.cloudwatch#{kind}"), "message": message}))
}

type Handler = Arc<dyn Fn(&Request) -> Answer + Send + Sync>;

/// Serves `handler` on 127.0.0.1; the address and every request seen.
async fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let address = common::serve(move |request| {
        log.lock().unwrap().push(request.clone());
        handler(request).with_header("x-amzn-requestid", "a7c1f4e2-0000-4000-8000-000000000001")
    })
    .await;
    (address, seen)
}

// ------------------------------------------------------------------------------------------------
// A fake CloudWatch
// ------------------------------------------------------------------------------------------------

/// Keys the fake accepts, by access key id.
#[derive(Clone, Debug)]
struct Keys {
    access: String,
    secret: String,
    token: Option<String>,
}

fn static_keys() -> Keys {
    Keys { access: ACCESS_KEY.into(), secret: SECRET_KEY.into(), token: None }
}

/// A fake CloudWatch: its address, the keys it accepts, what it saw, and the checks requests
/// failed.
struct FakeCloudWatch {
    address: String,
    seen: Arc<Mutex<Vec<Request>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl FakeCloudWatch {
    /// A CloudWatch accepting `keys` that answers the n-th valid request (from 0) with
    /// `answer(n, input)`.
    async fn start(
        keys: Arc<Mutex<Vec<Keys>>>,
        answer: impl Fn(usize, &Value) -> Answer + Send + Sync + 'static,
    ) -> FakeCloudWatch {
        let problems = Arc::new(Mutex::new(Vec::new()));
        let valid = Arc::new(AtomicUsize::new(0));
        let recorded = problems.clone();
        let handler: Handler = Arc::new(move |seen: &Request| {
            let accepted = keys.lock().unwrap().clone();
            match check_get_metric_data(seen, &accepted) {
                Ok(input) => answer(valid.fetch_add(1, Ordering::SeqCst), &input),
                Err(Refusal::Signature(problem)) => {
                    recorded.lock().unwrap().push(problem);
                    aws_json(
                        403,
                        json!({"__type": "com.amazon.coral.service#InvalidSignatureException",
                           "message": "The request signature we calculated does not match the signature you provided. \
                                       Check your AWS Secret Access Key and signing method."}),
                    )
                }
                Err(Refusal::Input(problem)) => {
                    recorded.lock().unwrap().push(problem.clone());
                    aws_error(400, "InvalidParameterValueException", &problem)
                }
            }
        });
        let (address, seen) = serve(handler).await;
        FakeCloudWatch { address, seen, problems }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// The inputs of the requests, in order.
    fn inputs(&self) -> Vec<Value> {
        self.requests().iter().map(|s| serde_json::from_slice(&s.body).unwrap()).collect()
    }
}

/// Why the fake refused a request.
enum Refusal {
    /// The signature, or what it covers, is wrong (AWS answers 403).
    Signature(String),
    /// The request is not GetMetricData's (AWS answers 400).
    Input(String),
}

/// Checks a request as CloudWatch would; its input when it passes.
fn check_get_metric_data(seen: &Request, accepted: &[Keys]) -> Result<Value, Refusal> {
    let input = |p: String| Refusal::Input(p);
    if seen.method != "POST" || seen.target != "/" {
        return Err(input(format!("{} {}: GetMetricData is POST /", seen.method, seen.target)));
    }
    let header = |name: &str| seen.one_header(name).map_err(input);
    if header("content-type")? != "application/x-amz-json-1.0" {
        return Err(input(format!("content-type {:?}", header("content-type")?)));
    }
    if header("x-amz-target")? != TARGET {
        return Err(input(format!("x-amz-target {:?}", header("x-amz-target")?)));
    }
    if header("content-length")? != seen.body.len().to_string() {
        return Err(input("content-length is not the body's".into()));
    }
    let keys = check_signature(seen, accepted, "monitoring").map_err(Refusal::Signature)?;
    match (&keys.token, seen.one_header("x-amz-security-token")) {
        (Some(token), Ok(sent)) if sent == token => {}
        (None, Err(_)) if seen.header("x-amz-security-token").is_none() => {}
        (want, got) => {
            return Err(Refusal::Signature(format!("x-amz-security-token: want {want:?}, got {got:?}")));
        }
    }
    let body: Value =
        serde_json::from_slice(&seen.body).map_err(|e| input(format!("the body is not JSON: {e}: {}", seen.text())))?;
    check_input(&body).map_err(input)?;
    Ok(body)
}

/// Recomputes the Signature Version 4 of `seen` and compares it with the one it carries; the keys
/// it was signed with.
fn check_signature(seen: &Request, accepted: &[Keys], service: &str) -> Result<Keys, String> {
    let authorization = seen.one_header("authorization")?;
    let amz_date = seen.one_header("x-amz-date")?;
    let well_formed = amz_date.len() == 16
        && amz_date.char_indices().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    if !well_formed {
        return Err(format!("x-amz-date {amz_date:?} is not YYYYMMDDTHHMMSSZ"));
    }
    let d = amz_date;
    let signed_at: Timestamp =
        format!("{}-{}-{}T{}:{}:{}Z", &d[..4], &d[4..6], &d[6..8], &d[9..11], &d[11..13], &d[13..15])
            .parse()
            .map_err(|e| format!("x-amz-date {d:?}: {e}"))?;
    let skew = (Timestamp::now().as_second() - signed_at.as_second()).abs();
    if skew > 5 * 60 {
        return Err(format!("x-amz-date {d} is {skew} s away from now"));
    }

    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("authorization {authorization:?} is not AWS4-HMAC-SHA256"))?;
    let fields: BTreeMap<&str, &str> = fields.split(", ").filter_map(|f| f.split_once('=')).collect();
    let (credential, signed_headers, signature) =
        match (fields.get("Credential"), fields.get("SignedHeaders"), fields.get("Signature")) {
            (Some(c), Some(h), Some(s)) if fields.len() == 3 => (*c, *h, *s),
            _ => return Err(format!("authorization {authorization:?} lacks Credential, SignedHeaders or Signature")),
        };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access, date, region, in_scope, "aws4_request"] = scope[..] else {
        return Err(format!("credential {credential:?} is not KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    if date != &d[..8] || region != REGION || in_scope != service {
        return Err(format!("credential scope {credential:?}: want {}/{REGION}/{service}/aws4_request", &d[..8]));
    }
    let keys = accepted.iter().find(|k| k.access == access).ok_or_else(|| format!("unknown access key {access}"))?;

    let names: Vec<&str> = signed_headers.split(';').collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    if names != sorted || names.iter().any(|n| n.chars().any(|c| c.is_ascii_uppercase())) {
        return Err(format!("signed headers {signed_headers:?} are not lowercase, sorted and distinct"));
    }
    let mut must_sign = vec!["content-type", "host", "x-amz-date"];
    if service == "monitoring" {
        must_sign.push("x-amz-target");
    }
    if seen.header("x-amz-security-token").is_some() {
        must_sign.push("x-amz-security-token");
    }
    if let Some(missing) = must_sign.iter().find(|n| !names.contains(n)) {
        return Err(format!("{missing} is not signed (signed: {signed_headers})"));
    }

    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> =
            seen.headers(name).iter().map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        if values.is_empty() {
            return Err(format!("signed header {name} was not sent"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let (path, query) = seen.target.split_once('?').unwrap_or((&seen.target, ""));
    if !query.is_empty() {
        return Err(format!("unexpected query {query:?}"));
    }
    let canonical = format!(
        "{}\n{path}\n\n{canonical_headers}\n{signed_headers}\n{}",
        seen.method,
        hex(digest::digest(&digest::SHA256, &seen.body).as_ref())
    );
    let scope = format!("{date}/{REGION}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{d}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{}", keys.secret).into_bytes();
    for part in [date, REGION, service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes()).as_ref().to_vec();
    }
    let expected = hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()).as_ref());
    if signature != expected {
        return Err("the signature does not match the request".into());
    }
    Ok(keys.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GetMetricData's input, as its API reference describes it.
fn check_input(body: &Value) -> Result<(), String> {
    let top = object(
        body,
        "input",
        &["MetricDataQueries", "StartTime", "EndTime", "NextToken", "ScanBy", "MaxDatapoints", "LabelOptions"],
    )?;
    let time =
        |name: &str| top.get(name).and_then(Value::as_f64).ok_or_else(|| format!("{name}: required, epoch seconds"));
    let (start, end) = (time("StartTime")?, time("EndTime")?);
    if start >= end {
        return Err(format!("StartTime {start} is not before EndTime {end}"));
    }
    if (end - Timestamp::now().as_second() as f64).abs() > 300.0 {
        return Err(format!("EndTime {end} is not now"));
    }
    if let Some(token) = top.get("NextToken") {
        token.as_str().filter(|t| !t.is_empty()).ok_or("NextToken: a string")?;
    }
    let queries =
        top.get("MetricDataQueries").and_then(Value::as_array).ok_or("MetricDataQueries: required, a list")?;
    if queries.is_empty() || queries.len() > 500 {
        return Err(format!("MetricDataQueries: {} queries, not 1 to 500", queries.len()));
    }
    let mut ids = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let at = format!("MetricDataQueries[{i}]");
        let q = object(q, &at, &["Id", "Expression", "Label", "MetricStat", "Period", "ReturnData", "AccountId"])?;
        let id = text(q.get("Id"), &format!("{at}.Id"), 255)?.ok_or(format!("{at}.Id: required"))?;
        let mut chars = id.chars();
        if !(chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!("{at}.Id {id:?} does not match ^[a-z][a-zA-Z0-9_]*$"));
        }
        if ids.contains(&id) {
            return Err(format!("{at}.Id {id:?} is not unique"));
        }
        ids.push(id);
        text(q.get("Label"), &format!("{at}.Label"), 1024)?;
        let expression = text(q.get("Expression"), &format!("{at}.Expression"), 2048)?;
        if expression.is_some() == q.contains_key("MetricStat") {
            return Err(format!("{at}: exactly one of Expression and MetricStat"));
        }
        if let Some(period) = q.get("Period") {
            positive(period, &format!("{at}.Period"))?;
        }
        if let Some(r) = q.get("ReturnData") {
            r.as_bool().ok_or(format!("{at}.ReturnData: a boolean"))?;
        }
        if let Some(stat) = q.get("MetricStat") {
            let at = format!("{at}.MetricStat");
            let stat = object(stat, &at, &["Metric", "Period", "Stat", "Unit"])?;
            positive(stat.get("Period").ok_or(format!("{at}.Period: required"))?, &format!("{at}.Period"))?;
            text(stat.get("Stat"), &format!("{at}.Stat"), 255)?.ok_or(format!("{at}.Stat: required"))?;
            if let Some(unit) = text(stat.get("Unit"), &format!("{at}.Unit"), 32)?
                && !UNITS.contains(&unit)
            {
                return Err(format!("{at}.Unit {unit:?} is not a StandardUnit"));
            }
            let at = format!("{at}.Metric");
            let metric = object(
                stat.get("Metric").ok_or(format!("{at}: required"))?,
                &at,
                &["Namespace", "MetricName", "Dimensions"],
            )?;
            text(metric.get("Namespace"), &format!("{at}.Namespace"), 255)?
                .ok_or(format!("{at}.Namespace: required"))?;
            text(metric.get("MetricName"), &format!("{at}.MetricName"), 255)?
                .ok_or(format!("{at}.MetricName: required"))?;
            if let Some(dimensions) = metric.get("Dimensions") {
                let dimensions = dimensions.as_array().ok_or(format!("{at}.Dimensions: a list"))?;
                if dimensions.len() > 30 {
                    return Err(format!("{at}.Dimensions: more than 30"));
                }
                for (j, d) in dimensions.iter().enumerate() {
                    let at = format!("{at}.Dimensions[{j}]");
                    let d = object(d, &at, &["Name", "Value"])?;
                    text(d.get("Name"), &format!("{at}.Name"), 255)?.ok_or(format!("{at}.Name: required"))?;
                    text(d.get("Value"), &format!("{at}.Value"), 1024)?.ok_or(format!("{at}.Value: required"))?;
                }
            }
        }
    }
    Ok(())
}

/// CloudWatch's StandardUnit values.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn object<'a>(v: &'a Value, at: &str, allowed: &[&str]) -> Result<&'a serde_json::Map<String, Value>, String> {
    let map = v.as_object().ok_or(format!("{at}: an object"))?;
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(format!("{at}: unknown member {unknown}")),
        None => Ok(map),
    }
}

fn text<'a>(v: Option<&'a Value>, at: &str, max: usize) -> Result<Option<&'a str>, String> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s)),
        Some(other) => Err(format!("{at}: {other} is not a string of 1 to {max} characters")),
    }
}

fn positive(v: &Value, at: &str) -> Result<(), String> {
    v.as_i64().filter(|p| *p >= 1).map(|_| ()).ok_or(format!("{at}: {v} is not a positive integer"))
}

/// One page of GetMetricDataOutput, as its API reference describes it.
fn output(results: Value, next_token: Option<&str>) -> Answer {
    let mut body = json!({"MetricDataResults": results, "Messages": []});
    if let Some(token) = next_token {
        body["NextToken"] = token.into();
    }
    aws_json(200, body)
}

fn provider(address: &str, credentials: CredentialsSource) -> CloudWatchProvider {
    CloudWatchProvider::new(Settings {
        region: Some(REGION.into()),
        endpoint: Some(address.into()),
        sts_endpoint: None,
        credentials,
    })
}

fn static_provider(address: &str) -> CloudWatchProvider {
    provider(address, CredentialsSource::Static(Credentials::new(ACCESS_KEY, SECRET_KEY)))
}

fn accepted(keys: Keys) -> Arc<Mutex<Vec<Keys>>> {
    Arc::new(Mutex::new(vec![keys]))
}

fn value(taken: &Taken) -> &Value {
    match &taken.reading {
        Reading::Value(v) => v,
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Measurements
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn argos_template_measures_what_cloudwatch_answers_in_argos_shape() {
    let cloudwatch = FakeCloudWatch::start(accepted(static_keys()), |_, _| {
        // returnData: false queries are left out, as CloudWatch does.
        output(
            json!([{"Id": "rate", "Label": "rate", "StatusCode": "Complete",
                    "Timestamps": [1700001500, 1700001200, 1700000900, 1700000600, 1700000300, 1700000000],
                    "Values": [0.0029476787030213707, 0.006100422336931018, 0.01020408163265306,
                               0.007932573128408527, 0.00589622641509434, 0.006339144215530904],
                    "Messages": []}]),
            None,
        )
    })
    .await;
    let metric = argo_metric();
    let taken = static_provider(&cloudwatch.address).run(&RunRef::default(), &metric).await.unwrap();
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());

    let result = value(&taken);
    assert_eq!(result[0]["Id"], "rate");
    assert_eq!(result[0]["StatusCode"], "Complete");
    assert_eq!(result[0]["Timestamps"][0], "2023-11-14T22:38:20Z");
    // Argo's condition, `len(result[0].Values) >= 5 and all(result[0].Values, {# <= 0.01})`,
    // over the same data: one point above 0.01 fails it.
    let values: Vec<f64> = result[0]["Values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(values.len(), 6);
    assert!(!values.iter().all(|v| *v <= 0.01));
    assert!(taken.metadata["range"].contains(" to "), "{:?}", taken.metadata);

    let inputs = cloudwatch.inputs();
    assert_eq!(inputs.len(), 1);
    let input = &inputs[0];
    assert_eq!(input["EndTime"].as_i64().unwrap() - input["StartTime"].as_i64().unwrap(), 30 * 60);
    assert_eq!(
        input["MetricDataQueries"],
        json!([
            {"Id": "rate", "Expression": "errors / requests"},
            {"Id": "errors", "MetricStat": {"Metric": {"Namespace": "app", "MetricName": "errors"},
                "Period": 300, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false},
            {"Id": "requests", "MetricStat": {"Metric": {"Namespace": "app", "MetricName": "requests"},
                "Period": 300, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false},
        ])
    );
    assert!(input.get("NextToken").is_none());
}

#[tokio::test]
async fn pages_are_read_until_no_next_token_and_each_querys_points_joined() {
    let cloudwatch = FakeCloudWatch::start(accepted(static_keys()), |n, input| match n {
        0 => output(
            json!([{"Id": "p99", "Label": "TargetResponseTime", "StatusCode": "PartialData",
                    "Timestamps": [1700000120, 1700000060], "Values": [0.2, 0.25]}]),
            Some("page-2-token"),
        ),
        _ if input["NextToken"] == "page-2-token" => output(
            json!([{"Id": "p99", "Label": "TargetResponseTime", "StatusCode": "Complete",
                    "Timestamps": [1700000000], "Values": [0.3]}]),
            None,
        ),
        _ => aws_error(400, "InvalidNextToken", "the second page must ask with the first page's NextToken"),
    })
    .await;
    let taken = static_provider(&cloudwatch.address).run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());
    assert_eq!(
        *value(&taken),
        json!([{"Id": "p99", "Label": "TargetResponseTime", "StatusCode": "Complete", "Messages": [],
                "Timestamps": ["2023-11-14T22:15:20Z", "2023-11-14T22:14:20Z", "2023-11-14T22:13:20Z"],
                "Values": [0.2, 0.25, 0.3]}])
    );
    let inputs = cloudwatch.inputs();
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[1]["NextToken"], "page-2-token");
    // The same question, asked again for its next page.
    for key in ["MetricDataQueries", "StartTime", "EndTime"] {
        assert_eq!(inputs[0][key], inputs[1][key], "{key}");
    }
}

#[tokio::test]
async fn an_aws_error_is_the_measurements_error_with_its_type_and_message() {
    let cloudwatch = FakeCloudWatch::start(accepted(static_keys()), |_, _| {
        aws_error(
            400,
            "InvalidParameterValueException",
            "The value AWS/ApplicationELB for parameter MetricDataQueries.member.1.MetricStat.Metric.Namespace \
             is invalid.",
        )
    })
    .await;
    let err = static_provider(&cloudwatch.address).run(&RunRef::default(), &one_query()).await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "CloudWatch GetMetricData at {}/: HTTP 400: InvalidParameterValueException: The value AWS/ApplicationELB \
             for parameter MetricDataQueries.member.1.MetricStat.Metric.Namespace is invalid. (request id \
             a7c1f4e2-0000-4000-8000-000000000001)",
            cloudwatch.address
        )
    );
    assert_eq!(cloudwatch.requests().len(), 1, "a client error is not retried");
}

#[tokio::test]
async fn throttling_is_tried_again() {
    let cloudwatch = FakeCloudWatch::start(accepted(static_keys()), |n, _| match n {
        0 => aws_json(400, json!({"__type": "Throttling", "message": "Rate exceeded"})),
        _ => output(json!([{"Id": "p99", "StatusCode": "Complete", "Timestamps": [], "Values": []}]), None),
    })
    .await;
    let taken = static_provider(&cloudwatch.address).run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(value(&taken)[0]["Values"], json!([]));
    assert_eq!(cloudwatch.requests().len(), 2);
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn a_signature_made_with_another_secret_is_refused() {
    let cloudwatch = FakeCloudWatch::start(accepted(static_keys()), |_, _| output(json!([]), None)).await;
    let wrong = provider(
        &cloudwatch.address,
        CredentialsSource::Static(Credentials::new(ACCESS_KEY, "not-the-secret-the-server-knows")),
    );
    let err = wrong.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 403: InvalidSignatureException: The request signature we calculated"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_eq!(cloudwatch.problems(), ["the signature does not match the request"]);

    // And the same request with the right secret passes the same check.
    let taken = static_provider(&cloudwatch.address).run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(*value(&taken), json!([]));
    assert_eq!(cloudwatch.problems().len(), 1);
}

#[tokio::test]
async fn a_session_token_is_sent_and_signed() {
    let keys = Keys { token: Some("session-token-of-the-test".into()), ..static_keys() };
    let cloudwatch = FakeCloudWatch::start(accepted(keys), |_, _| output(json!([]), None)).await;
    let with_token = provider(
        &cloudwatch.address,
        CredentialsSource::Static(
            Credentials::new(ACCESS_KEY, SECRET_KEY).with_session_token("session-token-of-the-test"),
        ),
    );
    with_token.run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());
    let request = &cloudwatch.requests()[0];
    assert_eq!(request.one_header("x-amz-security-token"), Ok("session-token-of-the-test"));
    assert!(
        request
            .one_header("authorization")
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, ")
    );

    // Without the token the fake refuses, as CloudWatch refuses temporary keys without theirs.
    let without = static_provider(&cloudwatch.address);
    assert!(without.run(&RunRef::default(), &one_query()).await.is_err());
    assert_eq!(cloudwatch.problems().len(), 1, "{:?}", cloudwatch.problems());
}

#[tokio::test]
async fn secrets_never_appear_in_errors() {
    // A CloudWatch (or a proxy) that quotes the whole request back in its error.
    let handler: Handler = Arc::new(|seen: &Request| {
        let echo = format!("{:?} {}", seen.headers, seen.text());
        aws_error(400, "ValidationError", &echo)
    });
    let (address, _) = serve(handler).await;
    let keys = Credentials::new(ACCESS_KEY, SECRET_KEY).with_session_token("session-token-that-must-never-show");
    let p = provider(&address, CredentialsSource::Static(keys));
    let err = p.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("ValidationError"), "{err}");
    assert!(err.contains("<redacted>"), "the echo quoted the token: {err}");
    for secret in [SECRET_KEY, "session-token-that-must-never-show"] {
        assert!(!err.contains(secret), "{secret} in {err}");
        assert!(!format!("{p:?}").contains(secret), "{secret} in {p:?}");
    }

    // An STS that quotes the web identity token back.
    let handler: Handler = Arc::new(|seen: &Request| {
        Answer::new(
            400,
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token {}\
                 </Message></Error><RequestId>r</RequestId></ErrorResponse>",
                form(&seen.text())["WebIdentityToken"]
            ),
        )
    });
    let (sts, _) = serve(handler).await;
    let token_file = TokenFile::new("web-identity-token-that-must-never-show");
    let p = web_identity_provider("http://127.0.0.1:1", &sts, &token_file);
    let err = p.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("HTTP 400: InvalidIdentityToken: bad token <redacted>"), "{err}");
    assert!(!err.contains("web-identity-token-that-must-never-show"), "{err}");
}

#[tokio::test]
async fn without_credentials_or_a_region_a_measurement_says_what_to_set() {
    let none = CloudWatchProvider::new(Settings { region: Some(REGION.into()), ..Settings::default() });
    let err = none.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("AWS_ACCESS_KEY_ID") && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    let keys = CredentialsSource::Static(Credentials::new(ACCESS_KEY, SECRET_KEY));
    let no_region = CloudWatchProvider::new(Settings { credentials: keys, ..Settings::default() });
    let err = no_region.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("AWS_REGION"), "{err}");
    assert_eq!(none.kind(), "cloudWatch");
}

// ------------------------------------------------------------------------------------------------
// Web identity
// ------------------------------------------------------------------------------------------------

const ROLE: &str = "arn:aws:iam::123456789012:role/stepwise-canary";

/// A web identity token file in the temporary directory, removed on drop.
struct TokenFile(std::path::PathBuf);

impl TokenFile {
    fn new(token: &str) -> TokenFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("stepwise-cloudwatch-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let file = TokenFile(std::env::temp_dir().join(name));
        file.write(token);
        file
    }

    /// As the kubelet rotates it.
    fn write(&self, token: &str) {
        std::fs::write(&self.0, format!("{token}\n")).unwrap();
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn web_identity_provider(cloudwatch: &str, sts: &str, token_file: &TokenFile) -> CloudWatchProvider {
    CloudWatchProvider::new(Settings {
        region: Some(REGION.into()),
        endpoint: Some(cloudwatch.into()),
        sts_endpoint: Some(sts.into()),
        credentials: CredentialsSource::WebIdentity(WebIdentity {
            role_arn: ROLE.into(),
            token_file: token_file.0.clone(),
            session_name: None,
        }),
    })
}

/// An `application/x-www-form-urlencoded` body.
fn form(body: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let mut out = Vec::new();
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()].iter().map(|b| *b as char).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            } else {
                out.push(b);
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

/// A fake STS that checks each AssumeRoleWithWebIdentity against the token the file holds now,
/// and hands out new keys each time (valid `lifetime` seconds), which it adds to `issued`.
async fn fake_sts(
    token_file: &TokenFile,
    issued: Arc<Mutex<Vec<Keys>>>,
    lifetime: i64,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let recorded = problems.clone();
    let path = token_file.0.clone();
    let handler: Handler = Arc::new(move |seen: &Request| {
        let current = std::fs::read_to_string(&path).unwrap().trim().to_string();
        let params = form(&seen.text());
        let mut wrong = Vec::new();
        if (seen.method.as_str(), seen.target.as_str()) != ("POST", "/") {
            wrong.push(format!("{} {}", seen.method, seen.target));
        }
        if !seen.one_header("content-type").unwrap_or_default().starts_with("application/x-www-form-urlencoded") {
            wrong.push(format!("content-type {:?}", seen.one_header("content-type")));
        }
        if seen.header("authorization").is_some() {
            wrong.push("AssumeRoleWithWebIdentity is not signed".into());
        }
        for (name, want) in [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", ROLE),
            ("WebIdentityToken", current.as_str()),
        ] {
            if params.get(name).map(String::as_str) != Some(want) {
                wrong.push(format!("{name}: {:?}", params.get(name)));
            }
        }
        let session = params.get("RoleSessionName").cloned().unwrap_or_default();
        if !(2..=64).contains(&session.len())
            || !session.chars().all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c))
        {
            wrong.push(format!("RoleSessionName {session:?}"));
        }
        if !wrong.is_empty() {
            recorded.lock().unwrap().extend(wrong.clone());
            return Answer::new(
                400,
                "text/xml",
                format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameterValue</Code><Message>{}\
                     </Message></Error><RequestId>r</RequestId></ErrorResponse>",
                    wrong.join("; ")
                ),
            );
        }
        let mut issued = issued.lock().unwrap();
        let n = issued.len() + 1;
        let keys = Keys {
            access: format!("ASIASTS{n}"),
            secret: format!("sts-secret-{n}"),
            token: Some(format!("sts-token-{n}")),
        };
        issued.push(keys.clone());
        let expires = Timestamp::from_second(Timestamp::now().as_second() + lifetime).unwrap();
        Answer::new(
            200,
            "text/xml",
            format!(
                r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:stepwise:stepwise-controller</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/stepwise-canary/{session}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{}</SessionToken>
      <SecretAccessKey>{}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
                keys.token.as_deref().unwrap_or_default(),
                keys.secret,
                keys.access,
            ),
        )
    });
    let (address, _) = serve(handler).await;
    (address, problems)
}

#[tokio::test]
async fn web_identity_keys_come_from_sts_and_are_kept_while_they_last() {
    let token_file = TokenFile::new("eyJhbGciOiJSUzI1NiJ9.first-token.sig");
    let issued = Arc::new(Mutex::new(Vec::new()));
    let (sts, sts_problems) = fake_sts(&token_file, issued.clone(), 3600).await;
    let cloudwatch = FakeCloudWatch::start(issued.clone(), |_, _| output(json!([]), None)).await;
    let p = web_identity_provider(&cloudwatch.address, &sts, &token_file);

    p.run(&RunRef::default(), &one_query()).await.unwrap();
    p.run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(sts_problems.lock().unwrap().clone(), Vec::<String>::new());
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());
    assert_eq!(issued.lock().unwrap().len(), 1, "an hour's keys are asked for once");
    for request in cloudwatch.requests() {
        assert_eq!(request.one_header("x-amz-security-token"), Ok("sts-token-1"));
        assert!(request.one_header("authorization").unwrap().contains("Credential=ASIASTS1/"));
    }
}

#[tokio::test]
async fn web_identity_keys_near_their_expiry_are_renewed_with_the_rotated_token() {
    let token_file = TokenFile::new("first-token");
    let issued = Arc::new(Mutex::new(Vec::new()));
    // Keys that expire in two minutes are inside the renewal margin at once.
    let (sts, sts_problems) = fake_sts(&token_file, issued.clone(), 120).await;
    let cloudwatch = FakeCloudWatch::start(issued.clone(), |_, _| output(json!([]), None)).await;
    let p = web_identity_provider(&cloudwatch.address, &sts, &token_file);

    p.run(&RunRef::default(), &one_query()).await.unwrap();
    token_file.write("second-token");
    p.run(&RunRef::default(), &one_query()).await.unwrap();
    assert_eq!(sts_problems.lock().unwrap().clone(), Vec::<String>::new());
    assert_eq!(cloudwatch.problems(), Vec::<String>::new());
    assert_eq!(issued.lock().unwrap().len(), 2);
    let tokens: Vec<String> =
        cloudwatch.requests().iter().map(|r| r.one_header("x-amz-security-token").unwrap().to_string()).collect();
    assert_eq!(tokens, ["sts-token-1", "sts-token-2"]);
}

#[tokio::test]
async fn an_sts_refusal_is_the_measurements_error() {
    let token_file = TokenFile::new("token");
    let issued = Arc::new(Mutex::new(Vec::new()));
    let (sts, sts_problems) = fake_sts(&token_file, issued, 3600).await;
    let p = CloudWatchProvider::new(Settings {
        region: Some(REGION.into()),
        endpoint: Some("http://127.0.0.1:1".into()),
        sts_endpoint: Some(sts.clone()),
        credentials: CredentialsSource::WebIdentity(WebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/another".into(),
            token_file: token_file.0.clone(),
            session_name: Some("canary-analysis".into()),
        }),
    });
    let err = p.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "STS AssumeRoleWithWebIdentity at {sts}/ for arn:aws:iam::123456789012:role/another: HTTP 400: \
             InvalidParameterValue: RoleArn"
        )),
        "{err}"
    );
    assert_eq!(sts_problems.lock().unwrap().len(), 1);

    let missing = TokenFile::new("x");
    let path = missing.0.clone();
    drop(missing);
    let p = CloudWatchProvider::new(Settings {
        region: Some(REGION.into()),
        sts_endpoint: Some(sts),
        credentials: CredentialsSource::WebIdentity(WebIdentity {
            role_arn: ROLE.into(),
            token_file: path,
            session_name: None,
        }),
        ..Settings::default()
    });
    let err = p.run(&RunRef::default(), &one_query()).await.unwrap_err().to_string();
    assert!(err.contains("cannot read the web identity token file"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// Real CloudWatch
// ------------------------------------------------------------------------------------------------

#[tokio::test]
#[ignore = "needs AWS credentials and AWS_REGION: see the top of this file"]
async fn real_cloudwatch_answers_a_signed_get_metric_data() {
    let metric = metric_of(json!({"interval": "1h", "metricDataQueries": [{"id": "calls", "metricStat": {
        "metric": {"namespace": "AWS/Usage", "metricName": "CallCount", "dimensions": [
            {"name": "Service", "value": "CloudWatch"}, {"name": "Type", "value": "API"},
            {"name": "Resource", "value": "GetMetricData"}, {"name": "Class", "value": "None"}]},
        "period": 300, "stat": "Sum"}}]}));
    let taken = CloudWatchProvider::from_env().run(&RunRef::default(), &metric).await.unwrap();
    println!("{}\n{:?}", value(&taken), taken.metadata);
    assert_eq!(value(&taken)[0]["Id"], "calls");
    assert_eq!(value(&taken)[0]["StatusCode"], "Complete");
}
