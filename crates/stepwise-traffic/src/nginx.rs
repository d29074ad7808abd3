//! NGINX Ingress: a canary Ingress beside each stable one, with nginx's canary annotations.
//!
//! For each stable Ingress the Rollout names, stepwise generates `<rollout>-<ingress>-canary`: the
//! stable Ingress's rules whose paths go to the stable Service, sent to the canary Service
//! instead, its TLS and ingress class, and the annotations `<prefix>/canary: "true"` and
//! `<prefix>/canary-weight: "<W>"` (and `canary-weight-total` when `maxTrafficWeight` is not 100).
//! nginx then sends W of the requests for those hosts and paths to the canary. The stable Ingress
//! is only read, never written. The canary Ingress is owned by the Rollout; at weight 0 it stays,
//! sending nothing, as in Argo Rollouts.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use stepwise_api::NginxTrafficRouting;

use crate::{Desired, Error, Generated, JsonPatch, Target, TrafficRouter, split_name};

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
    /// canary ones, then the canary annotations that make nginx split (never overridden).
    fn annotations(&self, stable: &Value, desired: &Desired) -> Map<String, Value> {
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
        out
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
    fn kind(&self) -> &'static str {
        "nginx"
    }

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
        let object = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": target.namespace, "annotations": self.annotations(current, desired)},
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
}
