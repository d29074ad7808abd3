//! The pod anti-affinity that `antiAffinity` adds to a new version's ReplicaSet: a term keeping
//! its pods off the nodes of the stable version's pods, recognisable so that it never counts as
//! part of a version (hashes, undo) and is never copied back into a Rollout.
//!
//! The term selects pods by the pod-template-hash label alone, on `kubernetes.io/hostname`. A
//! person cannot usefully write such a term (the hash changes with every version), so a term of
//! that shape is taken to be stepwise's.

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodTemplateSpec, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::Value;

use crate::{AntiAffinity, POD_TEMPLATE_HASH_LABEL};

/// The node label that the anti-affinity spreads over.
pub const TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// Adds the anti-affinity against `stable_hash`'s pods to `template`, beside any the template
/// already has.
pub fn inject(template: &mut PodTemplateSpec, rule: &AntiAffinity, stable_hash: &str) {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: POD_TEMPLATE_HASH_LABEL.into(),
                operator: "In".into(),
                values: Some(vec![stable_hash.into()]),
            }]),
            match_labels: None,
        }),
        topology_key: TOPOLOGY_KEY.into(),
        ..Default::default()
    };
    let spec = template.spec.get_or_insert_with(Default::default);
    let anti = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    if let Some(preferred) = &rule.preferred_during_scheduling_ignored_during_execution {
        anti.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm { weight: preferred.weight, pod_affinity_term: term });
    } else if rule.required_during_scheduling_ignored_during_execution.is_some() {
        anti.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term);
    }
}

/// Removes the terms [`inject`] adds, and the objects left empty by their removal.
pub fn strip(template: &mut PodTemplateSpec) {
    let mut value = serde_json::to_value(&*template).unwrap_or(Value::Null);
    if strip_json(&mut value)
        && let Ok(stripped) = serde_json::from_value(value)
    {
        *template = stripped;
    }
}

/// [`strip`] on a pod template as JSON (an undo copies a ReplicaSet's template as JSON, so that
/// no field unknown to this build is lost). Returns whether anything was removed.
pub fn strip_json(template: &mut Value) -> bool {
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else { return false };
    let Some(affinity) = spec.get_mut("affinity").and_then(Value::as_object_mut) else { return false };
    let Some(anti) = affinity.get_mut("podAntiAffinity").and_then(Value::as_object_mut) else { return false };
    let mut removed = false;
    for (field, term_at) in [
        ("requiredDuringSchedulingIgnoredDuringExecution", ""),
        ("preferredDuringSchedulingIgnoredDuringExecution", "/podAffinityTerm"),
    ] {
        if let Some(terms) = anti.get_mut(field).and_then(Value::as_array_mut) {
            let before = terms.len();
            terms.retain(|t| !t.pointer(term_at).is_some_and(is_injected_json));
            removed |= terms.len() != before;
            if terms.is_empty() {
                anti.remove(field);
            }
        }
    }
    if anti.is_empty() {
        affinity.remove("podAntiAffinity");
    }
    if affinity.is_empty() {
        spec.remove("affinity");
    }
    removed
}

fn is_injected_json(term: &Value) -> bool {
    let Some(selector) = term.get("labelSelector") else { return false };
    let labels_empty = selector.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty());
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    labels_empty
        && term.get("topologyKey").and_then(Value::as_str) == Some(TOPOLOGY_KEY)
        && expressions
            .is_some_and(|e| e.len() == 1 && e[0].get("key").and_then(Value::as_str) == Some(POD_TEMPLATE_HASH_LABEL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PreferredAntiAffinity, RequiredAntiAffinity};
    use serde_json::json;

    fn template_with_own_affinity() -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {
                "containers": [{"name": "c", "image": "a:1"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": TOPOLOGY_KEY}
                ]}}
            }
        }))
        .unwrap()
    }

    fn required() -> AntiAffinity {
        AntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(RequiredAntiAffinity {}),
            ..Default::default()
        }
    }

    #[test]
    fn required_anti_affinity_is_added_beside_the_templates_own_terms() {
        let mut t = template_with_own_affinity();
        inject(&mut t, &required(), "stable1");
        let v = serde_json::to_value(&t).unwrap();
        let terms = v.pointer("/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution").unwrap();
        assert_eq!(terms.as_array().unwrap().len(), 2);
        assert_eq!(terms[1]["labelSelector"]["matchExpressions"][0]["values"], json!(["stable1"]));
        assert_eq!(terms[1]["topologyKey"], TOPOLOGY_KEY);
    }

    #[test]
    fn preferred_anti_affinity_carries_its_weight() {
        let mut t = PodTemplateSpec::default();
        let rule = AntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(PreferredAntiAffinity { weight: 40 }),
            ..Default::default()
        };
        inject(&mut t, &rule, "s");
        let v = serde_json::to_value(&t).unwrap();
        let term =
            v.pointer("/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/0").unwrap();
        assert_eq!(term["weight"], 40);
        assert_eq!(term["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["key"], POD_TEMPLATE_HASH_LABEL);
    }

    #[test]
    fn strip_removes_only_the_injected_terms_and_what_they_leave_empty() {
        let own = template_with_own_affinity();
        let mut t = own.clone();
        inject(&mut t, &required(), "stable1");
        strip(&mut t);
        assert_eq!(t, own, "the template's own term survives");

        let bare: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "a:1"}]}})).unwrap();
        let mut t = bare.clone();
        inject(&mut t, &required(), "stable1");
        assert_ne!(t, bare);
        strip(&mut t);
        assert_eq!(t, bare, "no empty affinity is left behind");
    }

    #[test]
    fn strip_json_keeps_a_term_that_selects_more_than_the_hash() {
        let mut v = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": POD_TEMPLATE_HASH_LABEL, "operator": "In", "values": ["x"]}]}, "topologyKey": TOPOLOGY_KEY}
        ]}}}});
        let before = v.clone();
        assert!(!strip_json(&mut v));
        assert_eq!(v, before);
    }
}
