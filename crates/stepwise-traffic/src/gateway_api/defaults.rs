//! The defaults the API server fills in an HTTPRoute's rules, so that comparing the rules read
//! with the rules wanted takes a default for no change.

use serde_json::{Value, json};

use super::matching::matches_of;

/// A header or query condition with its type defaulted.
pub(super) fn defaulted_header(h: &Value) -> Value {
    let mut h = h.clone();
    if h.get("type").is_none() && h.is_object() {
        h["type"] = json!("Exact");
    }
    h
}

fn default_field(v: &mut Value, field: &str, default: Value) {
    if let Some(map) = v.as_object_mut() {
        map.entry(field).or_insert(default);
    }
}

fn defaulted_filters(filters: Option<&mut Value>) {
    for f in filters.and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(target) = f.pointer_mut("/requestMirror/backendRef") {
            default_field(target, "group", json!(""));
            default_field(target, "kind", json!("Service"));
        }
        if let Some(fraction) = f.pointer_mut("/requestMirror/fraction") {
            default_field(fraction, "denominator", json!(100));
        }
        if let Some(redirect) = f.get_mut("requestRedirect") {
            default_field(redirect, "statusCode", json!(302));
        }
        if let Some(cors) = f.get_mut("cors") {
            default_field(cors, "maxAge", json!(5));
        }
    }
}

/// A rule as the API server stores it, its CRD's defaults filled in: what is compared to tell
/// whether the rules are as wanted, so that a default the server adds is no change.
fn defaulted(rule: &Value) -> Value {
    let mut rule = rule.clone();
    if rule.is_object() {
        rule["matches"] = Value::Array(matches_of(&rule));
    }
    for m in rule.get_mut("matches").and_then(Value::as_array_mut).into_iter().flatten() {
        default_field(m, "path", json!({"type": "PathPrefix", "value": "/"}));
        if let Some(path) = m.get_mut("path") {
            default_field(path, "type", json!("PathPrefix"));
            default_field(path, "value", json!("/"));
        }
        for list in ["headers", "queryParams"] {
            for h in m.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                *h = defaulted_header(h);
            }
        }
    }
    for b in rule.get_mut("backendRefs").and_then(Value::as_array_mut).into_iter().flatten() {
        default_field(b, "group", json!(""));
        default_field(b, "kind", json!("Service"));
        default_field(b, "weight", json!(1));
        defaulted_filters(b.get_mut("filters"));
    }
    defaulted_filters(rule.get_mut("filters"));
    rule
}

pub(super) fn same_rules(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| defaulted(x) == defaulted(y))
}
