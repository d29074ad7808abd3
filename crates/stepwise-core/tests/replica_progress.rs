//! `replicaProgressThreshold`: a step's canary pod count counts as reached once enough of its pods
//! are available, so that one slow pod does not hold a release; traffic still goes only to the
//! pods that are available.

mod support;

use stepwise_api::RolloutPhase;
use support::{World, rollout_with};

const ROUTED: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps: [{setWeight: 50}, {pause: {}}]\n";
const BASIC: &str = "    canary:\n      steps: [{setWeight: 50}, {pause: {}}]\n";

fn with_threshold(strategy: &str, kind: &str, value: i32) -> String {
    format!("{strategy}      replicaProgressThreshold: {{type: {kind}, value: {value}}}\n")
}

/// Ten replicas, a new version, then canary pods come up one at a time until the rollout pauses
/// at its second step or `rounds` pass. Returns the canary's available pods when it paused.
fn pods_when_paused(strategy: &str, rounds: usize) -> (World, Option<i32>) {
    let mut w = World::new(rollout_with(10, strategy));
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    w.set_image("demo:2");
    w.reconcile();
    for _ in 0..rounds {
        if w.step() == 1 {
            let available = w.pods(&w.hash()).1;
            return (w, Some(available));
        }
        w.one_pod_each();
        w.reconcile();
    }
    (w, None)
}

#[test]
fn without_a_threshold_a_step_waits_for_every_canary_pod() {
    let (_, available) = pods_when_paused(ROUTED, 20);
    assert_eq!(available, Some(5));
}

#[test]
fn a_percent_threshold_completes_the_step_once_that_share_of_its_pods_is_available() {
    let (w, available) = pods_when_paused(&with_threshold(ROUTED, "Percent", 60), 20);
    assert_eq!(available, Some(3), "60 % of 5 canary pods is 3");
    let weight = w.router_weight.unwrap_or(0);
    assert!(weight <= 30, "the router is given no more than 3 pods of 10 carry: {weight}");
}

#[test]
fn traffic_follows_the_remaining_pods_as_they_come_up_after_the_step_is_done() {
    let (mut w, _) = pods_when_paused(&with_threshold(ROUTED, "Pods", 2), 20);
    for _ in 0..10 {
        w.one_pod_each();
        w.reconcile();
    }
    assert_eq!(w.pods(&w.hash()), (5, 5));
    assert_eq!(w.router_weight, Some(50));
    assert_eq!(w.step(), 1, "still paused");
}

#[test]
fn a_pods_threshold_above_the_steps_pods_waits_for_all_of_them() {
    let (_, available) = pods_when_paused(&with_threshold(ROUTED, "Pods", 8), 20);
    assert_eq!(available, Some(5));
}

#[test]
fn a_threshold_also_counts_for_a_canary_without_a_router() {
    let (_, plain) = pods_when_paused(BASIC, 40);
    let (_, early) = pods_when_paused(&with_threshold(BASIC, "Pods", 1), 40);
    let (plain, early) = (plain.expect("paused"), early.expect("paused"));
    assert!(early < plain, "one available pod was enough: {early} against {plain}");
    assert!(early >= 1);
}
