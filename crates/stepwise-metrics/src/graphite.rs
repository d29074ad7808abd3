//! The Graphite provider: a render API query whose first series' values are the measurement's
//! value. Single-shot, with Argo Rollouts' semantics:
//!
//! * `query` is the render API's query string, `target=<expression>&from=-5min`, as Argo reads it:
//!   every whitespace character is removed (so that a query may be written over several lines),
//!   the parameters are decoded, `format=json` is set (replacing any `format`), and the string is
//!   encoded again with the parameters sorted by name, as Go's `url.Values.Encode` writes it;
//! * `GET <address>/render?<that string>`, the address's path kept before `render`
//!   (`http://graphite.monitoring/graphite` asks `/graphite/render`), credentials in the address
//!   sent as basic authentication, as Go's client does; no `from` in the query is Graphite's
//!   default, the last 24 hours;
//! * the value is the list of the non-null values of the first series answered, in time order
//!   (`result[0] >= 90`); Graphite's NaN and infinities, which it can only send as strings, are
//!   `"NaN"`, `"+Inf"` and `"-Inf"`, as Prometheus' are. A series of only nulls is the empty list,
//!   as in Argo, so that a condition decides (`size(result) > 0 && …`);
//! * no series, or a first series without points, is no data (Argo's `no values found`): the
//!   measurement is an Error;
//! * an HTTP status of 400 or more is an error with Graphite's text (an unknown function is `HTTP
//!   400 Bad Request: Invalid parameters (Received request for unknown function: …)`), as is an
//!   answer that is not the render API's JSON, or a point that is not `[value, timestamp]`;
//! * a query may take 10 s, Argo's timeout.
//!
//! Where Argo would silently send something else than what was written, the metric is refused,
//! naming `provider.graphite.query`: a `%` that starts no escape (Argo fails too), a `#` (Go's URL
//! parser cuts the query there: write `%23`), a query without a `target`. A `;` is kept (Go drops
//! a parameter holding one; Graphite's tagged series are written with it).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use stepwise_api::Metric;

use crate::fields::{check_field, json_kind, json_number};
use crate::web::{http_client, parse_url, redacted, reqwest_error, snippet};
use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// The provider's field name in a metric.
pub const KIND: &str = "graphite";

/// The render API, below the address's path.
pub const RENDER_PATH: &str = "render";

/// Seconds a query may take (Argo's Graphite client's timeout).
pub const TIMEOUT_SECONDS: u64 = 10;

/// A metric's `provider.graphite`, as Argo Rollouts defines it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphiteMetric {
    /// Graphite's web app (its render API), `http://graphite.example.com:9090`; a path is kept
    /// (`http://graphite.monitoring/graphite` asks `/graphite/render`); credentials in it
    /// (`http://user:password@…`) are sent as basic authentication.
    pub address: String,
    /// The render API's query string, `target=<expression>&from=-5min`; whitespace is removed,
    /// so it may span lines; `format` is always `json`.
    pub query: String,
}

impl GraphiteMetric {
    /// The `provider.graphite` of `metric`.
    pub fn from_metric(metric: &Metric) -> Result<Self, Error> {
        let value = metric.provider.graphite.as_ref().ok_or_else(|| Error::Config {
            field: "provider.graphite",
            message: format!("metric {} has no graphite provider", metric.name),
        })?;
        Self::parse(value)
    }

    /// Reads `provider.graphite` as written in a metric. Every error names its field, e.g.
    /// `provider.graphite.query: has no target: …`.
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let fields = value.as_object().ok_or_else(|| Error::Config {
            field: "provider.graphite",
            message: format!("must be an object with an address and a query, not {}", json_kind(value)),
        })?;
        // Each field on its own first, so that an error names it; then the whole.
        if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "address" | "query")) {
            return Err(Error::Config {
                field: "provider.graphite",
                message: format!("unknown field {unknown:?}: a graphite provider has address and query"),
            });
        }
        check_field::<String>(fields, "address", "provider.graphite.address")?;
        check_field::<String>(fields, "query", "provider.graphite.query")?;
        let spec: GraphiteMetric = serde_json::from_value(value.clone())
            .map_err(|e| Error::Config { field: "provider.graphite", message: e.to_string() })?;
        if spec.address.trim().is_empty() {
            return Err(Error::Config { field: "provider.graphite.address", message: "is empty".into() });
        }
        if spec.query.trim().is_empty() {
            return Err(Error::Config { field: "provider.graphite.query", message: "is empty".into() });
        }
        spec.render_url()?;
        Ok(spec)
    }

    /// `<address>/render?<query>`: the query as Argo sends it (see the module's documentation).
    pub fn render_url(&self) -> Result<Url, Error> {
        let mut url = parse_url(&self.address).map_err(|message| Error::Config {
            field: "provider.graphite.address",
            message: format!("{message}: Graphite's address is a URL, e.g. http://graphite.monitoring:8080"),
        })?;
        let path = format!("{}/{RENDER_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_fragment(None);
        let query =
            render_query(&self.query).map_err(|message| Error::Config { field: "provider.graphite.query", message })?;
        url.set_query(Some(&query));
        Ok(url)
    }
}

/// The query string Argo sends for `query`: whitespace (Go's `\s`: space, tab, newline, form
/// feed, carriage return) removed, parameters decoded, `format=json` set, encoded again sorted by
/// name (values of one name in their order).
fn render_query(query: &str) -> Result<String, String> {
    let text: String = query.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')).collect();
    let text = text.strip_prefix('?').unwrap_or(&text);
    if let Some(at) = text.find('#') {
        return Err(format!(
            "has a # at character {}: Argo Rollouts cuts the query there; write it %23 if it is part of the query",
            at + 1
        ));
    }
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = unescape(key).map_err(|e| format!("parameter {pair:?}: {e}"))?;
        let value = unescape(value).map_err(|e| format!("parameter {pair:?}: {e}"))?;
        params.entry(key).or_default().push(value);
    }
    if !params.get("target").is_some_and(|targets| targets.iter().any(|t| !t.is_empty())) {
        return Err(format!(
            "has no target: it is the render API's query string, e.g. target=sumSeries(app.*.requests)&from=-5min \
             (parameters given: {})",
            if params.is_empty() { "none".to_string() } else { params.keys().cloned().collect::<Vec<_>>().join(", ") }
        ));
    }
    params.insert("format".into(), vec!["json".into()]);
    let mut encoded = String::new();
    for (key, values) in &params {
        for value in values {
            if !encoded.is_empty() {
                encoded.push('&');
            }
            encoded.push_str(&escape(key));
            encoded.push('=');
            encoded.push_str(&escape(value));
        }
    }
    Ok(encoded)
}

/// Go's `url.QueryUnescape`: `+` is a space, `%` starts two hex digits.
fn unescape(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                let Some(byte) = byte.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    let shown: String = text[i..].chars().take(3).collect();
                    return Err(format!("{shown:?} is not a URL escape (% and two hex digits; a % itself is %25)"));
                };
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "its escapes decode to bytes that are not UTF-8".to_string())
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` as they are, a space as `+`, every other
/// byte `%XX`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Measures with Graphite render API queries.
pub struct GraphiteProvider {
    /// Shared by all queries.
    http: Result<reqwest::Client, String>,
}

impl GraphiteProvider {
    /// A provider; Graphite needs no credentials beyond the ones an address may carry.
    ///
    /// Never fails: should the TLS stack be unusable, every measurement reports why instead.
    pub fn new() -> Self {
        GraphiteProvider { http: http_client(false) }
    }
}

impl Default for GraphiteProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GraphiteProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphiteProvider").finish_non_exhaustive()
    }
}

impl MetricProvider for GraphiteProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, _run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        let spec = GraphiteMetric::from_metric(metric)?;
        let url = spec.render_url()?;
        let target = format!("Graphite at {}", redacted(&url).trim_end_matches("?…").trim_end_matches(RENDER_PATH));
        let target = target.trim_end_matches('/').to_string();
        let http =
            self.http.as_ref().map_err(|message| Error::Source { target: target.clone(), message: message.clone() })?;
        let exchange = async {
            let response = http.get(url).header(reqwest::header::ACCEPT, "application/json").send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        };
        let (status, body) = match tokio::time::timeout(Duration::from_secs(TIMEOUT_SECONDS), exchange).await {
            Err(_) => return Err(Error::Timeout { seconds: TIMEOUT_SECONDS, target }),
            Ok(Err(e)) => return Err(Error::Source { target, message: reqwest_error(&e) }),
            Ok(Ok(answer)) => answer,
        };
        if status.as_u16() >= 400 {
            let status = match status.canonical_reason() {
                Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
                None => format!("HTTP {}", status.as_u16()),
            };
            return Err(Error::Source { target, message: format!("{status}: {}", snippet(&body)) });
        }
        match first_series(&body) {
            Ok(Some(values)) => Ok(Taken::new(Reading::Value(Value::Array(values)))),
            Ok(None) => Err(Error::NoData { metric: metric.name.clone() }),
            Err(message) => Err(Error::Answer { message: format!("{target}: {message}") }),
        }
    }
}

/// The non-null values of the first series of a render API answer (`[{"target": …, "datapoints":
/// [[value, timestamp], …]}, …]`), None when there is no series or the first has no points. Every
/// point of every series must be `[value, timestamp]`, as Argo reads them: a value a number, a
/// numeric string or null, a timestamp a number, an integer string or null.
fn first_series(body: &str) -> Result<Option<Vec<Value>>, String> {
    let answer: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON ({e}): {}", snippet(body)))?;
    let series = match &answer {
        Value::Null => return Ok(None),
        Value::Array(series) => series,
        other => {
            return Err(format!(
                "the answer is {}, not the render API's list of series: {}",
                json_kind(other),
                snippet(body)
            ));
        }
    };
    let mut first = None;
    for (i, s) in series.iter().enumerate() {
        let name = s.get("target").and_then(Value::as_str).map(|t| format!("series {t:?}"));
        let name = name.unwrap_or_else(|| format!("series {i}"));
        let points = match s {
            Value::Object(fields) => match fields.get("datapoints") {
                None | Some(Value::Null) => &[][..],
                Some(Value::Array(points)) => points.as_slice(),
                Some(other) => return Err(format!("{name}: datapoints is {}, not a list", json_kind(other))),
            },
            Value::Null => &[][..],
            other => return Err(format!("series {i} is {}, not an object", json_kind(other))),
        };
        let mut values = Vec::with_capacity(points.len());
        for point in points {
            let value = read_point(point).map_err(|e| format!("{name}: {e}"))?;
            values.extend(value);
        }
        if i == 0 && !points.is_empty() {
            first = Some(values);
        }
    }
    Ok(first)
}

/// The value of a point `[value, timestamp]`, None for a null value.
fn read_point(point: &Value) -> Result<Option<Value>, String> {
    let Some([value, time]) = point.as_array().map(Vec::as_slice) else {
        return Err(format!("a point is {point}, not [value, timestamp]"));
    };
    match time {
        Value::Null | Value::Number(_) => {}
        Value::String(s) if s.parse::<i64>().is_ok() => {}
        other => return Err(format!("the timestamp of point {point} is {other}, not a number of seconds")),
    }
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(Value::Number(n.clone()))),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(v) => Ok(Some(json_number(v))),
            Err(_) => Err(format!("the value of point {point} is {s:?}, not a number")),
        },
        other => Err(format!("the value of point {point} is {}, not a number", json_kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(value: Value) -> &'static str {
        match GraphiteMetric::parse(&value) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    fn url(address: &str, query: &str) -> Result<String, Error> {
        GraphiteMetric { address: address.into(), query: query.into() }.render_url().map(|u| u.to_string())
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(field_of(json!("target=a")), "provider.graphite");
        assert_eq!(field_of(json!({"address": "http://g", "query": "target=a", "user": "u"})), "provider.graphite");
        assert_eq!(field_of(json!({"address": "http://g"})), "provider.graphite");
        assert_eq!(field_of(json!({"address": 80, "query": "target=a"})), "provider.graphite.address");
        assert_eq!(field_of(json!({"address": "", "query": "target=a"})), "provider.graphite.address");
        assert_eq!(field_of(json!({"address": ":::", "query": "target=a"})), "provider.graphite.address");
        assert_eq!(field_of(json!({"address": "http://g", "query": " \n"})), "provider.graphite.query");
        assert_eq!(field_of(json!({"address": "http://g", "query": "sumSeries(a.b)"})), "provider.graphite.query");
        assert_eq!(field_of(json!({"address": "http://g", "query": "target=a%zz"})), "provider.graphite.query");
        assert_eq!(field_of(json!({"address": "http://g", "query": "target=a#b"})), "provider.graphite.query");
        let err = GraphiteMetric::parse(&json!({"address": "http://g", "query": "from=-5min"})).unwrap_err();
        assert!(err.to_string().starts_with("provider.graphite.query: has no target"), "{err}");
        assert!(err.to_string().ends_with("(parameters given: from)"), "{err}");
    }

    #[test]
    fn the_query_is_sent_as_argo_encodes_it() {
        // Argo's own test: whitespace around and inside is dropped, format=json added, sorted.
        assert_eq!(
            url("http://127.0.0.1:8080", "\n  target=sumSeries(app.http.*.*.count)&from=-2min \t  \n").unwrap(),
            "http://127.0.0.1:8080/render?format=json&from=-2min&target=sumSeries%28app.http.%2A.%2A.count%29"
        );
        // A path is kept; a format is replaced; repeated targets keep their order; + is a space.
        assert_eq!(
            url("https://g.example.com/graphite/", "target=b&target=a&format=raw&until=now&target=alias(c,'x+y')")
                .unwrap(),
            "https://g.example.com/graphite/render?format=json&target=b&target=a&target=alias%28c%2C%27x+y%27%29&\
             until=now"
        );
        // Escapes are decoded then encoded again, Go's way.
        assert_eq!(
            url("http://g", "target=seriesByTag('name=cpu;dc=eu')&from=-5min%7E").unwrap(),
            "http://g/render?format=json&from=-5min~&target=seriesByTag%28%27name%3Dcpu%3Bdc%3Deu%27%29"
        );
        // Argo's "invalid query" test fails; so does this, naming the escape.
        let err = url("http://g", "target=%^&from=-2min").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"provider.graphite.query: parameter "target=%^": "%^" is not a URL escape (% and two hex digits; a % itself is %25)"#
        );
    }

    #[test]
    fn the_first_series_non_null_values_are_the_value() {
        let body = json!([
            {"target": "a", "datapoints": [[null, 1], [1.5, 2], ["2.5", "3"], [4, null]]},
            {"target": "b", "datapoints": [[9, 1]]},
        ]);
        assert_eq!(first_series(&body.to_string()), Ok(Some(vec![json!(1.5), json!(2.5), json!(4)])));
        let only_nulls = json!([{"target": "a", "datapoints": [[null, 1], [null, 2]]}]);
        assert_eq!(first_series(&only_nulls.to_string()), Ok(Some(vec![])));
        assert_eq!(first_series("[]"), Ok(None));
        assert_eq!(first_series("null"), Ok(None));
        assert_eq!(first_series(r#"[{"target": "a", "datapoints": []}, {"datapoints": [[1, 1]]}]"#), Ok(None));
        let odd = json!([{"target": "a", "datapoints": [["NaN", 1], ["Inf", 2], ["-inf", 3]]}]);
        assert_eq!(first_series(&odd.to_string()), Ok(Some(vec![json!("NaN"), json!("+Inf"), json!("-Inf")])));
    }

    #[test]
    fn points_are_read_as_argo_reads_them() {
        let err = |body: Value| first_series(&body.to_string()).unwrap_err();
        assert_eq!(
            err(json!([{"target": "a", "datapoints": [[10]]}])),
            r#"series "a": a point is [10], not [value, timestamp]"#
        );
        assert_eq!(
            err(json!([{"target": "a", "datapoints": [[100, "f"]]}])),
            r#"series "a": the timestamp of point [100,"f"] is "f", not a number of seconds"#
        );
        assert_eq!(
            err(json!([{"target": "a", "datapoints": [[[], 1]]}])),
            r#"series "a": the value of point [[],1] is a list, not a number"#
        );
        // As Go decodes the whole answer, a bad point of a later series fails it too.
        assert_eq!(
            err(json!([{"target": "a", "datapoints": [[1, 1]]}, {"datapoints": [[true, 1]]}])),
            "series 1: the value of point [true,1] is a boolean, not a number"
        );
        assert!(first_series("invalid JSON").unwrap_err().starts_with("the answer is not JSON"));
        assert!(first_series(r#"{"error": "x"}"#).unwrap_err().starts_with("the answer is an object"));
    }
}
