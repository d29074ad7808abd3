//! Weight verification: the controller reads the routers' objects back after it sets a weight
//! (`Observed::weight_verified`); a step, and the promotion, wait until the weight is in effect,
//! the router is given the weight again meanwhile, and a weight that never takes ends at the
//! progress deadline with a message that names the object.

mod support;

use stepwise_api::RolloutPhase;
use stepwise_core::{Action, Plan};
use support::{World, rollout_with};

const ISTIO: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 20\n      - setWeight: 50\n      - pause: {}\n";

const ONE_STEP: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 50\n";

const NOT_IN_EFFECT: &str = "VirtualService default/app sends 0 % to the canary";

fn released(strategy: &str) -> World {
    let mut w = World::new(rollout_with(4, strategy));
    w.observed.weight_checkable = true;
    carried(&mut w);
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "first deploy: {:?}", w.status().message);
    w
}

/// Another writer keeps the routing object at 0 % (a GitOps tool restoring it, say).
fn reverted(w: &mut World) {
    w.observed.weight_verified = Some(false);
    w.observed.weight_not_in_effect = Some(NOT_IN_EFFECT.into());
}

/// The routing object carries the weight last set.
fn carried(w: &mut World) {
    w.observed.weight_verified = Some(true);
    w.observed.weight_not_in_effect = None;
}

fn weight_set(p: &Plan) -> Option<i32> {
    p.actions.iter().find_map(|a| match a {
        Action::SetTraffic(t) => Some(t.canary_weight),
        _ => None,
    })
}

/// Reconciles with the pods settled until the router has been given `weight`.
fn until_weight_set(w: &mut World, weight: i32) {
    for _ in 0..10 {
        let p = w.reconcile();
        w.pods_settle();
        if weight_set(&p) == Some(weight) {
            return;
        }
    }
    panic!("the router was never given {weight}: {:?}", w.status().message);
}

#[test]
fn a_step_waits_while_its_weight_is_not_in_effect_and_goes_on_once_it_is() {
    let mut w = released(ISTIO);
    w.set_image("demo:2");
    until_weight_set(&mut w, 20);
    reverted(&mut w);
    for _ in 0..3 {
        let p = w.reconcile();
        w.pods_settle();
        assert_eq!(weight_set(&p), Some(20), "the router is given the weight again");
        assert!(p.requeue_after.is_some_and(|after| after.as_secs() <= 5), "and read back soon: {:?}", p.requeue_after);
    }
    assert_eq!(w.step(), 0, "the step waits");
    let status = w.status();
    assert_eq!(status.canary.as_ref().and_then(|c| c.weights.as_ref()).and_then(|w| w.verified), Some(false));
    assert_eq!(
        status.message.as_deref(),
        Some(&*format!(
            "At step 1/3: setWeight 20: waiting for the routers to send 20 % to the canary: {NOT_IN_EFFECT}"
        ))
    );

    carried(&mut w);
    until_weight_set(&mut w, 50);
    assert_eq!(w.step(), 1, "on to the next step once 20 % is in effect");
}

#[test]
fn a_promotion_switches_the_stable_version_only_once_all_traffic_is_on_the_canary() {
    let mut w = released(ONE_STEP);
    let stable = w.stable();
    w.set_image("demo:2");
    until_weight_set(&mut w, 50);
    carried(&mut w);
    until_weight_set(&mut w, 100);
    reverted(&mut w);
    w.settle(10);
    assert_eq!(w.stable(), stable, "not promoted while 100 % is not in effect");
    assert!(w.status().message.unwrap_or_default().contains("waiting for the routers to send 100 % to the canary"));

    carried(&mut w);
    w.settle(10);
    assert_ne!(w.stable(), stable, "promoted once 100 % is in effect");
    w.wait(31);
    w.settle(10);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "the old version gone after scaleDownDelaySeconds");
}

#[test]
fn a_weight_that_never_takes_ends_at_the_progress_deadline_naming_the_object() {
    let mut w = released(ISTIO);
    w.rollout.spec.progress_deadline_seconds = Some(60);
    w.set_image("demo:2");
    until_weight_set(&mut w, 20);
    reverted(&mut w);
    w.settle(5);
    w.wait(61);
    let p = w.reconcile();
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    let message = w.status().message.unwrap_or_default();
    assert!(message.starts_with("ProgressDeadlineExceeded: "), "{message}");
    assert!(
        message.contains(&format!("waiting for the routers to send 20 % to the canary: {NOT_IN_EFFECT}")),
        "{message}"
    );
    let warned = p.actions.iter().any(|a| {
        matches!(a, Action::Event { reason, message, .. } if reason == "ProgressDeadlineExceeded" && message.contains(NOT_IN_EFFECT))
    });
    assert!(warned, "an event names the object: {:?}", p.actions);
    assert_eq!(w.step(), 0, "never on to the next step");
}
