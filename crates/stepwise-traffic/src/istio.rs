//! Istio, host-level splitting: the canary and stable Services are two destinations of the
//! VirtualService's HTTP routes, and the router sets their weights.
//!
//! Which routes: those `routes` names, or, when it names none, the VirtualService's only HTTP
//! route. Each must send traffic to both Services and to nothing else (a third destination
//! would get a share nobody decided). A destination's Service is its `host` up to the first dot,
//! so `web-canary`, `web-canary.shop` and `web-canary.shop.svc.cluster.local` all name
//! `web-canary`, as in Argo. Other routes, and every other field of the routes split (retries,
//! timeouts, matches, headers), are never written.

use serde_json::Value;
use stepwise_api::{IstioTrafficRouting, IstioVirtualService};

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, guarded, set_weight, split_name};

/// The Istio router of one Rollout: its VirtualServices and the routes to split in each.
#[derive(Clone, Debug, PartialEq)]
pub struct Istio {
    services: Vec<(Target, Option<Vec<String>>)>,
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

impl Istio {
    /// The router for `config` in a Rollout of `namespace`.
    pub fn new(config: &IstioTrafficRouting, namespace: &str) -> Result<Istio, Error> {
        if config.destination_rule.is_some() {
            return Err(Error::Config(
                "trafficRouting.istio.destinationRule: subset-level splitting is not available in this build of stepwise"
                    .into(),
            ));
        }
        let named: Vec<&IstioVirtualService> =
            config.virtual_service.iter().chain(config.virtual_services.iter().flatten()).collect();
        if named.is_empty() {
            return Err(Error::Config("trafficRouting.istio must name a virtualService or virtualServices".into()));
        }
        let services = named.into_iter().map(|vs| (virtual_service(&vs.name, namespace), vs.routes.clone())).collect();
        Ok(Istio { services })
    }

    fn routes_of(&self, target: &Target) -> Option<&[String]> {
        self.services.iter().find(|(t, _)| t == target).and_then(|(_, routes)| routes.as_deref())
    }
}

/// One HTTP route to split: its index and where its canary and stable destinations are.
struct Split {
    index: usize,
    canary: usize,
    stable: usize,
}

/// The Service a destination host names: the host up to its first dot.
fn service_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The routes to split in `vs`, each checked to hold both Services and nothing else.
fn splits(target: &Target, vs: &Value, names: Option<&[String]>, desired: &Desired) -> Result<Vec<Split>, Error> {
    let object = target.to_string();
    let http = vs.pointer("/spec/http").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let chosen: Vec<(usize, String)> = match names.filter(|n| !n.is_empty()) {
        Some(names) => names
            .iter()
            .map(|name| {
                http.iter()
                    .position(|r| r.get("name").and_then(Value::as_str) == Some(name.as_str()))
                    .map(|i| (i, format!("HTTP route {name}")))
                    .ok_or_else(|| Error::RouteNotFound { object: object.clone(), route: name.clone() })
            })
            .collect::<Result<_, _>>()?,
        None if http.len() == 1 => {
            let label = match http[0].get("name").and_then(Value::as_str) {
                Some(name) => format!("HTTP route {name}"),
                None => "its HTTP route".to_string(),
            };
            vec![(0, label)]
        }
        None => {
            return Err(Error::Malformed {
                object,
                message: format!(
                    "has {} HTTP routes; name the ones to split in trafficRouting.istio.virtualService.routes",
                    http.len()
                ),
            });
        }
    };
    chosen
        .into_iter()
        .map(|(index, label)| {
            let destinations =
                http[index].get("route").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let (mut canary, mut stable) = (None, None);
            for (j, d) in destinations.iter().enumerate() {
                let host = d.pointer("/destination/host").and_then(Value::as_str).unwrap_or_default();
                match service_of(host) {
                    s if s == desired.canary_service => canary = Some(j),
                    s if s == desired.stable_service => stable = Some(j),
                    _ => {
                        return Err(Error::UnknownDestination {
                            object: object.clone(),
                            route: label.clone(),
                            destination: host.to_string(),
                            canary: desired.canary_service.clone(),
                            stable: desired.stable_service.clone(),
                        });
                    }
                }
            }
            let missing = |service: &str| Error::DestinationMissing {
                object: object.clone(),
                route: label.clone(),
                service: service.to_string(),
            };
            let canary = canary.ok_or_else(|| missing(&desired.canary_service))?;
            let stable = stable.ok_or_else(|| missing(&desired.stable_service))?;
            Ok(Split { index, canary, stable })
        })
        .collect()
}

fn weight_at(vs: &Value, route: usize, destination: usize) -> Option<&Value> {
    vs.pointer(&format!("/spec/http/{route}/route/{destination}/weight"))
}

impl TrafficRouter for Istio {
    fn kind(&self) -> &'static str {
        "istio"
    }

    fn targets(&self) -> Vec<Target> {
        self.services.iter().map(|(t, _)| t.clone()).collect()
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let mut ops = Vec::new();
        for split in splits(target, current, self.routes_of(target), desired)? {
            for (j, want) in [(split.canary, desired.canary_weight), (split.stable, desired.stable_weight())] {
                let path = format!("/spec/http/{}/route/{j}/weight", split.index);
                set_weight(&mut ops, path, weight_at(current, split.index, j), want);
            }
        }
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let mut seen = None;
        for split in splits(target, current, self.routes_of(target), desired)? {
            let read = |j| weight_at(current, split.index, j).and_then(Value::as_i64).unwrap_or(0);
            let (canary, stable) = (read(split.canary), read(split.stable));
            let canary = i32::try_from(canary).ok().filter(|c| i64::from(desired.max_weight) - i64::from(*c) == stable);
            match (seen, canary) {
                (_, None) => return Ok(None),
                (None, Some(c)) => seen = Some(c),
                (Some(s), Some(c)) if s != c => return Ok(None),
                _ => {}
            }
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    #[test]
    fn subset_level_splitting_is_refused_until_it_is_built() {
        let config = serde_yaml::from_str(
            "virtualService: {name: web}\ndestinationRule: {name: web, canarySubsetName: c, stableSubsetName: s}\n",
        )
        .unwrap();
        assert!(matches!(Istio::new(&config, "shop"), Err(Error::Config(_))));
    }
}
