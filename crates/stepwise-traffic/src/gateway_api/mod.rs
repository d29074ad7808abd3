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

mod argo_plugin;
mod defaults;
mod managed;
mod managed_rules;
mod matching;
#[cfg(test)]
mod tests;
mod weights;

use serde_json::{Value, json};
use stepwise_api::GatewayApiTrafficRouting;

pub use self::argo_plugin::from_plugin_config;
use self::defaults::same_rules;
use self::managed::{check_limits, layout, managed_mask};
pub(crate) use self::matching::escape_regex;
use self::weights::{rules_of, splits, weight_at};
use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, agreed_weight, guarded, set_weight};

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

    fn takes_routes(&self, target: &Target) -> bool {
        self.routes.iter().zip(&self.header_routes).any(|(t, takes)| t == target && *takes)
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
