//! Gateway API: the weights of an HTTPRoute's backendRefs.
//!
//! The rules split are those whose backendRefs name both the canary and the stable Service; each
//! must name nothing else (a third backend would get a share nobody decided). Rules that do not
//! name both, and every other field (matches, filters, timeouts, ports), are never written; an
//! HTTPRoute with no rule to split is an error.
//!
//! Argo users configure Gateway API through the `argoproj-labs/gatewayAPI` plugin; its fields
//! (`httpRoute`, `httpRoutes` as names or `{name}` objects, `namespace`) are read by
//! [`from_plugin_config`] and drive this same router.

use serde_json::Value;
use stepwise_api::GatewayApiTrafficRouting;

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, guarded, set_weight};

/// The name Argo's Gateway API plugin has under `trafficRouting.plugins`.
pub const PLUGIN_NAME: &str = "argoproj-labs/gatewayAPI";
/// The plugin as core names routers.
pub const PLUGIN_KIND: &str = "plugins.argoproj-labs/gatewayAPI";

/// The Gateway API router of one Rollout: its HTTPRoutes.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayApi {
    routes: Vec<Target>,
}

/// The HTTPRoute `name` in `namespace`.
pub fn http_route(name: &str, namespace: &str) -> Target {
    Target {
        group: "gateway.networking.k8s.io",
        version: "v1",
        kind: "HTTPRoute",
        plural: "httproutes",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl GatewayApi {
    /// The router for `config` in a Rollout of `namespace`.
    pub fn new(config: &GatewayApiTrafficRouting, namespace: &str) -> Result<GatewayApi, Error> {
        let namespace = config.namespace.as_deref().unwrap_or(namespace);
        let routes: Vec<Target> = config
            .http_route
            .iter()
            .chain(config.http_routes.iter().flatten())
            .map(|name| http_route(name, namespace))
            .collect();
        if routes.is_empty() {
            return Err(Error::Config("trafficRouting.gatewayAPI must name an httpRoute or httpRoutes".into()));
        }
        Ok(GatewayApi { routes })
    }
}

/// The configuration of Argo's Gateway API plugin, as the built-in router's.
pub fn from_plugin_config(config: &Value) -> Result<GatewayApiTrafficRouting, Error> {
    let field = |name: &str| format!("trafficRouting.plugins[\"{PLUGIN_NAME}\"].{name}");
    let string = |v: &Value, name: &str| {
        v.as_str().map(str::to_string).ok_or_else(|| Error::Config(format!("{} must be a string", field(name))))
    };
    let http_route = config.get("httpRoute").map(|v| string(v, "httpRoute")).transpose()?;
    let http_routes = match config.get("httpRoutes") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    Value::String(name) => Ok(name.clone()),
                    other => string(other.get("name").unwrap_or(&Value::Null), "httpRoutes[].name"),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(Error::Config(format!("{} must be a list", field("httpRoutes")))),
    };
    let namespace = config.get("namespace").map(|v| string(v, "namespace")).transpose()?;
    Ok(GatewayApiTrafficRouting { http_route, http_routes, namespace })
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

fn splits(target: &Target, route: &Value, desired: &Desired) -> Result<Vec<Split>, Error> {
    let object = target.to_string();
    let rules = route.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
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

impl TrafficRouter for GatewayApi {
    fn kind(&self) -> &'static str {
        "gatewayAPI"
    }

    fn targets(&self) -> Vec<Target> {
        self.routes.clone()
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let mut ops = Vec::new();
        for split in splits(target, current, desired)? {
            for (j, want) in [(split.canary, desired.canary_weight), (split.stable, desired.stable_weight())] {
                let path = format!("/spec/rules/{}/backendRefs/{j}/weight", split.rule);
                set_weight(&mut ops, path, weight_at(current, split.rule, j), want);
            }
        }
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let mut seen = None;
        for split in splits(target, current, desired)? {
            // Gateway API's default weight is 1.
            let read = |j| weight_at(current, split.rule, j).and_then(Value::as_i64).unwrap_or(1);
            let (canary, stable) = (read(split.canary), read(split.stable));
            let consistent = canary + stable == i64::from(desired.max_weight);
            match (seen, i32::try_from(canary).ok().filter(|_| consistent)) {
                (_, None) => return Ok(None),
                (Some(s), Some(c)) if s != c => return Ok(None),
                (_, c) => seen = c,
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
}
