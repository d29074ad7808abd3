//! The header and mirror routes a canary wants: a function of the steps done, so the router is
//! always handed the whole set and a lost write is made again from the status alone.

use std::collections::BTreeMap;

use stepwise_api::{CanaryStrategy, ManagedRouteStatus, RolloutStatus, RouteRequest};

/// The managed routes wanted once the steps before `status.currentStepIndex` are done, in the
/// order of `trafficRouting.managedRoutes`, each with the index of the step that asked for it.
/// A step without conditions removes its route; an aborted or finished canary has none, as in
/// Argo.
pub(crate) fn managed_routes(spec: &CanaryStrategy, status: &RolloutStatus) -> Vec<(RouteRequest, i32)> {
    let steps = spec.steps.as_deref().unwrap_or_default();
    let done = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
    if status.abort == Some(true) || done >= steps.len() {
        return Vec::new();
    }
    let mut wanted: BTreeMap<&str, (RouteRequest, i32)> = BTreeMap::new();
    for (i, step) in (0..).zip(&steps[..done]) {
        if let Some(route) = &step.set_header_route {
            if route.r#match.as_ref().is_some_and(|m| !m.is_empty()) {
                wanted.insert(&route.name, (RouteRequest::Header(route.clone()), i));
            } else {
                wanted.remove(route.name.as_str());
            }
        }
        if let Some(route) = &step.set_mirror_route {
            if route.r#match.as_ref().is_some_and(|m| !m.is_empty()) {
                wanted.insert(&route.name, (RouteRequest::Mirror(route.clone()), i));
            } else {
                wanted.remove(route.name.as_str());
            }
        }
    }
    let order = spec.traffic_routing.iter().flat_map(|t| t.managed_routes.iter().flatten());
    order.filter_map(|r| wanted.remove(r.name.as_str())).collect()
}

/// How the status records `routes`.
pub(crate) fn recorded(routes: &[(RouteRequest, i32)]) -> Vec<ManagedRouteStatus> {
    routes.iter().map(|(r, step)| ManagedRouteStatus { name: r.name().to_string(), step: *step }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> CanaryStrategy {
        serde_yaml::from_str(
            "trafficRouting:\n  istio: {virtualService: {name: vs}}\n  managedRoutes: [{name: mirror}, {name: beta}]\nsteps:\n\
             - setWeight: 10\n\
             - setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: 'yes'}}]}\n\
             - setMirrorRoute: {name: mirror, percentage: 50, match: [{method: {exact: GET}}]}\n\
             - pause: {}\n\
             - setHeaderRoute: {name: beta}\n\
             - pause: {}\n",
        )
        .unwrap()
    }

    fn at(idx: i32) -> RolloutStatus {
        RolloutStatus { current_step_index: Some(idx), ..Default::default() }
    }

    fn names(routes: &[(RouteRequest, i32)]) -> Vec<&str> {
        routes.iter().map(|(r, _)| r.name()).collect()
    }

    #[test]
    fn a_route_is_wanted_from_the_step_after_the_one_that_asks_for_it() {
        let spec = canary();
        assert!(managed_routes(&spec, &at(1)).is_empty());
        assert_eq!(names(&managed_routes(&spec, &at(2))), ["beta"]);
        assert_eq!(recorded(&managed_routes(&spec, &at(2))), [ManagedRouteStatus { name: "beta".into(), step: 1 }]);
    }

    #[test]
    fn routes_come_in_the_order_managed_routes_lists_them_not_the_order_of_the_steps() {
        assert_eq!(names(&managed_routes(&canary(), &at(3))), ["mirror", "beta"]);
    }

    #[test]
    fn a_step_without_conditions_removes_its_route() {
        assert_eq!(names(&managed_routes(&canary(), &at(5))), ["mirror"]);
    }

    #[test]
    fn an_aborted_or_finished_canary_wants_no_routes() {
        let spec = canary();
        assert!(managed_routes(&spec, &RolloutStatus { abort: Some(true), ..at(3) }).is_empty());
        assert!(managed_routes(&spec, &at(6)).is_empty());
    }
}
