//! Header and mirror routes (setHeaderRoute, setMirrorRoute): when the router is asked for them,
//! when they go, and which Rollouts are refused before anything moves.

mod support;

use stepwise_api::RolloutPhase;
use stepwise_core::failure::status_after_failure;
use stepwise_core::{Action, Plan};
use support::{World, rollout_with};

const HEADER_THEN_MIRROR: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n        managedRoutes: [{name: mirror}, {name: beta}]\n      steps:\n      - setWeight: 20\n      - setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}\n      - pause: {}\n      - setMirrorRoute: {name: mirror, percentage: 30, match: [{method: {exact: GET}}]}\n      - pause: {}\n      - setHeaderRoute: {name: beta}\n      - pause: {}\n";

fn updated(strategy: &str) -> World {
    let mut w = World::new(rollout_with(4, strategy));
    w.settle(30);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "first deploy: {:?}", w.status().message);
    w.set_image("demo:2");
    w.settle(30);
    w
}

fn route_names(p: &Plan) -> Option<Vec<String>> {
    p.actions.iter().find_map(|a| match a {
        Action::SetTraffic(t) => Some(t.routes.iter().map(|r| r.name().to_string()).collect()),
        _ => None,
    })
}

#[test]
fn a_routed_rollout_gets_its_traffic_finalizer_first_once_and_never_without_a_router() {
    let mut w = World::new(rollout_with(4, HEADER_THEN_MIRROR));
    let first = w.reconcile();
    assert_eq!(first.actions.first(), Some(&Action::AddTrafficFinalizer), "{:?}", first.actions);
    let rest = w.reconcile();
    assert!(!rest.actions.contains(&Action::AddTrafficFinalizer), "once it is there: {:?}", rest.actions);
    let mut basic = World::new(rollout_with(4, "    canary:\n      steps:\n      - setWeight: 20\n"));
    assert!(!basic.reconcile().actions.contains(&Action::AddTrafficFinalizer), "nothing routes, nothing to restore");
}

#[test]
fn a_header_route_is_asked_of_the_router_once_its_step_is_reached_and_kept_at_the_next_weights() {
    let w = updated(HEADER_THEN_MIRROR);
    assert_eq!(w.step(), 2, "paused after the header route: {:?}", w.status().message);
    assert_eq!(w.router_routes, ["beta"]);
    assert_eq!(w.router_weight, Some(20), "the weight is handed over with the route");
    let recorded = w.status().canary.unwrap().managed_routes.unwrap();
    assert_eq!((recorded[0].name.as_str(), recorded[0].step), ("beta", 1));
}

#[test]
fn routes_follow_the_order_of_managed_routes_and_a_step_without_conditions_removes_one() {
    let mut w = updated(HEADER_THEN_MIRROR);
    w.promote();
    w.settle(30);
    assert_eq!(w.step(), 4);
    assert_eq!(w.router_routes, ["mirror", "beta"], "mirror is listed first in managedRoutes");
    w.promote();
    w.settle(30);
    assert_eq!(w.step(), 6);
    assert_eq!(w.router_routes, ["mirror"]);
}

#[test]
fn completing_the_rollout_removes_every_managed_route() {
    let mut w = updated(HEADER_THEN_MIRROR);
    w.promote_full();
    w.settle(40);
    // The old pods go after scaleDownDelaySeconds.
    w.wait(60);
    w.settle(40);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", w.status().message);
    assert!(w.router_routes.is_empty(), "{:?}", w.router_routes);
    assert_eq!(w.status().canary.and_then(|c| c.managed_routes), None);
}

#[test]
fn abort_removes_every_managed_route_with_the_weight_back_to_zero() {
    let mut w = updated(HEADER_THEN_MIRROR);
    w.abort();
    let p = w.reconcile();
    assert_eq!(route_names(&p), Some(vec![]), "{:?}", p.actions);
    w.settle(30);
    assert!(w.router_routes.is_empty());
    assert_eq!(w.router_weight, Some(0));
}

/// A route write that failed is asked for again: the status keeps the routes the router last
/// made, not the ones the plan wanted.
#[test]
fn a_failed_route_write_is_made_again_by_the_next_plan() {
    let mut w = World::new(rollout_with(4, HEADER_THEN_MIRROR));
    w.settle(30);
    w.set_image("demo:2");
    let mut failed = None;
    for _ in 0..30 {
        let p = stepwise_core::plan(&w.rollout, &w.observed, &w.now);
        if let Some(at) = p.actions.iter().position(|a| matches!(a, Action::SetTraffic(t) if !t.routes.is_empty())) {
            failed = Some((p, at));
            break;
        }
        w.apply(&p);
        w.pods_settle();
    }
    let (p, at) = failed.expect("the header route is asked for");
    let prev = w.status();
    let status = status_after_failure(&w.rollout, &prev, &p, at, "VirtualService ns/app: boom", false, &w.now);
    assert_eq!(status.canary.as_ref().and_then(|c| c.managed_routes.clone()), None);
    w.rollout.status = Some(status);
    assert_eq!(route_names(&w.reconcile()), Some(vec!["beta".to_string()]), "asked again");
}

#[test]
fn a_router_that_cannot_make_header_routes_is_refused_naming_the_step_before_anything_moves() {
    let strategy = HEADER_THEN_MIRROR
        .replace("istio: {virtualService: {name: app}}", "traefik: {weightedTraefikServiceName: app}");
    let mut w = World::new(rollout_with(4, &strategy));
    w.reconcile();
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(
        w.status().message.as_deref(),
        Some(
            "InvalidSpec: spec.strategy.canary.steps[1].setHeaderRoute: the traefik router cannot make setHeaderRoute routes; gatewayAPI, istio, nginx can"
        )
    );
    assert!(w.observed.replica_sets.is_empty(), "nothing moved");
}

#[test]
fn a_mirror_route_asked_of_a_router_that_only_makes_header_routes_is_refused() {
    let strategy = HEADER_THEN_MIRROR.replace("istio: {virtualService: {name: app}}", "nginx: {stableIngress: app}");
    let mut w = World::new(rollout_with(4, &strategy));
    w.reconcile();
    assert_eq!(
        w.status().message.as_deref(),
        Some(
            "InvalidSpec: spec.strategy.canary.steps[3].setMirrorRoute: the nginx router cannot make setMirrorRoute routes; gatewayAPI, istio can"
        )
    );
}

#[test]
fn a_route_name_missing_from_managed_routes_is_refused_naming_the_field() {
    let strategy =
        HEADER_THEN_MIRROR.replace("managedRoutes: [{name: mirror}, {name: beta}]", "managedRoutes: [{name: mirror}]");
    let mut w = World::new(rollout_with(4, &strategy));
    w.reconcile();
    assert_eq!(
        w.status().message.as_deref(),
        Some(
            "InvalidSpec: spec.strategy.canary.steps[1].setHeaderRoute.name: beta is not listed in spec.strategy.canary.trafficRouting.managedRoutes"
        )
    );
}

#[test]
fn an_aws_router_is_refused_naming_the_routers_this_build_drives() {
    let strategy =
        HEADER_THEN_MIRROR.replace("istio: {virtualService: {name: app}}", "alb: {ingress: app, servicePort: 80}");
    let mut w = World::new(rollout_with(4, &strategy));
    w.reconcile();
    assert_eq!(
        w.status().message.as_deref(),
        Some(
            "InvalidSpec: spec.strategy.canary.trafficRouting.alb: the alb router is not available in this build of stepwise (it needs AWS); it drives ambassador, apisix, gatewayAPI, istio, nginx, smi, traefik"
        )
    );
}

/// Argo lets setCanaryScale and the routes share a step with each other and with a weight, a
/// pause or an analysis.
const SCALE_AND_HEADER_THEN_PAUSE: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n        managedRoutes: [{name: beta}, {name: mirror}]\n      steps:\n      - setCanaryScale: {replicas: 1}\n        setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}\n        setMirrorRoute: {name: mirror, percentage: 10, match: [{method: {exact: GET}}]}\n      - setWeight: 25\n      - setCanaryScale: {replicas: 2}\n        pause: {}\n";

#[test]
fn a_step_that_scales_the_canary_and_sets_routes_makes_the_routes_once_the_canary_pod_is_there() {
    let mut w = World::new(rollout_with(4, SCALE_AND_HEADER_THEN_PAUSE));
    w.settle(30);
    w.set_image("demo:2");
    let first = w.reconcile();
    assert_eq!(route_names(&first), None, "no route before the canary has a pod: {:?}", first.actions);
    assert_eq!(w.step(), 0);
    w.pods_settle();
    w.reconcile();
    assert!(w.step() >= 1, "{:?}", w.status().message);
    assert_eq!(w.pods(&w.hash()).1, 1, "the canary pod of setCanaryScale");
    assert_eq!(w.router_routes, ["beta", "mirror"], "both routes of the one step, in managedRoutes order");
}

#[test]
fn a_step_that_scales_the_canary_and_pauses_pauses_once_the_pods_are_there() {
    let w = updated(SCALE_AND_HEADER_THEN_PAUSE);
    assert_eq!(w.step(), 2, "paused at the third step: {:?}", w.status().message);
    assert_eq!(w.router_weight, Some(25));
    assert_eq!(w.pods(&w.hash()), (2, 2), "the pause waited for the two canary pods");
    let message = w.status().message.unwrap_or_default();
    assert!(message.contains("setCanaryScale 2 pods + pause"), "{message}");
}
