//! The InfluxDB provider against a specification-faithful stand-in for InfluxDB's v2 query API on
//! 127.0.0.1.
//!
//! Why a stand-in: Argo's provider speaks Flux over `POST /api/v2/query`. Debian's influxdb (1.6)
//! serves only InfluxQL (`/api/v2/query` came with 1.8), and InfluxDB 1.8+/2.x cannot be built
//! or fetched here. So the stand-in follows InfluxDB's published OpenAPI specification of
//! `PostQuery` (influxdata/openapi, src/common/paths/query.yml, schemas Query.yml, Dialect.yml,
//! Error.yml) and holds EVERY request to it: the path, the method, the `org`/`orgID` query
//! parameters (one of them, each once, nothing else), `Authorization: Token <token>`,
//! `Content-Type: application/json`, `Accept-Encoding` within the spec's enum, and the `Query`
//! body (`query` required and a string, `type` only `flux`, `params` an object, `now` a date-time,
//! no undocumented property; `dialect` with only `header` a boolean, `delimiter` one character,
//! `annotations` unique items of `group`/`datatype`/`default`, `commentPrefix` at most one
//! character, `dateTimeFormat` `RFC3339` or `RFC3339Nano`). Any deviation is recorded, answered
//! with InfluxDB's `400 {"code":"invalid",...}`, and fails the test.
//!
//! Its answers are written as InfluxDB 2 writes them, and as the request's dialect asks: annotated
//! CSV (`text/csv; charset=utf-8`, chunked, `\r\n` line ends) with the `#datatype`, `#group` and
//! `#default` rows the dialect names (`#default,_result,…`), the header row if asked, the
//! `result`/`table` columns, one block per schema, tables of the same schema sharing it, a blank
//! line between blocks and at the end; `\r\n` alone for a query that answers nothing; Flux's
//! error table (`,error,reference`) for an error while the query runs; and
//! `400 application/json {"code":"invalid","message":"compilation failed: …"}` for a query that
//! does not compile (`401 {"code":"unauthorized","message":"unauthorized access"}` for a wrong
//! token). A provider that asked for no annotations or no header would get none, and fail.
//!
//! The metric is Argo Rollouts' own example (docs/analysis/influxdb.md), read from its YAML into
//! `stepwise_api::Metric`.
//!
//! The same measurements against a real InfluxDB 2 (or Cloud, or 1.8+ with Flux enabled), with a
//! token that may read the organization (the queries use `array.from`, so no bucket or data is
//! needed):
//!
//! ```sh
//! STEPWISE_INFLUXDB_ADDRESS=http://localhost:8086 STEPWISE_INFLUXDB_TOKEN=… STEPWISE_INFLUXDB_ORG=my-org \
//!   cargo test -p stepwise-metrics --test influxdb -- --ignored --nocapture against_a_real_influxdb
//! ```
//!
//! (e.g. `docker run -p 8086:8086 -e DOCKER_INFLUXDB_INIT_MODE=setup -e
//! DOCKER_INFLUXDB_INIT_USERNAME=u -e DOCKER_INFLUXDB_INIT_PASSWORD=password1 -e
//! DOCKER_INFLUXDB_INIT_ORG=my-org -e DOCKER_INFLUXDB_INIT_BUCKET=b -e
//! DOCKER_INFLUXDB_INIT_ADMIN_TOKEN=my-token influxdb:2`.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Request, StandIn};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use stepwise_api::Metric;
use stepwise_metrics::influxdb::{InfluxdbMetric, InfluxdbProvider};
use stepwise_metrics::secrets::FixedSecrets;
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};
use tokio::net::TcpListener;

const NAMESPACE: &str = "stepwise-system";
const TOKEN: &str = "Xq9vT3kLmN0pR7sW2yZ4aB6cD8eF1gH5jK-influx-token==";
const ORG: &str = "platform team";

/// Argo Rollouts' InfluxDB example, docs/analysis/influxdb.md, as written there.
const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  args:
  - name: application-name
  metrics:
  - name: error-rate
    # NOTE: To be consistent with the prometheus metrics provider InfluxDB query results are returned as an array.
    # In the example we're looking at index 0 of the returned array to obtain the value we're using for the success condition
    successCondition: result[0] <= 0.01
    provider:
      influxdb:
        profile: my-influxdb-secret  # optional, defaults to 'influxdb'
        query: |
          from(bucket: "app_istio")
            |> range(start: -15m)
            |> filter(fn: (r) => r["destination_workload"] == "{{ args.application-name }}")
            |> filter(fn: (r) => r["_measurement"] == "istio:istio_requests_errors_percentage:rate1m:5xx")

"#;

/// The query of the example once the controller substituted `application-name: checkout`.
const ARGO_QUERY: &str = "from(bucket: \"app_istio\")\n  |> range(start: -15m)\n  |> filter(fn: (r) => \
                          r[\"destination_workload\"] == \"checkout\")\n  |> filter(fn: (r) => r[\"_measurement\"] \
                          == \"istio:istio_requests_errors_percentage:rate1m:5xx\")\n";

/// The example's metric, its argument substituted as the controller does.
fn example() -> Metric {
    let yaml = ARGO_TEMPLATE.replace("{{ args.application-name }}", "checkout");
    let template: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    serde_yaml::from_value(template["spec"]["metrics"][0].clone()).unwrap()
}

/// The example with another query (and the same profile).
fn with_query(query: &str) -> Metric {
    let mut metric = example();
    metric.provider.influxdb = Some(json!({"profile": "my-influxdb-secret", "query": query}));
    metric
}

// ---------------------------------------------------------------------------------------------
// The query API stand-in.

/// A request that passed every check.
#[derive(Clone, Debug)]
struct Call {
    /// The query parameters.
    params: BTreeMap<String, String>,
    /// The body, as sent.
    body: Value,
    /// The raw body text.
    raw: String,
    /// The dialect to answer in.
    dialect: Dialect,
}

impl Call {
    fn query(&self) -> &str {
        self.body["query"].as_str().unwrap_or_default()
    }
}

/// What the stand-in answers: a status, a content type and a body (a CSV body is written per the
/// request's dialect by [`Dialect::write`]).
enum Answer {
    Csv(Vec<Table>),
    /// Flux's error table after the tables: an error while the query runs.
    RuntimeError(Vec<Table>, String),
    Json(u16, Value),
}

/// InfluxDB's v2 query API on 127.0.0.1: checks every request, answers valid ones with `answer`.
type QueryApi = StandIn<Call>;

impl QueryApi {
    async fn start(answer: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> QueryApi {
        let checked = |request: &Request| {
            check(request).map_err(|refusal| match refusal {
                Refusal::Unauthorized => common::Refusal::Refused(json_answer(
                    401,
                    json!({"code": "unauthorized", "message": "unauthorized access"}),
                )),
                Refusal::OffSpec(problems) => common::Refusal::off_spec(&problems, |text| {
                    json_answer(400, json!({"code": "invalid", "message": format!("off the query API spec: {text}")}))
                }),
            })
        };
        StandIn::serve("the query API spec", checked, move |call| match answer(call) {
            Answer::Csv(tables) => csv_answer(call.dialect.write(&tables, None)),
            Answer::RuntimeError(tables, message) => csv_answer(call.dialect.write(&tables, Some(&message))),
            Answer::Json(status, body) => json_answer(status, body),
        })
        .await
    }
}

/// A 200 answer as InfluxDB streams it: chunked CSV.
fn csv_answer(csv: String) -> common::Answer {
    common::Answer::new(200, "text/csv; charset=utf-8", csv)
        .with_header("vary", "Accept-Encoding")
        .with_header("x-influxdb-build", "OSS")
        .with_header("x-influxdb-version", "v2.7.11")
        .chunked()
}

/// A JSON answer as InfluxDB writes its errors.
fn json_answer(status: u16, body: Value) -> common::Answer {
    common::Answer::new(status, "application/json; charset=utf-8", body.to_string())
        .with_header("x-platform-error-code", "invalid")
}

/// Why a request gets no answer: off the spec (a test failure), or a token InfluxDB refuses.
#[derive(Debug)]
enum Refusal {
    OffSpec(Vec<String>),
    Unauthorized,
}

/// The properties of the `Query` schema.
const QUERY_PROPERTIES: [&str; 6] = ["extern", "query", "type", "params", "dialect", "now"];

/// The properties of the `Dialect` schema.
const DIALECT_PROPERTIES: [&str; 5] = ["header", "delimiter", "annotations", "commentPrefix", "dateTimeFormat"];

/// Every rule of `PostQuery` that the request must follow; the call, with the dialect to answer
/// in.
fn check(request: &Request) -> Result<Call, Refusal> {
    let mut problems = Vec::new();
    if request.method != "POST" {
        problems.push(format!("method {} (the query API is POST)", request.method));
    }
    if request.path != "/api/v2/query" {
        problems.push(format!("path {} (the query API is /api/v2/query)", request.path));
    }
    let mut params = BTreeMap::new();
    for (name, value) in &request.params {
        if !matches!(name.as_str(), "org" | "orgID") {
            problems.push(format!("parameter {name} is not documented"));
        }
        if params.insert(name.clone(), value.clone()).is_some() {
            problems.push(format!("parameter {name} is given twice"));
        }
    }
    if params.values().all(|v| v.is_empty()) {
        problems.push("the org or orgID parameter is required".into());
    }
    let mut authorized = false;
    match request.headers("authorization").as_slice() {
        [value] => match value.strip_prefix("Token ") {
            Some(token) => authorized = token == TOKEN,
            None => problems.push("Authorization is not `Token <API token>`".into()),
        },
        values => problems.push(format!("{} Authorization headers (one is needed)", values.len())),
    }
    match request.headers("content-type").as_slice() {
        [value] if value.split(';').next().map(str::trim) == Some("application/json") => {}
        values => problems.push(format!("Content-Type {values:?} (a JSON Query body is application/json)")),
    }
    for value in request.headers("accept-encoding") {
        for coding in value.split(',').map(|c| c.split(';').next().unwrap_or_default().trim()) {
            if !matches!(coding, "gzip" | "identity") {
                problems.push(format!("Accept-Encoding {coding} is not gzip or identity"));
            }
        }
    }
    let raw = String::from_utf8(request.body.clone()).unwrap_or_default();
    let body: Value = match serde_json::from_str(&raw) {
        Ok(body) => body,
        Err(e) => {
            problems.push(format!("the body is not JSON: {e}"));
            Value::Null
        }
    };
    let mut dialect = Dialect::default();
    if let Some(fields) = body.as_object() {
        for key in fields.keys().filter(|k| !QUERY_PROPERTIES.contains(&k.as_str())) {
            problems.push(format!("Query has no property {key}"));
        }
        match fields.get("query") {
            Some(Value::String(q)) if !q.trim().is_empty() => {}
            Some(other) => problems.push(format!("query {other} is not a Flux script")),
            None => problems.push("query is required".into()),
        }
        if let Some(t) = fields.get("type")
            && t != "flux"
        {
            problems.push(format!("type {t} (must be \"flux\")"));
        }
        if let Some(p) = fields.get("params")
            && !p.is_object()
        {
            problems.push(format!("params {p} is not an object"));
        }
        if let Some(now) = fields.get("now")
            && now.as_str().and_then(|n| n.parse::<Timestamp>().ok()).is_none()
        {
            problems.push(format!("now {now} is not a date-time"));
        }
        if let Some(d) = fields.get("dialect") {
            dialect = Dialect::read(d, &mut problems);
        }
    } else if !body.is_null() {
        problems.push("the body is not a Query object".into());
    }
    if !problems.is_empty() {
        return Err(Refusal::OffSpec(problems));
    }
    if !authorized {
        return Err(Refusal::Unauthorized);
    }
    Ok(Call { params, body, raw, dialect })
}

/// A request's dialect, with the spec's defaults (no annotations unless asked).
#[derive(Clone, Debug)]
struct Dialect {
    header: bool,
    delimiter: char,
    annotations: Vec<String>,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect { header: true, delimiter: ',', annotations: Vec::new() }
    }
}

impl Dialect {
    fn read(value: &Value, problems: &mut Vec<String>) -> Dialect {
        let mut dialect = Dialect::default();
        let Some(fields) = value.as_object() else {
            problems.push(format!("dialect {value} is not an object"));
            return dialect;
        };
        for key in fields.keys().filter(|k| !DIALECT_PROPERTIES.contains(&k.as_str())) {
            problems.push(format!("Dialect has no property {key}"));
        }
        if let Some(h) = fields.get("header") {
            match h.as_bool() {
                Some(h) => dialect.header = h,
                None => problems.push(format!("dialect.header {h} is not a boolean")),
            }
        }
        if let Some(d) = fields.get("delimiter") {
            match d.as_str().map(|s| s.chars().collect::<Vec<_>>()).as_deref() {
                Some([c]) => dialect.delimiter = *c,
                _ => problems.push(format!("dialect.delimiter {d} is not one character")),
            }
        }
        if let Some(a) = fields.get("annotations") {
            match a.as_array() {
                Some(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(s @ ("group" | "datatype" | "default")) => {
                                if dialect.annotations.iter().any(|x| x == s) {
                                    problems.push(format!("dialect.annotations repeats {s}"));
                                }
                                dialect.annotations.push(s.to_string());
                            }
                            _ => {
                                problems.push(format!("dialect.annotations item {item} is not group/datatype/default"))
                            }
                        }
                    }
                }
                None => problems.push(format!("dialect.annotations {a} is not a list")),
            }
        }
        if let Some(c) = fields.get("commentPrefix")
            && c.as_str().is_none_or(|s| s.chars().count() > 1)
        {
            problems.push(format!("dialect.commentPrefix {c} is not at most one character"));
        }
        if let Some(f) = fields.get("dateTimeFormat")
            && !matches!(f.as_str(), Some("RFC3339" | "RFC3339Nano"))
        {
            problems.push(format!("dialect.dateTimeFormat {f} is not RFC3339 or RFC3339Nano"));
        }
        dialect
    }

    /// The answer as InfluxDB 2 writes it in this dialect: one block per schema (annotations,
    /// header), tables of one schema sharing it, a blank line between blocks and at the end;
    /// Flux's error table last when the query fails as it runs.
    fn write(&self, tables: &[Table], error: Option<&str>) -> String {
        let d = self.delimiter;
        let cell = |text: &str| {
            if text.contains([d, '"', '\r', '\n']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text.to_string()
            }
        };
        let line = |cells: Vec<String>| {
            format!("{}\r\n", cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(&d.to_string()))
        };
        let mut out = String::new();
        let mut schema: Option<Vec<(&str, &str, bool)>> = None;
        let write_block = |out: &mut String, first: bool, columns: &[(&str, &str, bool)], defaults: &[&str]| {
            if !first {
                out.push_str("\r\n");
            }
            // InfluxDB writes them in this order, whatever order they were asked in.
            for annotation in ["datatype", "group", "default"] {
                if !self.annotations.iter().any(|a| a == annotation) {
                    continue;
                }
                let mut cells = vec![format!("#{annotation}")];
                for (i, (_, datatype, group)) in columns.iter().enumerate() {
                    cells.push(match annotation {
                        "datatype" => datatype.to_string(),
                        "group" => group.to_string(),
                        _ => defaults[i].to_string(),
                    });
                }
                out.push_str(&line(cells));
            }
            if self.header {
                let mut cells = vec![String::new()];
                cells.extend(columns.iter().map(|(name, _, _)| name.to_string()));
                out.push_str(&line(cells));
            }
        };
        for (index, table) in tables.iter().enumerate() {
            let mut columns = vec![("result", "string", false), ("table", "long", false)];
            columns.extend(table.columns.iter().map(|(n, t, g)| (*n, *t, *g)));
            if schema.as_ref() != Some(&columns) {
                let mut defaults = vec!["_result"];
                defaults.extend(std::iter::repeat_n("", columns.len() - 1));
                write_block(&mut out, schema.is_none(), &columns, &defaults);
                schema = Some(columns.clone());
            }
            for row in &table.rows {
                let mut cells = vec![String::new(), String::new(), index.to_string()];
                cells.extend(row.iter().map(|c| c.to_string()));
                out.push_str(&line(cells));
            }
        }
        if let Some(message) = error {
            let columns = [("error", "string", true), ("reference", "string", true)];
            write_block(&mut out, schema.is_none(), &columns, &["", ""]);
            out.push_str(&line(vec![String::new(), message.to_string(), String::new()]));
        }
        // A blank line ends the answer; an answer without tables is only that.
        out.push_str("\r\n");
        out
    }
}

/// A Flux table: its columns after `result` and `table` (name, datatype, in the group key) and
/// its rows' cells.
#[derive(Clone, Debug)]
struct Table {
    columns: Vec<(&'static str, &'static str, bool)>,
    rows: Vec<Vec<String>>,
}

/// A table of the example's shape: `_start`, `_stop`, `_time`, `_value` (`datatype`), `_field`,
/// `_measurement`, `destination_workload`, one row per value.
fn series(workload: &str, datatype: &'static str, values: &[&str]) -> Table {
    let columns = vec![
        ("_start", "dateTime:RFC3339", true),
        ("_stop", "dateTime:RFC3339", true),
        ("_time", "dateTime:RFC3339", false),
        ("_value", datatype, false),
        ("_field", "string", true),
        ("_measurement", "string", true),
        ("destination_workload", "string", true),
    ];
    let rows = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            vec![
                "2026-03-02T09:45:00.123456789Z".into(),
                "2026-03-02T10:00:00.123456789Z".into(),
                format!("2026-03-02T09:{:02}:00Z", 46 + i),
                v.to_string(),
                "value".into(),
                "istio:istio_requests_errors_percentage:rate1m:5xx".into(),
                workload.into(),
            ]
        })
        .collect();
    Table { columns, rows }
}

// ---------------------------------------------------------------------------------------------

fn provider(secrets: FixedSecrets) -> InfluxdbProvider {
    InfluxdbProvider::new(Arc::new(secrets), NAMESPACE)
}

/// The profile Secret `name` pointing at `address`.
fn profile(name: &str, address: &str) -> FixedSecrets {
    FixedSecrets::default().with(NAMESPACE, name, &[("address", address), ("authToken", TOKEN), ("org", ORG)])
}

async fn measure(provider: &InfluxdbProvider, metric: &Metric) -> Result<Taken, Error> {
    provider.run(&RunRef::default(), metric).await
}

/// The error of a measurement, checked not to hold the token.
async fn failure(provider: &InfluxdbProvider, metric: &Metric) -> Error {
    let err = measure(provider, metric).await.expect_err("the measurement should fail");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(TOKEN), "the token is in the error: {text}");
    err
}

#[tokio::test]
async fn argos_example_measures_the_list_of_values() {
    let server = QueryApi::start(|_| Answer::Csv(vec![series("checkout", "double", &["0.004", "0.0125"])])).await;
    let secrets = profile("my-influxdb-secret", &server.address);
    let p = provider(secrets);
    assert_eq!(p.kind(), "influxdb");
    let taken = measure(&p, &example()).await.unwrap();
    // `result[0] <= 0.01`: the records' values, in order.
    assert_eq!(taken.reading, Reading::Value(json!([0.004, 0.0125])));
    assert!(taken.metadata.is_empty(), "{:?}", taken.metadata);
    let call = server.call();
    assert_eq!(call.params, BTreeMap::from([("org".to_string(), ORG.to_string())]));
    assert_eq!(call.query(), ARGO_QUERY);
    // Exactly the body influxdb-client-go's Query sends: its default dialect, type flux.
    assert_eq!(
        call.body,
        json!({
            "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true},
            "query": ARGO_QUERY,
            "type": "flux",
        })
    );
    assert!(call.raw.starts_with(r#"{"dialect":{"annotations":["datatype","group","default"],"#), "{}", call.raw);
}

#[tokio::test]
async fn several_tables_and_blocks_are_one_list_in_their_order() {
    let server = QueryApi::start(|_| {
        // Two tables of one schema (one block), then a table of longs (a second block).
        Answer::Csv(vec![
            series("checkout", "double", &["0.5", "1.5"]),
            series("checkout-canary", "double", &["2.5"]),
            series("payments", "long", &["7", "-3"]),
        ])
    })
    .await;
    let taken = measure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([0.5, 1.5, 2.5, 7, -3])));
    server.call();

    // Every datatype, empty cells and quoted ones.
    let server = QueryApi::start(|_| {
        let table = |datatype: &'static str, values: &[&str]| Table {
            columns: vec![("_value", datatype, false), ("note", "string", true)],
            rows: values.iter().map(|v| vec![v.to_string(), "a, \"quoted\"\nnote".into()]).collect(),
        };
        Answer::Csv(vec![
            table("string", &["ok, fine", ""]),
            table("boolean", &["true", "false"]),
            table("unsignedLong", &["18446744073709551615"]),
            table("double", &["NaN", "+Inf", "-0.5"]),
            table("dateTime:RFC3339", &["2026-03-02T09:46:00Z"]),
            table("duration", &["1h30m"]),
        ])
    })
    .await;
    let taken = measure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await.unwrap();
    assert_eq!(
        taken.reading,
        Reading::Value(json!([
            "ok, fine",
            null,
            true,
            false,
            18446744073709551615u64,
            "NaN",
            "+Inf",
            -0.5,
            "2026-03-02T09:46:00Z",
            "1h30m"
        ]))
    );
    server.call();
}

#[tokio::test]
async fn no_records_is_no_data() {
    // An empty result: InfluxDB answers a blank line.
    let server = QueryApi::start(|_| Answer::Csv(vec![])).await;
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await;
    assert!(matches!(&err, Error::NoData { metric } if metric == "error-rate"), "{err:?}");
    assert_eq!(err.to_string(), "metric error-rate returned no data");
    server.call();
    // A table without rows: its block, no records.
    let server = QueryApi::start(|_| Answer::Csv(vec![series("checkout", "double", &[])])).await;
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await;
    assert!(matches!(&err, Error::NoData { .. }), "{err:?}");
    server.call();
}

#[tokio::test]
async fn a_missing_secret_or_key_names_the_profile_and_sends_nothing() {
    let server = QueryApi::start(|_| Answer::Csv(vec![series("checkout", "double", &["0.0"])])).await;
    let err = failure(&provider(FixedSecrets::default()), &example()).await;
    assert!(matches!(err, Error::Config { field: "provider.influxdb.profile", .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "provider.influxdb.profile: Secret stepwise-system/my-influxdb-secret does not exist: create it with \
         address, authToken and org (see docs/analysis.md)"
    );
    // In another namespace, it is not the controller's.
    let elsewhere = FixedSecrets::default().with(
        "default",
        "my-influxdb-secret",
        &[("address", &server.address), ("authToken", TOKEN), ("org", ORG)],
    );
    let err = failure(&provider(elsewhere), &example()).await;
    assert!(err.to_string().contains("does not exist"), "{err}");
    // Argo needs all three keys.
    let partial = FixedSecrets::default().with(NAMESPACE, "my-influxdb-secret", &[("authToken", TOKEN), ("org", "")]);
    let err = failure(&provider(partial), &example()).await;
    assert_eq!(
        err.to_string(),
        "provider.influxdb.profile: Secret stepwise-system/my-influxdb-secret has no address, org (a profile needs \
         address, authToken and org)"
    );
    let bad = FixedSecrets::default().with(
        NAMESPACE,
        "my-influxdb-secret",
        &[("address", "influxdb:8086"), ("authToken", TOKEN), ("org", ORG)],
    );
    let err = failure(&provider(bad), &example()).await;
    assert!(matches!(err, Error::Config { field: "provider.influxdb.profile", .. }), "{err:?}");
    assert!(err.to_string().contains("address \"influxdb:8086/\""), "{err}");
    assert!(server.calls().is_empty());
}

#[tokio::test]
async fn without_a_profile_the_secret_influxdb_is_read() {
    let server = QueryApi::start(|_| Answer::Csv(vec![series("checkout", "double", &["0.001"])])).await;
    let mut metric = example();
    metric.provider.influxdb = Some(json!({"query": ARGO_QUERY}));
    assert_eq!(InfluxdbMetric::from_metric(&metric).unwrap().profile, "influxdb");
    // An address ending with a slash: the Go client joins the API path to it all the same.
    let secrets = profile("influxdb", &format!("{}/", server.address));
    let taken = measure(&provider(secrets), &metric).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([0.001])));
    server.call();
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &metric).await;
    assert!(err.to_string().contains("Secret stepwise-system/influxdb does not exist"), "{err}");
}

#[tokio::test]
async fn a_flux_error_is_the_measurements_error_in_influxdbs_words() {
    // A query that does not compile: 400 with InfluxDB's JSON error.
    let message = "compilation failed: error @1:1-1:4: undefined identifier frm";
    let server = QueryApi::start(move |call| {
        assert!(call.query().starts_with("frm("));
        Answer::Json(400, json!({"code": "invalid", "message": message}))
    })
    .await;
    let err =
        failure(&provider(profile("my-influxdb-secret", &server.address)), &with_query("frm(bucket: \"x\")")).await;
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("InfluxDB at {} (org {ORG}): HTTP 400 Bad Request: invalid: {message}", server.address)
    );
    server.call();

    // An error while the query runs: Flux's error table in a 200 answer, after some records.
    let runtime = "runtime error @3:6-3:52: filter: type conflict: float != string";
    let server =
        QueryApi::start(move |_| Answer::RuntimeError(vec![series("checkout", "double", &["0.5"])], runtime.into()))
            .await;
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await;
    assert_eq!(err.to_string(), format!("InfluxDB at {} (org {ORG}): {runtime}", server.address));
    server.call();

    // Nothing listens.
    let gone = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let err = failure(&provider(profile("my-influxdb-secret", &gone)), &example()).await;
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn the_token_never_appears_in_an_error() {
    // A wrong token: InfluxDB's 401.
    let server = QueryApi::start(|_| Answer::Csv(vec![])).await;
    let secrets = FixedSecrets::default().with(
        NAMESPACE,
        "my-influxdb-secret",
        &[("address", &server.address), ("authToken", "revoked-token-1234"), ("org", ORG)],
    );
    let err = failure(&provider(secrets), &example()).await;
    assert_eq!(
        err.to_string(),
        format!("InfluxDB at {} (org {ORG}): HTTP 401 Unauthorized: unauthorized: unauthorized access", server.address)
    );
    assert!(server.calls().is_empty());
    // An answer that echoes the token (a proxy, a debug build): cut out.
    let server = QueryApi::start(|_| {
        Answer::Json(400, json!({"code": "invalid", "message": format!("token {TOKEN} may not read bucket app_istio")}))
    })
    .await;
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await;
    assert!(err.to_string().ends_with("invalid: token ***** may not read bucket app_istio"), "{err}");
    // In the runtime error table too.
    let server = QueryApi::start(|_| Answer::RuntimeError(vec![], format!("bad token {TOKEN}"))).await;
    let err = failure(&provider(profile("my-influxdb-secret", &server.address)), &example()).await;
    assert!(err.to_string().ends_with("bad token *****"), "{err}");
    // The provider's Debug holds no Secret either.
    let p = provider(profile("my-influxdb-secret", &server.address));
    assert!(!format!("{p:?}").contains(TOKEN));
}

#[tokio::test]
async fn a_bad_metric_is_refused_before_any_request() {
    let server = QueryApi::start(|_| Answer::Csv(vec![])).await;
    let secrets = || profile("my-influxdb-secret", &server.address);
    let mut metric = example();
    metric.provider.influxdb = Some(json!({"profile": "my-influxdb-secret", "query": ""}));
    let err = failure(&provider(secrets()), &metric).await;
    assert_eq!(err.to_string(), "provider.influxdb.query: is empty");
    metric.provider.influxdb = Some(json!({"profile": "my-influxdb-secret"}));
    let err = failure(&provider(secrets()), &metric).await;
    assert!(matches!(err, Error::Config { field: "provider.influxdb.query", .. }), "{err:?}");
    metric.provider.influxdb = Some(json!({"query": "q", "address": "http://x"}));
    let err = failure(&provider(secrets()), &metric).await;
    assert!(matches!(err, Error::Config { field: "provider.influxdb", .. }), "{err:?}");
    assert!(server.calls().is_empty());
}

/// A request the stand-in must refuse: query parameters, Authorization, Content-Type, body.
type OffSpec = (Vec<(&'static str, &'static str)>, String, &'static str, Value);

/// The stand-in itself must refuse what InfluxDB's API specification does not allow, and answer
/// what the dialect asks: otherwise the tests above prove nothing.
#[tokio::test]
async fn the_stand_in_holds_requests_to_the_spec() {
    let server = QueryApi::start(|_| Answer::Csv(vec![series("checkout", "double", &["1.0"])])).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/query", server.address);
    let post = |params: Vec<(&'static str, &'static str)>, auth: String, content_type: &'static str, body: Value| {
        let request = client
            .post(&url)
            .query(&params)
            .header("authorization", auth)
            .header("content-type", content_type)
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let token = format!("Token {TOKEN}");
    let org = vec![("org", ORG)];
    let good = json!({"query": "from(bucket: \"b\")", "type": "flux", "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true}});
    let (status, csv) = post(org.clone(), token.clone(), "application/json", good.clone()).await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("#datatype,string,long,dateTime:RFC3339,"), "{csv}");
    assert!(csv.contains("\r\n#group,false,false,true,true,false,false,true,true,true\r\n"), "{csv}");
    assert!(csv.contains("\r\n#default,_result,,,,,,,,\r\n,result,table,_start,_stop,_time,_value,"), "{csv}");
    assert!(csv.ends_with("\r\n\r\n"), "{csv:?}");
    // The dialect is honoured: without annotations, none; with a semicolon, semicolons.
    let (_, plain) =
        post(org.clone(), token.clone(), "application/json", json!({"query": "x", "dialect": {"delimiter": ";"}}))
            .await;
    assert!(plain.starts_with(";result;table;_start;"), "{plain}");
    // orgID serves as well; and a wrong token is InfluxDB's 401, not a deviation.
    assert_eq!(post(vec![("orgID", "0a1b2c3d4e5f6a7b")], token.clone(), "application/json", good.clone()).await.0, 200);
    assert_eq!(post(org.clone(), "Token nope".into(), "application/json", good.clone()).await.0, 401);
    assert_eq!(server.calls().len(), 3);

    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let with_dialect = |key: &str, value: Value| {
        let mut body = good.clone();
        body["dialect"][key] = value;
        body
    };
    let off_spec: Vec<OffSpec> = vec![
        (vec![], token.clone(), "application/json", good.clone()),
        (vec![("org", ORG), ("bucket", "b")], token.clone(), "application/json", good.clone()),
        (org.clone(), format!("Bearer {TOKEN}"), "application/json", good.clone()),
        (org.clone(), token.clone(), "text/plain", good.clone()),
        (org.clone(), token.clone(), "application/json", json!({"type": "flux"})),
        (org.clone(), token.clone(), "application/json", with("type", json!("influxql"))),
        (org.clone(), token.clone(), "application/json", with("org", json!("o"))),
        (org.clone(), token.clone(), "application/json", with_dialect("delimiter", json!(",,"))),
        (org.clone(), token.clone(), "application/json", with_dialect("annotations", json!(["datatype", "datatype"]))),
        (org.clone(), token.clone(), "application/json", with_dialect("annotations", json!(["types"]))),
        (org.clone(), token.clone(), "application/json", with_dialect("dateTimeFormat", json!("Unix"))),
        (org.clone(), token.clone(), "application/json", with_dialect("header", json!("yes"))),
        (org.clone(), token.clone(), "application/json", with_dialect("commentPrefix", json!("//"))),
    ];
    for (params, auth, content_type, body) in &off_spec {
        let (status, text) = post(params.clone(), auth.clone(), content_type, body.clone()).await;
        assert_eq!(status, 400, "{params:?} {content_type} {body}: {text}");
        assert!(text.starts_with(r#"{"code":"invalid""#), "{text}");
    }
    let wrong_path = client.post(format!("{}/api/v2/querys?org=o", server.address)).header("authorization", &token);
    let wrong_path = wrong_path.header("content-type", "application/json").body(good.to_string()).send().await.unwrap();
    assert_eq!(wrong_path.status().as_u16(), 400);
    let violations = server.violations.lock().unwrap().clone();
    assert_eq!(violations.len(), off_spec.len() + 1, "{violations:#?}");
    assert!(violations[0].contains("org or orgID"), "{}", violations[0]);
    assert!(violations[2].contains("Token"), "{}", violations[2]);
    assert!(violations[7].contains("delimiter"), "{}", violations[7]);
}

/// The same measurements against a real InfluxDB 2; see the top of this file.
#[tokio::test]
#[ignore = "needs an InfluxDB 2 and a token: STEPWISE_INFLUXDB_ADDRESS, _TOKEN, _ORG"]
async fn against_a_real_influxdb() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("set {name}"));
    let (address, token, org) =
        (var("STEPWISE_INFLUXDB_ADDRESS"), var("STEPWISE_INFLUXDB_TOKEN"), var("STEPWISE_INFLUXDB_ORG"));
    let secrets = FixedSecrets::default().with(
        NAMESPACE,
        "my-influxdb-secret",
        &[("address", &address), ("authToken", &token), ("org", &org)],
    );
    let p = provider(secrets);
    let values = "import \"array\"\narray.from(rows: [{_value: 0.004, w: \"a\"}, {_value: 0.0125, w: \"a\"}, \
                  {_value: 7.0, w: \"b\"}])\n  |> group(columns: [\"w\"])";
    let taken = measure(&p, &with_query(values)).await.unwrap();
    println!("values: {:?}", taken.reading);
    assert_eq!(taken.reading, Reading::Value(json!([0.004, 0.0125, 7.0])));

    let none = "import \"array\"\narray.from(rows: [{_value: 1.0}]) |> filter(fn: (r) => r._value > 2.0)";
    let err = measure(&p, &with_query(none)).await.unwrap_err();
    println!("no data: {err}");
    assert!(matches!(err, Error::NoData { .. }), "{err:?}");

    let err = measure(&p, &with_query("frm(bucket: \"x\")")).await.unwrap_err();
    println!("flux error: {err}");
    assert!(err.to_string().contains("HTTP 400 Bad Request: invalid:"), "{err}");
    assert!(!err.to_string().contains(&token));
}
