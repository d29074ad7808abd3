//! The managed routes (`setHeaderRoute`, `setMirrorRoute` steps): the HTTP routes made from the
//! first split route, and the operations on `spec.http` that put them first, in the order of
//! `managedRoutes`, and remove the ones no longer wanted.

use serde_json::{Map, Value, json};
use stepwise_api::{RouteMatch, RouteRequest, SetHeaderRoute, SetMirrorRoute, StringMatch};

use super::routes::{HTTP, Split, destinations, is_managed, section};
use super::sides::{Sides, host_of};
use crate::{Desired, Error, JsonPatch};

/// The managed routes wanted, in the order of `managedRoutes`, made from the first split route.
pub(super) fn wanted_routes(
    vs: &Value,
    splits: &[Split],
    sides: Sides<'_>,
    desired: &Desired,
    object: &str,
) -> Result<Vec<Value>, Error> {
    let mut requests = Vec::new();
    for request in desired.routes.iter().filter(|r| has_conditions(r)) {
        let position = desired.managed_route_names.iter().position(|n| n == request.name());
        let position = position.ok_or_else(|| {
            Error::Config(format!(
                "{} {}: the route is not listed in trafficRouting.managedRoutes",
                step_of(request),
                request.name()
            ))
        })?;
        requests.push((position, request));
    }
    requests.sort_by_key(|(position, _)| *position);
    let Some(anchor) = splits.first().filter(|_| !requests.is_empty()) else {
        return match requests.is_empty() {
            true => Ok(Vec::new()),
            false => Err(Error::Malformed {
                object: object.to_string(),
                message: "has no route to split, so no header or mirror route can be made".into(),
            }),
        };
    };
    let canary = canary_destination(anchor, vs, sides);
    Ok(requests
        .into_iter()
        .map(|(_, request)| match request {
            RouteRequest::Header(r) => header_route(r, &canary),
            RouteRequest::Mirror(r) => mirror_route(r, anchor, vs, &canary, desired),
        })
        .collect())
}

/// Whether a step asks for its route: one without conditions removes it, as in Argo, so that
/// no condition never means all traffic.
fn has_conditions(request: &RouteRequest) -> bool {
    match request {
        RouteRequest::Header(r) => r.r#match.as_ref().is_some_and(|m| !m.is_empty()),
        RouteRequest::Mirror(r) => r.r#match.as_ref().is_some_and(|m| !m.is_empty()),
    }
}

fn step_of(request: &RouteRequest) -> &'static str {
    match request {
        RouteRequest::Header(_) => "setHeaderRoute",
        RouteRequest::Mirror(_) => "setMirrorRoute",
    }
}

/// Where a managed route sends the canary's share: the host of the split route's canary
/// destination, which names the canary Service in the VirtualService's own terms (a short name
/// would resolve in the VirtualService's namespace, not the Service's), its port, and with
/// subset-level splitting the canary subset.
fn canary_destination(anchor: &Split, vs: &Value, sides: Sides<'_>) -> Value {
    let read = destinations(anchor.route(vs)).get(anchor.canary).and_then(|d| d.get("destination"));
    let read = read.unwrap_or(&Value::Null);
    let mut destination = Map::new();
    destination.insert("host".into(), host_of(read).into());
    if let Sides::Subsets { canary, .. } = sides {
        destination.insert("subset".into(), canary.into());
    }
    if let Some(port) = read.get("port") {
        destination.insert("port".into(), port.clone());
    }
    Value::Object(destination)
}

/// A route that sends requests whose headers all match to the canary.
fn header_route(request: &SetHeaderRoute, canary: &Value) -> Value {
    let headers: Map<String, Value> =
        request.r#match.iter().flatten().map(|m| (m.header_name.clone(), string_match(&m.header_value))).collect();
    json!({
        "name": request.name,
        "match": [{"headers": headers}],
        "route": [{"destination": canary, "weight": 100}],
    })
}

/// A route that sends matching requests where the split route sends them, at the weights
/// wanted now, and copies them to the canary.
fn mirror_route(request: &SetMirrorRoute, anchor: &Split, vs: &Value, canary: &Value, desired: &Desired) -> Value {
    let mut route = destinations(anchor.route(vs)).to_vec();
    for (j, want) in anchor.weights(desired) {
        if let Some(d) = route.get_mut(j).and_then(Value::as_object_mut) {
            d.insert("weight".into(), want.into());
        }
    }
    let matches: Vec<Value> = request.r#match.iter().flatten().map(route_match).collect();
    json!({
        "name": request.name,
        "match": matches,
        "route": route,
        "mirror": canary,
        "mirrorPercentage": {"value": request.percentage.unwrap_or(100)},
    })
}

/// A mirror route's condition as an Istio HTTPMatchRequest.
fn route_match(m: &RouteMatch) -> Value {
    let mut out = Map::new();
    if let Some(method) = &m.method {
        out.insert("method".into(), string_match(method));
    }
    if let Some(path) = &m.path {
        out.insert("uri".into(), string_match(path));
    }
    if let Some(headers) = &m.headers {
        let headers = headers.iter().map(|(name, value)| (name.clone(), string_match(value))).collect();
        out.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(out)
}

/// A string condition as an Istio StringMatch.
fn string_match(m: &StringMatch) -> Value {
    let mut out = Map::new();
    for (key, value) in [("exact", &m.exact), ("prefix", &m.prefix), ("regex", &m.regex)] {
        if let Some(value) = value {
            out.insert(key.into(), value.clone().into());
        }
    }
    Value::Object(out)
}

/// The operations on `spec.http`. When the managed routes are in place already, only weights
/// change, each addressed as read. Otherwise the list is replaced whole: moving routes with
/// index-addressed operations would be hard to read and easy to get wrong, and the `test` before
/// the `replace` refuses the patch unless the list is still exactly as read.
pub(super) fn http_ops(vs: &Value, splits: &[Split], wanted: Vec<Value>, desired: &Desired) -> JsonPatch {
    let http = section(vs, HTTP);
    let managed = &desired.managed_route_names;
    let in_place = http.len() >= wanted.len()
        && http[..wanted.len()] == wanted[..]
        && !http[wanted.len()..].iter().any(|r| is_managed(r, managed));
    let mut ops = Vec::new();
    if in_place {
        for split in splits.iter().filter(|s| s.section == HTTP) {
            split.weight_ops(&mut ops, vs, desired);
        }
        return ops;
    }
    let rebuilt = rebuilt_http(http, splits, wanted, desired);
    match vs.pointer("/spec/http") {
        Some(read) => {
            ops.push(json!({"op": "test", "path": "/spec/http", "value": read}));
            ops.push(json!({"op": "replace", "path": "/spec/http", "value": rebuilt}));
        }
        None => ops.push(json!({"op": "add", "path": "/spec/http", "value": rebuilt})),
    }
    ops
}

/// `spec.http` as it is to be: the managed routes wanted, then the user's routes as read with
/// the weights of the split ones set.
fn rebuilt_http(http: &[Value], splits: &[Split], wanted: Vec<Value>, desired: &Desired) -> Vec<Value> {
    let mut out = wanted;
    let mut moved_to = vec![None; http.len()];
    for (i, route) in http.iter().enumerate().filter(|(_, r)| !is_managed(r, &desired.managed_route_names)) {
        moved_to[i] = Some(out.len());
        out.push(route.clone());
    }
    for split in splits.iter().filter(|s| s.section == HTTP) {
        let Some(at) = moved_to[split.index] else { continue };
        for (j, want) in split.weights(desired) {
            if let Some(d) = out[at].pointer_mut(&format!("/route/{j}")).and_then(Value::as_object_mut) {
                d.insert("weight".into(), want.into());
            }
        }
    }
    out
}
