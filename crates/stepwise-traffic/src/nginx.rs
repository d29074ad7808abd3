//! NGINX Ingress: a canary Ingress beside each stable one, with nginx's canary annotations.
//!
//! For each stable Ingress the Rollout names, stepwise generates `<rollout>-<ingress>-canary`: the
//! stable Ingress's rules whose paths go to the stable Service, sent to the canary Service
//! instead, its TLS and ingress class, and the annotations `<prefix>/canary: "true"` and
//! `<prefix>/canary-weight: "<W>"` (and `canary-weight-total` when `maxTrafficWeight` is not 100).
//! nginx then sends W of the requests for those hosts and paths to the canary. The stable Ingress
//! is only read, never written. The canary Ingress is owned by the Rollout; at weight 0 it stays,
//! sending nothing, as in Argo Rollouts.
//!
//! A header route (`setHeaderRoute`) becomes `<prefix>/canary-by-header` with
//! `canary-by-header-value` (exact) or `canary-by-header-pattern` (regex; a prefix becomes
//! `^<escaped prefix>.*`), which nginx weighs before the weight. nginx has one such header per
//! canary Ingress, so only one header route with one condition can be expressed; more is an
//! error rather than a route half made. nginx cannot mirror. The canary Ingress is applied whole,
//! so a route no longer wanted goes with the annotations left out.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use stepwise_api::{HeaderRoutingMatch, NginxTrafficRouting};

use crate::gateway_api::escape_regex;
use crate::{Desired, Error, Generated, JsonPatch, RouteRequest, Target, TrafficRouter, split_name};

/// nginx's annotations, unless `annotationPrefix` says otherwise.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// The nginx router of one Rollout: its stable Ingresses and how to annotate the canary ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Nginx {
    rollout: String,
    stable: Vec<Target>,
    prefix: String,
    additional: BTreeMap<String, String>,
    canary_annotations: BTreeMap<String, String>,
}

/// The Ingress `name` in `namespace`.
pub fn ingress(name: &str, namespace: &str) -> Target {
    Target {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        plural: "ingresses",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The name of the canary Ingress of `stable` for `rollout`: at most 253 characters, as a name
/// must be, the rollout's name shortened first.
pub fn canary_ingress_name(rollout: &str, stable: &str) -> String {
    let suffix = format!("-{stable}-canary");
    let room = 253usize.saturating_sub(suffix.len());
    let prefix: String = rollout.chars().take(room).collect();
    format!("{prefix}{suffix}")
}

impl Nginx {
    /// The router for `config` in the Rollout `rollout` of `namespace`.
    pub fn new(config: &NginxTrafficRouting, rollout: &str, namespace: &str) -> Result<Nginx, Error> {
        let stable: Vec<Target> = config
            .stable_ingress
            .iter()
            .chain(config.stable_ingresses.iter().flatten())
            .map(|name| {
                let (ns, name) = split_name(name, namespace);
                ingress(&name, &ns)
            })
            .collect();
        if stable.is_empty() {
            return Err(Error::Config("trafficRouting.nginx must name a stableIngress or stableIngresses".into()));
        }
        let prefix = config.annotation_prefix.clone().unwrap_or_else(|| DEFAULT_ANNOTATION_PREFIX.into());
        // Argo prefixes the keys of additionalIngressAnnotations that lack it (`canary-by-header`).
        let additional = config
            .additional_ingress_annotations
            .iter()
            .flatten()
            .map(|(k, v)| (if k.contains('/') { k.clone() } else { format!("{prefix}/{k}") }, v.clone()))
            .collect();
        let canary_annotations = config.canary_ingress_annotations.clone().unwrap_or_default();
        Ok(Nginx { rollout: rollout.to_string(), stable, prefix, additional, canary_annotations })
    }

    /// The annotations of a canary Ingress at `desired`: the additional ones, then the user's
    /// canary ones, then the canary annotations that make nginx split and route by header (never
    /// overridden).
    fn annotations(&self, stable: &Value, desired: &Desired) -> Result<Map<String, Value>, Error> {
        let mut out = Map::new();
        if let Some(class) = stable.pointer("/metadata/annotations/kubernetes.io~1ingress.class") {
            out.insert("kubernetes.io/ingress.class".into(), class.clone());
        }
        for (k, v) in self.additional.iter().chain(&self.canary_annotations) {
            out.insert(k.clone(), json!(v));
        }
        out.insert(format!("{}/canary", self.prefix), json!("true"));
        out.insert(format!("{}/canary-weight", self.prefix), json!(desired.canary_weight.to_string()));
        if desired.max_weight != 100 {
            out.insert(format!("{}/canary-weight-total", self.prefix), json!(desired.max_weight.to_string()));
        }
        if let Some(condition) = header_route(desired)? {
            // A value or pattern the user's annotations set would narrow or, for a value, override
            // the step's condition: the step's header route replaces all three.
            for key in ["canary-by-header", "canary-by-header-value", "canary-by-header-pattern"] {
                out.remove(&format!("{}/{key}", self.prefix));
            }
            out.insert(format!("{}/canary-by-header", self.prefix), json!(condition.header_name));
            let value = &condition.header_value;
            let (key, text) = match (&value.exact, &value.prefix, &value.regex) {
                (Some(v), None, None) => ("canary-by-header-value", v.clone()),
                (None, Some(p), None) => ("canary-by-header-pattern", format!("^{}.*", escape_regex(p))),
                (None, None, Some(r)) => ("canary-by-header-pattern", r.clone()),
                _ => {
                    return Err(Error::Config(format!(
                        "setHeaderRoute: header {} must set exactly one of exact, prefix and regex",
                        condition.header_name
                    )));
                }
            };
            out.insert(format!("{}/{key}", self.prefix), json!(text));
        }
        Ok(out)
    }
}

/// The one header condition of the header route wanted, if any; an error when `desired` asks for
/// what nginx cannot do (a mirror, several headers).
fn header_route(desired: &Desired) -> Result<Option<&HeaderRoutingMatch>, Error> {
    let mut headers = Vec::new();
    for route in &desired.routes {
        match route {
            RouteRequest::Mirror(m) if m.r#match.as_ref().is_some_and(|m| !m.is_empty()) => {
                return Err(Error::Config(format!(
                    "nginx cannot mirror requests: setMirrorRoute {} needs another router",
                    m.name
                )));
            }
            RouteRequest::Header(h) => match h.r#match.as_deref() {
                None | Some([]) => {}
                Some([one]) => headers.push((h.name.as_str(), one)),
                Some(many) => {
                    return Err(Error::Config(format!(
                        "nginx can route on one header only: setHeaderRoute {} has {} header conditions",
                        h.name,
                        many.len()
                    )));
                }
            },
            RouteRequest::Mirror(_) => {}
        }
    }
    match headers.as_slice() {
        [] => Ok(None),
        [(_, one)] => Ok(Some(*one)),
        many => {
            let names: Vec<String> = many.iter().map(|(name, _)| format!("setHeaderRoute {name}")).collect();
            Err(Error::Config(format!(
                "nginx can route on one header only: {} are wanted at once",
                names.join(" and ")
            )))
        }
    }
}

/// The stable Ingress's rules with every path to the stable Service sent to the canary Service;
/// paths to other Services and rules without one are left out.
fn canary_rules(target: &Target, stable: &Value, desired: &Desired) -> Result<Vec<Value>, Error> {
    let rules = stable.pointer("/spec/rules").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::new();
    for rule in rules {
        let paths = rule.pointer("/http/paths").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let to_canary: Vec<Value> = paths
            .iter()
            .filter(|p| p.pointer("/backend/service/name").and_then(Value::as_str) == Some(&desired.stable_service))
            .map(|p| {
                let mut p = p.clone();
                p["backend"]["service"]["name"] = json!(desired.canary_service);
                p
            })
            .collect();
        if to_canary.is_empty() {
            continue;
        }
        let mut rule = rule.clone();
        rule["http"]["paths"] = Value::Array(to_canary);
        out.push(rule);
    }
    if out.is_empty() {
        return Err(Error::Malformed {
            object: target.to_string(),
            message: format!("no rule has a path to the stable Service {}", desired.stable_service),
        });
    }
    Ok(out)
}

impl TrafficRouter for Nginx {
    fn targets(&self) -> Vec<Target> {
        self.stable.clone()
    }

    /// The stable Ingress is never written.
    fn patch(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        Ok(None)
    }

    /// The weight is carried by the canary Ingress, not by the stable one this reads: see
    /// [`canary_weight_of`].
    fn canary_weight(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<i32>, Error> {
        Ok(None)
    }

    fn weight_in_targets(&self) -> bool {
        false
    }

    fn generated(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Vec<Generated>, Error> {
        let rules = canary_rules(target, current, desired)?;
        let name = canary_ingress_name(&self.rollout, &target.name);
        let mut spec = Map::new();
        if let Some(class) = current.pointer("/spec/ingressClassName") {
            spec.insert("ingressClassName".into(), class.clone());
        }
        if let Some(tls) = current.pointer("/spec/tls") {
            spec.insert("tls".into(), tls.clone());
        }
        spec.insert("rules".into(), Value::Array(rules));
        let annotations = self.annotations(current, desired)?;
        let object = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": target.namespace, "annotations": annotations},
            "spec": spec,
        });
        Ok(vec![Generated { target: ingress(&name, &target.namespace), object }])
    }
}

/// The canary weight a canary Ingress carries, read from its annotation under `prefix`.
pub fn canary_weight_of(canary_ingress: &Value, prefix: &str) -> Option<i32> {
    let key = format!("{}~1canary-weight", prefix.replace('~', "~0").replace('/', "~1"));
    canary_ingress.pointer(&format!("/metadata/annotations/{key}")).and_then(Value::as_str).and_then(|w| w.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::desired;

    fn router(yaml: &str) -> Nginx {
        Nginx::new(&serde_yaml::from_str(yaml).unwrap(), "web", "shop").unwrap()
    }

    /// A stable Ingress as users write them: TLS, a class, a rule with an API path to the stable
    /// Service and a docs path to another, and a rule for another host only.
    fn stable_ingress() -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/rewrite-target": "/"
            }},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example.com", "http": {"paths": [
                        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                        {"path": "/docs", "pathType": "Prefix", "backend": {"service": {"name": "docs", "port": {"number": 80}}}}
                    ]}},
                    {"host": "admin.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
                    ]}}
                ]
            }
        })
    }

    fn generated(r: &Nginx, stable: &Value, d: &Desired) -> Value {
        let out = r.generated(&ingress("web", "shop"), stable, d).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].target.to_string(), "Ingress shop/web-web-canary");
        out[0].object.clone()
    }

    #[test]
    fn the_canary_ingress_sends_the_stable_services_paths_to_the_canary_with_the_weight() {
        let canary = generated(&router("stableIngress: web\n"), &stable_ingress(), &desired(20));
        assert_eq!(canary["metadata"]["name"], "web-web-canary");
        assert_eq!(
            canary["metadata"]["annotations"],
            json!({
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "20"
            }),
            "only the class is copied; the stable Ingress's other annotations are its own"
        );
        assert_eq!(canary["spec"]["ingressClassName"], "nginx");
        assert_eq!(canary["spec"]["tls"], stable_ingress()["spec"]["tls"]);
        assert_eq!(
            canary["spec"]["rules"],
            json!([{"host": "web.example.com", "http": {"paths": [
                {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}
            ]}}]),
            "only the paths to the stable Service, sent to the canary"
        );
        assert_eq!(canary_weight_of(&canary, DEFAULT_ANNOTATION_PREFIX), Some(20));
    }

    #[test]
    fn the_stable_ingress_is_never_written() {
        let r = router("stableIngress: web\n");
        assert_eq!(r.patch(&ingress("web", "shop"), &stable_ingress(), &desired(50)).unwrap(), None);
    }

    #[test]
    fn a_weight_total_other_than_100_is_annotated_and_the_prefix_and_extra_annotations_apply() {
        let r = router(
            "stableIngress: web\nannotationPrefix: custom.nginx\nadditionalIngressAnnotations: {canary-by-header: X-Canary, other.io/keep: 'yes'}\ncanaryIngressAnnotations: {other.io/keep: 'overridden', custom.nginx/canary: 'false'}\n",
        );
        let d = Desired { max_weight: 1000, ..desired(250) };
        let canary = generated(&r, &stable_ingress(), &d);
        assert_eq!(
            canary["metadata"]["annotations"],
            json!({
                "kubernetes.io/ingress.class": "nginx",
                "custom.nginx/canary-by-header": "X-Canary",
                "other.io/keep": "overridden",
                "custom.nginx/canary": "true",
                "custom.nginx/canary-weight": "250",
                "custom.nginx/canary-weight-total": "1000"
            })
        );
        assert_eq!(canary_weight_of(&canary, "custom.nginx"), Some(250));
    }

    #[test]
    fn a_stable_ingress_with_no_path_to_the_stable_service_is_an_error() {
        let mut stable = stable_ingress();
        stable["spec"]["rules"][0]["http"]["paths"].as_array_mut().unwrap().remove(0);
        let err = router("stableIngress: web\n").generated(&ingress("web", "shop"), &stable, &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "Ingress shop/web: no rule has a path to the stable Service web-stable");
    }

    #[test]
    fn several_stable_ingresses_each_get_a_canary_and_long_names_are_shortened() {
        let r = router("stableIngresses: [a, b.edge]\n");
        let names: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["Ingress shop/a", "Ingress edge/b"]);
        let long = "r".repeat(300);
        let name = canary_ingress_name(&long, "web");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-web-canary"));
        assert!(Nginx::new(&NginxTrafficRouting::default(), "web", "shop").is_err());
    }

    fn with_routes(routes: Value) -> Desired {
        Desired {
            managed_route_names: vec!["preview".into(), "beta".into()],
            routes: serde_json::from_value(routes).unwrap(),
            ..desired(20)
        }
    }

    fn annotations_for(r: &Nginx, routes: Value) -> Value {
        generated(r, &stable_ingress(), &with_routes(routes))["metadata"]["annotations"].clone()
    }

    #[test]
    fn a_header_route_annotates_the_canary_ingress_by_header_and_value() {
        let r = router("stableIngress: web\n");
        let exact = json!([{"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}]);
        assert_eq!(
            annotations_for(&r, exact),
            json!({
                "kubernetes.io/ingress.class": "nginx",
                "nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": "20",
                "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
                "nginx.ingress.kubernetes.io/canary-by-header-value": "yes"
            })
        );
        let pattern = |value: Value| {
            let routes =
                json!([{"header": {"name": "preview", "match": [{"headerName": "X-Version", "headerValue": value}]}}]);
            annotations_for(&r, routes)["nginx.ingress.kubernetes.io/canary-by-header-pattern"].clone()
        };
        assert_eq!(pattern(json!({"regex": "^v2(\\..*)?$"})), "^v2(\\..*)?$");
        assert_eq!(pattern(json!({"prefix": "v1.2+"})), "^v1\\.2\\+.*", "a prefix is an anchored expression");
    }

    #[test]
    fn the_step_replaces_the_users_header_annotations_and_removing_it_brings_them_back() {
        let r = router(
            "stableIngress: web\nannotationPrefix: custom.nginx\nadditionalIngressAnnotations: {canary-by-header: X-Old, canary-by-header-value: always-me, other.io/keep: 'yes'}\n",
        );
        let step = json!([{"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"regex": "a|b"}}]}}]);
        let with_step = annotations_for(&r, step);
        assert_eq!(with_step["custom.nginx/canary-by-header"], "X-Canary");
        assert_eq!(with_step["custom.nginx/canary-by-header-pattern"], "a|b");
        assert!(with_step.get("custom.nginx/canary-by-header-value").is_none(), "a value would win over the pattern");
        assert_eq!(with_step["other.io/keep"], "yes");
        // The canary Ingress is applied whole: what is left out goes.
        for removed in [json!([{"header": {"name": "preview"}}]), json!([])] {
            let without = annotations_for(&r, removed);
            assert_eq!(without["custom.nginx/canary-by-header"], "X-Old");
            assert_eq!(without["custom.nginx/canary-by-header-value"], "always-me");
            assert!(without.get("custom.nginx/canary-by-header-pattern").is_none());
        }
    }

    #[test]
    fn what_nginx_cannot_express_is_an_error_saying_why() {
        let r = router("stableIngress: web\n");
        let err = |routes: Value| {
            r.generated(&ingress("web", "shop"), &stable_ingress(), &with_routes(routes)).unwrap_err().to_string()
        };
        assert_eq!(
            err(json!([{"header": {"name": "preview", "match": [
                {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                {"headerName": "X-Tenant", "headerValue": {"exact": "acme"}}
            ]}}])),
            "nginx can route on one header only: setHeaderRoute preview has 2 header conditions"
        );
        assert_eq!(
            err(json!([
                {"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}},
                {"header": {"name": "beta", "match": [{"headerName": "X-Beta", "headerValue": {"exact": "1"}}]}}
            ])),
            "nginx can route on one header only: setHeaderRoute preview and setHeaderRoute beta are wanted at once"
        );
        assert_eq!(
            err(json!([{"mirror": {"name": "beta", "match": [{"method": {"exact": "GET"}}]}}])),
            "nginx cannot mirror requests: setMirrorRoute beta needs another router"
        );
    }
}
