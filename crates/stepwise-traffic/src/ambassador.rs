//! Ambassador (Emissary-ingress): a canary Mapping beside each Mapping the Rollout names
//! (`getambassador.io/v2`, as Argo Rollouts).
//!
//! For each Mapping to the stable Service, stepwise generates `<mapping>-canary`: the Mapping's
//! spec as it is, with `service` sent to the canary Service (keeping the scheme, namespace and
//! port the Mapping writes, `http://web-stable.shop:8080` becoming `http://web-canary.shop:8080`)
//! and `weight: W`. Emissary groups Mappings of the same match and gives the canary W percent
//! of their requests and the weightless base Mapping the rest, so the base Mapping is only read,
//! never written, and must have no `weight` of its own. The canary Mapping is owned by the Rollout.
//!
//! At weight 0 the canary Mapping stays, with `weight: 0`, where Argo deletes it. That is safe:
//! Emissary counts a Mapping with a weight, even 0, as weighted (it checks the field is present,
//! and its Go type keeps a 0), so the base Mapping gets all the traffic; and it spares a delete
//! the controller does not otherwise make.
//!
//! Why v2: it is the storage version of Emissary 3's Mapping CRD and the version Argo uses, so
//! reading and writing through it converts nothing. Mappings may be written in any version the
//! CRD serves (`v3alpha1` included); Emissary's conversion webhook shows them as v2.
//!
//! The Mappings are in the Rollout's namespace, as in Argo (a name may contain dots).

use serde_json::{Value, json};
use stepwise_api::AmbassadorTrafficRouting;

use crate::{Desired, Error, Generated, JsonPatch, Target, TrafficRouter};

/// The API version of the Mappings stepwise reads and writes.
pub const API_VERSION: &str = "getambassador.io/v2";

/// The Ambassador router of one Rollout: the Mappings to the stable Service.
#[derive(Clone, Debug, PartialEq)]
pub struct Ambassador {
    mappings: Vec<Target>,
}

/// The Mapping `name` in `namespace`.
pub fn mapping(name: &str, namespace: &str) -> Target {
    Target {
        group: "getambassador.io",
        version: "v2",
        kind: "Mapping",
        plural: "mappings",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The name of the canary Mapping of `base`: at most 253 characters, as a name must be, the base
/// name shortened first.
pub fn canary_mapping_name(base: &str) -> String {
    const SUFFIX: &str = "-canary";
    let prefix: String = base.chars().take(253 - SUFFIX.len()).collect();
    format!("{prefix}{SUFFIX}")
}

impl Ambassador {
    /// The router for `config` in a Rollout of `namespace` whose `maxTrafficWeight` is
    /// `max_traffic_weight`.
    pub fn new(
        config: &AmbassadorTrafficRouting,
        max_traffic_weight: Option<i32>,
        namespace: &str,
    ) -> Result<Ambassador, Error> {
        if config.mappings.is_empty() || config.mappings.iter().any(String::is_empty) {
            return Err(Error::Config("trafficRouting.ambassador.mappings must name one Mapping or more".into()));
        }
        // Emissary reads a Mapping's weight as a percentage of the requests.
        if let Some(max) = max_traffic_weight.filter(|m| *m != 100) {
            return Err(Error::Config(format!(
                "trafficRouting.maxTrafficWeight is {max}; it must be 100 with ambassador, whose Mapping weights are percentages"
            )));
        }
        Ok(Ambassador { mappings: config.mappings.iter().map(|name| mapping(name, namespace)).collect() })
    }
}

/// `service` with its Service name (after any `scheme://`, before any `.namespace` or `:port`)
/// replaced by `canary`, or None when that name is not `stable`.
fn canary_service(service: &str, stable: &str, canary: &str) -> Option<String> {
    let (scheme, rest) = match service.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), service),
    };
    let end = rest.find(['.', ':', '/']).unwrap_or(rest.len());
    let (name, suffix) = rest.split_at(end);
    (name == stable).then(|| format!("{scheme}{canary}{suffix}"))
}

impl TrafficRouter for Ambassador {
    fn targets(&self) -> Vec<Target> {
        self.mappings.clone()
    }

    /// The base Mapping is never written.
    fn patch(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        Ok(None)
    }

    /// The weight is carried by the canary Mapping, not by the base Mapping this reads: see
    /// [`canary_weight_of`].
    fn canary_weight(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<i32>, Error> {
        Ok(None)
    }

    fn weight_in_targets(&self) -> bool {
        false
    }

    fn generated(&self, target: &Target, current: &Value, desired: &Desired) -> Result<Vec<Generated>, Error> {
        let malformed = |message: String| Error::Malformed { object: target.to_string(), message };
        let Some(spec) = current.get("spec").and_then(Value::as_object) else {
            return Err(malformed("it has no spec".into()));
        };
        if spec.get("weight").is_some_and(|w| !w.is_null()) {
            return Err(malformed(
                "spec.weight is set; remove it: the Mapping to the stable Service gets what its canary Mapping does not"
                    .into(),
            ));
        }
        let Some(service) = spec.get("service").and_then(Value::as_str) else {
            return Err(malformed("it has no spec.service".into()));
        };
        let Some(canary) = canary_service(service, &desired.stable_service, &desired.canary_service) else {
            return Err(malformed(format!(
                "spec.service {service} is not the stable Service {}",
                desired.stable_service
            )));
        };
        let mut spec = spec.clone();
        spec.insert("service".into(), json!(canary));
        spec.insert("weight".into(), json!(desired.canary_weight));
        let name = canary_mapping_name(&target.name);
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "Mapping",
            "metadata": {"name": name, "namespace": target.namespace},
            "spec": spec,
        });
        Ok(vec![Generated { target: mapping(&name, &target.namespace), object }])
    }
}

/// The canary weight a canary Mapping carries.
pub fn canary_weight_of(canary_mapping: &Value) -> Option<i32> {
    canary_mapping.pointer("/spec/weight").and_then(Value::as_i64).and_then(|w| i32::try_from(w).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::desired;

    fn router(yaml: &str) -> Ambassador {
        Ambassador::new(&serde_yaml::from_str(yaml).unwrap(), None, "shop").unwrap()
    }

    /// A Mapping as users write them: a prefix and rewrite, a host, a timeout, CORS, and the
    /// stable Service with its port.
    fn base_mapping() -> Value {
        json!({
            "apiVersion": "getambassador.io/v2",
            "kind": "Mapping",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"team": "shop"}, "annotations": {"note": "theirs"}},
            "spec": {
                "prefix": "/api/",
                "rewrite": "/",
                "host": "web.example.com",
                "timeout_ms": 10000,
                "cors": {"origins": ["https://example.com"]},
                "service": "web-stable:8080"
            }
        })
    }

    fn generated(r: &Ambassador, base: &Value, d: &Desired) -> Value {
        let out = r.generated(&mapping("web", "shop"), base, d).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].target.to_string(), "Mapping shop/web-canary");
        out[0].object.clone()
    }

    #[test]
    fn the_canary_mapping_copies_the_spec_to_the_canary_service_with_the_weight() {
        let canary = generated(&router("mappings: [web]\n"), &base_mapping(), &desired(20));
        let mut spec = base_mapping()["spec"].clone();
        spec["service"] = json!("web-canary:8080");
        spec["weight"] = json!(20);
        assert_eq!(
            canary,
            json!({
                "apiVersion": "getambassador.io/v2",
                "kind": "Mapping",
                "metadata": {"name": "web-canary", "namespace": "shop"},
                "spec": spec
            }),
            "the port is kept; the base's labels, annotations and resourceVersion are its own"
        );
        assert_eq!(canary_weight_of(&canary), Some(20));
    }

    #[test]
    fn at_weight_0_the_canary_mapping_stays_with_weight_0() {
        let canary = generated(&router("mappings: [web]\n"), &base_mapping(), &desired(0));
        assert_eq!(canary["spec"]["weight"], 0);
        assert_eq!(canary_weight_of(&canary), Some(0));
    }

    #[test]
    fn the_scheme_namespace_and_port_of_the_service_are_kept() {
        assert_eq!(canary_service("web-stable", "web-stable", "web-canary").as_deref(), Some("web-canary"));
        assert_eq!(
            canary_service("https://web-stable.shop.svc.cluster.local:8443", "web-stable", "web-canary").as_deref(),
            Some("https://web-canary.shop.svc.cluster.local:8443")
        );
        assert_eq!(canary_service("web-stable.shop", "web-stable", "web-canary").as_deref(), Some("web-canary.shop"));
        assert_eq!(canary_service("web-stable-old:80", "web-stable", "web-canary"), None);
        assert_eq!(canary_service("legacy.shop:80", "web-stable", "web-canary"), None);
    }

    #[test]
    fn the_base_mapping_is_never_written() {
        let r = router("mappings: [web]\n");
        assert_eq!(r.patch(&mapping("web", "shop"), &base_mapping(), &desired(50)).unwrap(), None);
    }

    #[test]
    fn a_base_mapping_with_a_weight_is_an_error() {
        let mut base = base_mapping();
        base["spec"]["weight"] = json!(100);
        let err = router("mappings: [web]\n").generated(&mapping("web", "shop"), &base, &desired(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Mapping shop/web: spec.weight is set; remove it: the Mapping to the stable Service gets what its canary Mapping does not"
        );
    }

    #[test]
    fn a_base_mapping_to_another_service_or_to_none_is_an_error_naming_it() {
        let r = router("mappings: [web]\n");
        let mut base = base_mapping();
        base["spec"]["service"] = json!("legacy:8080");
        let err = r.generated(&mapping("web", "shop"), &base, &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "Mapping shop/web: spec.service legacy:8080 is not the stable Service web-stable");
        base["spec"].as_object_mut().unwrap().remove("service");
        let err = r.generated(&mapping("web", "shop"), &base, &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "Mapping shop/web: it has no spec.service");
        let err = r.generated(&mapping("web", "shop"), &json!({"metadata": {}}), &desired(10)).unwrap_err();
        assert_eq!(err.to_string(), "Mapping shop/web: it has no spec");
    }

    #[test]
    fn several_mappings_each_get_a_canary_and_long_names_are_shortened() {
        let r = router("mappings: [web, web.v1]\n");
        let names: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["Mapping shop/web", "Mapping shop/web.v1"]);
        let long = "m".repeat(300);
        let name = canary_mapping_name(&long);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-canary"));
    }

    #[test]
    fn no_mapping_or_a_max_traffic_weight_other_than_100_is_refused() {
        let err = Ambassador::new(&AmbassadorTrafficRouting::default(), None, "shop").unwrap_err();
        assert_eq!(err.to_string(), "trafficRouting.ambassador.mappings must name one Mapping or more");
        let config = AmbassadorTrafficRouting { mappings: vec!["web".into()] };
        let err = Ambassador::new(&config, Some(1000), "shop").unwrap_err();
        assert_eq!(
            err.to_string(),
            "trafficRouting.maxTrafficWeight is 1000; it must be 100 with ambassador, whose Mapping weights are percentages"
        );
        assert!(Ambassador::new(&config, Some(100), "shop").is_ok());
    }
}
