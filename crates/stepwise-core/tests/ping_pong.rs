//! pingPong: two Services that take the stable and canary roles in turn. The canary's share goes
//! to the one that is not stable; at promotion the one that carries all the traffic becomes the
//! stable one, so no selector moves under live traffic; an abort sends everything back to the
//! stable one without a swap.

mod support;

use std::collections::BTreeMap;

use stepwise_api::{PingPong, RolloutPhase};
use stepwise_core::{Action, Plan};
use support::{World, rollout_with};

const ISTIO: &str = "istio: {virtualService: {name: app}}";

fn strategy(router: &str) -> String {
    format!(
        "    canary:\n      pingPong: {{pingService: app-ping, pongService: app-pong}}\n      trafficRouting:\n        {router}\n      steps:\n      - setWeight: 50\n      - pause: {{}}\n"
    )
}

/// A pingPong Rollout behind Istio, its first version deployed.
fn deployed() -> World {
    let mut w = World::new(rollout_with(4, &strategy(ISTIO)));
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "first deploy: {:?}", w.status().message);
    w
}

fn stable_ping_pong(w: &World) -> Option<PingPong> {
    w.status().canary.and_then(|c| c.stable_ping_pong)
}

/// The last split the router was given, as weight by Service.
fn router_split(w: &World) -> BTreeMap<String, i32> {
    let last = w.history.iter().rev().flat_map(|(_, p)| p.actions.iter().rev()).find_map(|a| match a {
        Action::SetTraffic(t) => Some((t.canary_service.clone(), t.canary_weight, t.stable_service.clone())),
        _ => None,
    });
    let (canary, weight, stable) = last.expect("the router was given a split");
    [(canary, weight), (stable, 100 - weight)].into()
}

fn split(ping: i32, pong: i32) -> BTreeMap<String, i32> {
    [("app-ping".to_string(), ping), ("app-pong".to_string(), pong)].into()
}

/// Releases `image` up to its pause (weight 50), then promotes it to completion.
fn release(w: &mut World, image: &str) {
    w.set_image(image);
    w.settle(30);
    assert_eq!(w.step(), 1, "paused at 50%: {:?}", w.status().message);
    w.promote();
    w.settle(30);
    w.wait(60);
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", w.status().message);
}

fn selectors_set(p: &Plan) -> Vec<(String, String)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::SetServiceSelector { service, hash } => Some((service.clone(), hash.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn ping_is_stable_on_the_first_deploy_and_both_services_select_the_first_version() {
    let w = deployed();
    let v1 = w.hash();
    assert_eq!(stable_ping_pong(&w), Some(PingPong::Ping));
    assert_eq!(w.service("app-ping"), Some(v1.clone()));
    assert_eq!(w.service("app-pong"), Some(v1));
}

#[test]
fn ping_pong_canary_weight_goes_to_the_service_that_is_not_stable() {
    let mut w = deployed();
    let v1 = w.hash();
    w.set_image("demo:2");
    w.settle(30);
    assert_eq!(w.step(), 1, "{:?}", w.status().message);
    assert_eq!(w.service("app-ping"), Some(v1), "the stable Service keeps the stable pods");
    assert_eq!(w.service("app-pong"), Some(w.hash()), "the canary Service selects the new pods");
    assert_eq!(router_split(&w), split(50, 50));
    let weights = w.status().canary.unwrap().weights.unwrap();
    assert_eq!(weights.canary.service_name.as_deref(), Some("app-pong"));
    assert_eq!(weights.stable.service_name.as_deref(), Some("app-ping"));
}

#[test]
fn ping_pong_promotion_swaps_roles_without_moving_the_stable_selector() {
    let mut w = deployed();
    w.set_image("demo:2");
    w.settle(30);
    let v2 = w.hash();
    let promoted_from = w.history.len();
    w.promote();
    w.settle(30);
    w.wait(60);
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", w.status().message);
    assert_eq!(w.stable(), v2);
    assert_eq!(stable_ping_pong(&w), Some(PingPong::Pong), "pong carried all the traffic, so it is stable now");
    assert_eq!(w.service("app-pong"), Some(v2.clone()));
    assert_eq!(w.service("app-ping"), Some(v2), "the new canary Service follows the new version, with no traffic");
    assert_eq!(router_split(&w), split(0, 100));
    for (_, p) in &w.history[promoted_from..] {
        assert!(
            !selectors_set(p).iter().any(|(s, _)| s == "app-pong"),
            "the Service carrying the traffic is never switched: {:?}",
            p.actions
        );
    }
    assert_eq!(w.versions_with_pods(), [w.hash()], "the old version went after scaleDownDelaySeconds");
}

#[test]
fn at_promotion_the_router_is_told_the_swapped_roles_with_no_traffic_moving() {
    let mut w = deployed();
    w.set_image("demo:2");
    w.settle(30);
    w.promote();
    // Until the promotion the canary (pong) takes all the traffic.
    for _ in 0..30 {
        let p = w.reconcile();
        w.pods_settle();
        if w.status().stable_rs == w.status().current_pod_hash {
            let swap = p.actions.iter().find_map(|a| match a {
                Action::SetTraffic(t) => Some((t.canary_weight, t.canary_service.as_str(), t.stable_service.as_str())),
                _ => None,
            });
            assert_eq!(swap, Some((0, "app-ping", "app-pong")), "{:?}", p.actions);
            return;
        }
        assert_eq!(router_split(&w)["app-ping"] + router_split(&w)["app-pong"], 100);
    }
    panic!("never promoted: {:?}", w.status().message);
}

#[test]
fn two_releases_in_a_row_swap_the_roles_twice() {
    let mut w = deployed();
    release(&mut w, "demo:2");
    assert_eq!(stable_ping_pong(&w), Some(PingPong::Pong));
    let v2 = w.hash();
    w.set_image("demo:3");
    w.settle(30);
    assert_eq!(w.service("app-pong"), Some(v2), "pong is stable and keeps the stable pods");
    assert_eq!(w.service("app-ping"), Some(w.hash()), "ping is the canary of the second release");
    assert_eq!(router_split(&w), split(50, 50));
    w.promote();
    w.settle(30);
    w.wait(60);
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", w.status().message);
    let v3 = w.hash();
    assert_eq!(stable_ping_pong(&w), Some(PingPong::Ping));
    assert_eq!((w.service("app-ping"), w.service("app-pong")), (Some(v3.clone()), Some(v3)));
    assert_eq!(router_split(&w), split(100, 0));
}

#[test]
fn ping_pong_abort_sends_all_traffic_back_to_the_stable_service_without_a_swap() {
    let mut w = deployed();
    release(&mut w, "demo:2");
    let v2 = w.hash();
    w.set_image("demo:3");
    w.settle(30);
    assert_eq!(router_split(&w), split(50, 50));
    w.abort();
    w.settle(30);
    w.wait(60);
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded), "{:?}", w.status().message);
    assert_eq!(stable_ping_pong(&w), Some(PingPong::Pong), "no swap on abort");
    assert_eq!(router_split(&w), split(0, 100), "all the traffic on pong, the stable Service");
    assert_eq!(w.service("app-pong"), Some(v2.clone()));
    assert_eq!(w.service("app-ping"), Some(v2.clone()), "the canary Service goes back to the stable pods");
    assert_eq!(w.versions_with_pods(), [v2], "the aborted canary went after abortScaleDownDelaySeconds");
}

#[test]
fn on_abort_the_canary_service_returns_to_the_stable_pods_only_once_they_carry_all_the_traffic() {
    let mut w = deployed();
    let v1 = w.hash();
    w.set_image("demo:2");
    w.settle(30);
    w.abort();
    for _ in 0..30 {
        let p = w.reconcile();
        if selectors_set(&p).iter().any(|(s, _)| s == "app-pong") {
            assert_eq!(selectors_set(&p), [("app-pong".to_string(), v1.clone())]);
            assert_eq!(w.pods(&v1), (4, 4), "every stable pod is available");
            assert!(
                p.actions.iter().any(|a| matches!(a, Action::SetTraffic(t) if t.canary_weight == 0)),
                "the same plan takes the canary's weight to 0: {:?}",
                p.actions
            );
            return;
        }
        w.pods_settle();
    }
    panic!("the canary Service never went back: {:?}", w.status().message);
}

#[test]
fn a_failed_weight_write_at_promotion_is_made_again_with_the_swapped_roles() {
    let mut w = deployed();
    w.set_image("demo:2");
    w.settle(30);
    w.promote();
    for _ in 0..30 {
        let prev = w.status();
        let p = stepwise_core::plan(&w.rollout, &w.observed, &w.now);
        let weight_at = p.actions.iter().position(|a| matches!(a, Action::SetTraffic(t) if t.canary_weight == 0));
        if let (Some(failed), Some(true)) = (weight_at, p.status.stable_rs.as_ref().map(|s| *s == w.hash())) {
            for a in &p.actions[..failed] {
                w.apply_action(a);
            }
            let mut status =
                stepwise_core::failure::status_after_failure(&w.rollout, &prev, &p, failed, "boom", false, &w.now);
            stepwise_core::failure::clear_reconcile_error(&mut status);
            w.rollout.status = Some(status);
            let again = w.reconcile();
            let told = again.actions.iter().find_map(|a| match a {
                Action::SetTraffic(t) => Some((t.canary_weight, t.canary_service.as_str())),
                _ => None,
            });
            assert_eq!(told, Some((0, "app-ping")), "{:?}", again.actions);
            return;
        }
        w.apply(&p);
        w.pods_settle();
    }
    panic!("never promoted: {:?}", w.status().message);
}

fn invalid(strategy: &str) -> String {
    let mut w = World::new(rollout_with(2, strategy));
    let p = w.reconcile();
    let c = p.status.conditions.iter().find(|c| c.r#type == "InvalidSpec").expect("InvalidSpec");
    assert!(p.actions.iter().all(|a| matches!(a, Action::Event { .. })), "nothing moves: {:?}", p.actions);
    c.message.clone().unwrap()
}

#[test]
fn ping_pong_with_canary_or_stable_service_is_refused_naming_the_field() {
    let s = strategy(ISTIO).replace("      pingPong:", "      canaryService: app-canary\n      pingPong:");
    assert_eq!(
        invalid(&s),
        "spec.strategy.canary.pingPong cannot be combined with canaryService or stableService: the ping and pong Services take both roles in turn"
    );
}

#[test]
fn ping_pong_with_a_router_that_cannot_swap_services_is_refused_naming_the_router() {
    for (router, kind) in [
        ("nginx: {stableIngress: app}", "nginx"),
        ("traefik: {weightedTraefikServiceName: app}", "traefik"),
        ("smi: {}", "smi"),
    ] {
        assert_eq!(
            invalid(&strategy(router)),
            format!(
                "spec.strategy.canary.pingPong: the {kind} router cannot swap the ping and pong Services; gatewayAPI, istio and router plugins can"
            )
        );
    }
    let subsets =
        "istio: {virtualService: {name: app}, destinationRule: {name: app, canarySubsetName: c, stableSubsetName: s}}";
    assert!(
        invalid(&strategy(subsets))
            .starts_with("spec.strategy.canary.pingPong cannot be combined with trafficRouting.istio.destinationRule")
    );
}

#[test]
fn ping_pong_with_gateway_api_or_a_router_plugin_is_accepted() {
    for router in ["gatewayAPI: {httpRoute: app}", "plugins: {argoproj-labs/gatewayAPI: {httpRoute: app}}"] {
        let mut w = World::new(rollout_with(2, &strategy(router)));
        w.observed.router_kinds.insert("plugins.argoproj-labs/gatewayAPI".into());
        w.observed.ping_pong_kinds.insert("plugins.argoproj-labs/gatewayAPI".into());
        w.settle(30);
        assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{router}: {:?}", w.status().message);
    }
}

#[test]
fn ping_pong_with_one_service_twice_or_without_a_router_is_refused() {
    let same = strategy(ISTIO).replace("pongService: app-pong", "pongService: app-ping");
    assert_eq!(invalid(&same), "spec.strategy.canary.pingPong.pingService must differ from pongService");
    let unrouted =
        "    canary:\n      pingPong: {pingService: app-ping, pongService: app-pong}\n      steps: [{setWeight: 50}]\n";
    assert_eq!(invalid(unrouted), "spec.strategy.canary.pingPong needs trafficRouting");
}

#[test]
fn a_ping_pong_service_that_does_not_exist_is_refused_naming_it() {
    let mut w = World::new(rollout_with(2, &strategy(ISTIO)));
    w.observed.services.remove("app-pong");
    let p = w.reconcile();
    let c = p.status.conditions.iter().find(|c| c.r#type == "InvalidSpec").expect("InvalidSpec");
    assert_eq!(c.message.as_deref(), Some("spec.strategy.canary.pingPong.pongService: Service app-pong not found"));
}
