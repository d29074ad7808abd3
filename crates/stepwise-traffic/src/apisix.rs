//! Apache APISIX: the weights of the canary and stable backends of an ApisixRoute's HTTP rules
//! (`apisix.apache.org/v2`).
//!
//! Which rules: those `route.rules` names, in `spec.http` by `name`. Without `rules`, the
//! ApisixRoute's only HTTP rule or, as Argo Rollouts does, the rule named as the ApisixRoute.
//! Each must have a backend for the canary Service and one for the stable Service, and nothing
//! else: another backend or an ApisixUpstream in `upstreams` would get a share nobody decided.
//! Only the two backends' `weight`s are written (an omitted weight is APISIX's default of 100);
//! matches, plugins, timeouts, ports and the other rules stay as the user wrote them. The
//! ApisixRoute is in the Rollout's namespace, as in Argo (a name may contain dots).

use serde_json::Value;
use stepwise_api::ApisixTrafficRouting;

use crate::{Desired, Error, JsonPatch, Target, TrafficRouter, agreed_weight, guarded, set_weight};

/// The weight APISIX's ingress controller gives a backend that states none.
const DEFAULT_WEIGHT: i64 = 100;

/// The APISIX router of one Rollout: its ApisixRoute and the HTTP rules to split.
#[derive(Clone, Debug, PartialEq)]
pub struct Apisix {
    route: Target,
    rules: Option<Vec<String>>,
}

/// The ApisixRoute `name` in `namespace`.
pub fn apisix_route(name: &str, namespace: &str) -> Target {
    Target {
        group: "apisix.apache.org",
        version: "v2",
        kind: "ApisixRoute",
        plural: "apisixroutes",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl Apisix {
    /// The router for `config` in a Rollout of `namespace`.
    pub fn new(config: &ApisixTrafficRouting, namespace: &str) -> Result<Apisix, Error> {
        let Some(route) = config.route.as_ref().filter(|r| !r.name.is_empty()) else {
            return Err(Error::Config("trafficRouting.apisix.route.name must name an ApisixRoute".into()));
        };
        let rules = route.rules.clone().filter(|r| !r.is_empty());
        Ok(Apisix { route: apisix_route(&route.name, namespace), rules })
    }
}

/// One HTTP rule to split: its index in `spec.http` and where its two backends are.
struct Split {
    index: usize,
    canary: usize,
    stable: usize,
}

/// The rules to split in `route`, each checked to send traffic to both Services and nothing else.
fn splits(target: &Target, route: &Value, names: Option<&[String]>, desired: &Desired) -> Result<Vec<Split>, Error> {
    let object = target.to_string();
    let Some(http) = route.pointer("/spec/http").and_then(Value::as_array) else {
        return Err(Error::Malformed { object, message: "it has no spec.http rules to split".into() });
    };
    let named = |name: &str| http.iter().position(|r| r.get("name").and_then(Value::as_str) == Some(name));
    let chosen: Vec<usize> = match names {
        Some(names) => names
            .iter()
            .map(|name| named(name).ok_or_else(|| Error::RouteNotFound { object: object.clone(), route: name.clone() }))
            .collect::<Result<_, _>>()?,
        None if http.len() == 1 => vec![0],
        // Argo's default when no rules are named: the rule named as the ApisixRoute.
        None => match named(&target.name) {
            Some(index) => vec![index],
            None => {
                return Err(Error::Malformed {
                    object,
                    message: format!(
                        "has {} HTTP rules; name the ones to split in trafficRouting.apisix.route.rules",
                        http.len()
                    ),
                });
            }
        },
    };
    chosen
        .into_iter()
        .map(|index| {
            let rule = &http[index];
            let label = match rule.get("name").and_then(Value::as_str) {
                Some(name) => format!("HTTP rule {name}"),
                None => "its HTTP rule".to_string(),
            };
            let unknown = |destination: String| Error::UnknownDestination {
                object: object.clone(),
                route: label.clone(),
                destination,
                canary: desired.canary_service.clone(),
                stable: desired.stable_service.clone(),
            };
            let upstreams = rule.get("upstreams").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            if let Some(upstream) = upstreams.first() {
                let name = upstream.get("name").and_then(Value::as_str).unwrap_or_default();
                return Err(unknown(format!("ApisixUpstream {name}")));
            }
            let backends = rule.get("backends").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let (mut canary, mut stable) = (None, None);
            for (j, backend) in backends.iter().enumerate() {
                let service = backend.get("serviceName").and_then(Value::as_str).unwrap_or_default();
                let slot = match service {
                    s if s == desired.canary_service => &mut canary,
                    s if s == desired.stable_service => &mut stable,
                    other => return Err(unknown(other.to_string())),
                };
                // Two backends of one Service (two subsets, two ports): which of them gets the
                // Service's share is not for stepwise to guess.
                if slot.replace(j).is_some() {
                    return Err(Error::Malformed {
                        object: object.clone(),
                        message: format!("{label} has more than one backend for Service {service}"),
                    });
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

fn weight_at(route: &Value, rule: usize, backend: usize) -> Option<&Value> {
    route.pointer(&format!("/spec/http/{rule}/backends/{backend}/weight"))
}

impl TrafficRouter for Apisix {
    fn targets(&self) -> Vec<Target> {
        vec![self.route.clone()]
    }

    fn patch(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let mut ops = Vec::new();
        for split in splits(target, current, self.rules.as_deref(), desired)? {
            for (j, want) in [(split.canary, desired.canary_weight), (split.stable, desired.stable_weight())] {
                let path = format!("/spec/http/{}/backends/{j}/weight", split.index);
                set_weight(&mut ops, path, weight_at(current, split.index, j), want);
            }
        }
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let splits = splits(target, current, self.rules.as_deref(), desired)?;
        let weights = splits.iter().map(|split| {
            let read = |j| weight_at(current, split.index, j).and_then(Value::as_i64).unwrap_or(DEFAULT_WEIGHT);
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

    fn router(yaml: &str) -> Apisix {
        Apisix::new(&serde_yaml::from_str(yaml).unwrap(), "shop").unwrap()
    }

    fn target() -> Target {
        apisix_route("web", "shop")
    }

    /// An ApisixRoute as users write them: a header rule to a preview Service with a plugin, the
    /// rule to split with a timeout, ports and a plugin, and an admin rule to another Service.
    fn apisix_route_object() -> Value {
        json!({
            "apiVersion": "apisix.apache.org/v2",
            "kind": "ApisixRoute",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {
                "ingressClassName": "apisix",
                "http": [
                    {"name": "preview",
                     "match": {"paths": ["/*"], "exprs": [{"subject": {"scope": "Header", "name": "x-preview"}, "op": "Equal", "value": "1"}]},
                     "backends": [{"serviceName": "preview", "servicePort": 80}]},
                    {"name": "primary", "priority": 1, "timeout": {"read": "10s"},
                     "match": {"hosts": ["web.example.com"], "paths": ["/*"]},
                     "plugins": [{"name": "proxy-rewrite", "enable": true, "config": {"regex_uri": ["^/api/(.*)", "/$1"]}}],
                     "backends": [
                        {"serviceName": "web-stable", "servicePort": 80, "weight": 100, "resolveGranularity": "service"},
                        {"serviceName": "web-canary", "servicePort": "http", "weight": 0}
                     ]},
                    {"name": "admin", "match": {"paths": ["/admin/*"]},
                     "backends": [{"serviceName": "admin", "servicePort": 80}]}
                ]
            }
        })
    }

    #[test]
    fn a_weight_changes_only_the_two_backend_weights_guarded_by_the_resource_version() {
        let current = apisix_route_object();
        let r = router("route: {name: web, rules: [primary]}\n");
        let patch = r.patch(&target(), &current, &desired(30)).unwrap().unwrap();
        assert_eq!(
            patch,
            vec![
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}),
                json!({"op": "add", "path": "/spec/http/1/backends/1/weight", "value": 30}),
                json!({"op": "add", "path": "/spec/http/1/backends/0/weight", "value": 70}),
            ]
        );
        let after = apply(&current, &patch);
        assert_eq!(without_weights(&after), without_weights(&current), "nothing but weights changes");
        assert_eq!(r.canary_weight(&target(), &after, &desired(30)).unwrap(), Some(30));
        assert_eq!(r.patch(&target(), &after, &desired(30)).unwrap(), None, "and then nothing to do");
    }

    #[test]
    fn without_rules_the_only_http_rule_is_split() {
        let mut current = apisix_route_object();
        let primary = current["spec"]["http"][1].clone();
        current["spec"]["http"] = json!([primary]);
        let r = router("route: {name: web}\n");
        let after = apply(&current, &r.patch(&target(), &current, &desired(40)).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][0]["backends"][1]["weight"], 40);
        assert_eq!(after["spec"]["http"][0]["backends"][0]["weight"], 60);
        assert_eq!(r.canary_weight(&target(), &after, &desired(40)).unwrap(), Some(40));
    }

    #[test]
    fn without_rules_the_rule_named_as_the_apisix_route_is_split_as_in_argo() {
        let mut current = apisix_route_object();
        current["spec"]["http"][1]["name"] = json!("web");
        let r = router("route: {name: web, rules: []}\n");
        let after = apply(&current, &r.patch(&target(), &current, &desired(10)).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][1]["backends"][1]["weight"], 10);
    }

    #[test]
    fn without_rules_several_http_rules_are_an_error_asking_to_name_them() {
        let err = router("route: {name: web}\n").patch(&target(), &apisix_route_object(), &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ApisixRoute shop/web: has 3 HTTP rules; name the ones to split in trafficRouting.apisix.route.rules"
        );
    }

    #[test]
    fn omitted_weights_count_as_apisixs_default_of_100_and_are_written() {
        let mut current = apisix_route_object();
        for b in current["spec"]["http"][1]["backends"].as_array_mut().unwrap() {
            b.as_object_mut().unwrap().remove("weight");
        }
        let r = router("route: {name: web, rules: [primary]}\n");
        assert_eq!(r.canary_weight(&target(), &current, &desired(0)).unwrap(), None, "100 / 100 is no split of 100");
        let after = apply(&current, &r.patch(&target(), &current, &desired(0)).unwrap().unwrap());
        assert_eq!(after["spec"]["http"][1]["backends"][1]["weight"], 0);
        assert_eq!(after["spec"]["http"][1]["backends"][0]["weight"], 100);
    }

    #[test]
    fn a_rule_the_rollout_names_that_is_absent_is_an_error_naming_it() {
        let r = router("route: {name: web, rules: [primary, secondary]}\n");
        let err = r.patch(&target(), &apisix_route_object(), &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "ApisixRoute shop/web: route secondary not found");
        let err = r.patch(&target(), &json!({"spec": {"stream": []}}), &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "ApisixRoute shop/web: it has no spec.http rules to split");
    }

    #[test]
    fn a_rule_lacking_the_canary_or_stable_backend_is_an_error_naming_the_service() {
        let mut current = apisix_route_object();
        current["spec"]["http"][1]["backends"].as_array_mut().unwrap().pop();
        let r = router("route: {name: web, rules: [primary]}\n");
        let err = r.patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ApisixRoute shop/web: HTTP rule primary has no destination for Service web-canary"
        );
    }

    #[test]
    fn a_rule_naming_a_third_service_or_an_upstream_is_an_error_rather_than_a_guess() {
        let r = router("route: {name: web, rules: [primary]}\n");
        let mut current = apisix_route_object();
        current["spec"]["http"][1]["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({"serviceName": "legacy", "servicePort": 80, "weight": 5}));
        let err = r.patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ApisixRoute shop/web: HTTP rule primary sends traffic to legacy, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
        let mut current = apisix_route_object();
        current["spec"]["http"][1]["upstreams"] = json!([{"name": "external", "weight": 10}]);
        let err = r.patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ApisixRoute shop/web: HTTP rule primary sends traffic to ApisixUpstream external, which is neither the canary Service web-canary nor the stable Service web-stable"
        );
    }

    #[test]
    fn two_backends_of_one_service_are_an_error() {
        let mut current = apisix_route_object();
        current["spec"]["http"][1]["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({"serviceName": "web-stable", "servicePort": 8080, "subset": "v2"}));
        let r = router("route: {name: web, rules: [primary]}\n");
        let err = r.patch(&target(), &current, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ApisixRoute shop/web: HTTP rule primary has more than one backend for Service web-stable"
        );
    }

    #[test]
    fn several_rules_are_split_alike_and_disagreeing_weights_read_as_none() {
        let mut current = apisix_route_object();
        current["spec"]["http"][0]["backends"] = current["spec"]["http"][1]["backends"].clone();
        let r = router("route: {name: web, rules: [preview, primary]}\n");
        let after = apply(&current, &r.patch(&target(), &current, &desired(25)).unwrap().unwrap());
        assert_eq!(r.canary_weight(&target(), &after, &desired(25)).unwrap(), Some(25));
        let mut disagreeing = after.clone();
        disagreeing["spec"]["http"][0]["backends"][1]["weight"] = json!(50);
        disagreeing["spec"]["http"][0]["backends"][0]["weight"] = json!(50);
        assert_eq!(r.canary_weight(&target(), &disagreeing, &desired(25)).unwrap(), None);
    }

    #[test]
    fn a_route_must_be_named() {
        let err = Apisix::new(&ApisixTrafficRouting::default(), "shop").unwrap_err();
        assert_eq!(err.to_string(), "trafficRouting.apisix.route.name must name an ApisixRoute");
        assert_eq!(router("route: {name: web.v1}\n").targets()[0].to_string(), "ApisixRoute shop/web.v1");
    }
}
