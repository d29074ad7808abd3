//! SMI: a TrafficSplit (`split.smi-spec.io/v1alpha2`) between the canary and the stable Service,
//! generated whole and owned by the Rollout, as in Argo Rollouts.
//!
//! The TrafficSplit is `trafficSplitName` (the Rollout's name by default) in the Rollout's
//! namespace. Its `spec.service` is the root Service the mesh's clients call (`rootService`, the
//! stableService by default), and its backends are the canary Service at W and the stable Service
//! at `maxTrafficWeight` − W. SMI weights are relative, so any `maxTrafficWeight` works. At weight
//! 0 the TrafficSplit stays, sending nothing to the canary.
//!
//! Why v1alpha2: it is the version the SMI implementations still in use serve (Linkerd's SMI
//! extension serves v1alpha1 and v1alpha2, Open Service Mesh v1alpha2), and its weights are
//! integers. Argo's default, v1alpha1, takes weights as quantity strings (`"200m"`) and is not
//! served by smi-sdk-go's own CRD; v1alpha3 and v1alpha4 are served by fewer meshes.
//!
//! There is nothing to read: the TrafficSplit is stepwise's from the first write. The controller
//! reads each target before asking for the objects generated from it and fails when a target is
//! absent, so the target is the Rollout itself, which exists whenever it is reconciled, and the
//! TrafficSplit is generated from it. A TrafficSplit of that name that a person created is never
//! replaced: the controller refuses to apply over an object the Rollout does not own.

use serde_json::{Value, json};
use stepwise_api::SmiTrafficRouting;

use crate::{Desired, Error, Generated, JsonPatch, Target, TrafficRouter};

/// The API version of the TrafficSplits stepwise writes.
pub const API_VERSION: &str = "split.smi-spec.io/v1alpha2";

/// The SMI router of one Rollout: the Rollout it reads and the TrafficSplit it generates.
#[derive(Clone, Debug, PartialEq)]
pub struct Smi {
    rollout: Target,
    split: Target,
    root_service: Option<String>,
}

/// The TrafficSplit `name` in `namespace`.
pub fn traffic_split(name: &str, namespace: &str) -> Target {
    Target {
        group: "split.smi-spec.io",
        version: "v1alpha2",
        kind: "TrafficSplit",
        plural: "trafficsplits",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The Rollout `name` in `namespace`: what the SMI router reads (see the module docs).
pub fn rollout(name: &str, namespace: &str) -> Target {
    Target {
        group: stepwise_api::GROUP,
        version: stepwise_api::VERSION,
        kind: "Rollout",
        plural: "rollouts",
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl Smi {
    /// The router for `config` in the Rollout `rollout` of `namespace`.
    pub fn new(config: &SmiTrafficRouting, rollout_name: &str, namespace: &str) -> Smi {
        // Argo treats an empty name as an omitted one.
        let split_name = config.traffic_split_name.as_deref().filter(|n| !n.is_empty()).unwrap_or(rollout_name);
        let root_service = config.root_service.clone().filter(|s| !s.is_empty());
        Smi { rollout: rollout(rollout_name, namespace), split: traffic_split(split_name, namespace), root_service }
    }

    /// The TrafficSplit at `desired`.
    pub fn traffic_split_object(&self, desired: &Desired) -> Value {
        let root = self.root_service.as_deref().unwrap_or(&desired.stable_service);
        json!({
            "apiVersion": API_VERSION,
            "kind": "TrafficSplit",
            "metadata": {"name": self.split.name, "namespace": self.split.namespace},
            "spec": {
                "service": root,
                "backends": [
                    {"service": desired.canary_service, "weight": desired.canary_weight},
                    {"service": desired.stable_service, "weight": desired.stable_weight()},
                ],
            },
        })
    }
}

impl TrafficRouter for Smi {
    fn targets(&self) -> Vec<Target> {
        vec![self.rollout.clone()]
    }

    /// The Rollout is never written.
    fn patch(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        Ok(None)
    }

    /// The weight is carried by the TrafficSplit, not by the Rollout this reads: see
    /// [`canary_weight_of`].
    fn canary_weight(&self, _target: &Target, _current: &Value, _desired: &Desired) -> Result<Option<i32>, Error> {
        Ok(None)
    }

    fn weight_in_targets(&self) -> bool {
        false
    }

    fn generated(&self, _target: &Target, _current: &Value, desired: &Desired) -> Result<Vec<Generated>, Error> {
        Ok(vec![Generated { target: self.split.clone(), object: self.traffic_split_object(desired) }])
    }
}

/// The canary weight a TrafficSplit carries: Some when its backends are the canary Service and
/// the stable Service with weights adding up to `desired.max_weight`.
pub fn canary_weight_of(traffic_split: &Value, desired: &Desired) -> Option<i32> {
    let backends = traffic_split.pointer("/spec/backends").and_then(Value::as_array)?;
    let weight = |service: &str| {
        backends
            .iter()
            .find(|b| b.get("service").and_then(Value::as_str) == Some(service))
            .and_then(|b| b.get("weight"))
            .and_then(Value::as_i64)
    };
    let (canary, stable) = (weight(&desired.canary_service)?, weight(&desired.stable_service)?);
    let complete = backends.len() == 2 && canary + stable == i64::from(desired.max_weight);
    complete.then(|| i32::try_from(canary).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::desired;

    fn router(yaml: &str) -> Smi {
        Smi::new(&serde_yaml::from_str(yaml).unwrap(), "web", "shop")
    }

    /// The Rollout as the controller reads it: only its presence matters.
    fn the_rollout() -> Value {
        json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "web", "namespace": "shop"}})
    }

    fn generated(r: &Smi, d: &Desired) -> Generated {
        let out = r.generated(&r.targets()[0], &the_rollout(), d).unwrap();
        assert_eq!(out.len(), 1);
        out[0].clone()
    }

    #[test]
    fn the_traffic_split_is_named_as_the_rollout_and_splits_the_stable_service_by_default() {
        let r = router("{}");
        let split = generated(&r, &desired(30));
        assert_eq!(split.target.to_string(), "TrafficSplit shop/web");
        assert_eq!((split.target.group, split.target.version), ("split.smi-spec.io", "v1alpha2"));
        assert_eq!(
            split.object,
            json!({
                "apiVersion": "split.smi-spec.io/v1alpha2",
                "kind": "TrafficSplit",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"service": "web-stable", "backends": [
                    {"service": "web-canary", "weight": 30},
                    {"service": "web-stable", "weight": 70}
                ]}
            })
        );
        assert_eq!(canary_weight_of(&split.object, &desired(30)), Some(30));
    }

    #[test]
    fn weights_are_integers_as_v1alpha2_takes_them_not_v1alpha1_quantities() {
        let split = generated(&router("{}"), &desired(5)).object;
        assert!(split["spec"]["backends"][0]["weight"].is_i64());
        assert!(split["spec"]["backends"][1]["weight"].is_i64());
    }

    #[test]
    fn a_named_traffic_split_and_root_service_are_used() {
        let r = router("trafficSplitName: web-split\nrootService: web\n");
        let split = generated(&r, &desired(0));
        assert_eq!(split.target.to_string(), "TrafficSplit shop/web-split");
        assert_eq!(split.object["metadata"]["name"], "web-split");
        assert_eq!(split.object["spec"]["service"], "web");
        assert_eq!(
            split.object["spec"]["backends"],
            json!([
                {"service": "web-canary", "weight": 0}, {"service": "web-stable", "weight": 100}
            ])
        );
    }

    #[test]
    fn empty_names_count_as_omitted_as_in_argo() {
        let split = generated(&router("trafficSplitName: ''\nrootService: ''\n"), &desired(10));
        assert_eq!(split.target.name, "web");
        assert_eq!(split.object["spec"]["service"], "web-stable");
    }

    #[test]
    fn a_max_traffic_weight_other_than_100_is_kept_as_relative_weights() {
        let d = Desired { max_weight: 1000, ..desired(250) };
        let split = generated(&router("{}"), &d).object;
        assert_eq!(split["spec"]["backends"][0]["weight"], 250);
        assert_eq!(split["spec"]["backends"][1]["weight"], 750);
        assert_eq!(canary_weight_of(&split, &d), Some(250));
    }

    #[test]
    fn the_rollout_is_read_and_never_written() {
        let r = router("{}");
        assert_eq!(r.targets(), vec![rollout("web", "shop")]);
        assert_eq!(r.targets()[0].to_string(), "Rollout shop/web");
        assert_eq!((r.targets()[0].group, r.targets()[0].plural), ("stepwise.dev", "rollouts"));
        assert_eq!(r.patch(&r.targets()[0], &the_rollout(), &desired(50)).unwrap(), None);
    }

    #[test]
    fn a_traffic_split_with_a_third_backend_or_wrong_total_carries_no_canary_weight() {
        let mut split = generated(&router("{}"), &desired(30)).object;
        split["spec"]["backends"][1]["weight"] = json!(60);
        assert_eq!(canary_weight_of(&split, &desired(30)), None);
        split["spec"]["backends"][1]["weight"] = json!(70);
        split["spec"]["backends"].as_array_mut().unwrap().push(json!({"service": "other", "weight": 0}));
        assert_eq!(canary_weight_of(&split, &desired(30)), None);
        assert_eq!(canary_weight_of(&json!({"spec": {}}), &desired(30)), None);
    }
}
