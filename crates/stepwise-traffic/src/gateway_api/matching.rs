//! What a managed rule matches: a step's header conditions as Gateway API header matches, added
//! to the split rule's matches, and a mirror step's method and path combined with them.

use serde_json::{Value, json};
use stepwise_api::{RouteMatch, StringMatch};

use super::MAX_HEADERS_PER_MATCH;
use super::defaults::defaulted_header;
use super::managed::malformed;
use crate::Error;

/// `text` as a regular expression that matches it literally. Only the characters special in
/// RE2 and PCRE are escaped, as both nginx and the Gateway implementations read them.
pub(crate) fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Gateway API string match (`type`, `value`) for a header condition of a step. Gateway API
/// matches headers by `Exact` or `RegularExpression`, so a `prefix` becomes the expression
/// `^<escaped prefix>.*`: Envoy-based implementations match an expression against the whole
/// value, so the `.*` is needed there and harmless where the expression is searched for.
fn header_condition(step: &str, route: &str, header: &str, value: &StringMatch) -> Result<Value, Error> {
    let (kind, text) = match (&value.exact, &value.prefix, &value.regex) {
        (Some(v), None, None) => ("Exact", v.clone()),
        (None, Some(p), None) => ("RegularExpression", format!("^{}.*", escape_regex(p))),
        (None, None, Some(r)) => ("RegularExpression", r.clone()),
        _ => {
            return Err(Error::Config(format!(
                "{step} {route}: header {header} must set exactly one of exact, prefix and regex"
            )));
        }
    };
    if text.is_empty() {
        return Err(Error::Config(format!(
            "{step} {route}: header {header} matches an empty value, which Gateway API cannot match"
        )));
    }
    Ok(json!({"name": header, "type": kind, "value": text}))
}

/// The split rule's matches, as the API server defaults them when there are none.
pub(super) fn matches_of(rule: &Value) -> Vec<Value> {
    match rule.get("matches").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![json!({"path": {"type": "PathPrefix", "value": "/"}})],
    }
}

/// What a route adds to one of the split rule's matches went wrong: the message, to be prefixed
/// with the object.
pub(super) type Combined<T> = Result<T, String>;

/// Adds the header `conditions` to `m`: every condition of both must hold. A header the match
/// already conditions otherwise cannot take a second condition (Gateway API keeps one per
/// header name, compared without case, and ignores the later ones).
pub(super) fn add_headers(m: &mut Value, conditions: &[Value], what: &str, rule: usize) -> Combined<()> {
    let mut headers = m.get("headers").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in conditions {
        let name = c["name"].as_str().unwrap_or_default();
        let same_name =
            |h: &&Value| h.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name));
        match headers.iter().find(same_name) {
            Some(existing) if defaulted_header(existing) == defaulted_header(c) => {}
            Some(_) => {
                return Err(format!(
                    "rule {rule} already matches header {name} otherwise; {what} cannot add a second condition on it (Gateway API takes one per header)"
                ));
            }
            None => headers.push(c.clone()),
        }
    }
    if headers.len() > MAX_HEADERS_PER_MATCH {
        return Err(format!(
            "{what} would give a match of rule {rule} {} header conditions; Gateway API allows {MAX_HEADERS_PER_MATCH}",
            headers.len()
        ));
    }
    m["headers"] = Value::Array(headers);
    Ok(())
}

/// Header conditions of one step, each header once.
pub(super) fn conditions<'a>(
    step: &str,
    route: &str,
    pairs: impl Iterator<Item = (&'a str, &'a StringMatch)>,
) -> Result<Vec<Value>, Error> {
    let mut out: Vec<Value> = Vec::new();
    for (header, value) in pairs {
        if out.iter().any(|c| c["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(header))) {
            return Err(Error::Config(format!(
                "{step} {route}: header {header} has two conditions; Gateway API takes one per header"
            )));
        }
        out.push(header_condition(step, route, header, value)?);
    }
    Ok(out)
}

/// A path match of Gateway API (`type`, `value`).
type PathMatch = (String, String);

fn path_of(m: &Value) -> PathMatch {
    let kind = m.pointer("/path/type").and_then(Value::as_str).unwrap_or("PathPrefix");
    let value = m.pointer("/path/value").and_then(Value::as_str).unwrap_or("/");
    (kind.to_string(), value.to_string())
}

/// Whether `path` lies under the Gateway API path prefix `prefix` (whole segments: `/api` holds
/// `/api` and `/api/v2`, not `/apis`).
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || path.starts_with(&format!("{prefix}/")) || prefix.is_empty()
}

/// The paths both `rule` and `step` match, as one path match: Some(None) when they match no path
/// in common (the combination is left out), an error when Gateway API cannot say it.
fn common_path(rule: &PathMatch, step: &PathMatch) -> Combined<Option<PathMatch>> {
    let literal = |p: &PathMatch| p.0 == "Exact" || p.0 == "PathPrefix";
    if rule == step || (rule.0 == "PathPrefix" && rule.1 == "/") {
        return Ok(Some(step.clone()));
    }
    if !(literal(rule) && literal(step)) {
        return Err(format!(
            "its path {} {} cannot be combined with the rule's path {} {}",
            step.0, step.1, rule.0, rule.1
        ));
    }
    if rule.0 == "PathPrefix" && under(&step.1, &rule.1) {
        return Ok(Some(step.clone()));
    }
    if step.0 == "PathPrefix" && under(&rule.1, &step.1) {
        return Ok(Some(rule.clone()));
    }
    Ok(None)
}

/// One of the split rule's matches `m` narrowed by a mirror step's match `step`: None when the
/// two have no request in common.
pub(super) fn mirror_match(
    object: &str,
    m: &Value,
    step: &RouteMatch,
    route: &str,
    rule: usize,
) -> Result<Option<Value>, Error> {
    let what = format!("setMirrorRoute {route}");
    let mut out = m.clone();
    if let Some(method) = &step.method {
        let Some(method) = method.exact.as_deref().filter(|_| method.prefix.is_none() && method.regex.is_none()) else {
            return Err(Error::Config(format!("{what}: Gateway API matches a method exactly only")));
        };
        match m.get("method").and_then(Value::as_str) {
            Some(theirs) if theirs != method => return Ok(None),
            _ => out["method"] = json!(method),
        }
    }
    if let Some(path) = &step.path {
        let wanted = match (&path.exact, &path.prefix, &path.regex) {
            (Some(v), None, None) => ("Exact".to_string(), v.clone()),
            // Gateway API's prefixes are whole path segments, where Istio's are characters.
            (None, Some(v), None) => ("PathPrefix".to_string(), v.clone()),
            (None, None, Some(v)) => ("RegularExpression".to_string(), v.clone()),
            _ => return Err(Error::Config(format!("{what}: path must set exactly one of exact, prefix and regex"))),
        };
        match common_path(&path_of(m), &wanted) {
            Ok(Some((kind, value))) => out["path"] = json!({"type": kind, "value": value}),
            Ok(None) => return Ok(None),
            Err(message) => return Err(malformed(object, format!("{what}: rule {rule}: {message}"))),
        }
    }
    let pairs = step.headers.iter().flatten().map(|(h, v)| (h.as_str(), v));
    let conditions = conditions("setMirrorRoute", route, pairs)?;
    if !conditions.is_empty() {
        add_headers(&mut out, &conditions, &what, rule).map_err(|message| malformed(object, message))?;
    }
    Ok(Some(out))
}
