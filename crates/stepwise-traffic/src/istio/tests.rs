//! The Istio router's tests, from fixtures: the weights of HTTP routes and of several
//! VirtualServices, pingPong, TLS and TCP routes, the managed header and mirror routes, and
//! subset-level splitting with its DestinationRule.

use serde_json::json;
use stepwise_api::{
    HeaderRoutingMatch, POD_TEMPLATE_HASH_LABEL, RouteMatch, RouteRequest, SetHeaderRoute, SetMirrorRoute, StringMatch,
};

use super::*;
use crate::testing::{apply, desired, without_weights};

fn router(yaml: &str) -> Istio {
    Istio::new(&serde_yaml::from_str(yaml).unwrap(), "shop").unwrap()
}

/// A VirtualService as users write them: a header route to a preview, the split route with
/// retries and a timeout, and a catch-all to another Service.
fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
        "spec": {
            "hosts": ["web.example.com"],
            "gateways": ["shop/gateway"],
            "http": [
                {"name": "preview", "match": [{"headers": {"x-preview": {"exact": "1"}}}],
                 "route": [{"destination": {"host": "preview", "port": {"number": 80}}}]},
                {"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
                 "route": [
                    {"destination": {"host": "web-stable.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 100},
                    {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0}
                 ]},
                {"name": "legacy", "route": [{"destination": {"host": "legacy"}}]}
            ]
        }
    })
}

const PRIMARY: &str = "virtualService: {name: web, routes: [primary]}\n";

#[test]
fn a_weight_changes_only_the_two_weights_of_the_named_route() {
    let vs = virtual_service();
    let target = virtual_service_target();
    let patch = router(PRIMARY).patch(&target, &vs, &desired(30)).unwrap().unwrap();
    assert_eq!(
        patch,
        vec![
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}),
            json!({"op": "add", "path": "/spec/http/1/route/1/weight", "value": 30}),
            json!({"op": "add", "path": "/spec/http/1/route/0/weight", "value": 70}),
        ]
    );
    let after = apply(&vs, &patch);
    assert_eq!(after["spec"]["http"][1]["route"][0]["weight"], 70);
    assert_eq!(after["spec"]["http"][1]["route"][1]["weight"], 30);
    assert_eq!(without_weights(&after), without_weights(&vs), "nothing but weights changes");
    assert_eq!(after["spec"]["http"][0], vs["spec"]["http"][0], "the header route is untouched");
    assert_eq!(router(PRIMARY).canary_weight(&target, &after, &desired(30)).unwrap(), Some(30));
}

fn virtual_service_target() -> Target {
    super::virtual_service("web", "shop")
}

/// A VirtualService split between the pingPong Services, all the traffic on ping.
fn ping_pong_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
        "spec": {"hosts": ["web"], "http": [{"name": "primary", "route": [
            {"destination": {"host": "web-ping"}, "weight": 100},
            {"destination": {"host": "web-pong"}, "weight": 0}
        ]}]}
    })
}

fn weights_of(vs: &Value) -> (Value, Value) {
    (vs["spec"]["http"][0]["route"][0]["weight"].clone(), vs["spec"]["http"][0]["route"][1]["weight"].clone())
}

#[test]
fn ping_pong_weight_goes_to_the_host_of_the_service_that_is_not_stable() {
    use stepwise_api::PingPong;
    let vs = ping_pong_virtual_service();
    let target = virtual_service_target();
    let want = crate::testing::ping_pong(PingPong::Ping, 30);
    let after = apply(&vs, &router(PRIMARY).patch(&target, &vs, &want).unwrap().unwrap());
    assert_eq!(weights_of(&after), (json!(70), json!(30)), "ping is stable, pong the canary");
    assert_eq!(router(PRIMARY).canary_weight(&target, &after, &want).unwrap(), Some(30));
}

#[test]
fn a_ping_pong_swap_at_full_weight_moves_no_traffic_and_the_next_release_weighs_the_other_host() {
    use stepwise_api::PingPong;
    let target = virtual_service_target();
    let mut vs = ping_pong_virtual_service();
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(0);
    vs["spec"]["http"][0]["route"][1]["weight"] = json!(100);
    let before = crate::testing::ping_pong(PingPong::Ping, 100);
    assert_eq!(router(PRIMARY).patch(&target, &vs, &before).unwrap(), None, "pong, the canary, has it all");
    let promoted = crate::testing::ping_pong(PingPong::Pong, 0);
    assert_eq!(router(PRIMARY).patch(&target, &vs, &promoted).unwrap(), None, "the swap writes nothing");
    assert_eq!(router(PRIMARY).canary_weight(&target, &vs, &promoted).unwrap(), Some(0));
    let next = crate::testing::ping_pong(PingPong::Pong, 20);
    let after = apply(&vs, &router(PRIMARY).patch(&target, &vs, &next).unwrap().unwrap());
    assert_eq!(weights_of(&after), (json!(20), json!(80)), "ping is the canary of the next release");
}

#[test]
fn a_ping_pong_header_route_goes_to_the_service_that_is_the_canary_now() {
    use stepwise_api::PingPong;
    let vs = ping_pong_virtual_service();
    let want = Desired {
        managed_route_names: vec!["mirror".into(), "beta".into()],
        routes: vec![beta()],
        ..crate::testing::ping_pong(PingPong::Pong, 10)
    };
    let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
    assert_eq!(after["spec"]["http"][0]["name"], "beta");
    assert_eq!(after["spec"]["http"][0]["route"][0]["destination"]["host"], "web-ping");
}

#[test]
fn a_weight_already_in_place_needs_no_patch() {
    let vs = virtual_service();
    assert_eq!(router(PRIMARY).patch(&virtual_service_target(), &vs, &desired(0)).unwrap(), None);
    assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &vs, &desired(0)).unwrap(), Some(0));
}

#[test]
fn without_route_names_the_only_http_route_is_split_and_omitted_weights_are_written() {
    let vs = json!({"metadata": {"name": "web", "resourceVersion": "1"}, "spec": {"http": [
        {"route": [{"destination": {"host": "web-canary"}}, {"destination": {"host": "web-stable"}}]}
    ]}});
    let r = router("virtualService: {name: web}\n");
    let after = apply(&vs, &r.patch(&virtual_service_target(), &vs, &desired(100)).unwrap().unwrap());
    assert_eq!(
        after["spec"]["http"][0]["route"],
        json!([
            {"destination": {"host": "web-canary"}, "weight": 100},
            {"destination": {"host": "web-stable"}, "weight": 0}
        ])
    );
}

#[test]
fn without_route_names_several_http_routes_are_an_error() {
    let err = router("virtualService: {name: web}\n")
        .patch(&virtual_service_target(), &virtual_service(), &desired(10))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: has 3 HTTP routes; name the ones to split in trafficRouting.istio.virtualService.routes"
    );
}

#[test]
fn a_named_route_that_is_absent_is_an_error_naming_it() {
    let err = router("virtualService: {name: web, routes: [primary, secondary]}\n")
        .patch(&virtual_service_target(), &virtual_service(), &desired(10))
        .unwrap_err();
    assert_eq!(err.to_string(), "VirtualService shop/web: route secondary not found");
}

#[test]
fn a_route_without_the_canary_service_is_an_error() {
    let mut vs = virtual_service();
    vs["spec"]["http"][1]["route"].as_array_mut().unwrap().pop();
    let err = router(PRIMARY).patch(&virtual_service_target(), &vs, &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: HTTP route primary has no destination for Service web-canary"
    );
}

#[test]
fn a_destination_naming_neither_service_is_an_error_and_nothing_is_written() {
    let err = router("virtualService: {name: web, routes: [primary, legacy]}\n")
        .patch(&virtual_service_target(), &virtual_service(), &desired(10))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: HTTP route legacy sends traffic to legacy, which is neither the canary Service web-canary nor the stable Service web-stable"
    );
}

#[test]
fn several_virtual_services_are_each_a_target_and_a_dotted_name_names_the_namespace() {
    let r = router("virtualServices:\n- {name: web, routes: [primary]}\n- {name: web-internal.mesh}\n");
    let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
    assert_eq!(targets, ["VirtualService shop/web", "VirtualService mesh/web-internal"]);
    let internal = json!({"metadata": {"name": "web-internal"}, "spec": {"http": [{"route": [
        {"destination": {"host": "web-stable.shop.svc.cluster.local"}, "weight": 100},
        {"destination": {"host": "web-canary.shop.svc.cluster.local"}, "weight": 0}
    ]}]}});
    let patch = r.patch(&r.targets()[1], &internal, &desired(25)).unwrap().unwrap();
    assert_eq!(patch.len(), 2, "no resourceVersion to guard with, two weights: {patch:?}");
    assert_eq!(r.canary_weight(&r.targets()[1], &apply(&internal, &patch), &desired(25)).unwrap(), Some(25));
}

#[test]
fn weights_that_do_not_add_up_are_not_a_verified_weight() {
    let mut vs = virtual_service();
    vs["spec"]["http"][1]["route"][1]["weight"] = json!(20);
    assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &vs, &desired(20)).unwrap(), None);
}

// ---- tlsRoutes and tcpRoutes ----

/// A VirtualService passing TLS through by SNI and TCP by port, beside an HTTP route.
fn passthrough() -> Value {
    let split = |stable: i32| {
        json!([
            {"destination": {"host": "web-stable", "port": {"number": 443}}, "weight": stable},
            {"destination": {"host": "web-canary", "port": {"number": 443}}, "weight": 100 - stable}
        ])
    };
    json!({
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "3"},
        "spec": {
            "hosts": ["web.example.com"],
            "http": [
                {"name": "a", "route": [{"destination": {"host": "other"}}]},
                {"name": "b", "route": [{"destination": {"host": "other"}}]}
            ],
            "tls": [
                {"match": [{"port": 443, "sniHosts": ["api.example.com"]}], "route": split(100)},
                {"match": [{"port": 443, "sniHosts": ["web.example.com", "www.example.com"]}], "route": split(100)}
            ],
            "tcp": [
                {"match": [{"port": 5432}], "route": [{"destination": {"host": "db"}}]},
                {"match": [{"port": 6379}], "route": split(100)}
            ]
        }
    })
}

#[test]
fn a_tls_route_is_found_by_port_and_exactly_its_sni_hosts_and_only_its_weights_change() {
    let r =
        router("virtualService: {name: web, tlsRoutes: [{port: 443, sniHosts: [www.example.com, web.example.com]}]}\n");
    let vs = passthrough();
    let patch = r.patch(&virtual_service_target(), &vs, &desired(40)).unwrap().unwrap();
    assert_eq!(
        patch[1..],
        [
            json!({"op": "add", "path": "/spec/tls/1/route/1/weight", "value": 40}),
            json!({"op": "add", "path": "/spec/tls/1/route/0/weight", "value": 60}),
        ]
    );
    let after = apply(&vs, &patch);
    assert_eq!(without_weights(&after), without_weights(&vs));
    assert_eq!(r.canary_weight(&virtual_service_target(), &after, &desired(40)).unwrap(), Some(40));
}

#[test]
fn naming_only_tls_or_tcp_routes_splits_no_http_route_even_with_several() {
    let r = router("virtualService: {name: web, tcpRoutes: [{port: 6379}]}\n");
    let patch = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap().unwrap();
    let paths: Vec<&str> = patch[1..].iter().map(|op| op["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/spec/tcp/1/route/1/weight", "/spec/tcp/1/route/0/weight"]);
}

#[test]
fn sni_hosts_must_be_exactly_those_of_the_route_not_some_of_them() {
    let r = router("virtualService: {name: web, tlsRoutes: [{port: 443, sniHosts: [web.example.com]}]}\n");
    let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: no TLS route matches port 443 and SNI hosts [web.example.com]"
    );
}

#[test]
fn a_tcp_route_that_matches_no_port_is_an_error_naming_the_port() {
    let r = router("virtualService: {name: web, tcpRoutes: [{port: 8080}]}\n");
    let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
    assert_eq!(err.to_string(), "VirtualService shop/web: no TCP route matches port 8080");
}

#[test]
fn a_tcp_route_to_another_service_is_an_error_naming_it_by_position() {
    let r = router("virtualService: {name: web, tcpRoutes: [{port: 5432}]}\n");
    let err = r.patch(&virtual_service_target(), &passthrough(), &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: TCP route spec.tcp[0] sends traffic to db, which is neither the canary Service web-canary nor the stable Service web-stable"
    );
}

// ---- managed routes: setHeaderRoute and setMirrorRoute ----

fn header(name: &str, matches: &[(&str, StringMatch)]) -> RouteRequest {
    RouteRequest::Header(SetHeaderRoute {
        name: name.into(),
        r#match: Some(
            matches
                .iter()
                .map(|(h, v)| HeaderRoutingMatch { header_name: (*h).into(), header_value: v.clone() })
                .collect(),
        ),
    })
}

fn exact(value: &str) -> StringMatch {
    StringMatch { exact: Some(value.into()), ..Default::default() }
}

fn mirror(name: &str, percentage: Option<i32>) -> RouteRequest {
    RouteRequest::Mirror(SetMirrorRoute {
        name: name.into(),
        r#match: Some(vec![
            RouteMatch { method: Some(exact("GET")), ..Default::default() },
            RouteMatch {
                path: Some(StringMatch { prefix: Some("/api".into()), ..Default::default() }),
                headers: Some([("x-debug".to_string(), exact("1"))].into()),
                ..Default::default()
            },
        ]),
        percentage,
    })
}

/// The weights of `w`, with `mirror` and `beta` managed and `routes` wanted.
fn with_routes(w: i32, routes: Vec<RouteRequest>) -> Desired {
    Desired { managed_route_names: vec!["mirror".into(), "beta".into()], routes, ..desired(w) }
}

fn beta() -> RouteRequest {
    header(
        "beta",
        &[
            ("x-beta", exact("yes")),
            ("x-tier", StringMatch { regex: Some("gold|silver".into()), ..Default::default() }),
        ],
    )
}

#[test]
fn a_header_route_is_placed_before_the_users_routes_and_sends_matching_requests_to_the_canary() {
    let vs = virtual_service();
    let want = with_routes(10, vec![beta()]);
    let patch = router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap();
    let after = apply(&vs, &patch);
    let http = after["spec"]["http"].as_array().unwrap();
    assert_eq!(
        http[0],
        json!({
            "name": "beta",
            "match": [{"headers": {"x-beta": {"exact": "yes"}, "x-tier": {"regex": "gold|silver"}}}],
            "route": [{"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 100}]
        }),
        "both header conditions in one match block: all must hold"
    );
    let mut users = vs["spec"]["http"].as_array().unwrap().clone();
    users[1]["route"][0]["weight"] = json!(90);
    users[1]["route"][1]["weight"] = json!(10);
    assert_eq!(http[1..], users[..], "the user's routes follow unchanged but for the weights");
    assert_eq!(router(PRIMARY).canary_weight(&virtual_service_target(), &after, &want).unwrap(), Some(10));
}

#[test]
fn a_changed_route_list_is_replaced_whole_only_if_it_is_still_as_read() {
    let vs = virtual_service();
    let patch = router(PRIMARY).patch(&virtual_service_target(), &vs, &with_routes(10, vec![beta()])).unwrap().unwrap();
    let ops: Vec<(&str, &str)> =
        patch.iter().map(|op| (op["op"].as_str().unwrap(), op["path"].as_str().unwrap())).collect();
    assert_eq!(ops, [("replace", "/metadata/resourceVersion"), ("test", "/spec/http"), ("replace", "/spec/http")]);
    assert_eq!(patch[1]["value"], vs["spec"]["http"]);
}

#[test]
fn managed_routes_in_place_need_no_patch_and_a_weight_change_then_moves_only_weights() {
    let r = router(PRIMARY);
    let want = with_routes(10, vec![beta()]);
    let after =
        apply(&virtual_service(), &r.patch(&virtual_service_target(), &virtual_service(), &want).unwrap().unwrap());
    assert_eq!(r.patch(&virtual_service_target(), &after, &want).unwrap(), None);
    let patch = r.patch(&virtual_service_target(), &after, &with_routes(30, vec![beta()])).unwrap().unwrap();
    let paths: Vec<&str> = patch[1..].iter().map(|op| op["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/spec/http/2/route/1/weight", "/spec/http/2/route/0/weight"], "addressed as read");
}

#[test]
fn a_mirror_route_sends_where_the_split_route_does_at_the_current_weights_and_copies_to_the_canary() {
    let vs = virtual_service();
    let r = router(PRIMARY);
    let after = apply(
        &vs,
        &r.patch(&virtual_service_target(), &vs, &with_routes(20, vec![mirror("mirror", Some(50))])).unwrap().unwrap(),
    );
    assert_eq!(
        after["spec"]["http"][0],
        json!({
            "name": "mirror",
            "match": [
                {"method": {"exact": "GET"}},
                {"uri": {"prefix": "/api"}, "headers": {"x-debug": {"exact": "1"}}}
            ],
            "route": [
                {"destination": {"host": "web-stable.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 80},
                {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 20}
            ],
            "mirror": {"host": "web-canary", "port": {"number": 80}},
            "mirrorPercentage": {"value": 50}
        })
    );
    let later = with_routes(40, vec![mirror("mirror", Some(50))]);
    let moved = apply(&after, &r.patch(&virtual_service_target(), &after, &later).unwrap().unwrap());
    assert_eq!(moved["spec"]["http"][0]["route"][0]["weight"], 60, "the mirror route's copy follows the weight");
    assert_eq!(moved["spec"]["http"][2]["route"][1]["weight"], 40);
    assert_eq!(r.patch(&virtual_service_target(), &moved, &later).unwrap(), None);
}

#[test]
fn a_mirror_route_mirrors_all_matching_requests_by_default() {
    let vs = virtual_service();
    let want = with_routes(0, vec![mirror("mirror", None)]);
    let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
    assert_eq!(after["spec"]["http"][0]["mirrorPercentage"], json!({"value": 100}));
}

#[test]
fn managed_routes_come_in_the_order_managed_routes_lists_them() {
    let vs = virtual_service();
    let want = with_routes(10, vec![beta(), mirror("mirror", None)]);
    let after = apply(&vs, &router(PRIMARY).patch(&virtual_service_target(), &vs, &want).unwrap().unwrap());
    let names: Vec<&str> =
        after["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mirror", "beta", "preview", "primary", "legacy"]);
}

#[test]
fn a_managed_route_no_longer_wanted_is_removed_and_the_weights_land_on_the_moved_split_route() {
    let r = router(PRIMARY);
    let both = with_routes(10, vec![beta(), mirror("mirror", None)]);
    let with_both =
        apply(&virtual_service(), &r.patch(&virtual_service_target(), &virtual_service(), &both).unwrap().unwrap());
    let none = with_routes(50, Vec::new());
    let after = apply(&with_both, &r.patch(&virtual_service_target(), &with_both, &none).unwrap().unwrap());
    let mut expected = virtual_service();
    expected["spec"]["http"][1]["route"][0]["weight"] = json!(50);
    expected["spec"]["http"][1]["route"][1]["weight"] = json!(50);
    assert_eq!(after, expected);
}

#[test]
fn a_users_route_named_like_a_managed_route_is_treated_as_managed_and_removed() {
    let mut vs = virtual_service();
    vs["spec"]["http"][0]["name"] = json!("beta");
    let after = apply(
        &vs,
        &router(PRIMARY).patch(&virtual_service_target(), &vs, &with_routes(0, Vec::new())).unwrap().unwrap(),
    );
    let names: Vec<&str> =
        after["spec"]["http"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["primary", "legacy"]);
}

#[test]
fn without_route_names_managed_routes_do_not_count_as_a_second_http_route() {
    let vs = json!({"metadata": {"name": "web"}, "spec": {"http": [
        {"name": "beta", "route": [{"destination": {"host": "web-canary"}, "weight": 100}]},
        {"route": [{"destination": {"host": "web-canary"}, "weight": 0}, {"destination": {"host": "web-stable"}, "weight": 100}]}
    ]}});
    let r = router("virtualService: {name: web}\n");
    let after = apply(&vs, &r.patch(&virtual_service_target(), &vs, &with_routes(5, Vec::new())).unwrap().unwrap());
    assert_eq!(after["spec"]["http"].as_array().unwrap().len(), 1);
    assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 5);
}

#[test]
fn a_route_step_whose_name_is_not_managed_is_an_error() {
    let want = Desired { routes: vec![header("gamma", &[("x-gamma", exact("1"))])], ..with_routes(0, Vec::new()) };
    let err = router(PRIMARY).patch(&virtual_service_target(), &virtual_service(), &want).unwrap_err();
    assert_eq!(err.to_string(), "setHeaderRoute gamma: the route is not listed in trafficRouting.managedRoutes");
}

#[test]
fn a_header_route_for_a_split_route_naming_neither_service_is_an_error() {
    let r = router("virtualService: {name: web, routes: [legacy]}\n");
    let err = r.patch(&virtual_service_target(), &virtual_service(), &with_routes(0, vec![beta()])).unwrap_err();
    assert!(matches!(err, Error::UnknownDestination { .. }), "{err}");
}

// ---- subset-level splitting ----

const SUBSETS: &str = "virtualService: {name: web, routes: [primary]}\n\
    destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable, additionalSubsetNames: [preview]}\n";

fn destination_rule_fixture() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "11"},
        "spec": {
            "host": "web.shop.svc.cluster.local",
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [
                {"name": "stable", "labels": {"app": "web", "rollouts-pod-template-hash": "6b9f"}},
                {"name": "preview", "labels": {"app": "web", "track": "preview"}},
                {"name": "canary", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}}}
            ]
        }
    })
}

fn subset_virtual_service() -> Value {
    json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4"}, "spec": {"http": [
        {"name": "primary", "route": [
            {"destination": {"host": "web.shop.svc.cluster.local", "subset": "stable", "port": {"number": 8080}}, "weight": 100},
            {"destination": {"host": "web.shop.svc.cluster.local", "subset": "canary", "port": {"number": 8080}}, "weight": 0}
        ]}
    ]}})
}

/// No Services with subset-level splitting.
fn subset_desired(w: i32) -> Desired {
    Desired { canary_service: String::new(), stable_service: String::new(), ..desired(w) }
}

#[test]
fn with_subset_level_splitting_the_destination_rule_is_the_first_target() {
    let targets: Vec<String> = router(SUBSETS).targets().iter().map(ToString::to_string).collect();
    assert_eq!(targets, ["DestinationRule shop/web", "VirtualService shop/web"]);
    let rule = &router(SUBSETS).targets()[0];
    assert_eq!((rule.group, rule.version, rule.plural), ("networking.istio.io", "v1", "destinationrules"));
}

#[test]
fn the_canary_and_stable_subsets_select_their_pods_by_pod_template_hash_and_nothing_else_changes() {
    let rule = destination_rule_fixture();
    let r = router(SUBSETS);
    let target = &r.targets()[0];
    let patch = r.patch(target, &rule, &subset_desired(0)).unwrap().unwrap();
    assert_eq!(
        patch,
        vec![
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "11"}),
            json!({"op": "add", "path": "/spec/subsets/2/labels", "value": {"stepwise.dev/pod-template-hash": "canary-hash"}}),
            json!({"op": "add", "path": "/spec/subsets/0/labels/stepwise.dev~1pod-template-hash", "value": "stable-hash"}),
            json!({"op": "remove", "path": "/spec/subsets/0/labels/rollouts-pod-template-hash"}),
        ]
    );
    let after = apply(&rule, &patch);
    let mut expected = rule.clone();
    expected["spec"]["subsets"][0]["labels"] = json!({"app": "web", POD_TEMPLATE_HASH_LABEL: "stable-hash"});
    expected["spec"]["subsets"][2]["labels"] = json!({POD_TEMPLATE_HASH_LABEL: "canary-hash"});
    assert_eq!(after, expected, "other subsets, labels and the traffic policy are untouched");
    assert_eq!(r.patch(target, &after, &subset_desired(0)).unwrap(), None);
}

#[test]
fn a_side_without_a_hash_is_left_as_it_is() {
    let r = router(SUBSETS);
    let want = Desired { stable_hash: None, ..subset_desired(0) };
    let patch = r.patch(&r.targets()[0], &destination_rule_fixture(), &want).unwrap().unwrap();
    assert_eq!(patch.len(), 2, "the guard and the canary's labels: {patch:?}");
}

#[test]
fn a_missing_subset_is_an_error_naming_it_and_its_field() {
    let mut rule = destination_rule_fixture();
    rule["spec"]["subsets"].as_array_mut().unwrap().pop();
    let r = router(SUBSETS);
    let err = r.patch(&r.targets()[0], &rule, &subset_desired(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "DestinationRule shop/web: has no subset canary (trafficRouting.istio.destinationRule.canarySubsetName)"
    );
}

#[test]
fn the_destination_rule_verifies_the_weight_only_once_both_subsets_select_the_wanted_pods() {
    let r = router(SUBSETS);
    let target = &r.targets()[0];
    let rule = destination_rule_fixture();
    assert_eq!(r.canary_weight(target, &rule, &subset_desired(20)).unwrap(), None);
    let after = apply(&rule, &r.patch(target, &rule, &subset_desired(20)).unwrap().unwrap());
    assert_eq!(r.canary_weight(target, &after, &subset_desired(20)).unwrap(), Some(20));
}

#[test]
fn with_subset_level_splitting_destinations_are_told_apart_by_subset() {
    let r = router(SUBSETS);
    let vs = subset_virtual_service();
    let target = &r.targets()[1];
    let after = apply(&vs, &r.patch(target, &vs, &subset_desired(30)).unwrap().unwrap());
    assert_eq!(after["spec"]["http"][0]["route"][0]["weight"], 70);
    assert_eq!(after["spec"]["http"][0]["route"][1]["weight"], 30);
    assert_eq!(r.canary_weight(target, &after, &subset_desired(30)).unwrap(), Some(30));
}

#[test]
fn with_subset_level_splitting_another_subset_or_none_is_an_error_naming_the_subsets() {
    let r = router(SUBSETS);
    let mut vs = subset_virtual_service();
    vs["spec"]["http"][0]["route"][1]["destination"]["subset"] = json!("preview");
    let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VirtualService shop/web: HTTP route primary sends traffic to web.shop.svc.cluster.local subset preview, which is neither the canary subset canary nor the stable subset stable"
    );
    vs["spec"]["http"][0]["route"].as_array_mut().unwrap().pop();
    let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
    assert_eq!(err.to_string(), "VirtualService shop/web: HTTP route primary has no destination for subset canary");
    vs["spec"]["http"][0]["route"][0]["destination"].as_object_mut().unwrap().remove("subset");
    let err = r.patch(&r.targets()[1], &vs, &subset_desired(30)).unwrap_err();
    assert!(err.to_string().contains("sends traffic to web.shop.svc.cluster.local without a subset"), "{err}");
}

#[test]
fn a_subset_level_header_route_sends_to_the_canary_subset_of_the_split_routes_host() {
    let r = router(SUBSETS);
    let vs = subset_virtual_service();
    let want = Desired { managed_route_names: vec!["beta".into()], routes: vec![beta()], ..subset_desired(0) };
    let after = apply(&vs, &r.patch(&r.targets()[1], &vs, &want).unwrap().unwrap());
    assert_eq!(
        after["spec"]["http"][0]["route"],
        json!([{"destination": {"host": "web.shop.svc.cluster.local", "subset": "canary", "port": {"number": 8080}}, "weight": 100}])
    );
}

#[test]
fn the_same_subset_for_canary_and_stable_is_refused() {
    let config = serde_yaml::from_str(
        "virtualService: {name: web}\ndestinationRule: {name: web, canarySubsetName: s, stableSubsetName: s}\n",
    )
    .unwrap();
    assert_eq!(
        Istio::new(&config, "shop").unwrap_err().to_string(),
        "trafficRouting.istio.destinationRule: canarySubsetName and stableSubsetName must be two different subsets"
    );
}
