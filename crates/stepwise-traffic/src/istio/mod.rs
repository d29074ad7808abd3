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

mod managed;
mod routes;
mod sides;
mod subsets;
#[cfg(test)]
mod tests;

use serde_json::Value;
use stepwise_api::{IstioTcpRoute, IstioTlsRoute, IstioTrafficRouting, IstioVirtualService};

use self::managed::{http_ops, wanted_routes};
use self::routes::{HTTP, Split, chosen};
use self::sides::Sides;
use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, agreed_weight, guarded, split_name};

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
