//! The rules of the managed routes: a header rule sending to the canary alone, a mirror rule
//! splitting as the split rule does and mirroring to the canary, each a copy of the split rule it
//! goes before.

use serde_json::{Value, json};
use stepwise_api::{HeaderRoutingMatch, SetHeaderRoute, SetMirrorRoute};

use super::MAX_FILTERS_PER_RULE;
use super::managed::malformed;
use super::matching::{add_headers, conditions, matches_of, mirror_match};
use super::weights::Split;
use crate::{Desired, Error};

/// The split rule at `split` turned into a managed rule `name`: its other fields (filters,
/// timeouts) copied, `matches` and `backendRefs` as given.
fn managed_rule(split: &Value, name: &str, matches: Vec<Value>, backend_refs: Vec<Value>) -> Value {
    let mut rule = split.as_object().cloned().unwrap_or_default();
    rule.insert("name".into(), json!(name));
    rule.insert("matches".into(), Value::Array(matches));
    rule.insert("backendRefs".into(), Value::Array(backend_refs));
    Value::Object(rule)
}

/// The rule of the header route `route` before the split rule `split` (index `i` as read).
pub(super) fn header_rule(
    object: &str,
    split: &Value,
    i: usize,
    at: &Split,
    route: &SetHeaderRoute,
    name: &str,
) -> Result<Value, Error> {
    let what = format!("setHeaderRoute {}", route.name);
    let pairs = route.r#match.iter().flatten().map(|m: &HeaderRoutingMatch| (m.header_name.as_str(), &m.header_value));
    let conditions = conditions("setHeaderRoute", &route.name, pairs)?;
    let mut matches = matches_of(split);
    for m in &mut matches {
        add_headers(m, &conditions, &what, i).map_err(|message| malformed(object, message))?;
    }
    let mut canary = split.pointer(&format!("/backendRefs/{}", at.canary)).cloned().unwrap_or_default();
    // The only backend: any weight above 0 sends it everything.
    canary["weight"] = json!(1);
    Ok(managed_rule(split, name, matches, vec![canary]))
}

/// The rule of the mirror route `route` before the split rule `split` (index `i` as read): None
/// when the route's matches have no request in common with the rule's.
pub(super) fn mirror_rule(
    object: &str,
    split: &Value,
    i: usize,
    at: &Split,
    route: &SetMirrorRoute,
    name: &str,
    desired: &Desired,
) -> Result<Option<Value>, Error> {
    let mut matches = Vec::new();
    for m in matches_of(split) {
        for step in route.r#match.iter().flatten() {
            matches.extend(mirror_match(object, &m, step, &route.name, i)?);
        }
    }
    if matches.is_empty() {
        return Ok(None);
    }
    let mut backends = split.get("backendRefs").and_then(Value::as_array).cloned().unwrap_or_default();
    // The mirror rule takes over the split rule's share for its requests, so it splits as the
    // split rule does now.
    backends[at.canary]["weight"] = json!(desired.canary_weight);
    backends[at.stable]["weight"] = json!(desired.stable_weight());
    let canary = &backends[at.canary];
    let mut target = json!({"group": "", "kind": "Service", "name": desired.canary_service});
    for field in ["namespace", "port"] {
        if let Some(v) = canary.get(field) {
            target[field] = v.clone();
        }
    }
    let mirror = json!({
        "type": "RequestMirror",
        "requestMirror": {"backendRef": target, "percent": route.percentage.unwrap_or(100)},
    });
    let mut rule = managed_rule(split, name, matches, backends);
    let mut filters = rule.get("filters").and_then(Value::as_array).cloned().unwrap_or_default();
    filters.push(mirror);
    if filters.len() > MAX_FILTERS_PER_RULE {
        return Err(malformed(
            object,
            format!(
                "setMirrorRoute {} would give rule {i}'s copy {} filters; Gateway API allows {MAX_FILTERS_PER_RULE}",
                route.name,
                filters.len()
            ),
        ));
    }
    rule["filters"] = Value::Array(filters);
    Ok(Some(rule))
}
