//! Subset-level splitting: the operations that make the DestinationRule's canary and stable
//! subsets select the pods of their pod-template-hash.

use serde_json::{Value, json};
use stepwise_api::{IstioDestinationRule, POD_TEMPLATE_HASH_LABEL};

use super::{SubsetLevel, destination_rule};
use crate::{Desired, Error, JsonPatch};

/// The label Argo Rollouts puts on the subsets it manages. stepwise's pods never carry it, so a
/// subset taken over from Argo that kept it would select no pod at all.
const ARGO_HASH_LABEL: &str = "rollouts-pod-template-hash";

impl SubsetLevel {
    pub(super) fn new(rule: &IstioDestinationRule, namespace: &str) -> Result<SubsetLevel, Error> {
        let (canary, stable) = (&rule.canary_subset_name, &rule.stable_subset_name);
        if canary.is_empty() || stable.is_empty() || canary == stable {
            return Err(Error::Config(
                "trafficRouting.istio.destinationRule: canarySubsetName and stableSubsetName must be two different subsets"
                    .into(),
            ));
        }
        Ok(SubsetLevel {
            rule: destination_rule(&rule.name, namespace),
            canary: rule.canary_subset_name.clone(),
            stable: rule.stable_subset_name.clone(),
        })
    }

    /// The operations that make the canary and stable subsets select the pods of their hash. A
    /// side without a hash (no stable yet) is left as it is.
    pub(super) fn ops(&self, rule: &Value, desired: &Desired) -> Result<JsonPatch, Error> {
        let object = self.rule.to_string();
        let subsets = rule.pointer("/spec/subsets").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let sides = [
            (&self.canary, "canarySubsetName", &desired.canary_hash),
            (&self.stable, "stableSubsetName", &desired.stable_hash),
        ];
        let mut ops = Vec::new();
        for (name, field, hash) in sides {
            let Some(hash) = hash else { continue };
            let index = subsets.iter().position(|s| s.get("name").and_then(Value::as_str) == Some(name.as_str()));
            let index = index.ok_or_else(|| Error::Malformed {
                object: object.clone(),
                message: format!("has no subset {name} (trafficRouting.istio.destinationRule.{field})"),
            })?;
            label_ops(&mut ops, index, subsets[index].get("labels"), hash);
        }
        Ok(ops)
    }
}

/// Appends the operations that make subset `index`, whose labels are `labels`, select `hash`.
fn label_ops(ops: &mut JsonPatch, index: usize, labels: Option<&Value>, hash: &str) {
    let base = format!("/spec/subsets/{index}/labels");
    let Some(labels) = labels.and_then(Value::as_object) else {
        ops.push(json!({"op": "add", "path": base, "value": {POD_TEMPLATE_HASH_LABEL: hash}}));
        return;
    };
    if labels.get(POD_TEMPLATE_HASH_LABEL).and_then(Value::as_str) != Some(hash) {
        let path = format!("{base}/{}", escape(POD_TEMPLATE_HASH_LABEL));
        ops.push(json!({"op": "add", "path": path, "value": hash}));
    }
    if labels.contains_key(ARGO_HASH_LABEL) {
        ops.push(json!({"op": "remove", "path": format!("{base}/{ARGO_HASH_LABEL}")}));
    }
}

/// `key` as one reference token of a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
