//! Role metadata (Argo's "ephemeral metadata"): `canaryMetadata`/`stableMetadata` and
//! `previewMetadata`/`activeMetadata` on the pods of the version that holds the role, changed in
//! place when the role changes, never part of the pod template hash.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, RolloutPhase};
use stepwise_core::objects::{ROLE_METADATA_ANNOTATION, observe_replica_set, replica_set, role_metadata_value};
use stepwise_core::{Action, Plan, RoleMetadata, plan};
use support::{World, rollout_with};

const CANARY: &str = "    canary:\n      steps: [{setWeight: 50}, {pause: {}}]\n      canaryMetadata:\n        labels: {role: canary}\n        annotations: {example.com/phase: trying}\n      stableMetadata:\n        labels: {role: stable}\n";

const BLUE_GREEN: &str = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n      activeMetadata:\n        labels: {role: active}\n      previewMetadata:\n        labels: {role: preview}\n        annotations: {example.com/preview: 'yes'}\n";

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn role(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> RoleMetadata {
    RoleMetadata { labels: map(labels), annotations: map(annotations) }
}

/// The role metadata recorded on the ReplicaSet of a version.
fn recorded(w: &World, hash: &str) -> RoleMetadata {
    w.observed.replica_sets.iter().find(|r| r.hash == hash).map(|r| r.role_metadata.clone()).unwrap_or_default()
}

fn role_actions(p: &Plan) -> Vec<&Action> {
    p.actions.iter().filter(|a| matches!(a, Action::SetRoleMetadata { .. })).collect()
}

/// Reconciles, pods settle, until nothing changes.
fn converge(w: &mut World) {
    for _ in 0..40 {
        let before = (w.rollout.status.clone(), w.observed.clone());
        w.reconcile();
        w.pods_settle();
        w.analyses_finish();
        if (w.rollout.status.clone(), w.observed.clone()) == before {
            break;
        }
    }
}

fn assert_idempotent(w: &World) {
    let p = plan(&w.rollout, &w.observed, &w.now);
    assert!(role_actions(&p).is_empty(), "planning again asks for role metadata: {:?}", p.actions);
}

#[test]
fn the_first_version_is_stable_and_gets_the_stable_metadata_right_after_its_replica_set_is_created() {
    let mut w = World::new(rollout_with(2, CANARY));
    let p = w.reconcile();
    let create = p.actions.iter().position(|a| matches!(a, Action::CreateReplicaSet { .. })).expect("created");
    let set = p.actions.iter().position(|a| matches!(a, Action::SetRoleMetadata { .. })).expect("labelled");
    assert!(create < set, "the ReplicaSet exists before it is labelled: {:?}", p.actions);
    match &p.actions[set] {
        Action::SetRoleMetadata { name, hash, pods, metadata, remove } => {
            assert_eq!(name, &format!("app-{hash}"));
            assert_eq!(metadata, &role(&[("role", "stable")], &[]));
            assert_eq!(remove, &RoleMetadata::default());
            assert_eq!(pods, &format!("app=demo,{POD_TEMPLATE_HASH_LABEL}={hash}"));
        }
        other => panic!("{other:?}"),
    }
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(recorded(&w, &w.stable()), role(&[("role", "stable")], &[]));
    assert_idempotent(&w);
}

#[test]
fn a_canary_carries_the_canary_metadata_and_takes_the_stable_metadata_in_place_when_promoted() {
    let mut w = World::new(rollout_with(4, CANARY));
    converge(&mut w);
    let first = w.stable();
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    assert_eq!(w.step(), 1, "paused at the pause step");
    assert_eq!(recorded(&w, &new), role(&[("role", "canary")], &[("example.com/phase", "trying")]));
    assert_eq!(recorded(&w, &first), role(&[("role", "stable")], &[]));
    assert_idempotent(&w);

    w.promote();
    // The plan that makes the new version stable moves both versions' metadata.
    let mut p = w.reconcile();
    for _ in 0..20 {
        if p.status.stable_rs.as_deref() == Some(new.as_str()) {
            break;
        }
        assert!(role_actions(&p).is_empty(), "no role changes before the promotion: {:?}", p.actions);
        w.pods_settle();
        p = w.reconcile();
    }
    let actions = role_actions(&p);
    assert_eq!(actions.len(), 2, "both versions change role at once: {actions:?}");
    for a in actions {
        let Action::SetRoleMetadata { hash, metadata, remove, .. } = a else { unreachable!() };
        if *hash == new {
            assert_eq!(metadata, &role(&[("role", "stable")], &[]));
            // `role` is set again with its new value; only the annotation goes.
            assert_eq!(remove, &role(&[], &[("example.com/phase", "trying")]));
        } else {
            assert_eq!(hash, &first);
            assert_eq!(metadata, &RoleMetadata::default(), "a version that lost its role carries none");
            assert_eq!(remove, &role(&[("role", "stable")], &[]));
        }
    }
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(recorded(&w, &new), role(&[("role", "stable")], &[]));
    assert_eq!(recorded(&w, &first), RoleMetadata::default());
    assert_eq!(w.hash(), new, "role metadata never changes the version");
    assert_idempotent(&w);
}

#[test]
fn an_aborted_canary_keeps_the_canary_metadata_and_the_stable_keeps_its_own() {
    let mut w = World::new(rollout_with(4, CANARY));
    converge(&mut w);
    let first = w.stable();
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    w.abort();
    converge(&mut w);
    assert_eq!(w.status().abort, Some(true));
    assert_eq!(recorded(&w, &new), role(&[("role", "canary")], &[("example.com/phase", "trying")]));
    assert_eq!(recorded(&w, &first), role(&[("role", "stable")], &[]));
    assert_idempotent(&w);
}

#[test]
fn role_metadata_comes_after_the_traffic_and_bookkeeping_of_the_same_plan_and_before_its_events() {
    let strategy = "    canary:\n      stableService: app-stable\n      canaryService: app-canary\n      steps: [{setWeight: 50}, {pause: {}}]\n      canaryMetadata: {labels: {role: canary}}\n";
    let mut w = World::new(rollout_with(4, strategy));
    converge(&mut w);
    w.set_image("demo:2");
    let p = w.reconcile();
    let kinds: Vec<&str> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::SetRoleMetadata { .. } => "role",
            Action::Event { .. } => "event",
            _ => "other",
        })
        .collect();
    let first_role = kinds.iter().position(|k| *k == "role").expect("the canary is labelled");
    assert!(kinds[..first_role].iter().all(|k| *k == "other"), "{kinds:?}");
    assert!(kinds[first_role..].iter().all(|k| *k != "other"), "{kinds:?}");
}

#[test]
fn editing_the_canary_metadata_changes_the_pods_in_place_without_a_new_version() {
    let mut w = World::new(rollout_with(4, CANARY));
    converge(&mut w);
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    let revision = w.status().current_revision;
    let canary = w.rollout.spec.strategy.canary.as_mut().unwrap();
    canary.canary_metadata.as_mut().unwrap().labels = Some(map(&[("track", "canary")]));
    let p = w.reconcile();
    assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateReplicaSet { .. })), "{:?}", p.actions);
    let [Action::SetRoleMetadata { hash, metadata, remove, .. }] = role_actions(&p)[..] else {
        panic!("one change: {:?}", p.actions)
    };
    assert_eq!(hash, &new);
    assert_eq!(metadata, &role(&[("track", "canary")], &[("example.com/phase", "trying")]));
    assert_eq!(remove, &role(&[("role", "canary")], &[]));
    converge(&mut w);
    assert_eq!((w.hash(), w.status().current_revision, w.step()), (new, revision, 1), "still paused at step 2");
    assert_idempotent(&w);
}

#[test]
fn blue_green_labels_the_new_version_preview_until_the_switch_and_active_after_it() {
    let mut w = World::new(rollout_with(3, BLUE_GREEN));
    converge(&mut w);
    let first = w.stable();
    assert_eq!(recorded(&w, &first), role(&[("role", "active")], &[]));
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    assert_eq!(w.service("app-active"), Some(first.clone()), "paused before the switch");
    assert_eq!(recorded(&w, &new), role(&[("role", "preview")], &[("example.com/preview", "yes")]));
    assert_eq!(recorded(&w, &first), role(&[("role", "active")], &[]));
    assert_idempotent(&w);

    w.promote();
    converge(&mut w);
    assert_eq!(w.service("app-active"), Some(new.clone()));
    assert_eq!(recorded(&w, &new), role(&[("role", "active")], &[]));
    assert_eq!(recorded(&w, &first), RoleMetadata::default(), "the previous version is no longer active");
    w.wait(31);
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_idempotent(&w);
}

#[test]
fn blue_green_switch_and_labels_change_in_the_same_plan_with_the_labels_after_the_switch() {
    let mut w = World::new(rollout_with(3, BLUE_GREEN));
    converge(&mut w);
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    w.promote();
    let p = w.reconcile();
    let switch = p
        .actions
        .iter()
        .position(
            |a| matches!(a, Action::SetServiceSelector { service, hash } if service == "app-active" && *hash == new),
        )
        .expect("the switch");
    let label = p
        .actions
        .iter()
        .position(|a| matches!(a, Action::SetRoleMetadata { hash, .. } if *hash == new))
        .expect("the new version becomes active");
    assert!(switch < label, "{:?}", p.actions);
}

#[test]
fn an_aborted_blue_green_update_gives_the_active_metadata_back_to_the_stable_version() {
    let strategy = BLUE_GREEN
        .replace("autoPromotionEnabled: false\n", "postPromotionAnalysis: {templates: [{templateName: post}]}\n");
    let mut w = World::new(rollout_with(3, &strategy));
    converge(&mut w);
    let first = w.stable();
    w.analysis_outcome = stepwise_api::AnalysisPhase::Failed;
    w.set_image("demo:2");
    converge(&mut w);
    let new = w.hash();
    assert_eq!(w.status().abort, Some(true), "{:?}", w.status().message);
    assert_eq!(w.service("app-active"), Some(first.clone()));
    assert_eq!(recorded(&w, &first), role(&[("role", "active")], &[]));
    assert_eq!(recorded(&w, &new), role(&[("role", "preview")], &[("example.com/preview", "yes")]));
    assert_idempotent(&w);
}

/// A ReplicaSet as the API server holds it once stepwise labelled it for `role`.
fn labelled_replica_set(w: &World, role: &RoleMetadata) -> ReplicaSet {
    let p = plan(&w.rollout, &w.observed, &w.now);
    let create = p.actions.iter().find(|a| matches!(a, Action::CreateReplicaSet { .. })).expect("created");
    let mut rs = replica_set(&w.rollout, create).expect("a ReplicaSet");
    let template = rs.spec.as_mut().unwrap().template.as_mut().unwrap().metadata.as_mut().unwrap();
    template.labels.get_or_insert_with(BTreeMap::new).extend(role.labels.clone());
    template.annotations.get_or_insert_with(BTreeMap::new).extend(role.annotations.clone());
    let record = role_metadata_value(role).expect("something to record");
    rs.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(ROLE_METADATA_ANNOTATION.into(), record);
    rs
}

#[test]
fn a_replica_set_carrying_role_metadata_reads_back_as_its_version_with_the_metadata_recorded_apart() {
    let w = World::new(rollout_with(2, CANARY));
    let stable = role(&[("role", "stable")], &[("example.com/x", "1")]);
    let seen = observe_replica_set(&labelled_replica_set(&w, &stable));
    assert_eq!(seen.role_metadata, stable);
    let mut own = w.rollout.spec.template.clone().unwrap();
    own.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(POD_TEMPLATE_HASH_LABEL.into(), seen.hash.clone());
    assert_eq!(seen.template, own, "the template without the role metadata");
    assert_eq!(seen.hash, stepwise_core::hash::pod_template_hash(w.rollout.spec.template.as_ref().unwrap(), None));
}

#[test]
fn an_undo_that_copied_role_metadata_into_the_template_returns_to_that_version() {
    let mut w = World::new(rollout_with(2, CANARY));
    let stable = role(&[("role", "stable")], &[]);
    let rs = labelled_replica_set(&w, &stable);
    let hash = observe_replica_set(&rs).hash;
    // The template as an undo copies it: the ReplicaSet's, role labels included, hash label not,
    // and defaulted by the API server.
    let mut copied = rs.spec.as_ref().unwrap().template.clone().unwrap();
    copied.metadata.as_mut().unwrap().labels.as_mut().unwrap().remove(POD_TEMPLATE_HASH_LABEL);
    copied.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
    let mut defaulted = rs.clone();
    defaulted
        .spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(30);
    let mut seen = observe_replica_set(&defaulted);
    seen.spec_replicas = 2;
    seen.replicas = 2;
    seen.available = 2;
    seen.ready = 2;
    w.observed.replica_sets.push(seen);
    w.rollout.spec.template = Some(copied);
    let p = w.reconcile();
    assert_eq!(p.status.current_pod_hash.as_deref(), Some(hash.as_str()), "{:?}", p.actions);
    assert!(!p.actions.iter().any(|a| matches!(a, Action::CreateReplicaSet { .. })), "{:?}", p.actions);
}

#[test]
fn role_metadata_may_not_touch_the_selector_or_the_hash_label_nor_be_invalid() {
    for (strategy, message) in [
        (
            "    canary:\n      canaryMetadata: {labels: {app: other}}\n",
            "spec.strategy.canary.canaryMetadata.labels[\"app\"]: must not set a label that spec.selector uses",
        ),
        (
            "    canary:\n      stableMetadata: {labels: {stepwise.dev/pod-template-hash: x}}\n",
            "spec.strategy.canary.stableMetadata.labels[\"stepwise.dev/pod-template-hash\"]: must not set the pod template hash label",
        ),
        (
            "    blueGreen:\n      activeService: app-active\n      activeMetadata: {labels: {app: x}}\n",
            "spec.strategy.blueGreen.activeMetadata.labels[\"app\"]: must not set a label that spec.selector uses",
        ),
        (
            "    blueGreen:\n      activeService: app-active\n      previewMetadata: {labels: {role: 'not ok'}}\n",
            "spec.strategy.blueGreen.previewMetadata.labels[\"role\"]: value \"not ok\" must be",
        ),
        (
            "    blueGreen:\n      activeService: app-active\n      previewMetadata: {annotations: {'Bad.io/x': y}}\n",
            "spec.strategy.blueGreen.previewMetadata.annotations[\"Bad.io/x\"]: the key's prefix",
        ),
    ] {
        let mut w = World::new(rollout_with(2, strategy));
        let p = w.reconcile();
        let st = w.status();
        let invalid = st.conditions.iter().find(|c| c.r#type == "InvalidSpec").unwrap_or_else(|| panic!("{strategy}"));
        let got = invalid.message.clone().unwrap_or_default();
        assert!(got.starts_with(message), "{got} does not start with {message}");
        assert!(p.actions.iter().all(|a| matches!(a, Action::Event { .. })), "no action on an invalid spec");
    }
}

#[test]
fn a_strategy_without_role_metadata_takes_off_what_stepwise_put_on_before() {
    let mut w = World::new(rollout_with(2, CANARY));
    converge(&mut w);
    let stable = w.stable();
    let canary = w.rollout.spec.strategy.canary.as_mut().unwrap();
    canary.stable_metadata = None;
    canary.canary_metadata = None;
    let p = w.reconcile();
    let [Action::SetRoleMetadata { hash, metadata, remove, .. }] = role_actions(&p)[..] else {
        panic!("{:?}", p.actions)
    };
    assert_eq!((hash, metadata, remove), (&stable, &RoleMetadata::default(), &role(&[("role", "stable")], &[])));
    converge(&mut w);
    assert_eq!(recorded(&w, &stable), RoleMetadata::default());
    assert_idempotent(&w);
}
