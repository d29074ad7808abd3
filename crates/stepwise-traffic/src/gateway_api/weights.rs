//! The weights: the rules of an HTTPRoute, GRPCRoute or TCPRoute to split (those whose
//! backendRefs name both the canary and the stable Service, and nothing else) and where their
//! weights are read and written.

use serde_json::Value;

use crate::{Desired, Error, Target};

/// One rule to split: its index and where its canary and stable backendRefs are.
pub(super) struct Split {
    pub(super) rule: usize,
    pub(super) canary: usize,
    pub(super) stable: usize,
}

/// The name of the Service a backendRef names; None for a backend of another kind.
fn service_of(backend: &Value) -> Option<&str> {
    let group = backend.get("group").and_then(Value::as_str).unwrap_or_default();
    let kind = backend.get("kind").and_then(Value::as_str).unwrap_or("Service");
    (group.is_empty() && kind == "Service").then(|| backend.get("name").and_then(Value::as_str)).flatten()
}

pub(super) fn rules_of(route: &Value) -> &[Value] {
    route.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The rules to split in `route`, leaving out the managed ones (`managed`, by index): a mirror
/// rule names both Services too, but its weights follow the split rule's.
pub(super) fn splits(target: &Target, route: &Value, desired: &Desired, managed: &[bool]) -> Result<Vec<Split>, Error> {
    let object = target.to_string();
    let mut out = Vec::new();
    for (i, rule) in rules_of(route).iter().enumerate() {
        if managed.get(i).copied().unwrap_or(false) {
            continue;
        }
        let backends = rule.get("backendRefs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let find = |service: &str| backends.iter().position(|b| service_of(b) == Some(service));
        // A rule that sends everything to one of the two (an admin path always on stable) is
        // the user's: only rules naming both are split.
        let (Some(canary), Some(stable)) = (find(&desired.canary_service), find(&desired.stable_service)) else {
            continue;
        };
        let label = format!("rule {i}");
        if let Some(other) = backends.iter().find(|b| {
            let s = service_of(b);
            s != Some(desired.canary_service.as_str()) && s != Some(desired.stable_service.as_str())
        }) {
            let kind = other.get("kind").and_then(Value::as_str).unwrap_or("Service");
            let name = other.get("name").and_then(Value::as_str).unwrap_or_default();
            return Err(Error::UnknownDestination {
                object,
                route: label,
                destination: format!("{kind} {name}"),
                canary: desired.canary_service.clone(),
                stable: desired.stable_service.clone(),
            });
        }
        out.push(Split { rule: i, canary, stable });
    }
    if out.is_empty() {
        return Err(Error::Malformed {
            object,
            message: format!(
                "no rule has backendRefs to the canary Service {} and the stable Service {}",
                desired.canary_service, desired.stable_service
            ),
        });
    }
    Ok(out)
}

pub(super) fn weight_at(route: &Value, rule: usize, backend: usize) -> Option<&Value> {
    route.pointer(&format!("/spec/rules/{rule}/backendRefs/{backend}/weight"))
}
