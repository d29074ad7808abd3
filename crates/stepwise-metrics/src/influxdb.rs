//! The InfluxDB provider: a Flux query sent to InfluxDB's v2 query API, the `_value` of every
//! record it answers being the measurement's value. Single-shot, with Argo Rollouts' semantics:
//!
//! * the metric names a profile, the Secret (default `influxdb`) in the controller's namespace
//!   holding `address`, `authToken` and `org`, all three required, as Argo reads it;
//! * the query is sent as Argo's client (influxdb-client-go v2) sends it: `POST
//!   <address>/api/v2/query?org=<org>` with `Authorization: Token <authToken>`, `Content-Type:
//!   application/json` and the body `{"dialect":{"annotations":["datatype","group","default"],
//!   "delimiter":",","header":true},"query":<query>,"type":"flux"}`;
//! * the answer, annotated CSV, is read as that client reads it (each annotation block starts a
//!   table, empty cells take the column's `#default`, cells are typed by `#datatype`), and the
//!   value is the list of the records' `_value`s, table after table, in the answer's order, as
//!   Argo builds `result` (`result[0] <= 0.01`). No record is an Error measurement, as in Argo.
//!
//! Values are JSON: `double`, `long` and `unsignedLong` numbers (NaN and the infinities as the
//! strings `"NaN"`, `"+Inf"`, `"-Inf"`, as the Prometheus provider writes them), `boolean`
//! booleans (anything but `false` is true, as the Go client reads it), `string`, `dateTime:*`,
//! `duration` and `base64Binary` their text as written, an empty cell without default `null`.
//!
//! One deliberate difference: when InfluxDB reports an error inside a 200 answer (Flux's error
//! table, `,error,reference`, for a query that fails while it runs) or the CSV cannot be read,
//! the Go client stops and records the error, which Argo never looks at: it measures the values
//! read until then, or reports "no results". Here that error is the measurement's error.
//!
//! The token travels only in the `Authorization` header: it never appears in an error or a log
//! line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};
use stepwise_api::Metric;

use crate::fields::{json_kind, json_number};
use crate::secrets::SecretStore;
use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "influxdb";

/// The profile (Secret) read when a metric names none (Argo's `DefaultInfluxdbTokensSecretName`).
pub const DEFAULT_PROFILE: &str = "influxdb";

/// The profile's key holding InfluxDB's URL, e.g. `http://influxdb.monitoring:8086`.
pub const ADDRESS_KEY: &str = "address";

/// The profile's key holding the API token, sent as `Authorization: Token <authToken>`.
pub const TOKEN_KEY: &str = "authToken";

/// The profile's key holding the organization queried (its name or ID), sent as `org`.
pub const ORG_KEY: &str = "org";

/// The query API's path below the address.
pub const QUERY_PATH: &str = "api/v2/query";

/// Seconds a query may take, as Argo's `defaultQueryTimeout`.
pub const TIMEOUT_SECONDS: u64 = 30;

/// A metric's `provider.influxdb`, as Argo Rollouts defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfluxdbMetric {
    /// The Secret (in the controller's namespace) holding `address`, `authToken` and `org`;
    /// `influxdb` when unset or empty.
    pub profile: String,
    /// The Flux query, its arguments already substituted.
    pub query: String,
}

impl InfluxdbMetric {
    /// The `provider.influxdb` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.influxdb.as_ref().ok_or_else(|| Error::Config {
            field: "provider.influxdb",
            message: format!("metric {} has no influxdb provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.influxdb` as written in a metric. Every error names its field, e.g.
    /// `provider.influxdb.query: is empty`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let fields = value.as_object().ok_or_else(|| Error::Config {
            field: "provider.influxdb",
            message: format!("must be an object with a query and optionally a profile, not {}", json_kind(value)),
        })?;
        if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "profile" | "query")) {
            return Err(Error::Config {
                field: "provider.influxdb",
                message: format!("unknown field {unknown:?}: an influxdb provider has profile and query"),
            });
        }
        let profile = text_field(fields, "profile", "provider.influxdb.profile")?;
        let query = text_field(fields, "query", "provider.influxdb.query")?;
        let profile = profile.map(|p| p.trim().to_string()).filter(|p| !p.is_empty());
        let query = match query {
            Some(q) if !q.trim().is_empty() => q,
            Some(_) => return Err(Error::Config { field: "provider.influxdb.query", message: "is empty".into() }),
            None => {
                return Err(Error::Config {
                    field: "provider.influxdb.query",
                    message: "is required: the Flux query to run".into(),
                });
            }
        };
        Ok(InfluxdbMetric { profile: profile.unwrap_or_else(|| DEFAULT_PROFILE.into()), query })
    }
}

/// A string field (when present and not null), naming `path` in the error.
fn text_field(fields: &Map<String, Value>, key: &str, path: &'static str) -> Result<Option<String>, Error> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(Error::Config { field: path, message: format!("must be a string, not {}", json_kind(other)) })
        }
    }
}

/// A profile as read from its Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    /// `<address>/api/v2/query?org=<org>`.
    pub url: Url,
    /// The API token.
    token: String,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

/// The query URL as influxdb-client-go builds it from `address` and `org`: the address with a
/// trailing `/`, `api/v2/` resolved against it, `query` joined, and `org` the only parameter (a
/// query string in the address is dropped, as the relative resolution drops it).
pub fn query_url(address: &str, org: &str) -> Result<Url, String> {
    let address = address.trim();
    let base = if address.ends_with('/') { address.to_string() } else { format!("{address}/") };
    let base = parse_url(&base)?;
    let mut url = base.join(QUERY_PATH).map_err(|e| format!("{address:?} is not a base URL: {e}"))?;
    url.set_fragment(None);
    url.query_pairs_mut().clear().append_pair("org", org);
    Ok(url)
}

/// Measures with Flux queries.
pub struct InfluxdbProvider {
    /// Where the profile Secrets are read.
    secrets: Arc<dyn SecretStore>,
    /// The controller's namespace, where the profile Secrets live.
    namespace: String,
    /// Shared by all queries.
    http: Result<reqwest::Client, String>,
}

impl InfluxdbProvider {
    /// A provider reading profiles from `secrets` in `controller_namespace`.
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new(secrets: Arc<dyn SecretStore>, controller_namespace: impl Into<String>) -> Self {
        InfluxdbProvider { secrets, namespace: controller_namespace.into(), http: http_client(false) }
    }

    /// The profile `name`. Errors never quote the token.
    async fn profile(&self, name: &str) -> Result<Profile, Error> {
        let namespace = &self.namespace;
        let field = "provider.influxdb.profile";
        let data = self.secrets.get(namespace, name).await?.ok_or_else(|| Error::Config {
            field,
            message: format!(
                "Secret {namespace}/{name} does not exist: create it with {ADDRESS_KEY}, {TOKEN_KEY} and {ORG_KEY} \
                 (see docs/analysis.md)"
            ),
        })?;
        let value = |key: &str| data.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (address, token, org) = (value(ADDRESS_KEY), value(TOKEN_KEY), value(ORG_KEY));
        let missing: Vec<&str> = [(ADDRESS_KEY, &address), (TOKEN_KEY, &token), (ORG_KEY, &org)]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        let (Some(address), Some(token), Some(org)) = (address, token, org) else {
            return Err(Error::Config {
                field,
                message: format!(
                    "Secret {namespace}/{name} has no {} (a profile needs {ADDRESS_KEY}, {TOKEN_KEY} and {ORG_KEY})",
                    missing.join(", ")
                ),
            });
        };
        let url = query_url(&address, &org)
            .map_err(|e| Error::Config { field, message: format!("Secret {namespace}/{name}: {ADDRESS_KEY} {e}") })?;
        Ok(Profile { url, token })
    }

    /// Sends the query and reads InfluxDB's answer into the records' values.
    async fn query(&self, profile: &Profile, name: &str, query: &str) -> Result<Vec<Value>, Error> {
        let shown = redacted(&profile.url);
        let shown =
            shown.trim_end_matches('…').trim_end_matches('?').trim_end_matches(QUERY_PATH).trim_end_matches('/');
        let org = profile.url.query_pairs().find(|(k, _)| k == "org").map(|(_, v)| v.into_owned()).unwrap_or_default();
        let target = format!("InfluxDB at {shown} (org {org})");
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let mut authorization =
            HeaderValue::from_str(&format!("Token {}", profile.token)).map_err(|_| Error::Config {
                field: "provider.influxdb.profile",
                message: format!("the {TOKEN_KEY} of Secret {}/{name} is not a valid header value", self.namespace),
            })?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        tracing::debug!(target: "stepwise::influxdb", url = %redacted(&profile.url), "flux query");
        let request = http.post(profile.url.clone()).headers(headers).body(request_body(query).to_string());
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let content_type =
                response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let error_header = response
                .headers()
                .get("X-Influxdb-Error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok::<_, reqwest::Error>((status, content_type, error_header, response.text().await?))
        };
        let (status, content_type, error_header, text) =
            match tokio::time::timeout(Duration::from_secs(TIMEOUT_SECONDS), exchange).await {
                Err(_) => return Err(Error::Timeout { seconds: TIMEOUT_SECONDS, target }),
                Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
                Ok(Ok(answer)) => answer,
            };
        if !status.is_success() {
            return Err(Error::Source { target, message: http_error(status, &content_type, &error_header, &text) });
        }
        record_values(&text).map_err(|e| match e {
            Refusal::Flux(message) => Error::Source { target, message },
            Refusal::Csv(message) => Error::Answer { message: format!("{target}: {message}") },
        })
    }
}

impl fmt::Debug for InfluxdbProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxdbProvider").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl MetricProvider for InfluxdbProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = InfluxdbMetric::from_metric(metric)?;
        let profile = self.profile(&spec.profile).await?;
        // InfluxDB's answers are quoted in errors; should one echo the token, it goes no further.
        let values =
            self.query(&profile, &spec.profile, &spec.query).await.map_err(|e| e.without_secrets(&[&profile.token]))?;
        if values.is_empty() {
            return Err(Error::NoData { metric: metric.name.clone() });
        }
        Ok(Taken::new(Reading::Value(Value::Array(values))))
    }
}

/// The body influxdb-client-go's `Query` sends: the query, `type: flux` and its default dialect
/// (every annotation, a header row, comma-separated).
pub fn request_body(query: &str) -> Value {
    json!({
        "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true},
        "query": query,
        "type": "flux",
    })
}

/// An error answer as influxdb-client-go words it: `code: message` of InfluxDB's JSON error, the
/// status and body of any other, with the HTTP status first.
fn http_error(status: StatusCode, content_type: &str, error_header: &str, body: &str) -> String {
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let (mut code, mut message) = (String::new(), String::new());
    if media.eq_ignore_ascii_case("application/json") {
        match serde_json::from_str::<Value>(body) {
            Ok(json) => {
                let text = |key: &str| json.get(key).and_then(Value::as_str).unwrap_or_default().trim().to_string();
                (code, message) = (text("code"), text("message"));
            }
            Err(_) => return format!("{status_text}: the error answer is not JSON: {}", snippet(body)),
        }
    } else if !body.trim().is_empty() {
        message = snippet(body).trim_matches('"').to_string();
    }
    if code.is_empty() && message.is_empty() {
        message = match status.as_u16() {
            429 => "too many requests: exceeded rate limit".into(),
            503 => "unavailable: service temporarily unavailable".into(),
            _ => error_header.trim().to_string(),
        };
    }
    match (code.is_empty(), message.is_empty()) {
        (false, false) => format!("{status_text}: {code}: {message}"),
        (true, false) => format!("{status_text}: {message}"),
        (false, true) => format!("{status_text}: {code}"),
        (true, true) => status_text,
    }
}

/// Why a 200 answer gives no values: InfluxDB reported an error in it, or it is not annotated CSV.
#[derive(Debug, PartialEq)]
enum Refusal {
    Flux(String),
    Csv(String),
}

/// A column of an annotated CSV table.
#[derive(Clone, Debug, Default)]
struct Column {
    name: String,
    datatype: String,
    default: String,
}

/// Where the reader is, as influxdb-client-go's `QueryTableResult.Next`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Normal,
    Annotation,
    Error,
}

/// The `_value` of every record of an annotated CSV answer, in order, read as
/// influxdb-client-go's `QueryTableResult` reads it (the same states, checks and messages).
fn record_values(text: &str) -> Result<Vec<Value>, Refusal> {
    let rows = csv_rows(text).map_err(Refusal::Csv)?;
    let mut values = Vec::new();
    let mut table: Option<Vec<Column>> = None;
    let mut state = State::Normal;
    // The Go client forgets it at each record it returns: it is local to `Next`.
    let mut datatype_found = false;
    for row in rows {
        if row.len() <= 1 {
            continue;
        }
        if row[0].starts_with('#') && state == State::Normal {
            table = Some(vec![Column::default(); row.len() - 1]);
            state = State::Annotation;
        }
        let Some(columns) = table.as_mut() else {
            return Err(Refusal::Csv("parsing error, annotations not found".into()));
        };
        if row.len() - 1 != columns.len() {
            return Err(Refusal::Csv(format!(
                "parsing error, row has different number of columns than the table: {} vs {}",
                row.len() - 1,
                columns.len()
            )));
        }
        match row[0].as_str() {
            "" => match state {
                State::Annotation => {
                    if !datatype_found {
                        return Err(Refusal::Csv("parsing error, datatype annotation not found".into()));
                    }
                    if row[1] == "error" {
                        state = State::Error;
                    } else {
                        for (column, name) in columns.iter_mut().zip(&row[1..]) {
                            column.name = name.clone();
                        }
                        state = State::Normal;
                    }
                }
                State::Error => {
                    let message = if row[1].is_empty() { "unknown query error" } else { row[1].as_str() };
                    let reference = row.get(2).filter(|r| !r.is_empty()).map(|r| format!(",{r}")).unwrap_or_default();
                    return Err(Refusal::Flux(format!("{message}{reference}")));
                }
                State::Normal => {
                    let mut value = Value::Null;
                    for (column, cell) in columns.iter().zip(&row[1..]) {
                        let cell = if cell.is_empty() { &column.default } else { cell };
                        let typed = typed_value(cell, &column.datatype, &column.name).map_err(Refusal::Csv)?;
                        if column.name == "_value" {
                            value = typed;
                        }
                    }
                    values.push(value);
                    datatype_found = false;
                }
            },
            "#datatype" => {
                datatype_found = true;
                for (column, datatype) in columns.iter_mut().zip(&row[1..]) {
                    column.datatype = datatype.clone();
                }
            }
            "#group" => {}
            "#default" => {
                for (column, default) in columns.iter_mut().zip(&row[1..]) {
                    column.default = default.clone();
                }
            }
            other if other.starts_with('#') => {}
            other => {
                return Err(Refusal::Csv(format!(
                    "parsing error, a row starts with {:?} where annotated CSV has an annotation or nothing",
                    snippet(other)
                )));
            }
        }
    }
    // The Go client skips rows of one cell, so it reads an HTML page as no records; an answer
    // with text but no table is not InfluxDB's, and is said to be so.
    if table.is_none() && !text.trim().is_empty() {
        return Err(Refusal::Csv(format!("the answer is not annotated CSV: {}", snippet(text))));
    }
    Ok(values)
}

/// A cell as a JSON value by its column's `#datatype`, as influxdb-client-go's `toValue` types
/// it (and with its messages for what it refuses).
fn typed_value(cell: &str, datatype: &str, name: &str) -> Result<Value, String> {
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    let invalid = |what: &str| format!("{name}: {cell:?} is not a valid {what}");
    Ok(match datatype {
        "string" => Value::String(cell.into()),
        "double" => {
            let v = parse_go_float(cell).ok_or_else(|| invalid("double"))?;
            json_number(v)
        }
        "long" => Value::Number(cell.parse::<i64>().map_err(|_| invalid("long"))?.into()),
        "unsignedLong" => Value::Number(cell.parse::<u64>().map_err(|_| invalid("unsignedLong"))?.into()),
        "boolean" => Value::Bool(!cell.eq_ignore_ascii_case("false")),
        "dateTime:RFC3339" | "dateTime:RFC3339Nano" => {
            cell.parse::<Timestamp>().map_err(|_| invalid(datatype))?;
            Value::String(cell.into())
        }
        "duration" => {
            if !is_go_duration(cell) {
                return Err(invalid("duration"));
            }
            Value::String(cell.into())
        }
        "base64Binary" => {
            if !is_base64(cell) {
                return Err(invalid("base64Binary"));
            }
            Value::String(cell.into())
        }
        other => return Err(format!("{name} has unknown data type {other}")),
    })
}

/// A float as Go's `strconv.ParseFloat` reads the ones InfluxDB writes: decimal notation, `NaN`,
/// `Inf`/`Infinity` with a sign or none, in any case.
fn parse_go_float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let special = unsigned.eq_ignore_ascii_case("nan")
        || unsigned.eq_ignore_ascii_case("inf")
        || unsigned.eq_ignore_ascii_case("infinity");
    let plain = !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !special && !plain {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Whether `text` is a duration Go's `time.ParseDuration` reads: `0`, or an optional sign and
/// one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`).
fn is_go_duration(text: &str) -> bool {
    let mut rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    if rest == "0" {
        return true;
    }
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"].into_iter().find(|u| rest.starts_with(u))
        else {
            return false;
        };
        // `ms` before `m`, `ns` before `s`: the list is in that order.
        rest = &rest[unit.len()..];
    }
    true
}

/// Whether `text` is standard padded base64, as Go's `base64.StdEncoding` decodes it.
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    padding <= 2 && bytes[..bytes.len() - padding].iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

/// The rows of a CSV text as Go's `encoding/csv` reads them with a comma, a variable number of
/// fields and strict quotes: `\r\n` is a line end, empty lines are skipped, a quoted field may
/// hold commas, `""` and line ends.
fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while let Some(&first) = chars.peek() {
        // Skip empty lines.
        if first == '\n' {
            chars.next();
            line += 1;
            continue;
        }
        if first == '\r' {
            let mut ahead = chars.clone();
            ahead.next();
            if ahead.peek() == Some(&'\n') {
                chars.next();
                chars.next();
                line += 1;
                continue;
            }
        }
        let start_line = line;
        let mut row = Vec::new();
        let mut field = String::new();
        'record: loop {
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "record on line {start_line}: extraneous or missing \" in quoted-field"
                            ));
                        }
                        Some('"') => match chars.peek() {
                            Some('"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some(',') => {
                                chars.next();
                                row.push(std::mem::take(&mut field));
                                continue 'record;
                            }
                            Some('\n') => {
                                chars.next();
                                line += 1;
                                break 'record;
                            }
                            Some('\r') => {
                                let mut ahead = chars.clone();
                                ahead.next();
                                if ahead.peek() != Some(&'\n') {
                                    return Err(format!(
                                        "record on line {start_line}: extraneous or missing \" in quoted-field"
                                    ));
                                }
                                chars.next();
                                chars.next();
                                line += 1;
                                break 'record;
                            }
                            None => break 'record,
                            Some(_) => {
                                return Err(format!(
                                    "record on line {start_line}: extraneous or missing \" in quoted-field"
                                ));
                            }
                        },
                        Some('\r') if chars.peek() == Some(&'\n') => {
                            chars.next();
                            line += 1;
                            field.push('\n');
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
            } else {
                loop {
                    match chars.next() {
                        None => break 'record,
                        Some(',') => {
                            row.push(std::mem::take(&mut field));
                            continue 'record;
                        }
                        Some('\n') => {
                            line += 1;
                            break 'record;
                        }
                        Some('\r') if chars.peek() == Some(&'\n') => {
                            chars.next();
                            line += 1;
                            break 'record;
                        }
                        Some('"') => return Err(format!("line {line}: bare \" in non-quoted-field")),
                        Some(c) => field.push(c),
                    }
                }
            }
        }
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(value: Value) -> &'static str {
        match InfluxdbMetric::parse(&value) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named_and_the_profile_defaults_to_influxdb() {
        assert_eq!(field_of(json!("from(bucket: \"b\")")), "provider.influxdb");
        assert_eq!(field_of(json!({"query": "q", "address": "http://x"})), "provider.influxdb");
        assert_eq!(field_of(json!({"profile": "p"})), "provider.influxdb.query");
        assert_eq!(field_of(json!({"query": "  "})), "provider.influxdb.query");
        assert_eq!(field_of(json!({"query": 1})), "provider.influxdb.query");
        assert_eq!(field_of(json!({"query": "q", "profile": 1})), "provider.influxdb.profile");
        let spec = InfluxdbMetric::parse(&json!({"query": "q"})).unwrap();
        assert_eq!(spec, InfluxdbMetric { profile: "influxdb".into(), query: "q".into() });
        let spec = InfluxdbMetric::parse(&json!({"query": "q", "profile": ""})).unwrap();
        assert_eq!(spec.profile, "influxdb");
        let spec = InfluxdbMetric::parse(&json!({"query": "q", "profile": "mine"})).unwrap();
        assert_eq!(spec.profile, "mine");
    }

    #[test]
    fn the_url_is_the_clients() {
        let url = |a: &str, o: &str| query_url(a, o).unwrap().to_string();
        assert_eq!(url("http://localhost:8086", "test-org"), "http://localhost:8086/api/v2/query?org=test-org");
        assert_eq!(url("http://localhost:8086/", "o"), "http://localhost:8086/api/v2/query?org=o");
        assert_eq!(
            url("https://influx.example.com/prefix", "my org"),
            "https://influx.example.com/prefix/api/v2/query?org=my+org"
        );
        assert_eq!(url("http://h:8086/?x=1", "o&p"), "http://h:8086/api/v2/query?org=o%26p");
        assert!(query_url("localhost:8086", "o").is_err());
    }

    #[test]
    fn the_body_is_the_clients() {
        assert_eq!(
            request_body("from(bucket: \"b\")").to_string(),
            r#"{"dialect":{"annotations":["datatype","group","default"],"delimiter":",","header":true},"query":"from(bucket: \"b\")","type":"flux"}"#
        );
    }

    /// Argo's own test answer (metricproviders/influxdb/influxdb_test.go).
    const ARGO_CSV: &str =
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string
#group,false,false,true,true,false,false,true,true,true,true
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,a,b
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T10:34:08.135814545Z,1.0,f,test,1,adsfasdf
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T22:08:44.850214724Z,6.6,f,test,1,adsfasdf
";

    #[test]
    fn argos_answer_is_its_values() {
        assert_eq!(record_values(ARGO_CSV), Ok(vec![json!(1.0), json!(6.6)]));
        let crlf = ARGO_CSV.replace('\n', "\r\n");
        assert_eq!(record_values(&crlf), Ok(vec![json!(1.0), json!(6.6)]));
        // Only the header: no records.
        let empty: String = ARGO_CSV.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(record_values(&empty), Ok(vec![]));
        assert_eq!(record_values(""), Ok(vec![]));
        assert_eq!(record_values("\r\n"), Ok(vec![]));
    }

    #[test]
    fn cells_are_typed_by_their_datatype_and_defaulted() {
        let csv = "#datatype,string,long,long,unsignedLong,boolean,string,double,duration,base64Binary\n\
                   #group,false,false,false,false,false,false,false,false,false\n\
                   #default,_result,,7,,,,,,\n\
                   ,result,table,_value,u,b,s,d,du,bin\n\
                   ,,0,,18446744073709551615,FALSE,\"a,\"\"b\"\"\",NaN,1h30m,aGk=\n\
                   ,,0,-3,1,true,x,+Inf,-1.5s,\n";
        assert_eq!(record_values(csv), Ok(vec![json!(7), json!(-3)]));
        let value = |cell: &str, datatype: &str| typed_value(cell, datatype, "_value");
        assert_eq!(value("18446744073709551615", "unsignedLong"), Ok(json!(18446744073709551615u64)));
        assert_eq!(value("FALSE", "boolean"), Ok(json!(false)));
        assert_eq!(value("yes", "boolean"), Ok(json!(true)));
        assert_eq!(value("NaN", "double"), Ok(json!("NaN")));
        assert_eq!(value("-Inf", "double"), Ok(json!("-Inf")));
        assert_eq!(value("1e3", "double"), Ok(json!(1000.0)));
        assert_eq!(value("", "double"), Ok(Value::Null));
        assert_eq!(value("2020-02-18T10:34:08Z", "dateTime:RFC3339"), Ok(json!("2020-02-18T10:34:08Z")));
        assert_eq!(value("1h30m", "duration"), Ok(json!("1h30m")));
        assert!(value("x", "double").is_err());
        assert!(value("1.5", "long").is_err());
        assert!(value("-1", "unsignedLong").is_err());
        assert!(value("yesterday", "dateTime:RFC3339").is_err());
        assert!(value("1x", "duration").is_err());
        assert!(value("a", "base64Binary").is_err());
        assert_eq!(value("x", "decimal"), Err("_value has unknown data type decimal".into()));
    }

    #[test]
    fn a_record_without_value_is_null() {
        let csv =
            "#datatype,string,long,string\n#group,false,false,true\n#default,_result,,\n,result,table,host\n,,0,a\n";
        assert_eq!(record_values(csv), Ok(vec![Value::Null]));
    }

    #[test]
    fn influxdbs_error_table_is_the_error() {
        let csv = "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n\
                   ,\"runtime error @2:6-2:40: filter: type conflict: int != string\",897\r\n";
        assert_eq!(
            record_values(csv),
            Err(Refusal::Flux("runtime error @2:6-2:40: filter: type conflict: int != string,897".into()))
        );
        let csv = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,,\n";
        assert_eq!(record_values(csv), Err(Refusal::Flux("unknown query error".into())));
    }

    #[test]
    fn broken_csv_is_refused_with_the_clients_words() {
        assert_eq!(
            record_values(",result,table\n,,0\n"),
            Err(Refusal::Csv("parsing error, annotations not found".into()))
        );
        assert_eq!(
            record_values("#group,false,false\n,result,table\n"),
            Err(Refusal::Csv("parsing error, datatype annotation not found".into()))
        );
        assert_eq!(
            record_values("#datatype,string,long\n,result,table\n,,0,1\n"),
            Err(Refusal::Csv("parsing error, row has different number of columns than the table: 3 vs 2".into()))
        );
        assert!(matches!(record_values("#datatype,string\n,a\"b,c\n"), Err(Refusal::Csv(_))));
        assert!(matches!(record_values("#datatype,string\n,\"a,c\n"), Err(Refusal::Csv(_))));
        assert!(matches!(record_values("<html>\n<body>oops</body>\n"), Err(Refusal::Csv(_))));
    }

    #[test]
    fn csv_is_read_as_gos_reader_reads_it() {
        assert_eq!(
            csv_rows("a,\"b\r\nc\",\"d\"\"e\"\r\n\r\n\nf\rg,h").unwrap(),
            vec![vec!["a", "b\nc", "d\"e"], vec!["f\rg", "h"]]
        );
        assert_eq!(csv_rows("x\n,\n").unwrap(), vec![vec!["x"], vec!["", ""]]);
    }

    #[test]
    fn error_answers_keep_influxdbs_words() {
        let json = "application/json; charset=utf-8";
        assert_eq!(
            http_error(
                StatusCode::BAD_REQUEST,
                json,
                "",
                r#"{"code":"invalid","message":"compilation failed: error at @1:1-1:5: undefined identifier frm"}"#
            ),
            "HTTP 400 Bad Request: invalid: compilation failed: error at @1:1-1:5: undefined identifier frm"
        );
        assert_eq!(
            http_error(
                StatusCode::UNAUTHORIZED,
                json,
                "",
                r#"{"code":"unauthorized","message":"unauthorized access"}"#
            ),
            "HTTP 401 Unauthorized: unauthorized: unauthorized access"
        );
        assert_eq!(
            http_error(StatusCode::NOT_FOUND, "text/plain", "", "404 page not found\n"),
            "HTTP 404 Not Found: 404 page not found"
        );
        assert_eq!(
            http_error(StatusCode::SERVICE_UNAVAILABLE, "", "", ""),
            "HTTP 503 Service Unavailable: unavailable: service temporarily unavailable"
        );
        assert_eq!(
            http_error(StatusCode::INTERNAL_SERVER_ERROR, "", "engine down", ""),
            "HTTP 500 Internal Server Error: engine down"
        );
    }

    #[test]
    fn durations_are_gos() {
        for ok in ["0", "1h", "-1.5s", "1h30m0s", "300ms", "1us", "2µs", "+3ns"] {
            assert!(is_go_duration(ok), "{ok}");
        }
        for bad in ["", "1", "h", "1d", "1..2s", "-"] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_is_scrubbed_from_errors() {
        let e = Error::Source { target: "t".into(), message: "token abcd-1234 refused".into() }
            .without_secrets(&["abcd-1234"]);
        assert_eq!(e.to_string(), "t: token ***** refused");
        let p = Profile { url: query_url("http://h:1", "o").unwrap(), token: "abcd-1234".into() };
        assert!(!format!("{p:?}").contains("abcd"));
    }
}
