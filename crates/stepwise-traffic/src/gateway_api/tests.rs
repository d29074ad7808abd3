//! The Gateway API router's tests, from fixtures: the weights of HTTPRoutes, GRPCRoutes and
//! TCPRoutes, pingPong, the plugin form, and the header and mirror rules.

use serde_json::json;

use super::*;
use crate::testing::{apply, desired, without_weights};

fn router() -> GatewayApi {
    GatewayApi::new(&serde_yaml::from_str("httpRoute: web\n").unwrap(), "shop").unwrap()
}

/// An HTTPRoute as users write them: a rule for an admin path to another Service, the split
/// rule with a timeout and a header filter.
fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "12"},
        "spec": {
            "parentRefs": [{"name": "gateway", "namespace": "edge"}],
            "hostnames": ["web.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                 "backendRefs": [{"name": "admin", "port": 80}]},
                {"timeouts": {"request": "10s"},
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
                 "backendRefs": [
                    {"name": "web-stable", "port": 80, "weight": 100},
                    {"name": "web-canary", "port": 80, "weight": 0}
                 ]}
            ]
        }
    })
}

fn target() -> Target {
    super::http_route("web", "shop")
}

#[test]
fn ping_pong_backend_refs_are_weighed_by_the_services_current_roles() {
    use stepwise_api::PingPong;
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4"},
        "spec": {"rules": [{"backendRefs": [
            {"name": "web-ping", "port": 80, "weight": 100},
            {"name": "web-pong", "port": 80, "weight": 0}
        ]}]}
    });
    let weights = |r: &Value| {
        (
            r["spec"]["rules"][0]["backendRefs"][0]["weight"].clone(),
            r["spec"]["rules"][0]["backendRefs"][1]["weight"].clone(),
        )
    };
    let first = crate::testing::ping_pong(PingPong::Ping, 40);
    let during = apply(&route, &router().patch(&target(), &route, &first).unwrap().unwrap());
    assert_eq!(weights(&during), (json!(60), json!(40)), "pong is the canary of the first release");
    let full = apply(
        &during,
        &router().patch(&target(), &during, &crate::testing::ping_pong(PingPong::Ping, 100)).unwrap().unwrap(),
    );
    let swapped = crate::testing::ping_pong(PingPong::Pong, 0);
    assert_eq!(router().patch(&target(), &full, &swapped).unwrap(), None, "the swap writes nothing");
    assert_eq!(router().canary_weight(&target(), &full, &swapped).unwrap(), Some(0));
    let next = crate::testing::ping_pong(PingPong::Pong, 25);
    let after = apply(&full, &router().patch(&target(), &full, &next).unwrap().unwrap());
    assert_eq!(weights(&after), (json!(25), json!(75)), "ping is the canary of the next release");
}

#[test]
fn a_weight_changes_only_the_backend_weights_of_the_rule_naming_both_services() {
    let route = http_route();
    let patch = router().patch(&target(), &route, &desired(40)).unwrap().unwrap();
    assert_eq!(
        patch,
        vec![
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "12"}),
            json!({"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 40}),
            json!({"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 60}),
        ]
    );
    let after = apply(&route, &patch);
    assert_eq!(without_weights(&after), without_weights(&route), "nothing but weights changes");
    assert_eq!(after["spec"]["rules"][0], route["spec"]["rules"][0], "the admin rule is untouched");
    assert_eq!(router().canary_weight(&target(), &after, &desired(40)).unwrap(), Some(40));
    assert_eq!(router().patch(&target(), &after, &desired(40)).unwrap(), None, "and then nothing to do");
}

#[test]
fn omitted_weights_count_as_gateway_apis_default_of_one_and_are_written() {
    let route = json!({"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [
        {"name": "web-canary", "port": 80}, {"name": "web-stable", "port": 80}
    ]}]}});
    assert_eq!(router().canary_weight(&target(), &route, &desired(1)).unwrap(), None);
    let after = apply(&route, &router().patch(&target(), &route, &desired(100)).unwrap().unwrap());
    assert_eq!(after["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
    assert_eq!(after["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
}

#[test]
fn a_rule_naming_only_one_of_the_services_is_left_alone() {
    let mut route = http_route();
    route["spec"]["rules"][0]["backendRefs"] = json!([{"name": "web-stable", "port": 80}]);
    let patch = router().patch(&target(), &route, &desired(10)).unwrap().unwrap();
    assert!(patch.iter().skip(1).all(|op| op["path"].as_str().unwrap().starts_with("/spec/rules/1/")), "{patch:?}");
    route["spec"]["rules"][1]["backendRefs"].as_array_mut().unwrap().remove(1);
    let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTPRoute shop/web: no rule has backendRefs to the canary Service web-canary and the stable Service web-stable"
    );
}

#[test]
fn a_backend_naming_neither_service_in_a_split_rule_is_an_error() {
    let mut route = http_route();
    route["spec"]["rules"][1]["backendRefs"].as_array_mut().unwrap().push(json!({"name": "other", "port": 80}));
    let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTPRoute shop/web: rule 1 sends traffic to Service other, which is neither the canary Service web-canary nor the stable Service web-stable"
    );
}

#[test]
fn a_route_with_no_rule_for_the_services_is_an_error() {
    let mut route = http_route();
    route["spec"]["rules"].as_array_mut().unwrap().pop();
    let err = router().patch(&target(), &route, &desired(10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTPRoute shop/web: no rule has backendRefs to the canary Service web-canary and the stable Service web-stable"
    );
}

#[test]
fn the_argo_plugin_configuration_reads_as_the_built_in_one() {
    let config =
        from_plugin_config(&json!({"httpRoutes": [{"name": "a", "useHeaderRoutes": true}, "b"], "namespace": "edge"}))
            .unwrap();
    let r = GatewayApi::new(&config, "shop").unwrap();
    let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
    assert_eq!(targets, ["HTTPRoute edge/a", "HTTPRoute edge/b"]);
    assert!(from_plugin_config(&json!({"httpRoute": 3})).is_err());
    assert!(GatewayApi::new(&from_plugin_config(&json!({})).unwrap(), "shop").is_err());
}

/// A TCPRoute for a database: one rule, the stable and canary Services on their port.
fn tcp_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "TCPRoute",
        "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "3"},
        "spec": {
            "parentRefs": [{"name": "gateway", "namespace": "edge", "sectionName": "postgres"}],
            "rules": [{"backendRefs": [
                {"name": "web-stable", "port": 5432, "weight": 100},
                {"name": "web-canary", "port": 5432, "weight": 0}
            ]}]
        }
    })
}

#[test]
fn grpc_and_tcp_routes_are_split_like_http_routes_and_their_kind_names_them() {
    let config = from_plugin_config(&json!({"grpcRoutes": [{"name": "api"}], "tcpRoute": "db"})).unwrap();
    let r = GatewayApi::new(&config, "shop").unwrap();
    let targets: Vec<String> = r.targets().iter().map(ToString::to_string).collect();
    assert_eq!(targets, ["GRPCRoute shop/api", "TCPRoute shop/db"]);
    assert_eq!((r.targets()[0].plural, r.targets()[1].plural), ("grpcroutes", "tcproutes"));
    let tcp = &r.targets()[1];
    let after = apply(&tcp_route(), &r.patch(tcp, &tcp_route(), &desired(30)).unwrap().unwrap());
    assert_eq!(after["spec"]["rules"][0]["backendRefs"][1]["weight"], 30);
    assert_eq!(after["spec"]["rules"][0]["backendRefs"][0]["weight"], 70);
    assert_eq!(without_weights(&after), without_weights(&tcp_route()));
    assert_eq!(r.canary_weight(tcp, &after, &desired(30)).unwrap(), Some(30));
}

#[test]
fn header_routes_go_into_http_routes_only() {
    let config: GatewayApiTrafficRouting = serde_yaml::from_str(
        "httpRoute: web
tcpRoute: db
",
    )
    .unwrap();
    let r = GatewayApi::new(&config, "shop").unwrap();
    assert!(r.takes_routes(&r.targets()[0]));
    assert!(!r.takes_routes(&r.targets()[1]));
    let plugin = GatewayApi::from_plugin(
        &json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": true}], "tcpRoute": "db"}),
        "shop",
    )
    .unwrap();
    assert_eq!(plugin.header_routes, [true, false]);
}

/// What the controller hands the router with the routes `routes` wanted, the managed routes
/// being `preview` then `shadow`.
fn with_routes(canary_weight: i32, routes: Value) -> Desired {
    Desired {
        managed_route_names: vec!["preview".into(), "shadow".into()],
        routes: serde_json::from_value(routes).unwrap(),
        ..desired(canary_weight)
    }
}

fn preview_by_header() -> Value {
    json!([{"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])
}

/// The rule the header route `preview` of [`preview_by_header`] makes in [`http_route`].
fn preview_rule() -> Value {
    json!({
        "name": "preview",
        "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                     "headers": [{"name": "X-Canary", "type": "Exact", "value": "yes"}]}],
        "timeouts": {"request": "10s"},
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}}],
        "backendRefs": [{"name": "web-canary", "port": 80, "weight": 1}]
    })
}

fn rules(route: &Value) -> &Vec<Value> {
    route["spec"]["rules"].as_array().unwrap()
}

#[test]
fn a_header_route_is_a_named_rule_before_the_split_rule_sending_to_the_canary_only() {
    let route = http_route();
    let d = with_routes(20, preview_by_header());
    let patch = router().patch(&target(), &route, &d).unwrap().unwrap();
    assert_eq!(patch[0], json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "12"}));
    assert_eq!(patch[1], json!({"op": "test", "path": "/spec/rules", "value": route["spec"]["rules"]}));
    assert_eq!(patch[2]["op"], "replace");
    assert_eq!(patch[2]["path"], "/spec/rules");
    assert_eq!(patch.len(), 3);
    let after = apply(&route, &patch);
    assert_eq!(rules(&after).len(), 3);
    assert_eq!(rules(&after)[0], route["spec"]["rules"][0], "the admin rule is untouched");
    assert_eq!(rules(&after)[1], preview_rule(), "the split rule's matches, filters and timeouts, with the header");
    let mut split = route["spec"]["rules"][1].clone();
    split["backendRefs"][0]["weight"] = json!(80);
    split["backendRefs"][1]["weight"] = json!(20);
    assert_eq!(rules(&after)[2], split, "the split rule only gets its weights");
    assert_eq!(router().canary_weight(&target(), &after, &d).unwrap(), Some(20), "the header rule is no split");
    assert_eq!(router().patch(&target(), &after, &d).unwrap(), None, "and then nothing to do");
}

#[test]
fn a_weight_change_with_a_header_route_in_place_sets_the_weights_only() {
    let d = with_routes(20, preview_by_header());
    let route = apply(&http_route(), &router().patch(&target(), &http_route(), &d).unwrap().unwrap());
    let patch = router().patch(&target(), &route, &with_routes(50, preview_by_header())).unwrap().unwrap();
    assert_eq!(
        patch[1..],
        [
            json!({"op": "add", "path": "/spec/rules/2/backendRefs/1/weight", "value": 50}),
            json!({"op": "add", "path": "/spec/rules/2/backendRefs/0/weight", "value": 50}),
        ]
    );
}

#[test]
fn the_defaults_the_api_server_fills_in_are_no_change() {
    let d = with_routes(20, preview_by_header());
    let mut stored = apply(&http_route(), &router().patch(&target(), &http_route(), &d).unwrap().unwrap());
    for rule in stored["spec"]["rules"].as_array_mut().unwrap() {
        if rule.get("matches").is_none() {
            rule["matches"] = json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
        }
        for backend in rule["backendRefs"].as_array_mut().unwrap() {
            backend["group"] = json!("");
            backend["kind"] = json!("Service");
        }
    }
    assert_eq!(router().patch(&target(), &stored, &d).unwrap(), None);
}

#[test]
fn removing_a_header_route_removes_its_rule_and_keeps_the_users() {
    let route = apply(
        &http_route(),
        &router().patch(&target(), &http_route(), &with_routes(20, preview_by_header())).unwrap().unwrap(),
    );
    // A step without conditions, or no step at all, removes the route.
    for routes in [json!([{"header": {"name": "preview"}}]), json!([])] {
        let after = apply(&route, &router().patch(&target(), &route, &with_routes(20, routes)).unwrap().unwrap());
        let mut expected = http_route();
        expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(80);
        expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(20);
        assert_eq!(after, expected);
    }
}

#[test]
fn each_match_of_the_split_rule_takes_every_header_condition_and_a_prefix_becomes_an_anchored_expression() {
    let mut route = http_route();
    route["spec"]["rules"][1]["matches"] = json!([
        {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-tenant", "value": "acme"}]},
        {"path": {"type": "Exact", "value": "/v2"}, "queryParams": [{"name": "beta", "value": "1"}]}
    ]);
    let d = with_routes(
        10,
        json!([{"header": {"name": "preview", "match": [
            {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
            {"headerName": "X-Version", "headerValue": {"prefix": "v1.2"}},
            {"headerName": "X-User", "headerValue": {"regex": "^(ann|bob)$"}}
        ]}}]),
    );
    let after = apply(&route, &router().patch(&target(), &route, &d).unwrap().unwrap());
    let ours = [
        json!({"name": "X-Canary", "type": "Exact", "value": "yes"}),
        json!({"name": "X-Version", "type": "RegularExpression", "value": "^v1\\.2.*"}),
        json!({"name": "X-User", "type": "RegularExpression", "value": "^(ann|bob)$"}),
    ];
    let mut first = vec![json!({"name": "x-tenant", "value": "acme"})];
    first.extend(ours.iter().cloned());
    assert_eq!(
        rules(&after)[1]["matches"],
        json!([
            {"path": {"type": "PathPrefix", "value": "/api"}, "headers": first},
            {"path": {"type": "Exact", "value": "/v2"}, "queryParams": [{"name": "beta", "value": "1"}], "headers": ours}
        ])
    );
}

#[test]
fn several_split_rules_each_get_their_own_numbered_rule_in_managed_routes_order() {
    let route = json!({"metadata": {"name": "web", "resourceVersion": "3"}, "spec": {"rules": [
        {"matches": [{"path": {"value": "/a"}}], "backendRefs": [{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}]},
        {"matches": [{"path": {"value": "/b"}}], "backendRefs": [{"name": "web-stable", "port": 8080, "weight": 100}, {"name": "web-canary", "port": 8080, "weight": 0}]}
    ]}});
    // Listed out of order on purpose: managedRoutes decides.
    let d = with_routes(
        0,
        json!([
            {"mirror": {"name": "shadow", "match": [{"method": {"exact": "GET"}}]}},
            {"header": {"name": "preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}
        ]),
    );
    let after = apply(&route, &router().patch(&target(), &route, &d).unwrap().unwrap());
    let names: Vec<&str> = rules(&after).iter().map(|r| r["name"].as_str().unwrap_or("(user's)")).collect();
    assert_eq!(names, ["preview-0", "shadow-0", "(user's)", "preview-1", "shadow-1", "(user's)"]);
    assert_eq!(rules(&after)[3]["backendRefs"], json!([{"name": "web-canary", "port": 8080, "weight": 1}]));
    assert_eq!(router().patch(&target(), &after, &d).unwrap(), None);
}

#[test]
fn a_users_rule_named_like_a_managed_route_is_taken_for_a_managed_one() {
    let mut route = http_route();
    route["spec"]["rules"].as_array_mut().unwrap().insert(
        0,
        json!({"name": "preview", "matches": [{"path": {"value": "/old"}}], "backendRefs": [{"name": "web-canary", "port": 80}]}),
    );
    let after =
        apply(&route, &router().patch(&target(), &route, &with_routes(0, preview_by_header())).unwrap().unwrap());
    let names: Vec<Value> = rules(&after).iter().map(|r| r["name"].clone()).collect();
    assert_eq!(names, [Value::Null, json!("preview"), Value::Null]);
    assert_eq!(rules(&after)[1], preview_rule());
}

#[test]
fn a_mirror_route_splits_as_the_split_rule_and_mirrors_its_share_to_the_canary() {
    let route = http_route();
    let shadow = json!([{"mirror": {"name": "shadow", "percentage": 30, "match": [
        {"method": {"exact": "GET"}, "path": {"prefix": "/api"}, "headers": {"x-debug": {"exact": "1"}}}
    ]}}]);
    let after = apply(&route, &router().patch(&target(), &route, &with_routes(20, shadow.clone())).unwrap().unwrap());
    assert_eq!(
        rules(&after)[1],
        json!({
            "name": "shadow",
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                         "headers": [{"name": "x-debug", "type": "Exact", "value": "1"}]}],
            "timeouts": {"request": "10s"},
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-via", "value": "gw"}]}},
                {"type": "RequestMirror", "requestMirror": {
                    "backendRef": {"group": "", "kind": "Service", "name": "web-canary", "port": 80}, "percent": 30}}
            ],
            "backendRefs": [{"name": "web-stable", "port": 80, "weight": 80}, {"name": "web-canary", "port": 80, "weight": 20}]
        })
    );
    assert_eq!(router().canary_weight(&target(), &after, &with_routes(20, shadow.clone())).unwrap(), Some(20));
    assert_eq!(router().patch(&target(), &after, &with_routes(20, shadow.clone())).unwrap(), None);
    // The mirror rule's weights follow the split rule's.
    let later = apply(&after, &router().patch(&target(), &after, &with_routes(60, shadow)).unwrap().unwrap());
    for i in [1, 2] {
        let weights: Vec<&Value> =
            rules(&later)[i]["backendRefs"].as_array().unwrap().iter().map(|b| &b["weight"]).collect();
        assert_eq!(weights, [&json!(40), &json!(60)], "rule {i}");
    }
}

#[test]
fn a_mirror_match_with_no_request_in_common_with_the_split_rule_makes_no_rule() {
    let mut route = http_route();
    route["spec"]["rules"][1]["matches"] = json!([{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}]);
    let elsewhere = json!([{"mirror": {"name": "shadow", "match": [
        {"path": {"prefix": "/apis"}}, {"method": {"exact": "GET"}}
    ]}}]);
    assert_eq!(router().patch(&target(), &route, &with_routes(0, elsewhere)).unwrap(), None);
    let within = json!([{"mirror": {"name": "shadow", "match": [{"path": {"exact": "/api/orders"}}]}}]);
    let after = apply(&route, &router().patch(&target(), &route, &with_routes(0, within)).unwrap().unwrap());
    assert_eq!(
        rules(&after)[1]["matches"],
        json!([{"path": {"type": "Exact", "value": "/api/orders"}, "method": "POST"}])
    );
}

#[test]
fn what_gateway_api_cannot_express_is_an_error_naming_the_step() {
    let err = |route: &Value, routes: Value| {
        router().patch(&target(), route, &with_routes(0, routes)).unwrap_err().to_string()
    };
    let mut tenant = http_route();
    tenant["spec"]["rules"][1]["matches"] = json!([{"headers": [{"name": "x-canary", "value": "internal"}]}]);
    assert_eq!(
        err(&tenant, preview_by_header()),
        "HTTPRoute shop/web: rule 1 already matches header X-Canary otherwise; setHeaderRoute preview cannot add a second condition on it (Gateway API takes one per header)"
    );
    assert_eq!(
        err(
            &http_route(),
            json!([{"header": {"name": "preview", "match": [
                {"headerName": "X-Canary", "headerValue": {"exact": "yes"}},
                {"headerName": "x-canary", "headerValue": {"exact": "no"}}
            ]}}])
        ),
        "setHeaderRoute preview: header x-canary has two conditions; Gateway API takes one per header"
    );
    assert_eq!(
        err(
            &http_route(),
            json!([{"header": {"name": "other", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])
        ),
        "setHeaderRoute other: the route must be listed in trafficRouting.managedRoutes"
    );
    let shouting = Desired { managed_route_names: vec!["Preview".into()], ..with_routes(0, json!([])) };
    let shouting = Desired {
        routes: serde_json::from_value(json!([{"header": {"name": "Preview", "match": [{"headerName": "X-Canary", "headerValue": {"exact": "yes"}}]}}])).unwrap(),
        ..shouting
    };
    assert_eq!(
        router().patch(&target(), &http_route(), &shouting).unwrap_err().to_string(),
        "trafficRouting.managedRoutes: Preview cannot name an HTTPRoute rule; Gateway API wants lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    );
    let mut regex_path = http_route();
    regex_path["spec"]["rules"][1]["matches"] = json!([{"path": {"type": "RegularExpression", "value": "/v[0-9]+"}}]);
    assert_eq!(
        err(&regex_path, json!([{"mirror": {"name": "shadow", "match": [{"path": {"prefix": "/v2"}}]}}])),
        "HTTPRoute shop/web: setMirrorRoute shadow: rule 1: its path PathPrefix /v2 cannot be combined with the rule's path RegularExpression /v[0-9]+"
    );
    assert_eq!(
        err(&http_route(), json!([{"mirror": {"name": "shadow", "match": [{"method": {"prefix": "G"}}]}}])),
        "setMirrorRoute shadow: Gateway API matches a method exactly only"
    );
    let mut crowded = http_route();
    let admin = crowded["spec"]["rules"][0].clone();
    for _ in 0..14 {
        crowded["spec"]["rules"].as_array_mut().unwrap().insert(0, admin.clone());
    }
    assert_eq!(
        err(&crowded, preview_by_header()),
        "HTTPRoute shop/web: the header and mirror routes would make 17 rules; Gateway API allows 16 per HTTPRoute"
    );
}

#[test]
fn the_argo_plugin_adds_header_routes_only_to_routes_with_use_header_routes() {
    let r = GatewayApi::from_plugin(
        &json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": true}, {"name": "api"}], "namespace": "shop"}),
        "ns",
    )
    .unwrap();
    let d = with_routes(20, preview_by_header());
    let patch = r.patch(&target(), &http_route(), &d).unwrap().unwrap();
    assert_eq!(patch[1]["op"], "test", "web takes header routes");
    let api = super::http_route("api", "shop");
    let patch = r.patch(&api, &http_route(), &d).unwrap().unwrap();
    assert!(patch.iter().skip(1).all(|op| op["path"].as_str().unwrap().ends_with("/weight")), "api: weights only");
    let single = GatewayApi::from_plugin(&json!({"httpRoute": "web"}), "shop").unwrap();
    assert_eq!(single.patch(&target(), &http_route(), &d).unwrap().unwrap()[1]["op"], "test");
    let none = GatewayApi::from_plugin(&json!({"httpRoutes": [{"name": "web"}]}), "shop").unwrap();
    assert_eq!(
        none.patch(&target(), &http_route(), &d).unwrap_err().to_string(),
        "trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"]: setHeaderRoute preview needs an httpRoute or an httpRoutes entry with useHeaderRoutes: true; as in Argo's plugin, only those get header and mirror routes"
    );
    assert_eq!(none.patch(&target(), &http_route(), &desired(20)).unwrap().unwrap().len(), 3, "weights still set");
    assert!(
        GatewayApi::from_plugin(&json!({"httpRoutes": [{"name": "web", "useHeaderRoutes": "yes"}]}), "shop").is_err()
    );
}
