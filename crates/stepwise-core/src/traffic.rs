//! The traffic the routers are to carry, decided whole in one place: the Services (or Istio's
//! subsets) in their roles, the canary's weight out of the maximum, the versions' hashes and the
//! managed routes. A plan hands it to the controller in [`Action::SetTraffic`](crate::Action);
//! the controller reads the routers' objects back against [`last_set`], and the traffic
//! finalizer sends [`all_to_stable`]. The routers read only this: none of them looks at the
//! Rollout's spec or status again.

use stepwise_api::{CanaryStrategy, Rollout, RouteRequest};
pub use stepwise_traffic::Desired as Traffic;

/// The finalizer a Rollout that routes traffic carries, so that deleting it mid-rollout first
/// sends all traffic back to stable ([`all_to_stable`]): the routing objects outlive the Rollout.
pub const TRAFFIC_FINALIZER: &str = "stepwise.dev/restore-traffic";

/// Whether `rollout` routes traffic and lacks its finalizer (and is not being deleted, when none
/// may be added): then adding it is the plan's first action.
pub(crate) fn lacks_finalizer(rollout: &Rollout) -> bool {
    let routed = rollout.spec.strategy.canary.as_ref().is_some_and(|c| c.traffic_routing.is_some());
    let has = rollout.metadata.finalizers.iter().flatten().any(|f| f == TRAFFIC_FINALIZER);
    routed && !has && rollout.metadata.deletion_timestamp.is_none()
}

/// The two sides of a split: the canary's and the stable's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sides {
    /// The Services in front of (canary, stable): canaryService and stableService, or the
    /// pingPong Services in their roles now. None with Istio's subset-level splitting.
    pub services: (Option<String>, Option<String>),
    /// The (canary, stable) pod-template-hashes, for routers that select pods themselves.
    pub hashes: (Option<String>, Option<String>),
}

/// The traffic `canary` wants at `canary_weight` between `sides`, with exactly `routes` among
/// its managed routes.
pub(crate) fn wanted(canary: &CanaryStrategy, sides: Sides, canary_weight: i32, routes: Vec<RouteRequest>) -> Traffic {
    let routing = canary.traffic_routing.as_ref();
    Traffic {
        // Validation let a side go without a Service only where the router needs none (Istio's
        // DestinationRule subsets).
        canary_service: sides.services.0.unwrap_or_default(),
        stable_service: sides.services.1.unwrap_or_default(),
        canary_weight,
        max_weight: max_weight(canary),
        canary_hash: sides.hashes.0,
        stable_hash: sides.hashes.1,
        managed_route_names: routing
            .iter()
            .flat_map(|t| t.managed_routes.iter().flatten())
            .map(|r| r.name.clone())
            .collect(),
        routes,
    }
}

/// The weight that means all traffic (`trafficRouting.maxTrafficWeight`, 100 by default).
pub(crate) fn max_weight(canary: &CanaryStrategy) -> i32 {
    canary.traffic_routing.as_ref().and_then(|t| t.max_traffic_weight).unwrap_or(100)
}

/// The traffic the routers were last given, as the Rollout's status records it
/// (`status.canary.weights` and `managedRoutes`); None before any was given.
pub fn last_set(rollout: &Rollout) -> Option<Traffic> {
    let canary = rollout.spec.strategy.canary.as_ref().filter(|c| c.traffic_routing.is_some())?;
    let status = rollout.status.as_ref()?;
    let weights = status.canary.as_ref()?.weights.as_ref()?;
    let sides = Sides {
        services: (weights.canary.service_name.clone(), weights.stable.service_name.clone()),
        hashes: (weights.canary.pod_template_hash.clone(), weights.stable.pod_template_hash.clone()),
    };
    let routes = crate::plan::managed_routes(canary, status);
    Some(wanted(canary, sides, weights.canary.weight, routes))
}

/// All traffic to the version that is stable now and no managed route: what a routed Rollout
/// leaves behind when it is deleted. None for a Rollout that routes nothing.
pub fn all_to_stable(rollout: &Rollout) -> Option<Traffic> {
    let canary = rollout.spec.strategy.canary.as_ref().filter(|c| c.traffic_routing.is_some())?;
    let status = rollout.status.as_ref();
    let roles = status.and_then(|s| s.canary.as_ref()).and_then(|c| c.stable_ping_pong);
    let (canary_service, stable_service) = canary.services_in_roles(roles);
    let sides = Sides {
        services: (canary_service.map(String::from), stable_service.map(String::from)),
        // The canary's subset is left as it is: no traffic goes to it.
        hashes: (None, status.and_then(|s| s.stable_rs.clone())),
    };
    Some(wanted(canary, sides, 0, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(yaml: &str) -> Rollout {
        serde_yaml::from_str(yaml).unwrap()
    }

    const PING_PONG: &str = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: ns}\n\
        spec:\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}}\n\
        \x20 strategy:\n    canary:\n      pingPong: {pingService: web-ping, pongService: web-pong}\n\
        \x20     trafficRouting: {istio: {virtualService: {name: web}}, maxTrafficWeight: 1000, managedRoutes: [{name: beta}]}\n\
        \x20     steps: [{setWeight: 100}, {setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}}, {pause: {}}]\n";

    #[test]
    fn all_to_stable_sends_the_whole_maximum_to_the_pingpong_service_that_is_stable_now() {
        let mut r = rollout(PING_PONG);
        r.status = serde_json::from_value(serde_json::json!({
            "stableRS": "old", "currentStepIndex": 2,
            "canary": {"stablePingPong": "pong", "managedRoutes": [{"name": "beta", "step": 1}]}
        }))
        .unwrap();
        let traffic = all_to_stable(&r).unwrap();
        assert_eq!((traffic.canary_service.as_str(), traffic.stable_service.as_str()), ("web-ping", "web-pong"));
        assert_eq!((traffic.canary_weight, traffic.stable_weight()), (0, 1000));
        assert_eq!(traffic.stable_hash.as_deref(), Some("old"));
        assert!(traffic.routes.is_empty(), "every managed route goes");
        assert_eq!(traffic.managed_route_names, ["beta"], "so that the routers know which to remove");
    }

    #[test]
    fn last_set_is_what_the_status_records_with_the_routes_of_the_steps_done() {
        let mut r = rollout(PING_PONG);
        r.status = serde_json::from_value(serde_json::json!({
            "stableRS": "old", "currentStepIndex": 2,
            "canary": {"weights": {
                "canary": {"weight": 250, "podTemplateHash": "new", "serviceName": "web-pong"},
                "stable": {"weight": 750, "podTemplateHash": "old", "serviceName": "web-ping"}}}
        }))
        .unwrap();
        let traffic = last_set(&r).unwrap();
        assert_eq!((traffic.canary_weight, traffic.max_weight), (250, 1000));
        assert_eq!((traffic.canary_hash.as_deref(), traffic.stable_hash.as_deref()), (Some("new"), Some("old")));
        assert_eq!((traffic.canary_service.as_str(), traffic.stable_service.as_str()), ("web-pong", "web-ping"));
        assert_eq!(traffic.routes.iter().map(RouteRequest::name).collect::<Vec<_>>(), ["beta"]);
    }

    #[test]
    fn nothing_was_set_before_the_status_records_a_weight_and_nothing_routes_without_a_router() {
        assert_eq!(last_set(&rollout(PING_PONG)), None);
        let plain = PING_PONG.replace("      trafficRouting: {istio: {virtualService: {name: web}}, maxTrafficWeight: 1000, managedRoutes: [{name: beta}]}\n", "");
        assert_ne!(plain, PING_PONG);
        assert_eq!(all_to_stable(&rollout(&plain)), None);
    }
}
