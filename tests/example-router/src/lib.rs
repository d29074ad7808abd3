//! An example of a traffic router written in a crate of its own, as a platform team writes one
//! for the proxy it runs: here the proxy reads its split from a ConfigMap (`canaryWeight`,
//! `stableWeight` and the two Services, in `data`). The router is pure, as the built-in ones
//! are: the controller reads the ConfigMap, asks [`ConfigMapRouter`] for the patch, applies it,
//! and reads the weight back with [`TrafficRouter::canary_weight`] before a step goes on.
//!
//! It is one [`RouterEntry`] ([`entry`]) registered into the controller's table at start
//! (src/main.rs): a Rollout names it under `trafficRouting.plugins`, as Argo users name a
//! router plugin, and core learns from the entry what it can make (no header or mirror routes).
//!
//! ```yaml
//! trafficRouting:
//!   plugins:
//!     example.dev/configmap: {configMap: web-split}
//! ```

use serde_json::{Value, json};
use stepwise_traffic::{BoxedRouter, Desired, Error, JsonPatch, RouterEntry, Target, TrafficRouter, guarded};

/// The router's name under `trafficRouting.plugins`.
pub const NAME: &str = "example.dev/configmap";

/// The row this router adds to the controller's table.
pub fn entry() -> RouterEntry {
    RouterEntry {
        kind: "plugins.example.dev/configmap",
        header_routes: false,
        mirror_routes: false,
        ping_pong: true,
        build: |routing, _, namespace| {
            let config = routing.plugins.as_ref()?.get(NAME)?;
            Some(ConfigMapRouter::new(config, namespace).map(|r| Box::new(r) as BoxedRouter))
        },
    }
}

/// The router of one Rollout: the ConfigMap its proxy reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigMapRouter {
    config_map: Target,
}

impl ConfigMapRouter {
    /// The router for `config` (the value of `trafficRouting.plugins.example.dev/configmap`) of
    /// a Rollout in `namespace`.
    pub fn new(config: &Value, namespace: &str) -> Result<Self, Error> {
        let Some(name) = config.get("configMap").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
            return Err(Error::Config(format!("trafficRouting.plugins[\"{NAME}\"].configMap must name a ConfigMap")));
        };
        let config_map = Target {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            plural: "configmaps",
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        Ok(ConfigMapRouter { config_map })
    }
}

/// The ConfigMap's data as the split `desired` wants it.
fn wanted_data(desired: &Desired) -> [(&'static str, String); 4] {
    [
        ("canaryWeight", desired.canary_weight.to_string()),
        ("stableWeight", desired.stable_weight().to_string()),
        ("canaryService", desired.canary_service.clone()),
        ("stableService", desired.stable_service.clone()),
    ]
}

impl TrafficRouter for ConfigMapRouter {
    fn targets(&self) -> Vec<Target> {
        vec![self.config_map.clone()]
    }

    fn patch(&self, _: &Target, current: &Value, desired: &Desired) -> Result<Option<JsonPatch>, Error> {
        let mut ops = Vec::new();
        if current.get("data").and_then(Value::as_object).is_none() {
            ops.push(json!({"op": "add", "path": "/data", "value": {}}));
        }
        for (key, value) in wanted_data(desired) {
            if current.pointer(&format!("/data/{key}")).and_then(Value::as_str) != Some(value.as_str()) {
                ops.push(json!({"op": "add", "path": format!("/data/{key}"), "value": value}));
            }
        }
        Ok(guarded(current, ops))
    }

    fn canary_weight(&self, _: &Target, current: &Value, desired: &Desired) -> Result<Option<i32>, Error> {
        let read = |key: &str| current.pointer(&format!("/data/{key}")).and_then(Value::as_str)?.parse::<i32>().ok();
        Ok(match (read("canaryWeight"), read("stableWeight")) {
            (Some(canary), Some(stable)) if canary + stable == desired.max_weight => Some(canary),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(canary_weight: i32) -> Desired {
        Desired::split("web-canary", "web-stable", canary_weight, 100)
    }

    fn router() -> ConfigMapRouter {
        ConfigMapRouter::new(&json!({"configMap": "web-split"}), "shop").unwrap()
    }

    #[test]
    fn the_patch_writes_both_weights_and_services_guarded_by_the_resource_version() {
        let current = json!({"metadata": {"name": "web-split", "resourceVersion": "7"}, "data": {"canaryWeight": "0"}});
        let patch = router().patch(&router().targets()[0], &current, &desired(20)).unwrap().unwrap();
        assert_eq!(patch[0], json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}));
        let written: Vec<(&str, &str)> =
            patch[1..].iter().map(|op| (op["path"].as_str().unwrap(), op["value"].as_str().unwrap())).collect();
        assert_eq!(
            written,
            [
                ("/data/canaryWeight", "20"),
                ("/data/stableWeight", "80"),
                ("/data/canaryService", "web-canary"),
                ("/data/stableService", "web-stable")
            ]
        );
    }

    #[test]
    fn a_split_in_place_is_not_written_and_reads_back_as_its_weight() {
        let current = json!({"data": {"canaryWeight": "20", "stableWeight": "80", "canaryService": "web-canary", "stableService": "web-stable"}});
        let target = &router().targets()[0];
        assert_eq!(router().patch(target, &current, &desired(20)).unwrap(), None);
        assert_eq!(router().canary_weight(target, &current, &desired(20)).unwrap(), Some(20));
        let torn = json!({"data": {"canaryWeight": "20", "stableWeight": "100"}});
        assert_eq!(router().canary_weight(target, &torn, &desired(20)).unwrap(), None, "weights that do not add up");
    }

    #[test]
    fn a_config_without_a_config_map_names_the_field() {
        let err = ConfigMapRouter::new(&json!({}), "shop").unwrap_err();
        assert_eq!(
            err.to_string(),
            "trafficRouting.plugins[\"example.dev/configmap\"].configMap must name a ConfigMap"
        );
    }
}
