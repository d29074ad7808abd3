//! Gateway API: the weights of an HTTPRoute's backendRefs, and the rules of header and mirror
//! routes.
//!
//! The rules split are those whose backendRefs name both the canary and the stable Service; each
//! must name nothing else (a third backend would get a share nobody decided). Rules that do not
//! name both, and every other field (matches, filters, timeouts, ports), are never written; an
//! HTTPRoute with no rule to split is an error.
//!
//! Header and mirror routes (`setHeaderRoute`, `setMirrorRoute`) are rules of their own, named by
//! the rule's `name` field (Gateway API v1.6 standard channel): the route `N` is the rule `N`, or
//! `N-0`, `N-1` … when the HTTPRoute has several rules to split, one before each. Such a rule
//! keeps the split rule's matches, each with the route's conditions added, so it catches only
//! requests the split rule would have caught: being more specific, it wins over the split rule
//! whatever the implementation's order, and its place just before the split rule settles ties. A
//! header rule sends to the canary backendRef alone; a mirror rule sends to the split rule's
//! backendRefs at the weights being set and mirrors to the canary Service with a `RequestMirror`
//! filter and its `percent`. The split rule's other fields (filters, timeouts) are copied, as
//! Argo's plugin copies the filters, so that a header-routed request is treated as it would be
//! otherwise. When the managed rules change, the patch tests `/spec/rules` as read and replaces
//! it whole, the user's rules copied value for value.
//!
//! Argo users configure Gateway API through the `argoproj-labs/gatewayAPI` plugin; its fields
//! (`httpRoute`, `httpRoutes` as names or `{name, useHeaderRoutes}` objects, `namespace`) are read
//! by [`GatewayApi::from_plugin`] and drive this same router.

use serde_json::{Value, json};
use stepwise_api::{
    GatewayApiTrafficRouting, HeaderRoutingMatch, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch,
};

use crate::{Desired, Error, JsonPatch, RouteRequest, Target, TrafficRouter, agreed_weight, guarded, set_weight};

/// The name Argo's Gateway API plugin has under `trafficRouting.plugins`.
pub const PLUGIN_NAME: &str = "argoproj-labs/gatewayAPI";
/// The plugin as core names routers.
pub const PLUGIN_KIND: &str = "plugins.argoproj-labs/gatewayAPI";

/// Gateway API's limits on an HTTPRoute (v1.6 CRD validation): what a managed rule must not push
/// a route past, or the API server refuses the whole patch with a less helpful message.
const MAX_RULES: usize = 16;
const MAX_MATCHES_PER_RULE: usize = 64;
const MAX_MATCHES_PER_ROUTE: usize = 128;
const MAX_HEADERS_PER_MATCH: usize = 16;
const MAX_FILTERS_PER_RULE: usize = 16;

/// The Gateway API router of one Rollout: its HTTPRoutes.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayApi {
    routes: Vec<Target>,
    /// For each of `routes`, whether header and mirror routes go into it.
    header_routes: Vec<bool>,
}

/// The HTTPRoute `name` in `namespace`.
pub fn http_route(name: &str, namespace: &str) -> Target {
    route("HTTPRoute", "httproutes", name, namespace)
}

/// A route of `kind` (HTTPRoute, GRPCRoute, TCPRoute: the same rules of weighted backendRefs).
fn route(kind: &'static str, plural: &'static str, name: &str, namespace: &str) -> Target {
    Target {
        group: "gateway.networking.k8s.io",
        version: "v1",
        kind,
        plural,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl GatewayApi {
    /// The router for `config` in a Rollout of `namespace`. Header and mirror routes go into
    /// every HTTPRoute it names (GRPCRoutes and TCPRoutes are only split).
    pub fn new(config: &GatewayApiTrafficRouting, namespace: &str) -> Result<GatewayApi, Error> {
        let namespace = config.namespace.as_deref().unwrap_or(namespace);
        let named = |one: &Option<String>, many: &Option<Vec<String>>| -> Vec<String> {
            one.iter().chain(many.iter().flatten()).cloned().collect()
        };
        let http = named(&config.http_route, &config.http_routes);
        let grpc = named(&config.grpc_route, &config.grpc_routes);
        let tcp = named(&config.tcp_route, &config.tcp_routes);
        let mut routes: Vec<Target> = http.iter().map(|name| http_route(name, namespace)).collect();
        routes.extend(grpc.iter().map(|name| route("GRPCRoute", "grpcroutes", name, namespace)));
        routes.extend(tcp.iter().map(|name| route("TCPRoute", "tcproutes", name, namespace)));
        if routes.is_empty() {
            return Err(Error::Config(
                "trafficRouting.gatewayAPI must name an httpRoute, httpRoutes, grpcRoute, grpcRoutes, tcpRoute or tcpRoutes"
                    .into(),
            ));
        }
        let header_routes = routes.iter().map(|r| r.kind == "HTTPRoute").collect();
        Ok(GatewayApi { routes, header_routes })
    }

    /// The router for the configuration of Argo's plugin (`trafficRouting.plugins["argoproj-labs/gatewayAPI"]`)
    /// in a Rollout of `namespace`. As in the plugin, header and mirror routes go into `httpRoute`
    /// and into the `httpRoutes` entries with `useHeaderRoutes: true` only.
    pub fn from_plugin(config: &Value, namespace: &str) -> Result<GatewayApi, Error> {
        let routing = from_plugin_config(config)?;
        let mut router = GatewayApi::new(&routing, namespace).map_err(|_| {
            Error::Config(format!(
                "trafficRouting.plugins[\"{PLUGIN_NAME}\"] must name an httpRoute, httpRoutes, grpcRoute, grpcRoutes, tcpRoute or tcpRoutes"
            ))
        })?;
        let entries = config.get("httpRoutes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let listed = entries
            .iter()
            .map(|entry| match entry.get("useHeaderRoutes") {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(Error::Config(format!(
                    "trafficRouting.plugins[\"{PLUGIN_NAME}\"].httpRoutes[].useHeaderRoutes must be true or false"
                ))),
            })
            .collect::<Result<Vec<bool>, Error>>()?;
        let others = router.routes.len() - routing.http_route.iter().count() - listed.len();
        router.header_routes =
            routing.http_route.iter().map(|_| true).chain(listed).chain(vec![false; others]).collect();
        Ok(router)
    }

    fn takes_routes(&self, target: &Target) -> bool {
        self.routes.iter().zip(&self.header_routes).any(|(t, takes)| t == target && *takes)
    }
}

/// The configuration of Argo's Gateway API plugin, as the built-in router's (which routes take
/// header routes aside: see [`GatewayApi::from_plugin`]).
pub fn from_plugin_config(config: &Value) -> Result<GatewayApiTrafficRouting, Error> {
    let field = |name: &str| format!("trafficRouting.plugins[\"{PLUGIN_NAME}\"].{name}");
    let string = |v: &Value, name: &str| {
        v.as_str().map(str::to_string).ok_or_else(|| Error::Config(format!("{} must be a string", field(name))))
    };
    let one = |key: &str| config.get(key).map(|v| string(v, key)).transpose();
    // A list holds names or `{name, ...}` objects.
    let many = |key: &str| match config.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(name) => Ok(name.clone()),
                other => string(other.get("name").unwrap_or(&Value::Null), &format!("{key}[].name")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Error::Config(format!("{} must be a list", field(key)))),
    };
    Ok(GatewayApiTrafficRouting {
        http_route: one("httpRoute")?,
        http_routes: many("httpRoutes")?,
        grpc_route: one("grpcRoute")?,
        grpc_routes: many("grpcRoutes")?,
        tcp_route: one("tcpRoute")?,
        tcp_routes: many("tcpRoutes")?,
        namespace: one("namespace")?,
    })
}

/// One rule to split: its index and where its canary and stable backendRefs are.
struct Split {
    rule: usize,
    canary: usize,
    stable: usize,
}

/// The name of the Service a backendRef names; None for a backend of another kind.
fn service_of(backend: &Value) -> Option<&str> {
    let group = backend.get("group").and_then(Value::as_str).unwrap_or_default();
    let kind = backend.get("kind").and_then(Value::as_str).unwrap_or("Service");
    (group.is_empty() && kind == "Service").then(|| backend.get("name").and_then(Value::as_str)).flatten()
}

fn rules_of(route: &Value) -> &[Value] {
    route.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The rules to split in `route`, leaving out the managed ones (`managed`, by index): a mirror
/// rule names both Services too, but its weights follow the split rule's.
fn splits(target: &Target, route: &Value, desired: &Desired, managed: &[bool]) -> Result<Vec<Split>, Error> {
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

fn weight_at(route: &Value, rule: usize, backend: usize) -> Option<&Value> {
    route.pointer(&format!("/spec/rules/{rule}/backendRefs/{backend}/weight"))
}

/// Whether a rule of this name belongs to one of the managed routes: `N`, or `N-<k>` for each of
/// up to [`MAX_RULES`] split rules. As in Argo, a rule of the user's that bears such a name is
/// taken for a managed one and removed or replaced: `managedRoutes` reserves the names.
fn is_managed_name(rule_name: &str, managed: &[String]) -> bool {
    managed.iter().any(|n| {
        rule_name == n
            || rule_name.strip_prefix(n.as_str()).and_then(|rest| rest.strip_prefix('-')).is_some_and(|k| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_digit())
                    && k.parse::<usize>().is_ok_and(|k| k < MAX_RULES)
            })
    })
}

fn managed_mask(rules: &[Value], desired: &Desired) -> Vec<bool> {
    rules
        .iter()
        .map(|r| {
            r.get("name").and_then(Value::as_str).is_some_and(|n| is_managed_name(n, &desired.managed_route_names))
        })
        .collect()
}

/// The name of route `route`'s rule before the `k`th of `count` split rules.
fn rule_name(route: &str, k: usize, count: usize) -> String {
    if count == 1 { route.to_string() } else { format!("{route}-{k}") }
}

/// Whether `name` may name an HTTPRoute rule: a DNS subdomain (the CRD's pattern and length).
fn valid_rule_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

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
fn matches_of(rule: &Value) -> Vec<Value> {
    match rule.get("matches").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => vec![json!({"path": {"type": "PathPrefix", "value": "/"}})],
    }
}

/// What a route adds to one of the split rule's matches went wrong: the message, to be prefixed
/// with the object.
type Combined<T> = Result<T, String>;

/// Adds the header `conditions` to `m`: every condition of both must hold. A header the match
/// already conditions otherwise cannot take a second condition (Gateway API keeps one per
/// header name, compared without case, and ignores the later ones).
fn add_headers(m: &mut Value, conditions: &[Value], what: &str, rule: usize) -> Combined<()> {
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
fn conditions<'a>(
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
fn header_rule(
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
fn mirror_match(object: &str, m: &Value, step: &RouteMatch, route: &str, rule: usize) -> Result<Option<Value>, Error> {
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

/// The rule of the mirror route `route` before the split rule `split` (index `i` as read): None
/// when the route's matches have no request in common with the rule's.
fn mirror_rule(
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

fn malformed(object: &str, message: String) -> Error {
    Error::Malformed { object: object.to_string(), message }
}

/// Whether a step asks for its route (a step without conditions removes it).
fn is_wanted(route: &RouteRequest) -> bool {
    match route {
        RouteRequest::Header(h) => h.r#match.as_ref().is_some_and(|m| !m.is_empty()),
        RouteRequest::Mirror(m) => m.r#match.as_ref().is_some_and(|m| !m.is_empty()),
    }
}

fn step_of(route: &RouteRequest) -> &'static str {
    match route {
        RouteRequest::Header(_) => "setHeaderRoute",
        RouteRequest::Mirror(_) => "setMirrorRoute",
    }
}

/// The rules `rules` are to have: the user's as they are (split rules at the weights as read),
/// and before each split rule the rules of the routes `wanted`. Also where each split rule lands.
fn layout(
    object: &str,
    rules: &[Value],
    managed: &[bool],
    splits: &[Split],
    wanted: &[&RouteRequest],
    desired: &Desired,
) -> Result<(Vec<Value>, Vec<usize>), Error> {
    let mut out = Vec::new();
    let mut landed = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if managed.get(i).copied().unwrap_or(false) {
            continue;
        }
        if let Some((k, at)) = splits.iter().enumerate().find(|(_, s)| s.rule == i) {
            for route in wanted {
                let name = rule_name(route.name(), k, splits.len());
                match route {
                    RouteRequest::Header(h) => out.push(header_rule(object, rule, i, at, h, &name)?),
                    RouteRequest::Mirror(m) => out.extend(mirror_rule(object, rule, i, at, m, &name, desired)?),
                }
            }
            landed.push(out.len());
        }
        out.push(rule.clone());
    }
    Ok((out, landed))
}

/// Gateway API's limits on the rules and their matches, checked before the API server would.
fn check_limits(object: &str, rules: &[Value]) -> Result<(), Error> {
    if rules.len() > MAX_RULES {
        return Err(malformed(
            object,
            format!(
                "the header and mirror routes would make {} rules; Gateway API allows {MAX_RULES} per HTTPRoute",
                rules.len()
            ),
        ));
    }
    let mut total = 0;
    for (i, rule) in rules.iter().enumerate() {
        let count = rule.get("matches").and_then(Value::as_array).map_or(1, |m| m.len().max(1));
        if count > MAX_MATCHES_PER_RULE {
            let name = rule.get("name").and_then(Value::as_str).unwrap_or_default();
            return Err(malformed(
                object,
                format!(
                    "rule {name} (rule {i} once written) would have {count} matches; Gateway API allows {MAX_MATCHES_PER_RULE}"
                ),
            ));
        }
        total += count;
    }
    if total > MAX_MATCHES_PER_ROUTE {
        return Err(malformed(
            object,
            format!(
                "the header and mirror routes would make {total} matches in all; Gateway API allows {MAX_MATCHES_PER_ROUTE} per HTTPRoute"
            ),
        ));
    }
    Ok(())
}

/// A header or query condition with its type defaulted.
fn defaulted_header(h: &Value) -> Value {
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

fn same_rules(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| defaulted(x) == defaulted(y))
}

impl GatewayApi {
    /// The routes to make in `target`, in the order of managedRoutes; each checked to be named
    /// there and to name a rule. None when `target` takes no header routes.
    fn wanted<'a>(&self, target: &Target, desired: &'a Desired) -> Result<Option<Vec<&'a RouteRequest>>, Error> {
        let mut wanted: Vec<&RouteRequest> = desired.routes.iter().filter(|r| is_wanted(r)).collect();
        if let Some(route) = wanted.first()
            && !self.header_routes.iter().any(|t| *t)
        {
            return Err(Error::Config(format!(
                "trafficRouting.plugins[\"{PLUGIN_NAME}\"]: {} {} needs an httpRoute or an httpRoutes entry with useHeaderRoutes: true; as in Argo's plugin, only those get header and mirror routes",
                step_of(route),
                route.name()
            )));
        }
        if !self.takes_routes(target) {
            return Ok(None);
        }
        let order = |name: &str| desired.managed_route_names.iter().position(|n| n == name);
        for route in &wanted {
            let name = route.name();
            if order(name).is_none() {
                return Err(Error::Config(format!(
                    "{} {name}: the route must be listed in trafficRouting.managedRoutes",
                    step_of(route)
                )));
            }
            if !valid_rule_name(&format!("{name}-{}", MAX_RULES - 1)) {
                return Err(Error::Config(format!(
                    "trafficRouting.managedRoutes: {name} cannot name an HTTPRoute rule; Gateway API wants lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
                )));
            }
        }
        wanted.sort_by_key(|r| order(r.name()));
        Ok(Some(wanted))
    }
}

impl TrafficRouter for GatewayApi {
    fn targets(&self) -> Vec<Target> {
        self.routes.clone()
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let wanted = self.wanted(target, desired)?;
        let rules = rules_of(current);
        let managed = if wanted.is_some() { managed_mask(rules, desired) } else { vec![false; rules.len()] };
        let splits = splits(target, current, desired, &managed)?;
        let mut ops = Vec::new();
        for split in &splits {
            for (j, want) in [(split.canary, desired.canary_weight), (split.stable, desired.stable_weight())] {
                let path = format!("/spec/rules/{}/backendRefs/{j}/weight", split.rule);
                set_weight(&mut ops, path, weight_at(current, split.rule, j), want);
            }
        }
        let Some(wanted) = wanted else { return Ok(guarded(current, ops)) };
        let object = target.to_string();
        let (mut new_rules, landed) = layout(&object, rules, &managed, &splits, &wanted, desired)?;
        if same_rules(&new_rules, rules) {
            return Ok(guarded(current, ops));
        }
        for (split, at) in splits.iter().zip(landed) {
            let backends = &mut new_rules[at]["backendRefs"];
            backends[split.canary]["weight"] = json!(desired.canary_weight);
            backends[split.stable]["weight"] = json!(desired.stable_weight());
        }
        check_limits(&object, &new_rules)?;
        // Indexes shift as managed rules come and go, so the rules are replaced whole; the test
        // makes the API server refuse the patch should they have changed since they were read.
        let ops = vec![
            json!({"op": "test", "path": "/spec/rules", "value": rules}),
            json!({"op": "replace", "path": "/spec/rules", "value": new_rules}),
        ];
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let rules = rules_of(current);
        let managed = if self.takes_routes(target) { managed_mask(rules, desired) } else { vec![false; rules.len()] };
        let splits = splits(target, current, desired, &managed)?;
        let weights = splits.iter().map(|split| {
            // Gateway API's default weight is 1.
            let read = |j| weight_at(current, split.rule, j).and_then(Value::as_i64).unwrap_or(1);
            (read(split.canary), read(split.stable))
        });
        Ok(agreed_weight(weights, desired.max_weight))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{apply, desired, without_weights};

    fn router() -> GatewayApi {
        GatewayApi::new(&serde_yaml::from_str("httpRoute: web\n").unwrap(), "shop").unwrap()
    }

    /// An HTTPRoute as users write them: a rule for an admin path to another Service, the split
    /// rule with a timeout and a header filter.
    fn http_route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "12"},
            "spec": {
                "parentRefs": [{"name": "gateway", "namespace": "edge"}],
                "hostnames": ["web.example.com"],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                     "backendRefs": [{"name": "admin", "port": 80}]},
                    {"timeouts": {"request": "10s"},
                     "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
                     "backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": 100},
                        {"name": "web-canary", "port": 80, "weight": 0}
                     ]}
                ]
            }
        })
    }

    fn target() -> Target {
        super::http_route("web", "shop")
    }

    #[test]
    fn ping_pong_backend_refs_are_weighed_by_the_services_current_roles() {
        use stepwise_api::PingPong;
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4"},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web-ping", "port": 80, "weight": 100},
                {"name": "web-pong", "port": 80, "weight": 0}
            ]}]}
        });
        let weights = |r: &Value| {
            (
                r["spec"]["rules"][0]["backendRefs"][0]["weight"].clone(),
                r["spec"]["rules"][0]["backendRefs"][1]["weight"].clone(),
            )
        };
        let first = crate::testing::ping_pong(PingPong::Ping, 40);
        let during = apply(&route, &router().patch(&target(), &route, &first).unwrap().unwrap());
        assert_eq!(weights(&during), (json!(60), json!(40)), "pong is the canary of the first release");
        let full = apply(
            &during,
            &router().patch(&target(), &during, &crate::testing::ping_pong(PingPong::Ping, 100)).unwrap().unwrap(),
        );
        let swapped = crate::testing::ping_pong(PingPong::Pong, 0);
        assert_eq!(router().patch(&target(), &full, &swapped).unwrap(), None, "the swap writes nothing");
        assert_eq!(router().canary_weight(&target(), &full, &swapped).unwrap(), Some(0));
        let next = crate::testing::ping_pong(PingPong::Pong, 25);
        let after = apply(&full, &router().patch(&target(), &full, &next).unwrap().unwrap());
        assert_eq!(weights(&after), (json!(25), json!(75)), "ping is the canary of the next release");
    }

    #[test]
    fn a_weight_changes_only_the_backend_weights_of_the_rule_naming_both_services() {
        let route = http_route();
        let patch = router().patch(&target(), &route, &desired(40)).unwrap().unwrap();
        assert_eq!(
            patch,
            vec![
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "12"}),
                json!({"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 40}),
                json!({"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 60}),
            ]
        );
        let after = apply(&route, &patch);
        assert_eq!(without_weights(&after), without_weights(&route), "nothing but weights changes");
        assert_eq!(after["spec"]["rules"][0], route["spec"]["rules"][0], "the admin rule is untouched");
        assert_eq!(router().canary_weight(&target(), &after, &desired(40)).unwrap(), Some(40));
        assert_eq!(router().patch(&target(), &after, &desired(40)).unwrap(), None, "and then nothing to do");
    }

    #[test]
    fn omitted_weights_count_as_gateway_apis_default_of_one_and_are_written() {
        let route = json!({"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [
            {"name": "web-canary", "port": 80}, {"name": "web-stable", "port": 80}
        ]}]}});
        assert_eq!(router().canary_weight(&target(), &route, &desired(1)).unwrap(), None);
        let after = apply(&route, &router().patch(&target(), &route, &desired(100)).unwrap().unwrap());
        assert_eq!(after["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
        assert_eq!(after["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
    }

    #[test]
    fn a_rule_naming_only_one_of_the_services_is_left_alone() {
        let mut route = http_route();
        route["spec"]["rules"][0]["backendRefs"] = json!([{"name": "web-stable", "port": 80}]);
        let patch = router().patch(&target(), &route, &desired(10)).unwrap().unwrap();
        assert!(patch.iter().skip(1).all(|op| op["path"].as_str().unwrap().starts_with("/spec/rules/1/")), "{patch:?}");
        route["spec"]["rules"][1]["backendRefs"].as_array_mut().unwrap().remove(1);
        let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTPRoute shop/web: no rule has backendRefs to the canary Service web-canary and the stable Service web-stable"
        );
    }

    #[test]
    fn a_backend_naming_neither_service_in_a_split_rule_is_an_error() {
        let mut route = http_route();
        route["spec"]["rules"][1]["backendRefs"].as_array_mut().unwrap().push(json!({"name": "other", "port": 80}));
        let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTPRoute shop/web: rule 1 sends traffic to Service other, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
    }

    #[test]
    fn a_route_with_no_rule_for_the_services_is_an_error() {
        let mut route = http_route();
        route["spec"]["rules"].as_array_mut().unwrap().pop();
        let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HTTPRoute shop/web: no rule has backendRefs to the canary Service web-canary and the stable Service web-stable"
        );
    }

    #[test]
    fn the_argo_plugin_configuration_reads_as_the_built_in_one() {
        let config = from_plugin_config(
            &json!({"httpRoutes": [{"name": "a", "useHeaderRoutes": true}, "b"], "namespace": "edge"}),
        )
        .unwrap();
        let r = GatewayApi::new(&config, "shop").unwrap();
        let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["HTTPRoute edge/a", "HTTPRoute edge/b"]);
        assert!(from_plugin_config(&json!({"httpRoute": 3})).is_err());
        assert!(GatewayApi::new(&from_plugin_config(&json!({})).unwrap(), "shop").is_err());
    }

    /// A TCPRoute for a database: one rule, the stable and canary Services on their port.
    fn tcp_route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "TCPRoute",
            "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "3"},
            "spec": {
                "parentRefs": [{"name": "gateway", "namespace": "edge", "sectionName": "postgres"}],
                "rules": [{"backendRefs": [
                    {"name": "web-stable", "port": 5432, "weight": 100},
                    {"name": "web-canary", "port": 5432, "weight": 0}
                ]}]
            }
        })
    }

    #[test]
    fn grpc_and_tcp_routes_are_split_like_http_routes_and_their_kind_names_them() {
        let config = from_plugin_config(&json!({"grpcRoutes": [{"name": "api"}], "tcpRoute": "db"})).unwrap();
        let r = GatewayApi::new(&config, "shop").unwrap();
        let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["GRPCRoute shop/api", "TCPRoute shop/db"]);
        assert_eq!((r.targets()[0].plural, r.targets()[1].plural), ("grpcroutes", "tcproutes"));
        let tcp = &r.targets()[1];
        let after = apply(&tcp_route(), &r.patch(tcp, &tcp_route(), &desired(30)).unwrap().unwrap());
        assert_eq!(after["spec"]["rules"][0]["backendRefs"][1]["weight"], 30);
        assert_eq!(after["spec"]["rules"][0]["backendRefs"][0]["weight"], 70);
        assert_eq!(without_weights(&after), without_weights(&tcp_route()));
        assert_eq!(r.canary_weight(tcp, &after, &desired(30)).unwrap(), Some(30));
    }

    #[test]
    fn header_routes_go_into_http_routes_only() {
        let config: GatewayApiTrafficRouting = serde_yaml::from_str(
            "httpRoute: web
tcpRoute: db
",
        )
        .unwrap();
        let r = GatewayApi::new(&config, "shop").unwrap();
        assert!(r.takes_routes(&r.targets()[0]));
        assert!(!r.takes_routes(&r.targets()[1]));
        let plugin = GatewayApi::from_plugin(
            &json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": true}], "tcpRoute": "db"}),
            "shop",
        )
        .unwrap();
        assert_eq!(plugin.header_routes, [true, false]);
    }

    /// What the controller hands the router with the routes `routes` wanted, the managed routes
    /// being `preview` then `shadow`.
    fn with_routes(canary_weight: i32, routes: Value) -> Desired {
        Desired {
            managed_route_names: vec!["preview".into(), "shadow".into()],
            routes: serde_json::from_value(routes).unwrap(),
            ..desired(canary_weight)
        }
    }

    fn preview_by_header() -> Value {
        json!([{"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])
    }

    /// The rule the header route `preview` of [`preview_by_header`] makes in [`http_route`].
    fn preview_rule() -> Value {
        json!({
            "name": "preview",
            "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                         "headers": [{"name": "X-Canary", "type": "Exact", "value": "yes"}]}],
            "timeouts": {"request": "10s"},
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
            "backendRefs": [{"name": "web-canary", "port": 80, "weight": 1}]
        })
    }

    fn rules(route: &Value) -> &Vec<Value> {
        route["spec"]["rules"].as_array().unwrap()
    }

    #[test]
    fn a_header_route_is_a_named_rule_before_the_split_rule_sending_to_the_canary_only() {
        let route = http_route();
        let d = with_routes(20, preview_by_header());
        let patch = router().patch(&target(), &route, &d).unwrap().unwrap();
        assert_eq!(patch[0], json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "12"}));
        assert_eq!(patch[1], json!({"op": "test", "path": "/spec/rules", "value": route["spec"]["rules"]}));
        assert_eq!(patch[2]["op"], "replace");
        assert_eq!(patch[2]["path"], "/spec/rules");
        assert_eq!(patch.len(), 3);
        let after = apply(&route, &patch);
        assert_eq!(rules(&after).len(), 3);
        assert_eq!(rules(&after)[0], route["spec"]["rules"][0], "the admin rule is untouched");
        assert_eq!(rules(&after)[1], preview_rule(), "the split rule's matches, filters and timeouts, with the header");
        let mut split = route["spec"]["rules"][1].clone();
        split["backendRefs"][0]["weight"] = json!(80);
        split["backendRefs"][1]["weight"] = json!(20);
        assert_eq!(rules(&after)[2], split, "the split rule only gets its weights");
        assert_eq!(router().canary_weight(&target(), &after, &d).unwrap(), Some(20), "the header rule is no split");
        assert_eq!(router().patch(&target(), &after, &d).unwrap(), None, "and then nothing to do");
    }

    #[test]
    fn a_weight_change_with_a_header_route_in_place_sets_the_weights_only() {
        let d = with_routes(20, preview_by_header());
        let route = apply(&http_route(), &router().patch(&target(), &http_route(), &d).unwrap().unwrap());
        let patch = router().patch(&target(), &route, &with_routes(50, preview_by_header())).unwrap().unwrap();
        assert_eq!(
            patch[1..],
            [
                json!({"op": "add", "path": "/spec/rules/2/backendRefs/1/weight", "value": 50}),
                json!({"op": "add", "path": "/spec/rules/2/backendRefs/0/weight", "value": 50}),
            ]
        );
    }

    #[test]
    fn the_defaults_the_api_server_fills_in_are_no_change() {
        let d = with_routes(20, preview_by_header());
        let mut stored = apply(&http_route(), &router().patch(&target(), &http_route(), &d).unwrap().unwrap());
        for rule in stored["spec"]["rules"].as_array_mut().unwrap() {
            if rule.get("matches").is_none() {
                rule["matches"] = json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
            }
            for backend in rule["backendRefs"].as_array_mut().unwrap() {
                backend["group"] = json!("");
                backend["kind"] = json!("Service");
            }
        }
        assert_eq!(router().patch(&target(), &stored, &d).unwrap(), None);
    }

    #[test]
    fn removing_a_header_route_removes_its_rule_and_keeps_the_users() {
        let route = apply(
            &http_route(),
            &router().patch(&target(), &http_route(), &with_routes(20, preview_by_header())).unwrap().unwrap(),
        );
        // A step without conditions, or no step at all, removes the route.
        for routes in [json!([{"header": {"name": "preview"}}]), json!([])] {
            let after = apply(&route, &router().patch(&target(), &route, &with_routes(20, routes)).unwrap().unwrap());
            let mut expected = http_route();
            expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(80);
            expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(20);
            assert_eq!(after, expected);
        }
    }

    #[test]
    fn each_match_of_the_split_rule_takes_every_header_condition_and_a_prefix_becomes_an_anchored_expression() {
        let mut route = http_route();
        route["spec"]["rules"][1]["matches"] = json!([
            {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-tenant", "value": "acme"}]},
            {"path": {"type": "Exact", "value": "/v2"}, "queryParams": [{"name": "beta", "value": "1"}]}
        ]);
        let d = with_routes(
            10,
            json!([{"header": {"name": "preview", "match": [
                {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                {"headerName": "X-Version", "headerValue": {"prefix": "v1.2"}},
                {"headerName": "X-User", "headerValue": {"regex": "^(ann|bob)$"}}
            ]}}]),
        );
        let after = apply(&route, &router().patch(&target(), &route, &d).unwrap().unwrap());
        let ours = [
            json!({"name": "X-Canary", "type": "Exact", "value": "yes"}),
            json!({"name": "X-Version", "type": "RegularExpression", "value": "^v1\\.2.*"}),
            json!({"name": "X-User", "type": "RegularExpression", "value": "^(ann|bob)$"}),
        ];
        let mut first = vec![json!({"name": "x-tenant", "value": "acme"})];
        first.extend(ours.iter().cloned());
        assert_eq!(
            rules(&after)[1]["matches"],
            json!([
                {"path": {"type": "PathPrefix", "value": "/api"}, "headers": first},
                {"path": {"type": "Exact", "value": "/v2"}, "queryParams": [{"name": "beta", "value": "1"}], "headers": ours}
            ])
        );
    }

    #[test]
    fn several_split_rules_each_get_their_own_numbered_rule_in_managed_routes_order() {
        let route = json!({"metadata": {"name": "web", "resourceVersion": "3"}, "spec": {"rules": [
            {"matches": [{"path": {"value": "/a"}}], "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}]},
            {"matches": [{"path": {"value": "/b"}}], "backendRefs": [{"name": "web-stable", "port": 8080, "weight": 100}, {"name": "web-canary", "port": 8080, "weight": 0}]}
        ]}});
        // Listed out of order on purpose: managedRoutes decides.
        let d = with_routes(
            0,
            json!([
                {"mirror": {"name": "shadow", "match": [{"method": {"exact": "GET"}}]}},
                {"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}
            ]),
        );
        let after = apply(&route, &router().patch(&target(), &route, &d).unwrap().unwrap());
        let names: Vec<&str> = rules(&after).iter().map(|r| r["name"].as_str().unwrap_or("(user's)")).collect();
        assert_eq!(names, ["preview-0", "shadow-0", "(user's)", "preview-1", "shadow-1", "(user's)"]);
        assert_eq!(rules(&after)[3]["backendRefs"], json!([{"name": "web-canary", "port": 8080, "weight": 1}]));
        assert_eq!(router().patch(&target(), &after, &d).unwrap(), None);
    }

    #[test]
    fn a_users_rule_named_like_a_managed_route_is_taken_for_a_managed_one() {
        let mut route = http_route();
        route["spec"]["rules"].as_array_mut().unwrap().insert(
            0,
            json!({"name": "preview", "matches": [{"path": {"value": "/old"}}], "backendRefs": [{"name": "web-canary", "port": 80}]}),
        );
        let after =
            apply(&route, &router().patch(&target(), &route, &with_routes(0, preview_by_header())).unwrap().unwrap());
        let names: Vec<Value> = rules(&after).iter().map(|r| r["name"].clone()).collect();
        assert_eq!(names, [Value::Null, json!("preview"), Value::Null]);
        assert_eq!(rules(&after)[1], preview_rule());
    }

    #[test]
    fn a_mirror_route_splits_as_the_split_rule_and_mirrors_its_share_to_the_canary() {
        let route = http_route();
        let shadow = json!([{"mirror": {"name": "shadow", "percentage": 30, "match": [
            {"method": {"exact": "GET"}, "path": {"prefix": "/api"}, "headers": {"x-debug": {"exact": "1"}}}
        ]}}]);
        let after =
            apply(&route, &router().patch(&target(), &route, &with_routes(20, shadow.clone())).unwrap().unwrap());
        assert_eq!(
            rules(&after)[1],
            json!({
                "name": "shadow",
                "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                             "headers": [{"name": "x-debug", "type": "Exact", "value": "1"}]}],
                "timeouts": {"request": "10s"},
                "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}},
                    {"type": "RequestMirror", "requestMirror": {
                        "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 80}, "percent": 30}}
                ],
                "backendRefs": [{"name": "web-stable", "port": 80, "weight": 80}, {"name": "web-canary", "port": 80, "weight": 20}]
            })
        );
        assert_eq!(router().canary_weight(&target(), &after, &with_routes(20, shadow.clone())).unwrap(), Some(20));
        assert_eq!(router().patch(&target(), &after, &with_routes(20, shadow.clone())).unwrap(), None);
        // The mirror rule's weights follow the split rule's.
        let later = apply(&after, &router().patch(&target(), &after, &with_routes(60, shadow)).unwrap().unwrap());
        for i in [1, 2] {
            let weights: Vec<&Value> =
                rules(&later)[i]["backendRefs"].as_array().unwrap().iter().map(|b| &b["weight"]).collect();
            assert_eq!(weights, [&json!(40), &json!(60)], "rule {i}");
        }
    }

    #[test]
    fn a_mirror_match_with_no_request_in_common_with_the_split_rule_makes_no_rule() {
        let mut route = http_route();
        route["spec"]["rules"][1]["matches"] =
            json!([{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}]);
        let elsewhere = json!([{"mirror": {"name": "shadow", "match": [
            {"path": {"prefix": "/apis"}}, {"method": {"exact": "GET"}}
        ]}}]);
        assert_eq!(router().patch(&target(), &route, &with_routes(0, elsewhere)).unwrap(), None);
        let within = json!([{"mirror": {"name": "shadow", "match": [{"path": {"exact": "/api/orders"}}]}}]);
        let after = apply(&route, &router().patch(&target(), &route, &with_routes(0, within)).unwrap().unwrap());
        assert_eq!(
            rules(&after)[1]["matches"],
            json!([{"path": {"type": "Exact", "value": "/api/orders"}, "method": "POST"}])
        );
    }

    #[test]
    fn what_gateway_api_cannot_express_is_an_error_naming_the_step() {
        let err = |route: &Value, routes: Value| {
            router().patch(&target(), route, &with_routes(0, routes)).unwrap_err().to_string()
        };
        let mut tenant = http_route();
        tenant["spec"]["rules"][1]["matches"] = json!([{"headers": [{"name": "x-canary", "value": "internal"}]}]);
        assert_eq!(
            err(&tenant, preview_by_header()),
            "HTTPRoute shop/web: rule 1 already matches header X-Canary otherwise; setHeaderRoute preview cannot add a second condition on it (Gateway API takes one per header)"
        );
        assert_eq!(
            err(
                &http_route(),
                json!([{"header": {"name": "preview", "match": [
                    {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                    {"headerName": "x-canary", "headerValue": {"exact": "no"}}
                ]}}])
            ),
            "setHeaderRoute preview: header x-canary has two conditions; Gateway API takes one per header"
        );
        assert_eq!(
            err(
                &http_route(),
                json!([{"header": {"name": "other", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])
            ),
            "setHeaderRoute other: the route must be listed in trafficRouting.managedRoutes"
        );
        let shouting = Desired { managed_route_names: vec!["Preview".into()], ..with_routes(0, json!([])) };
        let shouting = Desired {
            routes: serde_json::from_value(json!([{"header": {"name": "Preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])).unwrap(),
            ..shouting
        };
        assert_eq!(
            router().patch(&target(), &http_route(), &shouting).unwrap_err().to_string(),
            "trafficRouting.managedRoutes: Preview cannot name an HTTPRoute rule; Gateway API wants lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        );
        let mut regex_path = http_route();
        regex_path["spec"]["rules"][1]["matches"] =
            json!([{"path": {"type": "RegularExpression", "value": "/v[0-9]+"}}]);
        assert_eq!(
            err(&regex_path, json!([{"mirror": {"name": "shadow", "match": [{"path": {"prefix": "/v2"}}]}}])),
            "HTTPRoute shop/web: setMirrorRoute shadow: rule 1: its path PathPrefix /v2 cannot be combined with the rule's path RegularExpression /v[0-9]+"
        );
        assert_eq!(
            err(&http_route(), json!([{"mirror": {"name": "shadow", "match": [{"method": {"prefix": "G"}}]}}])),
            "setMirrorRoute shadow: Gateway API matches a method exactly only"
        );
        let mut crowded = http_route();
        let admin = crowded["spec"]["rules"][0].clone();
        for _ in 0..14 {
            crowded["spec"]["rules"].as_array_mut().unwrap().insert(0, admin.clone());
        }
        assert_eq!(
            err(&crowded, preview_by_header()),
            "HTTPRoute shop/web: the header and mirror routes would make 17 rules; Gateway API allows 16 per HTTPRoute"
        );
    }

    #[test]
    fn the_argo_plugin_adds_header_routes_only_to_routes_with_use_header_routes() {
        let r = GatewayApi::from_plugin(
            &json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": true}, {"name": "api"}], "namespace": "shop"}),
            "ns",
        )
        .unwrap();
        let d = with_routes(20, preview_by_header());
        let patch = r.patch(&target(), &http_route(), &d).unwrap().unwrap();
        assert_eq!(patch[1]["op"], "test", "web takes header routes");
        let api = super::http_route("api", "shop");
        let patch = r.patch(&api, &http_route(), &d).unwrap().unwrap();
        assert!(patch.iter().skip(1).all(|op| op["path"].as_str().unwrap().ends_with("/weight")), "api: weights only");
        let single = GatewayApi::from_plugin(&json!({"httpRoute": "web"}), "shop").unwrap();
        assert_eq!(single.patch(&target(), &http_route(), &d).unwrap().unwrap()[1]["op"], "test");
        let none = GatewayApi::from_plugin(&json!({"httpRoutes": [{"name": "web"}]}), "shop").unwrap();
        assert_eq!(
            none.patch(&target(), &http_route(), &d).unwrap_err().to_string(),
            "trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"]: setHeaderRoute preview needs an httpRoute or an httpRoutes entry with useHeaderRoutes: true; as in Argo's plugin, only those get header and mirror routes"
        );
        assert_eq!(none.patch(&target(), &http_route(), &desired(20)).unwrap().unwrap().len(), 3, "weights still set");
        assert!(
            GatewayApi::from_plugin(&json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": "yes"}]}), "shop")
                .is_err()
        );
    }
}
