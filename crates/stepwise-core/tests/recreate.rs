//! The recreate strategy, scripted on the simulated cluster: the old pods are gone (terminating
//! ones included) before the first new pod starts; the rollout completes; abort, the progress
//! deadline, undo, a newer template and a manual pause all keep two versions from running at
//! once. Every plan is checked to ask for nothing more when planned again.

mod support;

use stepwise_api::RolloutPhase;
use stepwise_core::{Action, Plan, plan};
use support::{World, rollout_with};

const RECREATE: &str = "    recreate: {}\n";

/// Plans once and carries it out; planning again asks for nothing more, and no two versions
/// have pods.
fn reconcile(w: &mut World) -> Plan {
    let p = w.reconcile();
    let again = plan(&w.rollout, &w.observed, &w.now);
    assert!(again.actions.is_empty(), "planning again asked for {:#?}\nafter {:#?}", again.actions, p.actions);
    assert_eq!(Some(&again.status), w.rollout.status.as_ref(), "planning again changed the status");
    assert_one_version(w);
    p
}

fn assert_one_version(w: &World) {
    let versions = w.versions_with_pods();
    assert!(versions.len() <= 1, "pods of two versions at once: {:?}", w.observed.replica_sets);
}

/// Reconciles and lets pods settle (old ones stop, new ones start and become available unless
/// their version never does) until nothing changes.
fn converge(w: &mut World) {
    for _ in 0..30 {
        let before = (w.rollout.status.clone(), w.observed.clone());
        reconcile(w);
        w.pods_settle();
        assert_one_version(w);
        if (w.rollout.status.clone(), w.observed.clone()) == before {
            return;
        }
    }
    panic!("did not converge: {:?}", w.status().message);
}

fn deployed(replicas: i32) -> World {
    let mut w = World::new(rollout_with(replicas, RECREATE));
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", w.status().message);
    w
}

fn message(w: &World) -> String {
    w.status().message.unwrap_or_default()
}

fn events(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, message, .. } => Some(format!("{reason}: {message}")),
            _ => None,
        })
        .collect()
}

fn scaled(p: &Plan) -> Vec<(String, i32)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleReplicaSet { name, replicas } => Some((name.clone(), *replicas)),
            Action::CreateReplicaSet { name, replicas, .. } => Some((name.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

fn condition(w: &World, kind: &str) -> Option<String> {
    w.status().conditions.iter().find(|c| c.r#type == kind).map(|c| c.status.clone())
}

/// The hash the template gets with `image`.
fn hash_of(w: &World, image: &str) -> String {
    let mut probe = w.clone();
    probe.set_image(image);
    stepwise_core::hash::pod_template_hash(probe.rollout.spec.template.as_ref().unwrap(), None)
}

/// An update to `image` whose pods never become ready, carried as far as it goes: the old
/// version gone, the new one's pods created but never available.
fn stuck_update(w: &mut World, image: &str) -> String {
    let h = hash_of(w, image);
    w.never_ready.insert(h.clone());
    w.set_image(image);
    converge(w);
    assert_eq!(w.pods(&h), (3, 0), "{:?}", w.observed.replica_sets);
    h
}

#[test]
fn an_update_stops_every_old_pod_before_the_first_new_one_starts_then_completes() {
    let mut w = deployed(3);
    let v1 = w.stable();
    w.set_image("demo:2");

    let p = reconcile(&mut w);
    let v2 = w.hash();
    assert_eq!(scaled(&p), [(format!("app-{v2}"), 0), (format!("app-{v1}"), 0)], "new at 0, old to 0");
    assert!(events(&p).iter().any(|e| e.starts_with("RecreateScaledDown: Recreate: scaling app-")), "{:?}", events(&p));
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    assert_eq!(message(&w), "Recreating: waiting for 3 pods of the old version to stop");

    // The old pods are terminating: still counted, nothing starts.
    w.pods_settle();
    assert_eq!(w.observed.replica_sets.iter().find(|r| r.hash == v1).unwrap().terminating, 3);
    let p = reconcile(&mut w);
    assert!(scaled(&p).is_empty(), "nothing starts while old pods terminate: {:?}", p.actions);
    assert_eq!(message(&w), "Recreating: waiting for 3 pods of the old version to stop");

    // Gone: the new version starts.
    w.pods_settle();
    let p = reconcile(&mut w);
    assert_eq!(scaled(&p), [(format!("app-{v2}"), 3)]);
    assert!(
        events(&p).contains(&format!(
            "RecreateScaledUp: Recreate: no pod of an older version is left; scaling up ReplicaSet app-{v2} to 3"
        )),
        "{:?}",
        events(&p)
    );
    assert_eq!(message(&w), "Recreating: 0 of 3 pods of the new version available");

    w.one_pod_each();
    reconcile(&mut w);
    assert_eq!(message(&w), "Recreating: 1 of 3 pods of the new version available");
    assert_eq!(w.status().stable_rs, Some(v1.clone()), "not stable before all its pods are available");

    w.pods_settle();
    let p = reconcile(&mut w);
    assert_eq!(w.stable(), v2);
    assert!(events(&p).iter().any(|e| e.starts_with("RolloutCompleted: Rollout completed update to revision 2")));
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{}", message(&w));
    assert_eq!(message(&w), "Healthy at revision 2");
    assert_eq!(condition(&w, "Completed").as_deref(), Some("True"));
    assert_eq!(condition(&w, "Healthy").as_deref(), Some("True"));
}

#[test]
fn a_replica_set_whose_status_predates_its_scale_down_is_not_taken_for_gone() {
    let mut w = deployed(2);
    let v1 = w.stable();
    w.set_image("demo:2");
    reconcile(&mut w);
    // The status shows no pod, but it describes the spec before the scale-down: the ReplicaSet
    // controller may have created pods it does not count yet.
    let old = w.observed.replica_sets.iter_mut().find(|r| r.hash == v1).unwrap();
    (old.replicas, old.available, old.ready) = (0, 0, 0);
    assert!(old.status_stale);
    let p = reconcile(&mut w);
    assert!(scaled(&p).is_empty(), "{:?}", p.actions);
    // Not told in the message, which must not change with the status's catching up alone.
    assert_eq!(message(&w), "Recreating: 0 of 2 pods of the new version available");
    w.observed.replica_sets.iter_mut().find(|r| r.hash == v1).unwrap().status_stale = false;
    let p = reconcile(&mut w);
    assert_eq!(scaled(&p), [(format!("app-{}", w.hash()), 2)]);
}

#[test]
fn abort_stops_the_new_pods_before_the_stable_version_comes_back_and_retry_recreates_again() {
    let mut w = deployed(3);
    let v1 = w.stable();
    let v2 = stuck_update(&mut w, "demo:2");
    assert_eq!(w.pods(&v1), (0, 0));
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));

    w.abort();
    let p = reconcile(&mut w);
    assert_eq!(scaled(&p), [(format!("app-{v2}"), 0)], "the new version goes first");
    assert!(events(&p).iter().any(|e| e == "RolloutAborted: Rollout aborted by request"), "{:?}", events(&p));
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(
        message(&w),
        "Aborted: Rollout aborted by request; recreating the stable version: waiting for 3 pods of the new version to stop"
    );
    w.pods_settle();
    reconcile(&mut w);
    assert_eq!(w.pods(&v1), (0, 0), "the new pods are still terminating");
    converge(&mut w);
    assert_eq!(w.pods(&v1), (3, 3));
    assert_eq!(w.pods(&v2), (0, 0));
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(message(&w), "Aborted: Rollout aborted by request");
    assert_eq!(w.stable(), v1);

    // Retry: the stable goes again, then the new version starts.
    w.never_ready.clear();
    w.retry();
    let p = reconcile(&mut w);
    assert_eq!(scaled(&p), [(format!("app-{v1}"), 0)]);
    assert!(events(&p).iter().any(|e| e.starts_with("RolloutRetry")), "{:?}", events(&p));
    converge(&mut w);
    assert_eq!(w.stable(), v2);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{}", message(&w));
    assert_eq!(w.pods(&v1), (0, 0));
}

#[test]
fn the_progress_deadline_with_progress_deadline_abort_brings_the_stable_version_back() {
    let mut w = deployed(3);
    w.rollout.spec.progress_deadline_seconds = Some(60);
    w.rollout.spec.progress_deadline_abort = Some(true);
    let v1 = w.stable();
    let v2 = stuck_update(&mut w, "demo:2");
    w.wait(61);
    converge(&mut w);
    let st = w.status();
    assert_eq!(st.abort, Some(true));
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    assert!(message(&w).starts_with("Aborted: ReplicaSet app-"), "{}", message(&w));
    assert!(message(&w).ends_with("has timed out progressing."), "{}", message(&w));
    assert_eq!((w.pods(&v1), w.pods(&v2)), ((3, 3), (0, 0)));
}

#[test]
fn undo_mid_update_returns_to_the_stable_version_the_same_way() {
    let mut w = deployed(3);
    let v1 = w.stable();
    let v2 = stuck_update(&mut w, "demo:2");
    // Undo: the template of the stable version again.
    w.set_image("demo:1");
    assert_eq!(hash_of(&w, "demo:1"), v1);
    let p = reconcile(&mut w);
    assert_eq!(w.hash(), v1);
    assert_eq!(scaled(&p), [(format!("app-{v2}"), 0)]);
    assert_eq!(message(&w), "Recreating: waiting for 3 pods of the old version to stop");
    converge(&mut w);
    assert_eq!((w.pods(&v1), w.pods(&v2)), ((3, 3), (0, 0)));
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{}", message(&w));
}

#[test]
fn undo_after_a_completed_update_recreates_the_previous_version_with_a_new_revision() {
    let mut w = deployed(2);
    let v1 = w.stable();
    w.set_image("demo:2");
    converge(&mut w);
    let v2 = w.stable();
    assert_ne!(v1, v2);
    w.set_image("demo:1");
    converge(&mut w);
    assert_eq!(w.stable(), v1);
    assert_eq!(w.status().current_revision, Some(3));
    assert_eq!((w.pods(&v1), w.pods(&v2)), ((2, 2), (0, 0)));
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn a_newer_template_mid_update_stops_the_intermediate_version_first() {
    let mut w = deployed(3);
    let v2 = stuck_update(&mut w, "demo:2");
    w.set_image("demo:3");
    let p = reconcile(&mut w);
    let v3 = w.hash();
    assert_eq!(scaled(&p), [(format!("app-{v3}"), 0), (format!("app-{v2}"), 0)]);
    converge(&mut w);
    assert_eq!(w.stable(), v3);
    assert_eq!(w.pods(&v3), (3, 3));
    assert_eq!(w.versions_with_pods(), [v3]);
}

#[test]
fn a_manual_pause_holds_every_replica_set_where_it_is() {
    let mut w = deployed(3);
    let v1 = w.stable();
    w.rollout.spec.paused = Some(true);
    w.set_image("demo:2");
    converge(&mut w);
    assert_eq!(w.pods(&v1), (3, 3), "the old version keeps running while paused");
    assert_eq!(w.pods(&w.hash()), (0, 0));
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    w.rollout.spec.paused = None;
    converge(&mut w);
    assert_eq!(w.stable(), w.hash());
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn scaling_a_healthy_recreate_rollout_scales_its_one_version() {
    let mut w = deployed(3);
    w.rollout.spec.replicas = Some(5);
    converge(&mut w);
    assert_eq!(w.pods(&w.stable()), (5, 5));
    w.rollout.spec.replicas = Some(1);
    converge(&mut w);
    assert_eq!(w.pods(&w.stable()), (1, 1));
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn a_first_deploy_starts_at_once_and_promote_full_is_cleared_as_it_has_nothing_to_skip() {
    let mut w = World::new(rollout_with(2, RECREATE));
    let p = reconcile(&mut w);
    assert_eq!(scaled(&p), [(format!("app-{}", w.hash()), 2)]);
    assert!(!events(&p).iter().any(|e| e.starts_with("Recreate")), "{:?}", events(&p));
    converge(&mut w);
    w.set_image("demo:2");
    w.promote_full();
    reconcile(&mut w);
    assert_eq!(w.status().promote_full, None);
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
}

#[test]
fn recreate_with_another_strategy_is_an_invalid_spec() {
    let mut w = World::new(rollout_with(2, "    recreate: {}\n    canary: {}\n"));
    let p = w.reconcile();
    assert!(p.actions.iter().all(|a| matches!(a, Action::Event { .. })));
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(message(&w), "InvalidSpec: spec.strategy must set exactly one of canary, blueGreen and recreate");
}
