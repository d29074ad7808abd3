//! Traffic routers: the seam between the controller and Istio, Gateway API and the routers to
//! come. A router is pure: given a routing object as the API server holds it now and the weight
//! wanted, it returns the JSON patch (RFC 6902) that gets there, or an error naming what a person
//! must fix. The controller reads the objects and applies the patches in one place; nothing here
//! does I/O, so every router is tested from fixtures. Each router is one module
//! ([`istio`], [`nginx`], [`gateway_api`], [`traefik`], [`smi`], [`apisix`], [`ambassador`]);
//! [`fake::FakeRouter`] stands in for them in tests. Routers that run out of process (router
//! plugins, written in any language) speak the protocol of [`plugin`]: they are not
//! [`TrafficRouter`]s, as the controller calls them instead of patching objects.
//!
//! A patch changes only the weights the router manages, each addressed by its index, and carries
//! the object's resourceVersion: were the object changed between the read and the write (a
//! route inserted before ours), the API server refuses the patch with a Conflict and the next
//! reconcile reads again, instead of the weight landing on somebody else's route.

use std::collections::BTreeSet;

use serde_json::{Value, json};
pub use stepwise_api::RouteRequest;
use stepwise_api::TrafficRouting;

pub mod ambassador;
pub mod apisix;
pub mod fake;
pub mod gateway_api;
pub mod istio;
pub mod nginx;
pub mod plugin;
pub mod smi;
pub mod traefik;

/// A router the controller drives: its field under `trafficRouting` (a plugin as
/// `plugins.<name>`), what it can make, and how to build it. [`BUILT_IN`] lists those of this
/// crate and [`Routers`] holds them with any registered at start; every other list of routers
/// (the kinds core accepts, those that make header or mirror routes or follow a pingPong swap,
/// the routers of a Rollout) is derived from it. A new router is its module and one row.
#[derive(Clone, Copy)]
pub struct RouterEntry {
    /// Its field under `trafficRouting`; a router of another crate is `plugins.<name>`, and its
    /// configuration the value of `trafficRouting.plugins.<name>`.
    pub kind: &'static str,
    /// Whether it makes header routes (`setHeaderRoute` steps).
    pub header_routes: bool,
    /// Whether it makes mirror routes (`setMirrorRoute` steps).
    pub mirror_routes: bool,
    /// Whether it splits between two Services named as they are in their roles now, and so
    /// follows a pingPong swap (the others derive their objects from the stable Service).
    pub ping_pong: bool,
    /// The router for `routing` of the Rollout `rollout` in `namespace`; None when `routing`
    /// does not name it.
    pub build: fn(routing: &TrafficRouting, rollout: &str, namespace: &str) -> Option<Result<BoxedRouter, Error>>,
}

fn boxed<R: TrafficRouter + 'static>(built: Result<R, Error>) -> Result<BoxedRouter, Error> {
    built.map(|r| Box::new(r) as BoxedRouter)
}

/// The routers of this crate.
pub const BUILT_IN: &[RouterEntry] = &[
    RouterEntry {
        kind: "istio",
        header_routes: true,
        mirror_routes: true,
        ping_pong: true,
        build: |routing, _, ns| routing.istio.as_ref().map(|c| boxed(istio::Istio::new(c, ns))),
    },
    RouterEntry {
        kind: "nginx",
        header_routes: true,
        mirror_routes: false,
        ping_pong: false,
        build: |routing, rollout, ns| routing.nginx.as_ref().map(|c| boxed(nginx::Nginx::new(c, rollout, ns))),
    },
    RouterEntry {
        kind: "gatewayAPI",
        header_routes: true,
        mirror_routes: true,
        ping_pong: true,
        build: |routing, _, ns| routing.gateway_api.as_ref().map(|c| boxed(gateway_api::GatewayApi::new(c, ns))),
    },
    // Argo users configure Gateway API through its plugin; the same fields drive the built-in
    // router, so their manifests work by changing apiVersion only.
    RouterEntry {
        kind: gateway_api::PLUGIN_KIND,
        header_routes: true,
        mirror_routes: true,
        ping_pong: true,
        build: |routing, _, ns| {
            let config = routing.plugins.as_ref()?.get(gateway_api::PLUGIN_NAME)?;
            Some(boxed(gateway_api::GatewayApi::from_plugin(config, ns)))
        },
    },
    RouterEntry {
        kind: "traefik",
        header_routes: false,
        mirror_routes: false,
        ping_pong: false,
        build: |routing, _, ns| routing.traefik.as_ref().map(|c| boxed(traefik::Traefik::new(c, ns))),
    },
    RouterEntry {
        kind: "smi",
        header_routes: false,
        mirror_routes: false,
        ping_pong: false,
        build: |routing, rollout, ns| routing.smi.as_ref().map(|c| boxed(Ok(smi::Smi::new(c, rollout, ns)))),
    },
    RouterEntry {
        kind: "apisix",
        header_routes: false,
        mirror_routes: false,
        ping_pong: false,
        build: |routing, _, ns| routing.apisix.as_ref().map(|c| boxed(apisix::Apisix::new(c, ns))),
    },
    RouterEntry {
        kind: "ambassador",
        header_routes: false,
        mirror_routes: false,
        ping_pong: false,
        build: |routing, _, ns| {
            let config = routing.ambassador.as_ref()?;
            Some(boxed(ambassador::Ambassador::new(config, routing.max_traffic_weight, ns)))
        },
    },
];

/// The routers a controller drives, by kind: the built-in ones, the routers of other crates
/// registered in-process ([`Routers::register`]), and the router plugins it calls over HTTP
/// ([`plugin`], `--router-plugin`), which are kinds without a [`RouterEntry`] as the controller
/// calls them itself.
#[derive(Clone)]
pub struct Routers {
    entries: Vec<RouterEntry>,
    out_of_process: BTreeSet<String>,
}

impl Default for Routers {
    fn default() -> Self {
        Routers { entries: BUILT_IN.to_vec(), out_of_process: BTreeSet::new() }
    }
}

impl std::fmt::Debug for Routers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routers").field("kinds", &self.kinds(|_| true)).finish()
    }
}

impl Routers {
    /// Adds a router of another crate, under `plugins.<name>`; an error for another form of
    /// kind, or a kind already taken.
    pub fn register(&mut self, entry: RouterEntry) -> Result<(), Error> {
        let Some(name) = entry.kind.strip_prefix("plugins.").filter(|n| !n.is_empty()) else {
            return Err(Error::Config(format!(
                "a router registered at start is configured under trafficRouting.plugins: its kind must be plugins.<name>, not {}",
                entry.kind
            )));
        };
        if self.entries.iter().any(|e| e.kind == entry.kind) || self.out_of_process.contains(name) {
            return Err(Error::Config(format!("two routers are registered as {}", entry.kind)));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Adds the router plugins the controller calls over HTTP, by name. One registered under a
    /// built-in plugin form's name replaces that form.
    pub fn register_out_of_process(&mut self, names: impl IntoIterator<Item = String>) -> Result<(), Error> {
        for name in names {
            let kind = format!("plugins.{name}");
            if self.entries.iter().any(|e| e.kind == kind && !BUILT_IN.iter().any(|b| b.kind == kind)) {
                return Err(Error::Config(format!("two routers are registered as {kind}")));
            }
            self.out_of_process.insert(name);
        }
        Ok(())
    }

    /// The names of the router plugins called over HTTP.
    pub fn out_of_process(&self) -> &BTreeSet<String> {
        &self.out_of_process
    }

    /// The kinds with `ability` (`|_| true` for all): what core compares a Rollout's routers
    /// with. A router plugin called over HTTP is taken to have every ability: it refuses what it
    /// cannot make in its answer.
    pub fn kinds(&self, ability: fn(&RouterEntry) -> bool) -> BTreeSet<String> {
        let entries = self.entries.iter().filter(|r| !self.called_over_http(r)).filter(|r| ability(r));
        let plugins = self.out_of_process.iter().map(|name| format!("plugins.{name}"));
        entries.map(|r| r.kind.to_string()).chain(plugins).collect()
    }

    fn called_over_http(&self, entry: &RouterEntry) -> bool {
        entry.kind.strip_prefix("plugins.").is_some_and(|n| self.out_of_process.contains(n))
    }

    /// The routers `routing` names, for the Rollout `rollout` in `namespace`, but for the router
    /// plugins called over HTTP (the controller calls them itself). A plugin that is neither
    /// known nor registered is an error saying how to register it.
    pub fn build(&self, routing: &TrafficRouting, rollout: &str, namespace: &str) -> Result<Vec<BoxedRouter>, Error> {
        let out = self
            .entries
            .iter()
            .filter(|r| !self.called_over_http(r))
            .filter_map(|r| (r.build)(routing, rollout, namespace))
            .collect::<Result<Vec<_>, _>>()?;
        let known = |name: &str| {
            self.out_of_process.contains(name)
                || self.entries.iter().any(|r| r.kind.strip_prefix("plugins.") == Some(name))
        };
        if let Some(name) = routing.plugins.iter().flatten().map(|(name, _)| name).find(|n| !known(n)) {
            return Err(Error::Config(format!(
                "the router plugin {name} is not registered with this controller: start it with --router-plugin {name}=URL, the URL where the plugin serves {} (docs/plugins.md)",
                plugin::PROTOCOL
            )));
        }
        let any_plugin = routing.plugins.iter().flatten().any(|(name, _)| self.out_of_process.contains(name));
        if out.is_empty() && !any_plugin {
            return Err(Error::Config("trafficRouting must name a router".into()));
        }
        Ok(out)
    }
}

/// One object a router reads and patches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// API group (`networking.istio.io`).
    pub group: &'static str,
    /// API version (`v1`).
    pub version: &'static str,
    /// Kind (`VirtualService`).
    pub kind: &'static str,
    /// The resource's plural (`virtualservices`).
    pub plural: &'static str,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Where traffic should go.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The Service in front of the canary's pods (empty with Istio subset-level splitting,
    /// which needs no Services).
    pub canary_service: String,
    /// The Service in front of the stable pods (empty as `canary_service`).
    pub stable_service: String,
    /// The canary's weight, out of `max_weight`.
    pub canary_weight: i32,
    /// The weight that means all traffic (`trafficRouting.maxTrafficWeight`, 100 by default).
    pub max_weight: i32,
    /// The canary's pod-template-hash, for routers that select pods themselves (Istio's
    /// DestinationRule subsets).
    pub canary_hash: Option<String>,
    /// The stable pods' pod-template-hash, as `canary_hash`.
    pub stable_hash: Option<String>,
    /// The names listed in `trafficRouting.managedRoutes`, in their order of precedence: the
    /// routes stepwise owns. A route of one of these names that is not in `routes` is removed.
    pub managed_route_names: Vec<String>,
    /// The managed routes wanted now (header routes to the canary, mirror routes), in the order
    /// of `managed_route_names`.
    pub routes: Vec<RouteRequest>,
}

impl Desired {
    /// `canary_weight` of `max_weight` to the Service `canary_service`, the rest to
    /// `stable_service`, with no hashes and no managed routes: the simplest split.
    pub fn split(canary_service: &str, stable_service: &str, canary_weight: i32, max_weight: i32) -> Desired {
        Desired {
            canary_service: canary_service.to_string(),
            stable_service: stable_service.to_string(),
            canary_weight,
            max_weight,
            canary_hash: None,
            stable_hash: None,
            managed_route_names: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// What the canary does not get goes to stable.
    pub fn stable_weight(&self) -> i32 {
        self.max_weight - self.canary_weight
    }
}

/// A JSON patch (RFC 6902): the operations, in order.
pub type JsonPatch = Vec<Value>;

/// What the controller asks of a router. Everything is decided from the objects as read; the
/// controller does the reading and the writing.
pub trait TrafficRouter: Send + Sync {
    /// The objects the router reads and patches.
    fn targets(&self) -> Vec<Target>;
    /// The patch that brings `current` (one of [`targets`](Self::targets), as read) to
    /// `desired`; None when it is there already. An error names what is wrong with the object.
    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error>;
    /// The canary weight `current` carries: Some when every route the router manages sends that
    /// weight to the canary and the rest to stable, None when they disagree (or, for a router
    /// whose weight lives in an object it generates, always: see
    /// [`weight_in_targets`](Self::weight_in_targets)).
    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error>;
    /// Whether [`canary_weight`](Self::canary_weight) reads the weight from the targets, so that
    /// the controller can verify a weight by reading them back. False for routers whose weight
    /// lives in an object they generate whole (nginx's canary Ingress, SMI's TrafficSplit).
    fn weight_in_targets(&self) -> bool {
        true
    }
    /// Objects the router generates whole from `current` (one of [`targets`](Self::targets), as
    /// read), such as nginx's canary Ingress: the controller applies each one as it is and makes
    /// the Rollout its owner. Most routers generate nothing.
    fn generated(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Vec<Generated>, Error> {
        let _ = (target, current, desired);
        Ok(Vec::new())
    }
}

/// An object a router generates whole.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// Where it lives.
    pub target: Target,
    /// The whole object, as it is to be.
    pub object: Value,
}

/// A router of any kind, as the controller holds it.
pub type BoxedRouter = Box<dyn TrafficRouter>;

/// Errors of the routers: each names the object and what a person must fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The router's object (VirtualService, HTTPRoute ...) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A route the Rollout names is not in the object.
    #[error("{object}: route {route} not found")]
    RouteNotFound {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The route's name.
        route: String,
    },
    /// A route to split lacks the canary or the stable Service.
    #[error("{object}: {route} has no destination for Service {service}")]
    DestinationMissing {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// Which route.
        route: String,
        /// The Service it lacks.
        service: String,
    },
    /// A route to split sends traffic elsewhere too: its weight cannot be decided.
    #[error(
        "{object}: {route} sends traffic to {destination}, which is neither the canary Service {canary} nor the stable Service {stable}"
    )]
    UnknownDestination {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// Which route.
        route: String,
        /// The destination naming neither Service.
        destination: String,
        /// The canary Service.
        canary: String,
        /// The stable Service.
        stable: String,
    },
    /// The object is not shaped as the router needs (no routes, several routes and none named).
    #[error("{object}: {message}")]
    Malformed {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// The Rollout's routing configuration cannot be used.
    #[error("{0}")]
    Config(String),
}

/// Appends to `ops` the operation that sets the integer at `path` to `want`, unless it is there.
/// `add` sets a member whether or not it exists, so an omitted weight is written too.
pub(crate) fn set_weight(ops: &mut JsonPatch, path: String, current: Option<&Value>, want: i32) {
    if current.and_then(Value::as_i64) != Some(i64::from(want)) {
        ops.push(json!({"op": "add", "path": path, "value": want}));
    }
}

/// The canary weight that every split, read as (canary, stable) weights, carries: Some when they
/// all send the same weight to the canary and the rest of `max_weight` to stable, None when any
/// disagrees (or there is no split).
pub(crate) fn agreed_weight(splits: impl IntoIterator<Item = (i64, i64)>, max_weight: i32) -> Option<i32> {
    let mut seen = None;
    for (canary, stable) in splits {
        let canary = i32::try_from(canary).ok().filter(|_| canary + stable == i64::from(max_weight))?;
        if seen.is_some_and(|s| s != canary) {
            return None;
        }
        seen = Some(canary);
    }
    seen
}

/// The operations, guarded by the object's resourceVersion (see the crate docs), or None when
/// there are none. Every router's patch goes through it, those of other crates too.
pub fn guarded(current: &Value, ops: JsonPatch) -> Option<JsonPatch> {
    if ops.is_empty() {
        return None;
    }
    let mut patch = Vec::with_capacity(ops.len() + 1);
    if let Some(rv) = current.pointer("/metadata/resourceVersion") {
        patch.push(json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}));
    }
    patch.extend(ops);
    Some(patch)
}

/// Namespace and name of an object named `name` or, as Argo allows, `name.namespace`.
pub(crate) fn split_name(name: &str, namespace: &str) -> (String, String) {
    match name.split_once('.') {
        Some((name, ns)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), name.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use serde_json::Value;

    use crate::Desired;

    /// The weights wanted between the Services `web-canary` and `web-stable`, out of 100.
    pub fn desired(canary_weight: i32) -> Desired {
        Desired {
            canary_service: "web-canary".into(),
            stable_service: "web-stable".into(),
            canary_weight,
            max_weight: 100,
            canary_hash: Some("canary-hash".into()),
            stable_hash: Some("stable-hash".into()),
            managed_route_names: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// The weights wanted between the pingPong Services `web-ping` and `web-pong`, out of 100,
    /// with `stable` the stable one: the Services in their roles, as core hands them over.
    pub fn ping_pong(stable: stepwise_api::PingPong, canary_weight: i32) -> Desired {
        let (canary, stable) = match stable {
            stepwise_api::PingPong::Ping => ("web-pong", "web-ping"),
            stepwise_api::PingPong::Pong => ("web-ping", "web-pong"),
        };
        Desired { canary_service: canary.into(), stable_service: stable.into(), ..desired(canary_weight) }
    }

    /// `patch` applied to `object`, as the API server would (only the operations routers emit).
    pub fn apply(object: &Value, patch: &[Value]) -> Value {
        let mut out = object.clone();
        for op in patch {
            let path = op["path"].as_str().unwrap();
            let value = op["value"].clone();
            // RFC 6901: a reference token escapes `/` as `~1` and `~` as `~0`; the parent
            // stays escaped, as `pointer_mut` wants it.
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            let index = |items: &[Value], end_allowed: bool| -> usize {
                let i = if key == "-" && end_allowed { items.len() } else { key.parse::<usize>().unwrap() };
                assert!(i < items.len() || (end_allowed && i == items.len()), "{path}: index out of bounds");
                i
            };
            match op["op"].as_str().unwrap() {
                "test" => assert_eq!(out.pointer(path), Some(&value), "test of {path} failed"),
                "replace" => *out.pointer_mut(path).unwrap_or_else(|| panic!("no {path} to replace")) = value,
                "add" => match out.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
                    Value::Object(map) => {
                        map.insert(key, value);
                    }
                    Value::Array(items) => {
                        let i = index(items, true);
                        items.insert(i, value);
                    }
                    _ => panic!("cannot add {path}"),
                },
                "remove" => match out.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
                    Value::Object(map) => {
                        map.remove(&key).unwrap_or_else(|| panic!("no {path} to remove"));
                    }
                    Value::Array(items) => {
                        let i = index(items, false);
                        items.remove(i);
                    }
                    _ => panic!("cannot remove {path}"),
                },
                other => panic!("unexpected op {other}"),
            }
        }
        out
    }

    /// The object with its weights taken out, to check that nothing else changed.
    pub fn without_weights(object: &Value) -> Value {
        match object {
            Value::Object(map) => Value::Object(
                map.iter().filter(|(k, _)| *k != "weight").map(|(k, v)| (k.clone(), without_weights(v))).collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(without_weights).collect()),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(yaml: &str) -> TrafficRouting {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn routers(yaml: &str, out_of_process: &[&str]) -> Result<Vec<BoxedRouter>, Error> {
        let mut registry = Routers::default();
        registry.register_out_of_process(out_of_process.iter().map(|n| n.to_string())).unwrap();
        registry.build(&routing(yaml), "app", "ns")
    }

    #[test]
    fn the_argo_gateway_api_plugin_is_driven_by_the_built_in_router() {
        let built = routers("plugins:\n  argoproj-labs/gatewayAPI: {httpRoute: web, namespace: edge}\n", &[]).unwrap();
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].targets()[0].to_string(), "HTTPRoute edge/web");
        let err = routers("plugins:\n  argoproj-labs/gatewayAPI: {}\n", &[]).err().unwrap();
        assert_eq!(
            err.to_string(),
            "trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"] must name an httpRoute, httpRoutes, grpcRoute, grpcRoutes, tcpRoute or tcpRoutes"
        );
    }

    #[test]
    fn a_router_plugin_not_registered_is_an_error_saying_how_to_register_it() {
        let err = routers("plugins:\n  example.com/other: {}\n", &[]).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the router plugin example.com/other is not registered with this controller: start it with --router-plugin example.com/other=URL, the URL where the plugin serves stepwise.dev/plugins/v1 (docs/plugins.md)"
        );
    }

    #[test]
    fn a_registered_router_plugin_is_not_a_built_in_router_and_is_left_to_the_controller() {
        let built = routers("plugins:\n  example.com/file: {path: /tmp/x}\n", &["example.com/file"]);
        assert!(built.unwrap().is_empty());
        let both = routers(
            "plugins:\n  example.com/file: {}\n  argoproj-labs/gatewayAPI: {httpRoute: web}\n",
            &["example.com/file"],
        )
        .unwrap();
        let targets: Vec<String> = both.iter().flat_map(|r| r.targets()).map(|t| t.to_string()).collect();
        assert_eq!(targets, ["HTTPRoute ns/web"], "the Gateway API router alone");
    }

    #[test]
    fn a_plugin_over_http_under_a_built_in_form_s_name_replaces_that_form() {
        let built = routers("plugins:\n  argoproj-labs/gatewayAPI: {httpRoute: web}\n", &["argoproj-labs/gatewayAPI"]);
        assert!(built.unwrap().is_empty(), "the controller calls the plugin instead");
        let mut registry = Routers::default();
        registry.register_out_of_process(["argoproj-labs/gatewayAPI".to_string()]).unwrap();
        assert_eq!(registry.kinds(|r| r.ping_pong).iter().filter(|k| k.contains("gatewayAPI")).count(), 2);
    }

    fn example_entry(kind: &'static str) -> RouterEntry {
        RouterEntry {
            kind,
            header_routes: false,
            mirror_routes: false,
            ping_pong: false,
            build: |routing, _, _| {
                routing.plugins.as_ref()?.get("example.dev/fake")?;
                Some(Ok(Box::new(fake::FakeRouter::default()) as BoxedRouter))
            },
        }
    }

    #[test]
    fn a_router_registered_at_start_is_built_from_its_plugins_entry_and_has_only_the_abilities_it_declares() {
        let mut registry = Routers::default();
        registry.register(example_entry("plugins.example.dev/fake")).unwrap();
        assert!(registry.kinds(|_| true).contains("plugins.example.dev/fake"));
        assert!(!registry.kinds(|r| r.header_routes).contains("plugins.example.dev/fake"));
        let built = registry.build(&routing("plugins:\n  example.dev/fake: {}\n"), "app", "ns").unwrap();
        assert_eq!(built.len(), 1);
    }

    #[test]
    fn a_router_registered_at_start_lives_under_plugins_and_only_once() {
        let mut registry = Routers::default();
        let err = registry.register(example_entry("fake")).unwrap_err();
        assert!(err.to_string().contains("its kind must be plugins.<name>, not fake"), "{err}");
        registry.register(example_entry("plugins.example.dev/fake")).unwrap();
        let twice = registry.register(example_entry("plugins.example.dev/fake")).unwrap_err();
        assert_eq!(twice.to_string(), "two routers are registered as plugins.example.dev/fake");
        let also_over_http = registry.register_out_of_process(["example.dev/fake".to_string()]).unwrap_err();
        assert_eq!(also_over_http, twice);
    }

    #[test]
    fn a_name_with_a_dot_names_the_namespace_too() {
        assert_eq!(split_name("web.edge", "ns"), ("edge".into(), "web".into()));
        assert_eq!(split_name("web", "ns"), ("ns".into(), "web".into()));
    }
}
