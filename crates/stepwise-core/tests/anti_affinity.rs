//! `antiAffinity`: the new version's pods are kept off the nodes of the stable version's pods by a
//! term on the new ReplicaSet's template, never on the Rollout's, and never part of a version.

mod support;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use stepwise_api::POD_TEMPLATE_HASH_LABEL;
use stepwise_api::anti_affinity::TOPOLOGY_KEY;
use stepwise_core::{Action, Plan};
use support::{World, rollout_with};

const CANARY_REQUIRED: &str = "    canary:\n      steps: [{setWeight: 50}, {pause: {}}]\n      antiAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution: {}\n";
const BLUE_GREEN_PREFERRED: &str = "    blueGreen:\n      activeService: app-active\n      autoPromotionEnabled: false\n      antiAffinity:\n        preferredDuringSchedulingIgnoredDuringExecution: {weight: 70}\n";

fn created_template(p: &Plan) -> Option<PodTemplateSpec> {
    p.actions.iter().find_map(|a| match a {
        Action::CreateReplicaSet { template, .. } => Some(template.clone()),
        _ => None,
    })
}

fn anti_affinity(t: &PodTemplateSpec) -> serde_json::Value {
    serde_json::to_value(t).unwrap().pointer("/spec/affinity/podAntiAffinity").cloned().unwrap_or_default()
}

fn settled(strategy: &str) -> World {
    let mut w = World::new(rollout_with(2, strategy));
    w.settle(20);
    w
}

#[test]
fn the_first_version_has_no_stable_to_keep_away_from() {
    let mut w = World::new(rollout_with(2, CANARY_REQUIRED));
    let template = created_template(&w.reconcile()).expect("the first ReplicaSet");
    assert_eq!(anti_affinity(&template), serde_json::Value::Null);
}

#[test]
fn a_new_canary_is_required_to_stay_off_the_stable_versions_nodes() {
    let mut w = settled(CANARY_REQUIRED);
    let stable = w.stable();
    w.set_image("demo:2");
    let p = w.reconcile();
    let template = created_template(&p).expect("the canary's ReplicaSet");
    let terms = &anti_affinity(&template)["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(terms.as_array().map(Vec::len), Some(1), "{terms}");
    let expression = &terms[0]["labelSelector"]["matchExpressions"][0];
    assert_eq!(expression["key"], POD_TEMPLATE_HASH_LABEL);
    assert_eq!(expression["operator"], "In");
    assert_eq!(expression["values"], serde_json::json!([stable]));
    assert_eq!(terms[0]["topologyKey"], TOPOLOGY_KEY);
    let rollout_template = serde_json::to_value(w.rollout.spec.template.as_ref().unwrap()).unwrap();
    assert!(rollout_template.pointer("/spec/affinity").is_none(), "the Rollout's own template is not changed");
}

#[test]
fn a_blue_green_preview_prefers_other_nodes_than_the_active_versions_with_the_weight_asked() {
    let mut w = settled(BLUE_GREEN_PREFERRED);
    let active = w.stable();
    w.set_image("demo:2");
    let template = created_template(&w.reconcile()).expect("the preview's ReplicaSet");
    let term = &anti_affinity(&template)["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["weight"], 70);
    assert_eq!(term["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"], serde_json::json!([active]));
}

#[test]
fn the_anti_affinity_is_not_part_of_the_version_so_planning_again_creates_nothing() {
    let mut w = settled(CANARY_REQUIRED);
    w.set_image("demo:2");
    let first = w.reconcile();
    let hash = first.status.current_pod_hash.clone().expect("a new version");
    assert_eq!(hash, stepwise_core::hash::pod_template_hash(w.rollout.spec.template.as_ref().unwrap(), None));
    w.pods_settle();
    let again = w.reconcile();
    assert!(created_template(&again).is_none(), "{:?}", again.actions);
    assert_eq!(again.status.current_pod_hash.as_deref(), Some(hash.as_str()));
}

#[test]
fn an_undo_that_copied_the_anti_affinity_returns_to_that_version_without_a_new_replica_set() {
    let mut w = settled(CANARY_REQUIRED);
    let first = w.stable();
    w.set_image("demo:2");
    w.settle(20);
    w.promote_full();
    w.settle(20);
    let second = w.stable();
    assert_ne!(first, second);
    w.set_image("demo:3");
    w.settle(20);
    // An undo to revision 2 as a careless tool would write it: the ReplicaSet's template whole,
    // the anti-affinity against revision 1 included.
    let copied = w.observed.replica_sets.iter().find(|r| r.hash == second).unwrap().template.clone();
    assert_ne!(anti_affinity(&copied), serde_json::Value::Null, "revision 2 was created with the anti-affinity");
    let mut copied = copied;
    copied.metadata.as_mut().unwrap().labels.as_mut().unwrap().remove(POD_TEMPLATE_HASH_LABEL);
    w.rollout.spec.template = Some(copied);
    let p = w.reconcile();
    assert_eq!(p.status.current_pod_hash.as_deref(), Some(second.as_str()), "{:?}", p.actions);
    assert!(created_template(&p).is_none(), "{:?}", p.actions);
}

#[test]
fn the_undo_patch_leaves_the_anti_affinity_behind() {
    let mut w = settled(CANARY_REQUIRED);
    w.set_image("demo:2");
    w.settle(20);
    let rs_templates: Vec<(i64, serde_json::Value)> =
        w.observed.replica_sets.iter().map(|r| (r.revision, serde_json::to_value(&r.template).unwrap())).collect();
    let newest = rs_templates.iter().max_by_key(|(r, _)| *r).unwrap().0;
    let current = w.rollout.clone();
    let mut rolled = current.clone();
    rolled.spec.template = Some(PodTemplateSpec::default());
    let patch = stepwise_api::operations::undo(&rolled, &rs_templates, Some(newest)).unwrap().expect("a patch");
    assert!(patch[0]["value"].pointer("/spec/affinity").is_none(), "{patch}");
}
