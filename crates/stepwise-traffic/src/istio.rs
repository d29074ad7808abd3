//! Istio: the weights of the canary and stable destinations of a VirtualService's routes, the
//! header and mirror routes stepwise manages in it, and, with subset-level splitting, the
//! DestinationRule subsets that tell the canary's pods from the stable ones.
//!
//! Host-level splitting (no `destinationRule`): a destination names a Service by its `host` up to
//! the first dot, so `web-canary`, `web-canary.shop` and `web-canary.shop.svc.cluster.local` all
//! name `web-canary`, as in Argo. Subset-level splitting: the canary and the stable are two
//! subsets of one host, told apart by `subset`, and each subset selects its pods by their
//! pod-template-hash label. The DestinationRule is the first target, because the controller
//! applies patches in target order and a subset must select the right pods before weight moves.
//!
//! Which routes are split: the HTTP routes `routes` names, the TLS routes `tlsRoutes` finds by
//! port and SNI hosts, the TCP routes `tcpRoutes` finds by port, or, when none is named, the
//! VirtualService's only HTTP route. Each must send traffic to the canary and the stable and to
//! nothing else (a third destination would get a share nobody decided). Other routes, and every
//! other field of the routes split (retries, timeouts, matches, headers), are never written.
//!
//! Managed routes (`setHeaderRoute`, `setMirrorRoute` steps) are the HTTP routes named in
//! `trafficRouting.managedRoutes`. The ones wanted come first in `spec.http`, in the order
//! `managedRoutes` lists them, so they win over the user's routes; the others are removed.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use stepwise_api::{
    IstioDestinationRule, IstioTcpRoute, IstioTlsRoute, IstioTrafficRouting, IstioVirtualService,
    POD_TEMPLATE_HASH_LABEL, RouteMatch, RouteRequest, SetHeaderRoute, SetMirrorRoute, StringMatch,
};

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, agreed_weight, guarded, set_weight, split_name};

/// The label Argo Rollouts puts on the subsets it manages. stepwise's pods never carry it, so a
/// subset taken over from Argo that kept it would select no pod at all.
const ARGO_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The Istio router of one Rollout: its VirtualServices, the routes to split in each, and the
/// DestinationRule of subset-level splitting.
#[derive(Clone, Debug, PartialEq)]
pub struct Istio {
    services: Vec<VirtualServiceConfig>,
    subsets: Option<SubsetLevel>,
}

/// One VirtualService and the routes to split in it, as the Rollout names them.
#[derive(Clone, Debug, PartialEq)]
struct VirtualServiceConfig {
    target: Target,
    routes: Vec<String>,
    tls: Vec<IstioTlsRoute>,
    tcp: Vec<IstioTcpRoute>,
}

/// Subset-level splitting: the DestinationRule and the names of its canary and stable subsets.
#[derive(Clone, Debug, PartialEq)]
struct SubsetLevel {
    rule: Target,
    canary: String,
    stable: String,
}

/// The VirtualService `name` (or `name.namespace`) seen from `namespace`.
pub fn virtual_service(name: &str, namespace: &str) -> Target {
    let (namespace, name) = split_name(name, namespace);
    Target {
        group: "networking.istio.io",
        version: "v1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespace,
        name,
    }
}

/// The DestinationRule `name` (or `name.namespace`) seen from `namespace`.
pub fn destination_rule(name: &str, namespace: &str) -> Target {
    let (namespace, name) = split_name(name, namespace);
    Target {
        group: "networking.istio.io",
        version: "v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespace,
        name,
    }
}

impl Istio {
    /// The router for `config` in a Rollout of `namespace`.
    pub fn new(config: &IstioTrafficRouting, namespace: &str) -> Result<Istio, Error> {
        let named: Vec<&IstioVirtualService> =
            config.virtual_service.iter().chain(config.virtual_services.iter().flatten()).collect();
        if named.is_empty() {
            return Err(Error::Config("trafficRouting.istio must name a virtualService or virtualServices".into()));
        }
        let services = named
            .into_iter()
            .map(|vs| VirtualServiceConfig {
                target: virtual_service(&vs.name, namespace),
                routes: vs.routes.clone().unwrap_or_default(),
                tls: vs.tls_routes.clone().unwrap_or_default(),
                tcp: vs.tcp_routes.clone().unwrap_or_default(),
            })
            .collect();
        let subsets = config.destination_rule.as_ref().map(|rule| SubsetLevel::new(rule, namespace)).transpose()?;
        Ok(Istio { services, subsets })
    }

    fn config_of(&self, target: &Target) -> Result<&VirtualServiceConfig, Error> {
        self.services
            .iter()
            .find(|c| &c.target == target)
            .ok_or_else(|| Error::Config(format!("{target} is not an object of this Istio router")))
    }

    /// The subset-level configuration when `target` is its DestinationRule.
    fn rule_of(&self, target: &Target) -> Option<&SubsetLevel> {
        self.subsets.as_ref().filter(|s| &s.rule == target)
    }

    fn sides<'a>(&'a self, desired: &'a Desired) -> Sides<'a> {
        match &self.subsets {
            Some(s) => Sides::Subsets { canary: &s.canary, stable: &s.stable },
            None => Sides::Services { canary: &desired.canary_service, stable: &desired.stable_service },
        }
    }

    /// The splits of the VirtualService `target`, as read in `vs`.
    fn splits(&self, target: &Target, vs: &Value, desired: &Desired) -> Result<Vec<Split>, Error> {
        let object = target.to_string();
        let sides = self.sides(desired);
        chosen(self.config_of(target)?, vs, &desired.managed_route_names, &object)?
            .into_iter()
            .map(|route| route.check(vs, sides, &object))
            .collect()
    }

    fn virtual_service_ops(&self, target: &Target, vs: &Value, desired: &Desired) -> Result<JsonPatch, Error> {
        let splits = self.splits(target, vs, desired)?;
        let wanted = wanted_routes(vs, &splits, self.sides(desired), desired, &target.to_string())?;
        let mut ops = http_ops(vs, &splits, wanted, desired);
        for split in splits.iter().filter(|s| s.section != HTTP) {
            split.weight_ops(&mut ops, vs, desired);
        }
        Ok(ops)
    }
}

impl SubsetLevel {
    fn new(rule: &IstioDestinationRule, namespace: &str) -> Result<SubsetLevel, Error> {
        let (canary, stable) = (&rule.canary_subset_name, &rule.stable_subset_name);
        if canary.is_empty() || stable.is_empty() || canary == stable {
            return Err(Error::Config(
                "trafficRouting.istio.destinationRule: canarySubsetName and stableSubsetName must be two different subsets"
                    .into(),
            ));
        }
        Ok(SubsetLevel {
            rule: destination_rule(&rule.name, namespace),
            canary: rule.canary_subset_name.clone(),
            stable: rule.stable_subset_name.clone(),
        })
    }

    /// The operations that make the canary and stable subsets select the pods of their hash. A
    /// side without a hash (no stable yet) is left as it is.
    fn ops(&self, rule: &Value, desired: &Desired) -> Result<JsonPatch, Error> {
        let object = self.rule.to_string();
        let subsets = rule.pointer("/spec/subsets").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let sides = [
            (&self.canary, "canarySubsetName", &desired.canary_hash),
            (&self.stable, "stableSubsetName", &desired.stable_hash),
        ];
        let mut ops = Vec::new();
        for (name, field, hash) in sides {
            let Some(hash) = hash else { continue };
            let index = subsets.iter().position(|s| s.get("name").and_then(Value::as_str) == Some(name.as_str()));
            let index = index.ok_or_else(|| Error::Malformed {
                object: object.clone(),
                message: format!("has no subset {name} (trafficRouting.istio.destinationRule.{field})"),
            })?;
            label_ops(&mut ops, index, subsets[index].get("labels"), hash);
        }
        Ok(ops)
    }
}

/// Appends the operations that make subset `index`, whose labels are `labels`, select `hash`.
fn label_ops(ops: &mut JsonPatch, index: usize, labels: Option<&Value>, hash: &str) {
    let base = format!("/spec/subsets/{index}/labels");
    let Some(labels) = labels.and_then(Value::as_object) else {
        ops.push(json!({"op": "add", "path": base, "value": {POD_TEMPLATE_HASH_LABEL: hash}}));
        return;
    };
    if labels.get(POD_TEMPLATE_HASH_LABEL).and_then(Value::as_str) != Some(hash) {
        let path = format!("{base}/{}", escape(POD_TEMPLATE_HASH_LABEL));
        ops.push(json!({"op": "add", "path": path, "value": hash}));
    }
    if labels.contains_key(ARGO_HASH_LABEL) {
        ops.push(json!({"op": "remove", "path": format!("{base}/{ARGO_HASH_LABEL}")}));
    }
}

/// `key` as one reference token of a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

const HTTP: &str = "http";
const TLS: &str = "tls";
const TCP: &str = "tcp";

/// The canary or the stable side of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Canary,
    Stable,
}

/// How the canary and stable destinations of a route are told apart.
#[derive(Clone, Copy, Debug)]
enum Sides<'a> {
    /// Host-level splitting: by the Service the host names.
    Services { canary: &'a str, stable: &'a str },
    /// Subset-level splitting: by DestinationRule subset.
    Subsets { canary: &'a str, stable: &'a str },
}

impl Sides<'_> {
    /// The side `destination` (a route's `destination`) is, if any.
    fn side_of(&self, destination: &Value) -> Option<Side> {
        let (key, canary, stable) = match *self {
            Sides::Services { canary, stable } => (Some(service_of(host_of(destination))), canary, stable),
            Sides::Subsets { canary, stable } => (destination.get("subset").and_then(Value::as_str), canary, stable),
        };
        match key {
            Some(k) if k == canary => Some(Side::Canary),
            Some(k) if k == stable => Some(Side::Stable),
            _ => None,
        }
    }

    fn unknown(&self, object: &str, route: &str, destination: &Value) -> Error {
        let host = host_of(destination).to_string();
        match *self {
            Sides::Services { canary, stable } => Error::UnknownDestination {
                object: object.to_string(),
                route: route.to_string(),
                destination: host,
                canary: canary.to_string(),
                stable: stable.to_string(),
            },
            Sides::Subsets { canary, stable } => {
                let subset = match destination.get("subset").and_then(Value::as_str) {
                    Some(subset) => format!("subset {subset}"),
                    None => "without a subset".to_string(),
                };
                Error::Malformed {
                    object: object.to_string(),
                    message: format!(
                        "{route} sends traffic to {host} {subset}, which is neither the canary subset {canary} nor the stable subset {stable}"
                    ),
                }
            }
        }
    }

    fn missing(&self, object: &str, route: &str, side: Side) -> Error {
        match (*self, side) {
            (Sides::Services { canary: name, .. }, Side::Canary)
            | (Sides::Services { stable: name, .. }, Side::Stable) => Error::DestinationMissing {
                object: object.to_string(),
                route: route.to_string(),
                service: name.to_string(),
            },
            (Sides::Subsets { canary: name, .. }, Side::Canary)
            | (Sides::Subsets { stable: name, .. }, Side::Stable) => Error::Malformed {
                object: object.to_string(),
                message: format!("{route} has no destination for subset {name}"),
            },
        }
    }
}

fn host_of(destination: &Value) -> &str {
    destination.get("host").and_then(Value::as_str).unwrap_or_default()
}

/// The Service a destination host names: the host up to its first dot.
fn service_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The routes of one section (`http`, `tls`, `tcp`) of `vs`.
fn section<'v>(vs: &'v Value, name: &str) -> &'v [Value] {
    vs.get("spec").and_then(|s| s.get(name)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn destinations(route: &Value) -> &[Value] {
    route.get("route").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn name_of(route: &Value) -> Option<&str> {
    route.get("name").and_then(Value::as_str)
}

/// Whether stepwise owns `route`. A user's route that happens to bear a managed route's name is
/// owned too, as in Argo: the name is the only mark a managed route carries.
fn is_managed(route: &Value, managed: &[String]) -> bool {
    name_of(route).is_some_and(|n| managed.iter().any(|m| m == n))
}

/// A route chosen for splitting, before its destinations are checked.
struct Chosen {
    section: &'static str,
    index: usize,
    label: String,
}

impl Chosen {
    /// The split, once `vs` shows the route sends traffic to both sides and nowhere else.
    fn check(self, vs: &Value, sides: Sides<'_>, object: &str) -> Result<Split, Error> {
        let route = &section(vs, self.section)[self.index];
        let (mut canary, mut stable) = (None, None);
        for (j, d) in destinations(route).iter().enumerate() {
            let destination = d.get("destination").unwrap_or(&Value::Null);
            match sides.side_of(destination) {
                Some(Side::Canary) => canary = Some(j),
                Some(Side::Stable) => stable = Some(j),
                None => return Err(sides.unknown(object, &self.label, destination)),
            }
        }
        let canary = canary.ok_or_else(|| sides.missing(object, &self.label, Side::Canary))?;
        let stable = stable.ok_or_else(|| sides.missing(object, &self.label, Side::Stable))?;
        Ok(Split { section: self.section, index: self.index, canary, stable })
    }
}

/// The routes of `vs` to split, HTTP first, each once.
fn chosen(config: &VirtualServiceConfig, vs: &Value, managed: &[String], object: &str) -> Result<Vec<Chosen>, Error> {
    let mut out = chosen_http(config, section(vs, HTTP), managed, object)?;
    for tls in &config.tls {
        out.extend(found_by_match(TLS, section(vs, TLS), tls.port, tls.sni_hosts.as_deref(), object)?);
    }
    for tcp in &config.tcp {
        out.extend(found_by_match(TCP, section(vs, TCP), tcp.port, None, object)?);
    }
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert((c.section, c.index)));
    Ok(out)
}

/// The HTTP routes `routes` names, none when only TLS or TCP routes are named, or else the only
/// HTTP route that is not a managed one.
fn chosen_http(
    config: &VirtualServiceConfig,
    http: &[Value],
    managed: &[String],
    object: &str,
) -> Result<Vec<Chosen>, Error> {
    let chosen = |index: usize, label: String| Chosen { section: HTTP, index, label };
    if !config.routes.is_empty() {
        return config
            .routes
            .iter()
            .map(|name| {
                if managed.contains(name) {
                    return Err(Error::Config(format!(
                        "{object}: route {name} is named both in routes to split and in trafficRouting.managedRoutes"
                    )));
                }
                http.iter()
                    .position(|r| name_of(r) == Some(name.as_str()))
                    .map(|i| chosen(i, format!("HTTP route {name}")))
                    .ok_or_else(|| Error::RouteNotFound { object: object.to_string(), route: name.clone() })
            })
            .collect();
    }
    if !config.tls.is_empty() || !config.tcp.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<usize> = (0..http.len()).filter(|&i| !is_managed(&http[i], managed)).collect();
    match users.as_slice() {
        [index] => {
            let label = name_of(&http[*index]).map_or("its HTTP route".to_string(), |n| format!("HTTP route {n}"));
            Ok(vec![chosen(*index, label)])
        }
        _ => {
            let besides = if users.len() < http.len() { " besides the managed ones" } else { "" };
            Err(Error::Malformed {
                object: object.to_string(),
                message: format!(
                    "has {} HTTP routes{besides}; name the ones to split in trafficRouting.istio.virtualService.routes",
                    users.len()
                ),
            })
        }
    }
}

/// The TLS or TCP routes whose matches name `port` and exactly the SNI hosts `sni`, each when
/// given; an error naming them when there is none.
fn found_by_match(
    kind: &'static str,
    routes: &[Value],
    port: Option<i64>,
    sni: Option<&[String]>,
    object: &str,
) -> Result<Vec<Chosen>, Error> {
    let upper = kind.to_uppercase();
    let found: Vec<Chosen> = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| matches(r, port, sni))
        .map(|(index, _)| Chosen { section: kind, index, label: format!("{upper} route spec.{kind}[{index}]") })
        .collect();
    if found.is_empty() {
        let mut wanted = Vec::new();
        wanted.extend(port.map(|p| format!("port {p}")));
        wanted.extend(sni.map(|h| format!("SNI hosts [{}]", h.join(", "))));
        let message = match wanted.is_empty() {
            true => format!("has no {upper} route"),
            false => format!("no {upper} route matches {}", wanted.join(" and ")),
        };
        return Err(Error::Malformed { object: object.to_string(), message });
    }
    Ok(found)
}

/// Whether `route`'s matches name `port` and exactly the SNI hosts `sni`. As in Argo, the ports
/// and SNI hosts of all its match blocks are taken together, and a route matching several ports
/// is never the one a port names.
fn matches(route: &Value, port: Option<i64>, sni: Option<&[String]>) -> bool {
    let blocks = route.get("match").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let ports: BTreeSet<i64> = blocks.iter().filter_map(|m| m.get("port").and_then(Value::as_i64)).collect();
    let hosts: BTreeSet<&str> = blocks
        .iter()
        .filter_map(|m| m.get("sniHosts").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let port_matches = port.is_none_or(|p| ports.len() == 1 && ports.contains(&p));
    let hosts_match = sni.is_none_or(|want| want.iter().map(String::as_str).collect::<BTreeSet<_>>() == hosts);
    port_matches && hosts_match
}

/// One route to split: its section and index, and where its canary and stable destinations are.
struct Split {
    section: &'static str,
    index: usize,
    canary: usize,
    stable: usize,
}

impl Split {
    /// The destination indexes and the weights they are to carry.
    fn weights(&self, desired: &Desired) -> [(usize, i32); 2] {
        [(self.canary, desired.canary_weight), (self.stable, desired.stable_weight())]
    }

    fn weight_path(&self, destination: usize) -> String {
        format!("/spec/{}/{}/route/{destination}/weight", self.section, self.index)
    }

    /// Appends the operations that set this split's weights in `vs`, addressed as read.
    fn weight_ops(&self, ops: &mut JsonPatch, vs: &Value, desired: &Desired) {
        for (j, want) in self.weights(desired) {
            let path = self.weight_path(j);
            let current = vs.pointer(&path);
            set_weight(ops, path, current, want);
        }
    }

    /// The route as read in `vs`.
    fn route<'v>(&self, vs: &'v Value) -> &'v Value {
        &section(vs, self.section)[self.index]
    }
}

/// The managed routes wanted, in the order of `managedRoutes`, made from the first split route.
fn wanted_routes(
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
fn http_ops(vs: &Value, splits: &[Split], wanted: Vec<Value>, desired: &Desired) -> JsonPatch {
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

impl TrafficRouter for Istio {
    fn targets(&self) -> Vec<Target> {
        let rule = self.subsets.iter().map(|s| s.rule.clone());
        rule.chain(self.services.iter().map(|c| c.target.clone())).collect()
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let ops = match self.rule_of(target) {
            Some(subsets) => subsets.ops(current, desired)?,
            None => self.virtual_service_ops(target, current, desired)?,
        };
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        if let Some(subsets) = self.rule_of(target) {
            let selected = subsets.ops(current, desired)?.is_empty();
            return Ok(selected.then_some(desired.canary_weight));
        }
        let splits = self.splits(target, current, desired)?;
        let weights = splits.iter().map(|split| {
            let read = |j| current.pointer(&split.weight_path(j)).and_then(Value::as_i64).unwrap_or(0);
            (read(split.canary), read(split.stable))
        });
        Ok(agreed_weight(weights, desired.max_weight))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stepwise_api::{HeaderRoutingMatch, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch};

    use super::*;
    use crate::testing::{apply, desired, without_weights};

    fn router(yaml: &str) -> Istio {
        Istio::new(&serde_yaml::from_str(yaml).unwrap(), "shop").unwrap()
    }

    /// A VirtualService as users write them: a header route to a preview, the split route with
    /// retries and a timeout, and a catch-all to another Service.
    fn virtual_service() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {
                "hosts": ["web.example.com"],
                "gateways": ["shop/gateway"],
                "http": [
                    {"name": "preview", "match": [{"headers": {"x-preview": {"exact": "1"}}}],
                     "route": [{"destination": {"host": "preview", "port": {"number": 80}}}]},
                    {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
                     "route": [
                        {"destination": {"host": "web-stable.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 100},
                        {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0}
                     ]},
                    {"name": "legacy", "route": [{"destination": {"host": "legacy"}}]}
                ]
            }
        })
    }

    const PRIMARY: &str = "virtualService: {name: web, routes: [primary]}\n";

    #[test]
    fn a_weight_changes_only_the_two_weights_of_the_named_route() {
        let vs = virtual_service();
        let target = virtual_service_target();
        let patch = router(PRIMARY).patch(&target, &vs, &desired(30)).unwrap().unwrap();
        assert_eq!(
            patch,
            vec![
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}),
                json!({"op": "add", "path": "/spec/http/1/route/1/weight", "value": 30}),
                json!({"op": "add", "path": "/spec/http/1/route/0/weight", "value": 70}),
            ]
        );
        let after = apply(&vs, &patch);
        assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 70);
        assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 30);
        assert_eq!(without_weights(&after), without_weights(&vs), "nothing but weights changes");
        assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0], "the header route is untouched");
        assert_eq!(router(PRIMARY).canary_weight(&target, &after, &desired(30)).unwrap(), Some(30));
    }

    fn virtual_service_target() -> Target {
        super::virtual_service("web", "shop")
    }

    /// A VirtualService split between the pingPong Services, all the traffic on ping.
    fn ping_pong_virtual_service() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
            "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
                {"destination": {"host": "web-ping"}, "weight": 100},
                {"destination": {"host": "web-pong"}, "weight": 0}
            ]}]}
        })
    }

    fn weights_of(vs: &Value) -> (Value, Value) {
        (vs["spec"]["http"][0]["route"][0]["weight"].clone(), vs["spec"]["http"][0]["route"][1]["weight"].clone())
    }

    #[test]
    fn ping_pong_weight_goes_to_the_host_of_the_service_that_is_not_stable() {
        use stepwise_api::PingPong;
        let vs = ping_pong_virtual_service();
        let target = virtual_service_target();
        let want = crate::testing::ping_pong(PingPong::Ping, 30);
        let after = apply(&vs, &router(PRIMARY).patch(&target, &vs, &want).unwrap().unwrap());
        assert_eq!(weights_of(&after), (json!(70), json!(30)), "ping is stable, pong the canary");
        assert_eq!(router(PRIMARY).canary_weight(&target, &after, &want).unwrap(), Some(30));
    }

    #[test]
    fn a_ping_pong_swap_at_full_weight_moves_no_traffic_and_the_next_release_weighs_the_other_host() {
        use stepwise_api::PingPong;
        let target = virtual_service_target();
        let mut vs = ping_pong_virtual_service();
        vs["spec"]["http"][0]["route"][0]["weight"] = json!(0);
        vs["spec"]["http"][0]["route"][1]["weight"] = json!(100);
        let before = crate::testing::ping_pong(PingPong::Ping, 100);
        assert_eq!(router(PRIMARY).patch(&target, &vs, &before).unwrap(), None, "pong, the canary, has it all");
        let promoted = crate::testing::ping_pong(PingPong::Pong, 0);
        assert_eq!(router(PRIMARY).patch(&target, &vs, &promoted).unwrap(), None, "the swap writes nothing");
        assert_eq!(router(PRIMARY).canary_weight(&target, &vs, &promoted).unwrap(), Some(0));
        let next = crate::testing::ping_pong(PingPong::Pong, 20);
        let after = apply(&vs, &router(PRIMARY).patch(&target, &vs, &next).unwrap().unwrap());
        assert_eq!(weights_of(&after), (json!(20), json!(80)), "ping is the canary of the next release");
    }

    #[test]
    fn a_ping_pong_header_route_goes_to_the_service_that_is_the_canary_now() {
        use stepwise_api::PingPong;
        let vs = ping_pong_virtual_service();
        let want = Desired {
            managed_route_names: vec!["mirror".into(), "beta".into()],
            routes: vec![beta()],
            ..crate::testing::ping_pong(PingPong::Pong, 10)
        };
        let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][0]["name"], "beta");
        assert_eq!(after["spec"]["http"][0]["route"][0]["destination"]["host"], "web-ping");
    }

    #[test]
    fn a_weight_already_in_place_needs_no_patch() {
        let vs = virtual_service();
        assert_eq!(router(PRIMARY).patch(&virtual_service_target(), &vs, &desired(0)).unwrap(), None);
        assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &vs, &desired(0)).unwrap(), Some(0));
    }

    #[test]
    fn without_route_names_the_only_http_route_is_split_and_omitted_weights_are_written() {
        let vs = json!({"metadata": {"name": "web", "resourceVersion": "1"}, "spec": {"http": [
            {"route": [{"destination": {"host": "web-canary"}}, {"destination": {"host": "web-stable"}}]}
        ]}});
        let r = router("virtualService: {name: web}\n");
        let after = apply(&vs, &r.patch(&virtual_service_target(), &vs, &desired(100)).unwrap().unwrap());
        assert_eq!(
            after["spec"]["http"][0]["route"],
            json!([
                {"destination": {"host": "web-canary"}, "weight": 100},
                {"destination": {"host": "web-stable"}, "weight": 0}
            ])
        );
    }

    #[test]
    fn without_route_names_several_http_routes_are_an_error() {
        let err = router("virtualService: {name: web}\n")
            .patch(&virtual_service_target(), &virtual_service(), &desired(10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: has 3 HTTP routes; name the ones to split in trafficRouting.istio.virtualService.routes"
        );
    }

    #[test]
    fn a_named_route_that_is_absent_is_an_error_naming_it() {
        let err = router("virtualService: {name: web, routes: [primary, secondary]}\n")
            .patch(&virtual_service_target(), &virtual_service(), &desired(10))
            .unwrap_err();
        assert_eq!(err.to_string(), "VirtualService shop/web: route secondary not found");
    }

    #[test]
    fn a_route_without_the_canary_service_is_an_error() {
        let mut vs = virtual_service();
        vs["spec"]["http"][1]["route"].as_array_mut().unwrap().pop();
        let err = router(PRIMARY).patch(&virtual_service_target(), &vs, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: HTTP route primary has no destination for Service web-canary"
        );
    }

    #[test]
    fn a_destination_naming_neither_service_is_an_error_and_nothing_is_written() {
        let err = router("virtualService: {name: web, routes: [primary, legacy]}\n")
            .patch(&virtual_service_target(), &virtual_service(), &desired(10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: HTTP route legacy sends traffic to legacy, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
    }

    #[test]
    fn several_virtual_services_are_each_a_target_and_a_dotted_name_names_the_namespace() {
        let r = router("virtualServices:\n- {name: web, routes: [primary]}\n- {name: web-internal.mesh}\n");
        let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["VirtualService shop/web", "VirtualService mesh/web-internal"]);
        let internal = json!({"metadata": {"name": "web-internal"}, "spec": {"http": [{"route": [
            {"destination": {"host": "web-stable.shop.svc.cluster.local"}, "weight": 100},
            {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": 0}
        ]}]}});
        let patch = r.patch(&r.targets()[1], &internal, &desired(25)).unwrap().unwrap();
        assert_eq!(patch.len(), 2, "no resourceVersion to guard with, two weights: {patch:?}");
        assert_eq!(r.canary_weight(&r.targets()[1], &apply(&internal, &patch), &desired(25)).unwrap(), Some(25));
    }

    #[test]
    fn weights_that_do_not_add_up_are_not_a_verified_weight() {
        let mut vs = virtual_service();
        vs["spec"]["http"][1]["route"][1]["weight"] = json!(20);
        assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &vs, &desired(20)).unwrap(), None);
    }

    // ---- tlsRoutes and tcpRoutes ----

    /// A VirtualService passing TLS through by SNI and TCP by port, beside an HTTP route.
    fn passthrough() -> Value {
        let split = |stable: i32| {
            json!([
                {"destination": {"host": "web-stable", "port": {"number": 443}}, "weight": stable},
                {"destination": {"host": "web-canary", "port": {"number": 443}}, "weight": 100 - stable}
            ])
        };
        json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
            "spec": {
                "hosts": ["web.example.com"],
                "http": [
                    {"name": "a", "route": [{"destination": {"host": "other"}}]},
                    {"name": "b", "route": [{"destination": {"host": "other"}}]}
                ],
                "tls": [
                    {"match": [{"port": 443, "sniHosts": ["api.example.com"]}], "route": split(100)},
                    {"match": [{"port": 443, "sniHosts": ["web.example.com", "www.example.com"]}], "route": split(100)}
                ],
                "tcp": [
                    {"match": [{"port": 5432}], "route": [{"destination": {"host": "db"}}]},
                    {"match": [{"port": 6379}], "route": split(100)}
                ]
            }
        })
    }

    #[test]
    fn a_tls_route_is_found_by_port_and_exactly_its_sni_hosts_and_only_its_weights_change() {
        let r = router(
            "virtualService: {name: web, tlsRoutes: [{port: 443, sniHosts: [www.example.com, web.example.com]}]}\n",
        );
        let vs = passthrough();
        let patch = r.patch(&virtual_service_target(), &vs, &desired(40)).unwrap().unwrap();
        assert_eq!(
            patch[1..],
            [
                json!({"op": "add", "path": "/spec/tls/1/route/1/weight", "value": 40}),
                json!({"op": "add", "path": "/spec/tls/1/route/0/weight", "value": 60}),
            ]
        );
        let after = apply(&vs, &patch);
        assert_eq!(without_weights(&after), without_weights(&vs));
        assert_eq!(r.canary_weight(&virtual_service_target(), &after, &desired(40)).unwrap(), Some(40));
    }

    #[test]
    fn naming_only_tls_or_tcp_routes_splits_no_http_route_even_with_several() {
        let r = router("virtualService: {name: web, tcpRoutes: [{port: 6379}]}\n");
        let patch = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap().unwrap();
        let paths: Vec<&str> = patch[1..].iter().map(|op| op["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/spec/tcp/1/route/1/weight", "/spec/tcp/1/route/0/weight"]);
    }

    #[test]
    fn sni_hosts_must_be_exactly_those_of_the_route_not_some_of_them() {
        let r = router("virtualService: {name: web, tlsRoutes: [{port: 443, sniHosts: [web.example.com]}]}\n");
        let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: no TLS route matches port 443 and SNI hosts [web.example.com]"
        );
    }

    #[test]
    fn a_tcp_route_that_matches_no_port_is_an_error_naming_the_port() {
        let r = router("virtualService: {name: web, tcpRoutes: [{port: 8080}]}\n");
        let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "VirtualService shop/web: no TCP route matches port 8080");
    }

    #[test]
    fn a_tcp_route_to_another_service_is_an_error_naming_it_by_position() {
        let r = router("virtualService: {name: web, tcpRoutes: [{port: 5432}]}\n");
        let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: TCP route spec.tcp[0] sends traffic to db, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
    }

    // ---- managed routes: setHeaderRoute and setMirrorRoute ----

    fn header(name: &str, matches: &[(&str, StringMatch)]) -> RouteRequest {
        RouteRequest::Header(SetHeaderRoute {
            name: name.into(),
            r#match: Some(
                matches
                    .iter()
                    .map(|(h, v)| HeaderRoutingMatch { header_name: (*h).into(), header_value: v.clone() })
                    .collect(),
            ),
        })
    }

    fn exact(value: &str) -> StringMatch {
        StringMatch { exact: Some(value.into()), ..Default::default() }
    }

    fn mirror(name: &str, percentage: Option<i32>) -> RouteRequest {
        RouteRequest::Mirror(SetMirrorRoute {
            name: name.into(),
            r#match: Some(vec![
                RouteMatch { method: Some(exact("GET")), ..Default::default() },
                RouteMatch {
                    path: Some(StringMatch { prefix: Some("/api".into()), ..Default::default() }),
                    headers: Some([("x-debug".to_string(), exact("1"))].into()),
                    ..Default::default()
                },
            ]),
            percentage,
        })
    }

    /// The weights of `w`, with `mirror` and `beta` managed and `routes` wanted.
    fn with_routes(w: i32, routes: Vec<RouteRequest>) -> Desired {
        Desired { managed_route_names: vec!["mirror".into(), "beta".into()], routes, ..desired(w) }
    }

    fn beta() -> RouteRequest {
        header(
            "beta",
            &[
                ("x-beta", exact("yes")),
                ("x-tier", StringMatch { regex: Some("gold|silver".into()), ..Default::default() }),
            ],
        )
    }

    #[test]
    fn a_header_route_is_placed_before_the_users_routes_and_sends_matching_requests_to_the_canary() {
        let vs = virtual_service();
        let want = with_routes(10, vec![beta()]);
        let patch = router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap();
        let after = apply(&vs, &patch);
        let http = after["spec"]["http"].as_array().unwrap();
        assert_eq!(
            http[0],
            json!({
                "name": "beta",
                "match": [{"headers": {"x-beta": {"exact": "yes"}, "x-tier": {"regex": "gold|silver"}}}],
                "route": [{"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 100}]
            }),
            "both header conditions in one match block: all must hold"
        );
        let mut users = vs["spec"]["http"].as_array().unwrap().clone();
        users[1]["route"][0]["weight"] = json!(90);
        users[1]["route"][1]["weight"] = json!(10);
        assert_eq!(http[1..], users[..], "the user's routes follow unchanged but for the weights");
        assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &after, &want).unwrap(), Some(10));
    }

    #[test]
    fn a_changed_route_list_is_replaced_whole_only_if_it_is_still_as_read() {
        let vs = virtual_service();
        let patch =
            router(PRIMARY).patch(&virtual_service_target(), &vs, &with_routes(10, vec![beta()])).unwrap().unwrap();
        let ops: Vec<(&str, &str)> =
            patch.iter().map(|op| (op["op"].as_str().unwrap(), op["path"].as_str().unwrap())).collect();
        assert_eq!(ops, [("replace", "/metadata/resourceVersion"), ("test", "/spec/http"), ("replace", "/spec/http")]);
        assert_eq!(patch[1]["value"], vs["spec"]["http"]);
    }

    #[test]
    fn managed_routes_in_place_need_no_patch_and_a_weight_change_then_moves_only_weights() {
        let r = router(PRIMARY);
        let want = with_routes(10, vec![beta()]);
        let after =
            apply(&virtual_service(), &r.patch(&virtual_service_target(), &virtual_service(), &want).unwrap().unwrap());
        assert_eq!(r.patch(&virtual_service_target(), &after, &want).unwrap(), None);
        let patch = r.patch(&virtual_service_target(), &after, &with_routes(30, vec![beta()])).unwrap().unwrap();
        let paths: Vec<&str> = patch[1..].iter().map(|op| op["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/spec/http/2/route/1/weight", "/spec/http/2/route/0/weight"], "addressed as read");
    }

    #[test]
    fn a_mirror_route_sends_where_the_split_route_does_at_the_current_weights_and_copies_to_the_canary() {
        let vs = virtual_service();
        let r = router(PRIMARY);
        let after = apply(
            &vs,
            &r.patch(&virtual_service_target(), &vs, &with_routes(20, vec![mirror("mirror", Some(50))]))
                .unwrap()
                .unwrap(),
        );
        assert_eq!(
            after["spec"]["http"][0],
            json!({
                "name": "mirror",
                "match": [
                    {"method": {"exact": "GET"}},
                    {"uri": {"prefix": "/api"}, "headers": {"x-debug": {"exact": "1"}}}
                ],
                "route": [
                    {"destination": {"host": "web-stable.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 80},
                    {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 20}
                ],
                "mirror": {"host": "web-canary", "port": {"number": 80}},
                "mirrorPercentage": {"value": 50}
            })
        );
        let later = with_routes(40, vec![mirror("mirror", Some(50))]);
        let moved = apply(&after, &r.patch(&virtual_service_target(), &after, &later).unwrap().unwrap());
        assert_eq!(moved["spec"]["http"][0]["route"][0]["weight"], 60, "the mirror route's copy follows the weight");
        assert_eq!(moved["spec"]["http"][2]["route"][1]["weight"], 40);
        assert_eq!(r.patch(&virtual_service_target(), &moved, &later).unwrap(), None);
    }

    #[test]
    fn a_mirror_route_mirrors_all_matching_requests_by_default() {
        let vs = virtual_service();
        let want = with_routes(0, vec![mirror("mirror", None)]);
        let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][0]["mirrorPercentage"], json!({"value": 100}));
    }

    #[test]
    fn managed_routes_come_in_the_order_managed_routes_lists_them() {
        let vs = virtual_service();
        let want = with_routes(10, vec![beta(), mirror("mirror", None)]);
        let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
        let names: Vec<&str> =
            after["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["mirror", "beta", "preview", "primary", "legacy"]);
    }

    #[test]
    fn a_managed_route_no_longer_wanted_is_removed_and_the_weights_land_on_the_moved_split_route() {
        let r = router(PRIMARY);
        let both = with_routes(10, vec![beta(), mirror("mirror", None)]);
        let with_both =
            apply(&virtual_service(), &r.patch(&virtual_service_target(), &virtual_service(), &both).unwrap().unwrap());
        let none = with_routes(50, Vec::new());
        let after = apply(&with_both, &r.patch(&virtual_service_target(), &with_both, &none).unwrap().unwrap());
        let mut expected = virtual_service();
        expected["spec"]["http"][1]["route"][0]["weight"] = json!(50);
        expected["spec"]["http"][1]["route"][1]["weight"] = json!(50);
        assert_eq!(after, expected);
    }

    #[test]
    fn a_users_route_named_like_a_managed_route_is_treated_as_managed_and_removed() {
        let mut vs = virtual_service();
        vs["spec"]["http"][0]["name"] = json!("beta");
        let after = apply(
            &vs,
            &router(PRIMARY).patch(&virtual_service_target(), &vs, &with_routes(0, Vec::new())).unwrap().unwrap(),
        );
        let names: Vec<&str> =
            after["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["primary", "legacy"]);
    }

    #[test]
    fn without_route_names_managed_routes_do_not_count_as_a_second_http_route() {
        let vs = json!({"metadata": {"name": "web"}, "spec": {"http": [
            {"name": "beta", "route": [{"destination": {"host": "web-canary"}, "weight": 100}]},
            {"route": [{"destination": {"host": "web-canary"}, "weight": 0}, {"destination": {"host": "web-stable"}, "weight": 100}]}
        ]}});
        let r = router("virtualService: {name: web}\n");
        let after = apply(&vs, &r.patch(&virtual_service_target(), &vs, &with_routes(5, Vec::new())).unwrap().unwrap());
        assert_eq!(after["spec"]["http"].as_array().unwrap().len(), 1);
        assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 5);
    }

    #[test]
    fn a_route_step_whose_name_is_not_managed_is_an_error() {
        let want = Desired { routes: vec![header("gamma", &[("x-gamma", exact("1"))])], ..with_routes(0, Vec::new()) };
        let err = router(PRIMARY).patch(&virtual_service_target(), &virtual_service(), &want).unwrap_err();
        assert_eq!(err.to_string(), "setHeaderRoute gamma: the route is not listed in trafficRouting.managedRoutes");
    }

    #[test]
    fn a_header_route_for_a_split_route_naming_neither_service_is_an_error() {
        let r = router("virtualService: {name: web, routes: [legacy]}\n");
        let err = r.patch(&virtual_service_target(), &virtual_service(), &with_routes(0, vec![beta()])).unwrap_err();
        assert!(matches!(err, Error::UnknownDestination { .. }), "{err}");
    }

    // ---- subset-level splitting ----

    const SUBSETS: &str = "virtualService: {name: web, routes: [primary]}\n\
        destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable, additionalSubsetNames: [preview]}\n";

    fn destination_rule_fixture() -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "11"},
            "spec": {
                "host": "web.shop.svc.cluster.local",
                "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                "subsets": [
                    {"name": "stable", "labels": {"app": "web", "rollouts-pod-template-hash": "6b9f"}},
                    {"name": "preview", "labels": {"app": "web", "track": "preview"}},
                    {"name": "canary", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}}}
                ]
            }
        })
    }

    fn subset_virtual_service() -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4"}, "spec": {"http": [
            {"name": "primary", "route": [
                {"destination": {"host": "web.shop.svc.cluster.local", "subset": "stable", "port": {"number": 8080}}, "weight": 100},
                {"destination": {"host": "web.shop.svc.cluster.local", "subset": "canary", "port": {"number": 8080}}, "weight": 0}
            ]}
        ]}})
    }

    /// No Services with subset-level splitting.
    fn subset_desired(w: i32) -> Desired {
        Desired { canary_service: String::new(), stable_service: String::new(), ..desired(w) }
    }

    #[test]
    fn with_subset_level_splitting_the_destination_rule_is_the_first_target() {
        let targets: Vec<String> = router(SUBSETS).targets().iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["DestinationRule shop/web", "VirtualService shop/web"]);
        let rule = &router(SUBSETS).targets()[0];
        assert_eq!((rule.group, rule.version, rule.plural), ("networking.istio.io", "v1", "destinationrules"));
    }

    #[test]
    fn the_canary_and_stable_subsets_select_their_pods_by_pod_template_hash_and_nothing_else_changes() {
        let rule = destination_rule_fixture();
        let r = router(SUBSETS);
        let target = &r.targets()[0];
        let patch = r.patch(target, &rule, &subset_desired(0)).unwrap().unwrap();
        assert_eq!(
            patch,
            vec![
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "11"}),
                json!({"op": "add", "path": "/spec/subsets/2/labels", "value": {"stepwise.dev/pod-template-hash": "canary-hash"}}),
                json!({"op": "add", "path": "/spec/subsets/0/labels/stepwise.dev~1pod-template-hash", "value": "stable-hash"}),
                json!({"op": "remove", "path": "/spec/subsets/0/labels/rollouts-pod-template-hash"}),
            ]
        );
        let after = apply(&rule, &patch);
        let mut expected = rule.clone();
        expected["spec"]["subsets"][0]["labels"] = json!({"app": "web", POD_TEMPLATE_HASH_LABEL: "stable-hash"});
        expected["spec"]["subsets"][2]["labels"] = json!({POD_TEMPLATE_HASH_LABEL: "canary-hash"});
        assert_eq!(after, expected, "other subsets, labels and the traffic policy are untouched");
        assert_eq!(r.patch(target, &after, &subset_desired(0)).unwrap(), None);
    }

    #[test]
    fn a_side_without_a_hash_is_left_as_it_is() {
        let r = router(SUBSETS);
        let want = Desired { stable_hash: None, ..subset_desired(0) };
        let patch = r.patch(&r.targets()[0], &destination_rule_fixture(), &want).unwrap().unwrap();
        assert_eq!(patch.len(), 2, "the guard and the canary's labels: {patch:?}");
    }

    #[test]
    fn a_missing_subset_is_an_error_naming_it_and_its_field() {
        let mut rule = destination_rule_fixture();
        rule["spec"]["subsets"].as_array_mut().unwrap().pop();
        let r = router(SUBSETS);
        let err = r.patch(&r.targets()[0], &rule, &subset_desired(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DestinationRule shop/web: has no subset canary (trafficRouting.istio.destinationRule.canarySubsetName)"
        );
    }

    #[test]
    fn the_destination_rule_verifies_the_weight_only_once_both_subsets_select_the_wanted_pods() {
        let r = router(SUBSETS);
        let target = &r.targets()[0];
        let rule = destination_rule_fixture();
        assert_eq!(r.canary_weight(target, &rule, &subset_desired(20)).unwrap(), None);
        let after = apply(&rule, &r.patch(target, &rule, &subset_desired(20)).unwrap().unwrap());
        assert_eq!(r.canary_weight(target, &after, &subset_desired(20)).unwrap(), Some(20));
    }

    #[test]
    fn with_subset_level_splitting_destinations_are_told_apart_by_subset() {
        let r = router(SUBSETS);
        let vs = subset_virtual_service();
        let target = &r.targets()[1];
        let after = apply(&vs, &r.patch(target, &vs, &subset_desired(30)).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 70);
        assert_eq!(after["spec"]["http"][0]["route"][1]["weight"], 30);
        assert_eq!(r.canary_weight(target, &after, &subset_desired(30)).unwrap(), Some(30));
    }

    #[test]
    fn with_subset_level_splitting_another_subset_or_none_is_an_error_naming_the_subsets() {
        let r = router(SUBSETS);
        let mut vs = subset_virtual_service();
        vs["spec"]["http"][0]["route"][1]["destination"]["subset"] = json!("preview");
        let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VirtualService shop/web: HTTP route primary sends traffic to web.shop.svc.cluster.local subset preview, which is neither the canary subset canary nor the stable subset stable"
        );
        vs["spec"]["http"][0]["route"].as_array_mut().unwrap().pop();
        let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
        assert_eq!(err.to_string(), "VirtualService shop/web: HTTP route primary has no destination for subset canary");
        vs["spec"]["http"][0]["route"][0]["destination"].as_object_mut().unwrap().remove("subset");
        let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
        assert!(err.to_string().contains("sends traffic to web.shop.svc.cluster.local without a subset"), "{err}");
    }

    #[test]
    fn a_subset_level_header_route_sends_to_the_canary_subset_of_the_split_routes_host() {
        let r = router(SUBSETS);
        let vs = subset_virtual_service();
        let want = Desired { managed_route_names: vec!["beta".into()], routes: vec![beta()], ..subset_desired(0) };
        let after = apply(&vs, &r.patch(&r.targets()[1], &vs, &want).unwrap().unwrap());
        assert_eq!(
            after["spec"]["http"][0]["route"],
            json!([{"destination": {"host": "web.shop.svc.cluster.local", "subset": "canary", "port": {"number": 8080}}, "weight": 100}])
        );
    }

    #[test]
    fn the_same_subset_for_canary_and_stable_is_refused() {
        let config = serde_yaml::from_str(
            "virtualService: {name: web}\ndestinationRule: {name: web, canarySubsetName: s, stableSubsetName: s}\n",
        )
        .unwrap();
        assert_eq!(
            Istio::new(&config, "shop").unwrap_err().to_string(),
            "trafficRouting.istio.destinationRule: canarySubsetName and stableSubsetName must be two different subsets"
        );
    }
}
