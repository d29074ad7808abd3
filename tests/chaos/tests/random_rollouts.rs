//! Random Rollouts: manifests generated from the whole schema (both strategies, and sometimes
//! neither or both; odd durations, weights and fenceposts; Services, routing objects, analysis
//! templates and Deployments that exist or not) applied to the real API server, with one
//! controller reconciling them all beside three well-formed "witness" Rollouts.
//!
//! What must hold: the API server refuses a manifest with a message naming the field; the
//! controller never panics (its log, its pid); the witnesses go on releasing new versions in a
//! normal time while the broken ones are reconciled (a broken Rollout never stalls the others);
//! every accepted Rollout is observed and ends in a status that names its problem; and at the end
//! the controller has settled (no Rollout is acted on in a loop).
//!
//! The manifests come from a proptest strategy sampled with a fixed seed: `CHAOS_SEED` (a u64)
//! chooses another, `CHAOS_RANDOM_ROLLOUTS` the number of Rollouts (40 by default, as in CI; 500
//! for the full run). A Rollout that breaks an assertion is printed whole, with the objects made
//! for it, so that it can become a plain regression test.
//!
//! Naming convention of the generator: an object a manifest names is created by the test before
//! the Rollout unless its name starts with `missing-`; a routing object whose name starts with
//! `stray-` exists but routes to other Services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};
use stepwise_api::Rollout;
use stepwise_e2e::{Env, eventually, repo_root, secs};

/// The seed when `CHAOS_SEED` is not set: CI samples the same Rollouts on every run.
const DEFAULT_SEED: u64 = 20_250_601;
/// Rollouts when `CHAOS_RANDOM_ROLLOUTS` is not set (the CI version).
const DEFAULT_COUNT: usize = 40;
/// A witness releases a new version (three pod moves and two pauses of 2 s, about 10 s on an idle
/// cluster) beside the random Rollouts within this long, or within `WITNESS_SLOWDOWN` times what
/// the same release took before any random Rollout existed, whichever is longer: on a machine
/// loaded by other work everything is slower, but a stalled witness never arrives.
const WITNESS_DEADLINE: Duration = Duration::from_secs(90);
const WITNESS_SLOWDOWN: u32 = 4;
/// How many witnesses.
const WITNESSES: usize = 3;
/// At the end, a window in which a settled controller acts on each Rollout a few times at most (a
/// pause that ends, a pod that becomes ready, a retry every 30 s); a Rollout acted on more often
/// than `MOST_ACTIONS_WHEN_SETTLED` times in it is in a loop.
const SETTLED_WINDOW: Duration = Duration::from_secs(10);
const MOST_ACTIONS_WHEN_SETTLED: usize = 20;
/// Requests in flight at once when creating objects: enough to load the controller, few enough
/// not to be throttled by the client.
const IN_FLIGHT: usize = 8;

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

type Gen = BoxedStrategy<Value>;

/// One of `items`, each as likely.
fn pick(items: Vec<Value>) -> Gen {
    proptest::sample::select(items).boxed()
}

/// A JSON object of the fields that are set.
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

/// A weighted choice that leaves out the options of weight 0 (proptest refuses them).
fn weighted(options: Vec<(u32, Gen)>) -> Gen {
    Union::new_weighted(options.into_iter().filter(|(w, _)| *w > 0).collect()).boxed()
}

/// Pause durations that the schema accepts but the parser cannot hold: the controller must say
/// so on the Rollout rather than overflow.
const TOO_LONG_DURATIONS: [&str; 2] = ["99999999999999999999s", "18446744073709551616"];

/// A pause duration: mostly short, sometimes long, odd (but schema-valid) or refused.
fn duration() -> Gen {
    let odd =
        ["0s", "0", "250ms", "1.5s", "1h0m0s", "0001s", "1µs", "3", "2m3s", "100ns", "0.000000001s", "9999999999h"];
    weighted(vec![
        (18, pick(vec![json!("1s"), json!("2s"), json!("5s")])),
        (6, pick(vec![json!("1m"), json!("30m"), json!("1h")])),
        (6, (0i64..6).prop_map(Value::from).boxed()),
        (9, pick(odd.iter().map(|s| json!(s)).collect())),
        (2, pick(TOO_LONG_DURATIONS.iter().map(|s| json!(s)).collect())),
        (1, pick(vec![json!("10x"), json!("-5s"), json!("5 s"), json!("1..5s"), json!(""), json!(-3)])),
    ])
}

/// Seconds for an int32 field: the usual values, and rarely the edges (the int32 limit, beyond
/// it, negative).
fn seconds(usual: &[i64]) -> Gen {
    weighted(vec![
        (40, pick(usual.iter().map(|s| json!(s)).collect())),
        (1, pick(vec![json!(2_147_483_647i64), json!(2_147_483_648i64), json!(99_999_999_999i64), json!(-1)])),
    ])
}

/// A canary weight: the ends, anything between, and rarely above 100 or negative.
fn weight() -> Gen {
    weighted(vec![
        (10, pick(vec![json!(0), json!(100)])),
        (30, (0i64..=100).prop_map(Value::from).boxed()),
        (1, pick(vec![json!(101), json!(150), json!(1000), json!(-1)])),
    ])
}

/// maxSurge or maxUnavailable: numbers, percentages (`"3"` is a percentage to Argo), and rarely
/// what no reader can make sense of.
fn fencepost() -> Gen {
    weighted(vec![
        (12, (0i64..4).prop_map(Value::from).boxed()),
        (15, pick(["0%", "25%", "50%", "100%", "3", "0", "150%"].iter().map(|s| json!(s)).collect())),
        (1, pick(vec![json!("lots"), json!("-1"), json!("25 %"), json!(-1), json!(4_294_967_296i64)])),
    ])
}

/// An analysis: templates that exist or not (the test creates `passes`, `fails`, `needs-arg` and
/// `bad-condition`), that take an argument or not, and arguments.
fn analysis() -> Gen {
    let template = weighted(vec![
        (6, Just(json!({"templateName": "passes"})).boxed()),
        (2, Just(json!({"templateName": "fails"})).boxed()),
        (2, Just(json!({"templateName": "needs-arg"})).boxed()),
        (1, Just(json!({"templateName": "bad-condition"})).boxed()),
        (2, Just(json!({"templateName": "missing-template"})).boxed()),
        (1, Just(json!({"templateName": "missing-cluster-template", "clusterScope": true})).boxed()),
    ]);
    let args = weighted(vec![
        (
            12,
            pick(vec![
                json!([{"name": "service", "value": "checkout"}]),
                json!([{"name": "service", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
                json!([{"name": "service", "valueFrom": {"podTemplateHashValue": "Latest"}}]),
                json!([{"name": "unused", "value": "x"}]),
            ]),
        ),
        // Refused: an argument with neither a value nor a source.
        (1, Just(json!([{"name": "service"}])).boxed()),
    ]);
    let templates =
        weighted(vec![(30, vec(template, 1..3).prop_map(Value::Array).boxed()), (1, Just(json!([])).boxed())]);
    (templates, option::weighted(0.5, args))
        .prop_map(|(templates, args)| object(vec![("templates", Some(templates)), ("args", args)]))
        .boxed()
}

/// setCanaryScale: each of its three forms, and rarely none or two of them.
fn canary_scale() -> Gen {
    weighted(vec![
        (10, (0i64..8).prop_map(|r| json!({"replicas": r})).boxed()),
        (10, (0i64..=100).prop_map(|w| json!({"weight": w})).boxed()),
        (8, Just(json!({"matchTrafficWeight": true})).boxed()),
        (1, pick(vec![json!({}), json!({"matchTrafficWeight": false}), json!({"replicas": 1, "weight": 2})])),
    ])
}

/// One canary step. setCanaryScale and the managed routes need a router, so they are mostly
/// generated with one.
fn step(routed: bool) -> Gen {
    weighted(vec![
        (15, weight().prop_map(|w| json!({"setWeight": w})).boxed()),
        (12, option::weighted(0.7, duration()).prop_map(|d| json!({"pause": object(vec![("duration", d)])})).boxed()),
        (6, analysis().prop_map(|a| json!({"analysis": a})).boxed()),
        (if routed { 8 } else { 1 }, canary_scale().prop_map(|s| json!({"setCanaryScale": s})).boxed()),
        (
            if routed { 1 } else { 0 },
            pick(vec![
                json!({"setHeaderRoute": {"name": "header", "match": [{"headerName": "x-canary", "headerValue": {"exact": "1"}}]}}),
                json!({"setMirrorRoute": {"name": "mirror", "percentage": 50}}),
            ]),
        ),
        // Refused: no kind, two kinds, and an Argo experiment step, which the schema does not know
        // (pruned to an empty step).
        (1, pick(vec![json!({}), json!({"setWeight": 10, "pause": {}}), json!({"experiment": {"duration": "1m"}})])),
    ])
}

/// The name of an object a Rollout refers to: existing, missing, or (for routing objects) stray.
fn referent(name: &str, suffix: &str, stray: bool) -> Gen {
    let mut options = vec![
        (6, Just(json!(format!("{name}-{suffix}"))).boxed()),
        (2, Just(json!(format!("missing-{name}-{suffix}"))).boxed()),
    ];
    if stray {
        options.push((1, Just(json!(format!("stray-{name}-{suffix}"))).boxed()));
    }
    weighted(options)
}

/// trafficRouting: each router of this build, naming objects that exist or not; a plugin this
/// build does not have; and rarely two routers or none.
fn traffic_routing(name: &str) -> Gen {
    let router = weighted(vec![
        (
            3,
            (referent(name, "vs", true), option::weighted(0.3, pick(vec![json!(["primary"]), json!(["missing-route"])])))
                .prop_map(|(vs, routes)| json!({"istio": {"virtualService": object(vec![("name", Some(vs)), ("routes", routes)])}}))
                .boxed(),
        ),
        (
            1,
            vec(referent(name, "vs", true), 1..3)
                .prop_map(|names| {
                    let list: Vec<Value> = names.into_iter().map(|n| json!({"name": n})).collect();
                    json!({"istio": {"virtualServices": list}})
                })
                .boxed(),
        ),
        (3, referent(name, "route", true).prop_map(|r| json!({"gatewayAPI": {"httpRoute": r}})).boxed()),
        (
            1,
            (vec(referent(name, "route", true), 1..3), option::weighted(0.3, Just(json!("missing-namespace"))))
                .prop_map(|(routes, ns)| {
                    json!({"gatewayAPI": object(vec![("httpRoutes", Some(Value::Array(routes))), ("namespace", ns)])})
                })
                .boxed(),
        ),
        (
            3,
            referent(name, "traefik", true)
                .prop_map(|t| json!({"traefik": {"weightedTraefikServiceName": t}}))
                .boxed(),
        ),
        (3, referent(name, "ingress", true).prop_map(|i| json!({"nginx": {"stableIngress": i}})).boxed()),
        (1, Just(json!({"plugins": {"example.invalid/router": {"anything": true}}})).boxed()),
        (
            1,
            pick(vec![
                json!({}),
                json!({"istio": {"virtualService": {"name": format!("{name}-vs")}}, "nginx": {"stableIngress": format!("{name}-ingress")}}),
            ]),
        ),
    ]);
    (
        router,
        option::weighted(0.1, pick(vec![json!(1000), json!(50)])),
        option::weighted(0.05, Just(json!([{"name": "header"}, {"name": "mirror"}]))),
    )
        .prop_map(|(mut routing, max, managed)| {
            let map = routing.as_object_mut().expect("an object");
            if let Some(max) = max {
                map.insert("maxTrafficWeight".into(), max);
            }
            if let Some(managed) = managed {
                map.insert("managedRoutes".into(), managed);
            }
            routing
        })
        .boxed()
}

/// canaryService and stableService, each set or not.
type ServicePair = (Option<Value>, Option<Value>);

/// (canaryService, stableService): with a router both are needed, so they are mostly both
/// there; Services two Rollouts share (`shared-`) are a user's mistake the controller must
/// survive too.
fn canary_services(name: &str, routed: bool) -> BoxedStrategy<ServicePair> {
    let both = (Some(json!(format!("{name}-canary"))), Some(json!(format!("{name}-stable"))));
    let options: Vec<(u32, BoxedStrategy<ServicePair>)> = vec![
        (if routed { 0 } else { 10 }, Just((None, None)).boxed()),
        (if routed { 20 } else { 6 }, Just(both).boxed()),
        (1, Just((Some(json!(format!("missing-{name}-canary"))), Some(json!(format!("{name}-stable"))))).boxed()),
        (1, Just((Some(json!(format!("{name}-canary"))), Some(json!(format!("missing-{name}-stable"))))).boxed()),
        (if routed { 0 } else { 2 }, Just((None, Some(json!(format!("{name}-stable"))))).boxed()),
        // Refused: the same Service twice.
        (1, Just((Some(json!(format!("{name}-stable"))), Some(json!(format!("{name}-stable"))))).boxed()),
        (1, Just((Some(json!("shared-canary")), Some(json!("shared-stable")))).boxed()),
    ];
    Union::new_weighted(options.into_iter().filter(|(w, _)| *w > 0).collect()).boxed()
}

/// canaryMetadata and the like: mostly harmless, sometimes a label the selector uses or a key
/// that is no label key.
fn role_metadata() -> Gen {
    weighted(vec![
        (6, Just(json!({"labels": {"role": "x"}})).boxed()),
        (2, Just(json!({"annotations": {"example.invalid/note": "x"}})).boxed()),
        (1, Just(json!({"labels": {"app": "taken"}})).boxed()),
        (1, Just(json!({"labels": {"bad key!": "x"}})).boxed()),
    ])
}

/// The canary strategy. The router is decided first, since the Services and steps depend on it.
fn canary(name: &str) -> Gen {
    let name = name.to_string();
    option::weighted(0.45, traffic_routing(&name))
        .prop_flat_map(move |routing| {
            let routed = routing.is_some();
            // The fields that (mostly) need a router, and the ones that do not.
            let extras = (
                option::weighted(0.25, seconds(&[0, 1, 30])),
                option::weighted(if routed { 0.25 } else { 0.03 }, seconds(&[0, 1, 30])),
                option::weighted(if routed { 0.2 } else { 0.03 }, Just(json!(true))),
                option::weighted(if routed { 0.2 } else { 0.03 }, (1i64..4).prop_map(Value::from)),
                option::weighted(0.1, (0i64..3).prop_map(Value::from)),
                option::weighted(0.1, role_metadata()),
                option::weighted(0.1, role_metadata()),
            );
            (
                Just(routing),
                canary_services(&name, routed),
                option::weighted(0.85, vec(step(routed), 0..8)),
                option::weighted(0.5, fencepost()),
                option::weighted(0.5, fencepost()),
                option::weighted(0.12, (analysis(), option::weighted(0.5, 0i64..5))),
                extras,
            )
        })
        .prop_map(|(routing, (canary_svc, stable_svc), steps, surge, unavailable, background, extras)| {
            let (abort_delay, delay, dynamic, min_pods, revision_limit, canary_meta, stable_meta) = extras;
            let background = background.map(|(mut a, start)| {
                if let Some(start) = start {
                    a["startingStep"] = json!(start);
                }
                a
            });
            object(vec![
                ("canaryService", canary_svc),
                ("stableService", stable_svc),
                ("trafficRouting", routing),
                ("steps", steps.map(Value::Array)),
                ("maxSurge", surge),
                ("maxUnavailable", unavailable),
                ("analysis", background),
                ("abortScaleDownDelaySeconds", abort_delay),
                ("scaleDownDelaySeconds", delay),
                ("dynamicStableScale", dynamic),
                ("minPodsPerReplicaSet", min_pods),
                ("scaleDownDelayRevisionLimit", revision_limit),
                ("canaryMetadata", canary_meta),
                ("stableMetadata", stable_meta),
            ])
        })
        .boxed()
}

/// The blue-green strategy.
fn blue_green(name: &str) -> Gen {
    let active = weighted(vec![
        (16, Just(json!(format!("{name}-active"))).boxed()),
        (3, Just(json!(format!("missing-{name}-active"))).boxed()),
        (1, Just(json!("shared-active")).boxed()),
    ]);
    let preview = weighted(vec![
        (8, Just(json!(format!("{name}-preview"))).boxed()),
        (2, Just(json!(format!("missing-{name}-preview"))).boxed()),
        // Refused when it is the active Service too.
        (1, Just(json!(format!("{name}-active"))).boxed()),
    ]);
    let promotion = (
        option::weighted(0.3, any::<bool>().prop_map(Value::from)),
        option::weighted(0.2, seconds(&[0, 2, 30])),
        option::weighted(0.2, (0i64..4).prop_map(Value::from)),
    );
    let scale_down = (
        option::weighted(0.3, seconds(&[0, 1, 30])),
        option::weighted(0.1, (0i64..3).prop_map(Value::from)),
        option::weighted(0.2, seconds(&[0, 1, 30])),
        option::weighted(0.3, fencepost()),
    );
    let analyses_and_metadata = (
        option::weighted(0.15, analysis()),
        option::weighted(0.15, analysis()),
        option::weighted(0.1, role_metadata()),
        option::weighted(0.1, role_metadata()),
    );
    (active, option::weighted(0.6, preview), promotion, scale_down, analyses_and_metadata)
        .prop_map(|(active, preview, promotion, scale_down, analyses_and_metadata)| {
            let (auto_enabled, auto_seconds, preview_count) = promotion;
            let (delay, revision_limit, abort_delay, unavailable) = scale_down;
            let (pre, post, active_meta, preview_meta) = analyses_and_metadata;
            object(vec![
                ("activeService", Some(active)),
                ("previewService", preview),
                ("autoPromotionEnabled", auto_enabled),
                ("autoPromotionSeconds", auto_seconds),
                ("previewReplicaCount", preview_count),
                ("scaleDownDelaySeconds", delay),
                ("scaleDownDelayRevisionLimit", revision_limit),
                ("abortScaleDownDelaySeconds", abort_delay),
                ("maxUnavailable", unavailable),
                ("prePromotionAnalysis", pre),
                ("postPromotionAnalysis", post),
                ("activeMetadata", active_meta),
                ("previewMetadata", preview_meta),
            ])
        })
        .boxed()
}

/// spec.strategy: mostly one strategy; rarely none or two, which the schema refuses.
fn strategy(name: &str) -> Gen {
    weighted(vec![
        (24, canary(name).prop_map(|c| json!({"canary": c})).boxed()),
        (12, blue_green(name).prop_map(|b| json!({"blueGreen": b})).boxed()),
        (2, Just(json!({"recreate": {}})).boxed()),
        (1, Just(json!({})).boxed()),
        (1, (canary(name), blue_green(name)).prop_map(|(c, b)| json!({"canary": c, "blueGreen": b})).boxed()),
    ])
}

/// The pod template and selector: mostly matching; sometimes labels the selector does not
/// match (by matchLabels, which core checks, or by matchExpressions, which only the API server
/// checks when the ReplicaSet is created), an empty selector, pods no node takes, a container
/// the API server refuses, a missing Deployment for workloadRef, or both template and
/// workloadRef.
fn pods(name: &str) -> Gen {
    let labels = json!({"app": name});
    let template = |labels: &Value, pod_spec: Value| json!({"metadata": {"labels": labels}, "spec": pod_spec});
    let container = json!({"name": "app", "image": format!("example.invalid/{name}:1")});
    let plain = json!({"containers": [container.clone()]});
    let matching = json!({"matchLabels": labels.clone()});
    let expressions = |app: &str| json!({"matchExpressions": [{"key": "app", "operator": "In", "values": [app]}]});
    let workload = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("missing-{name}-deployment")});
    let with = |selector: &Value, template: Value| json!({"selector": selector, "template": template});
    weighted(vec![
        (80, Just(with(&matching, template(&labels, plain.clone()))).boxed()),
        (2, Just(with(&expressions(name), template(&labels, plain.clone()))).boxed()),
        (2, Just(with(&matching, template(&json!({"app": format!("{name}-other")}), plain.clone()))).boxed()),
        (1, Just(with(&expressions(&format!("{name}-other")), template(&labels, plain.clone()))).boxed()),
        (1, Just(with(&json!({"matchLabels": {}}), template(&labels, plain.clone()))).boxed()),
        (
            1,
            Just(with(
                &matching,
                template(&labels, json!({"containers": [container], "nodeSelector": {"example.invalid/none": "true"}})),
            ))
            .boxed(),
        ),
        (
            1,
            Just(with(
                &matching,
                template(&labels, json!({"containers": [{"name": "Not_A_Name", "image": "example.invalid/x:1"}]})),
            ))
            .boxed(),
        ),
        (2, Just(json!({"workloadRef": workload.clone()})).boxed()),
        // Refused: both template and workloadRef, and a template without a selector.
        (
            1,
            pick(vec![
                json!({"selector": matching, "template": template(&labels, plain.clone()), "workloadRef": workload}),
                json!({"template": template(&labels, plain)}),
            ]),
        ),
    ])
}

/// A whole Rollout named `name`, and whether the test releases a second version of it.
fn rollout(name: &str) -> BoxedStrategy<(Value, bool)> {
    let name = name.to_string();
    let fields = (
        option::weighted(
            0.9,
            weighted(vec![(30, (0i64..=6).prop_map(Value::from).boxed()), (1, Just(json!(-1)).boxed())]),
        ),
        option::weighted(0.2, seconds(&[0, 1, 3, 100_000])),
        option::weighted(0.3, pick(vec![json!(0), json!(1), json!(2), json!(10)])),
        option::weighted(0.3, seconds(&[1, 5, 30, 600])),
        option::weighted(0.1, Just(json!(true))),
        option::weighted(0.08, Just(json!(true))),
        option::weighted(0.05, pick(vec![json!("2020-01-01T00:00:00Z"), json!("2099-01-01T00:00:00Z")])),
        option::weighted(0.05, (0i64..3).prop_map(|r| json!({"revisions": r}))),
    );
    (strategy(&name), pods(&name), fields, any::<bool>())
        .prop_map(move |(strategy, pods, fields, update)| {
            let (replicas, min_ready, history, deadline, deadline_abort, paused, restart_at, rollback) = fields;
            let mut spec = object(vec![
                ("replicas", replicas),
                ("minReadySeconds", min_ready),
                ("revisionHistoryLimit", history),
                ("progressDeadlineSeconds", deadline),
                ("progressDeadlineAbort", deadline_abort),
                ("paused", paused),
                ("restartAt", restart_at),
                ("rollbackWindow", rollback),
                ("strategy", Some(strategy)),
            ]);
            let map = spec.as_object_mut().expect("an object");
            for (k, v) in pods.as_object().expect("an object") {
                map.insert(k.clone(), v.clone());
            }
            let manifest = json!({
                "apiVersion": "stepwise.dev/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name},
                "spec": spec,
            });
            (manifest, update)
        })
        .boxed()
}

/// One generated Rollout.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    manifest: Value,
    /// Whether the generator chose to change its pod template once the controller has seen it.
    update: bool,
}

impl Case {
    /// Whether the test releases a second version: if the generator chose so and there is a pod
    /// template to change (a workloadRef has none).
    fn releases_second_version(&self) -> bool {
        self.update && self.manifest["spec"]["template"].is_object()
    }
}

/// `count` Rollouts sampled from the strategy with `seed`.
fn generate(seed: u64, count: usize) -> anyhow::Result<Vec<Case>> {
    let bytes: Vec<u8> = seed.to_le_bytes().iter().cycle().take(32).copied().collect();
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    (0..count)
        .map(|i| {
            let name = format!("r{i:03}");
            let (manifest, update) =
                rollout(&name).new_tree(&mut runner).map_err(|e| anyhow::anyhow!("{e}"))?.current();
            Ok(Case { name, manifest, update })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What a manifest refers to, and what the controller must say about it
// ---------------------------------------------------------------------------------------------

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

/// The Services a spec names, with their fields.
fn services(spec: &Value) -> Vec<(&'static str, String)> {
    let strategy = &spec["strategy"];
    [
        ("spec.strategy.canary.canaryService", &strategy["canary"]["canaryService"]),
        ("spec.strategy.canary.stableService", &strategy["canary"]["stableService"]),
        ("spec.strategy.blueGreen.activeService", &strategy["blueGreen"]["activeService"]),
        ("spec.strategy.blueGreen.previewService", &strategy["blueGreen"]["previewService"]),
    ]
    .into_iter()
    .filter_map(|(field, v)| str_of(v).map(|s| (field, s.to_string())))
    .collect()
}

/// Every analysis of a spec, with its field.
fn analyses(spec: &Value) -> Vec<(String, &Value)> {
    let strategy = &spec["strategy"];
    let mut all = Vec::new();
    if strategy["canary"]["analysis"].is_object() {
        all.push(("spec.strategy.canary.analysis".to_string(), &strategy["canary"]["analysis"]));
    }
    for (i, step) in strategy["canary"]["steps"].as_array().into_iter().flatten().enumerate() {
        if step["analysis"].is_object() {
            all.push((format!("spec.strategy.canary.steps[{i}].analysis"), &step["analysis"]));
        }
    }
    for field in ["prePromotionAnalysis", "postPromotionAnalysis"] {
        if strategy["blueGreen"][field].is_object() {
            all.push((format!("spec.strategy.blueGreen.{field}"), &strategy["blueGreen"][field]));
        }
    }
    all
}

/// Whether an analysis cannot become a run: a template missing or broken, one named twice
/// (their metrics would clash), or an argument without a value.
fn analysis_is_broken(analysis: &Value) -> bool {
    let names: Vec<&str> =
        analysis["templates"].as_array().into_iter().flatten().filter_map(|t| t["templateName"].as_str()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    let given: BTreeSet<&str> =
        analysis["args"].as_array().into_iter().flatten().filter_map(|a| a["name"].as_str()).collect();
    names.iter().any(|n| n.starts_with("missing-") || *n == "bad-condition")
        || unique.len() != names.len()
        || (unique.contains("needs-arg") && !given.contains("service"))
}

/// The faults of a spec that the controller can tell from the spec and the objects alone, each
/// as the words of which an InvalidSpec message must name one (the field, mostly).
fn predicted_faults(spec: &Value) -> Vec<String> {
    let mut faults = Vec::new();
    if let Some(template) = spec.get("template") {
        let labels = &template["metadata"]["labels"];
        let match_labels = spec["selector"]["matchLabels"].as_object();
        let expressions = spec["selector"]["matchExpressions"].as_array().is_some_and(|e| !e.is_empty());
        let mismatch = match_labels.is_some_and(|m| m.iter().any(|(k, v)| labels.get(k) != Some(v)));
        let empty = match_labels.is_none_or(Map::is_empty) && !expressions;
        if mismatch || empty {
            faults.push("spec.selector".into());
        }
    }
    if spec["workloadRef"]["name"].as_str().is_some_and(|n| n.starts_with("missing-")) {
        faults.push("spec.workloadRef".into());
    }
    for (field, name) in services(spec) {
        if name.starts_with("missing-") {
            faults.push(field.into());
        }
    }
    let strategy = &spec["strategy"];
    for (i, step) in strategy["canary"]["steps"].as_array().into_iter().flatten().enumerate() {
        for kind in ["setHeaderRoute", "setMirrorRoute"] {
            if step.get(kind).is_some() {
                faults.push(format!("steps[{i}].{kind}"));
            }
        }
        if step["pause"]["duration"].as_str().is_some_and(|d| TOO_LONG_DURATIONS.contains(&d)) {
            faults.push(format!("steps[{i}].pause.duration"));
        }
    }
    for (field, metadata) in [
        ("spec.strategy.canary.canaryMetadata", &strategy["canary"]["canaryMetadata"]),
        ("spec.strategy.canary.stableMetadata", &strategy["canary"]["stableMetadata"]),
        ("spec.strategy.blueGreen.activeMetadata", &strategy["blueGreen"]["activeMetadata"]),
        ("spec.strategy.blueGreen.previewMetadata", &strategy["blueGreen"]["previewMetadata"]),
    ] {
        let labels = metadata["labels"].as_object();
        if labels.is_some_and(|l| l.contains_key("app") || l.contains_key("bad key!")) {
            faults.push(field.into());
        }
    }
    if strategy["canary"]["trafficRouting"]["plugins"].is_object() {
        faults.push("spec.strategy.canary.trafficRouting.plugins".into());
    }
    for (field, analysis) in analyses(spec) {
        if analysis_is_broken(analysis) {
            faults.push(field);
        }
    }
    faults
}

/// Every name the Rollout's status may use to point at its problem: the objects it names, and
/// itself (its ReplicaSets and AnalysisRuns are named after it).
fn referenced_names(case: &Case) -> Vec<String> {
    let mut names = vec![case.name.clone()];
    let mut walk = vec![&case.manifest["spec"]];
    while let Some(v) = walk.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let is_name = k.ends_with("Service")
                        || k.ends_with("Ingress")
                        || k == "name"
                        || k == "templateName"
                        || k == "httpRoute"
                        || k == "weightedTraefikServiceName";
                    match v.as_str() {
                        Some(s) if is_name => names.push(s.to_string()),
                        _ => walk.push(v),
                    }
                }
            }
            Value::Array(items) => walk.extend(items),
            _ => {}
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// The objects a manifest refers to
// ---------------------------------------------------------------------------------------------

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

fn service(name: &str) -> (ApiResource, Value) {
    (
        resource("", "v1", "Service", "services"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
}

/// The routing object `name` of `kind`, splitting between the Rollout's Services, or between
/// other ones for a `stray-` object.
fn routing_object(kind: &str, name: &str, stable: &str, canary: &str) -> (ApiResource, Value) {
    let (stable, canary) = if name.starts_with("stray-") { ("other-stable", "other-canary") } else { (stable, canary) };
    match kind {
        "istio" => (
            resource("networking.istio.io", "v1", "VirtualService", "virtualservices"),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
                   "spec": {"hosts": ["app.example.invalid"], "http": [{"name": "primary", "route": [
                       {"destination": {"host": stable}, "weight": 100},
                       {"destination": {"host": canary}, "weight": 0}]}]}}),
        ),
        "gatewayAPI" => (
            resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
                   "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [
                       {"name": stable, "port": 80, "weight": 100},
                       {"name": canary, "port": 80, "weight": 0}]}]}}),
        ),
        "traefik" => (
            resource("traefik.io", "v1alpha1", "TraefikService", "traefikservices"),
            json!({"apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService", "metadata": {"name": name},
                   "spec": {"weighted": {"services": [
                       {"name": stable, "port": 80, "weight": 100},
                       {"name": canary, "port": 80, "weight": 0}]}}}),
        ),
        _ => (
            resource("networking.k8s.io", "v1", "Ingress", "ingresses"),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
                   "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.invalid", "http": {"paths": [
                       {"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": stable, "port": {"number": 80}}}}]}}]}}),
        ),
    }
}

/// The objects a manifest names that exist: Services and routing objects, unless `missing-`.
fn supporting_objects(manifest: &Value) -> Vec<(ApiResource, Value)> {
    let spec = &manifest["spec"];
    let mut objects: Vec<(ApiResource, Value)> = Vec::new();
    for (_, name) in services(spec) {
        if !name.starts_with("missing-") {
            objects.push(service(&name));
        }
    }
    let canary = &spec["strategy"]["canary"];
    let routing = &canary["trafficRouting"];
    let stable = canary["stableService"].as_str().unwrap_or("none");
    let canary_svc = canary["canaryService"].as_str().unwrap_or("none");
    let mut named: Vec<(&str, &str)> = Vec::new();
    named.extend(routing["istio"]["virtualService"]["name"].as_str().map(|n| ("istio", n)));
    for vs in routing["istio"]["virtualServices"].as_array().into_iter().flatten() {
        named.extend(vs["name"].as_str().map(|n| ("istio", n)));
    }
    // Routes in another namespace are never created: that namespace does not exist.
    if routing["gatewayAPI"]["namespace"].is_null() {
        named.extend(routing["gatewayAPI"]["httpRoute"].as_str().map(|n| ("gatewayAPI", n)));
        for r in routing["gatewayAPI"]["httpRoutes"].as_array().into_iter().flatten() {
            named.extend(r.as_str().map(|n| ("gatewayAPI", n)));
        }
    }
    named.extend(routing["traefik"]["weightedTraefikServiceName"].as_str().map(|n| ("traefik", n)));
    named.extend(routing["nginx"]["stableIngress"].as_str().map(|n| ("nginx", n)));
    let mut seen = BTreeSet::new();
    for (kind, name) in named {
        if !name.starts_with("missing-") && seen.insert((kind, name)) {
            objects.push(routing_object(kind, name, stable, canary_svc));
        }
    }
    objects
}

/// Creates an object; one that exists already (a shared Service) is fine.
async fn create(client: &Client, ns: &str, (ar, object): &(ApiResource, Value)) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api.create(&PostParams::default(), &serde_json::from_value(object.clone())?).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("create {} {}", ar.kind, object["metadata"]["name"]))),
    }
}

/// The AnalysisTemplates the generator names: one that passes and one that fails (kwok completes
/// or fails the Job's pod), one that needs an argument, one whose condition does not compile.
fn analysis_templates() -> Vec<(ApiResource, Value)> {
    let ar = resource("stepwise.dev", "v1alpha1", "AnalysisTemplate", "analysistemplates");
    let job = |labels: Value, args: Value| {
        json!({"job": {"spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "check", "image": "example.invalid/check:1", "args": args}]}}}}})
    };
    let template = |name: &str, spec: Value| {
        (
            ar.clone(),
            json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name}, "spec": spec}),
        )
    };
    vec![
        template("passes", json!({"metrics": [{"name": "passes", "provider": job(json!({}), json!([]))}]})),
        template(
            "fails",
            json!({"metrics": [{"name": "fails", "provider": job(json!({"stepwise.dev/test-outcome": "fail"}), json!([]))}]}),
        ),
        template(
            "needs-arg",
            json!({"args": [{"name": "service"}],
                   "metrics": [{"name": "needs-arg", "provider": job(json!({}), json!(["{{args.service}}"]))}]}),
        ),
        template(
            "bad-condition",
            json!({"metrics": [{"name": "bad-condition", "successCondition": "result >", "provider": job(json!({}), json!([]))}]}),
        ),
    ]
}

/// Installs the routers' CRDs unless they are served already (`just e2e` installs them; the
/// script is idempotent and caches by version).
async fn router_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut served = true;
    for name in
        ["virtualservices.networking.istio.io", "httproutes.gateway.networking.k8s.io", "traefikservices.traefik.io"]
    {
        served &= crds.get_opt(name).await?.is_some();
    }
    if served {
        return Ok(());
    }
    let status = tokio::task::spawn_blocking(|| {
        std::process::Command::new(repo_root().join("tests/cluster/router-crds.sh")).status()
    })
    .await??;
    anyhow::ensure!(status.success(), "tests/cluster/router-crds.sh failed: {status}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Applying, waiting, judging
// ---------------------------------------------------------------------------------------------

fn rollouts_resource() -> ApiResource {
    ApiResource::erase::<Rollout>(&())
}

/// What the API server said to a create: accepted, or refused with its message.
#[derive(Clone, Debug)]
enum Applied {
    Accepted,
    Refused(String),
}

/// Creates each Rollout as raw JSON, so that the API server, not our types, judges it.
async fn apply_all(client: &Client, ns: &str, cases: &[Case]) -> anyhow::Result<Vec<(String, Applied)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &rollouts_resource());
    let results: Vec<anyhow::Result<(String, Applied)>> = stream::iter(cases)
        .map(|case| {
            let api = api.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(case.manifest.clone())?;
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => Ok((case.name.clone(), Applied::Accepted)),
                    Err(kube::Error::Api(e)) if e.code == 422 || e.code == 400 => {
                        Ok((case.name.clone(), Applied::Refused(e.message)))
                    }
                    Err(e) => Err(anyhow::Error::from(e).context(format!("create Rollout {}", case.name))),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Whether an API server's or controller's message names a field of the spec.
fn names_a_field(message: &str) -> bool {
    message.contains("spec.") || message.contains("spec:") || message.contains("spec[")
}

/// The witnesses: well-formed canaries of a few short steps.
fn witness(index: usize, version: u32) -> Value {
    let name = format!("witness-{index}");
    json!({
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": format!("example.invalid/witness:{version}")}]}},
            "strategy": {"canary": {"steps": [
                {"setWeight": 34}, {"pause": {"duration": "2s"}}, {"setWeight": 67}, {"pause": {"duration": "2s"}}
            ]}}
        }
    })
}

/// Whether a witness is Healthy on a version other than `previous`: promoted, every pod of the
/// new version available, the controller caught up with the spec.
fn witness_released(ro: &Rollout, previous: Option<&str>) -> bool {
    let Some(st) = ro.status.as_ref() else { return false };
    st.phase == Some(stepwise_api::RolloutPhase::Healthy)
        && st.observed_generation == ro.metadata.generation
        && st.stable_rs.is_some()
        && st.stable_rs == st.current_pod_hash
        && st.stable_rs.as_deref() != previous
        && st.updated_replicas == Some(3)
        && st.available_replicas == Some(3)
}

/// Changes every witness to `version` and waits until each has released it, within `deadline`.
/// Returns how long each took.
async fn release_witnesses(
    client: &Client,
    ns: &str,
    version: u32,
    deadline: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let mut previous = Vec::new();
    for i in 0..WITNESSES {
        let ro = api.get(&format!("witness-{i}")).await?;
        previous.push(ro.status.and_then(|s| s.stable_rs));
        let patch = json!({"spec": {"template": witness(i, version)["spec"]["template"].clone()}});
        api.patch(&format!("witness-{i}"), &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    let start = Instant::now();
    let waits = (0..WITNESSES).map(|i| {
        let api = api.clone();
        let previous = previous[i].clone();
        async move {
            let name = format!("witness-{i}");
            let result = eventually(&format!("{name} Healthy on version {version}"), deadline, || async {
                Ok(witness_released(&api.get(&name).await?, previous.as_deref()))
            })
            .await;
            match result {
                Ok(()) => Ok(start.elapsed()),
                Err(e) => {
                    let status = api.get(&name).await.ok().and_then(|r| r.status);
                    Err(e.context(format!("{name} did not release version {version}; status: {status:?}")))
                }
            }
        }
    });
    futures::future::join_all(waits).await.into_iter().collect()
}

/// The Rollouts of the namespace as JSON, by name.
async fn list_rollouts(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &rollouts_resource());
    let list = api.list(&ListParams::default()).await?;
    list.items
        .into_iter()
        .map(|o| {
            let name = o.metadata.name.clone().unwrap_or_default();
            Ok((name, serde_json::to_value(o)?))
        })
        .collect()
}

fn observed(object: &Value) -> bool {
    let generation = object["metadata"]["generation"].as_i64();
    generation.is_some() && object["status"]["observedGeneration"].as_i64() == generation
}

/// How long the Rollouts not yet observed may stay the same before the wait ends early: the
/// controller catches up by a few every second while it works through them.
const NO_PROGRESS: Duration = Duration::from_secs(60);

/// Waits until the controller has observed every one of `names`, the deadline passes, or none
/// more has been observed for `NO_PROGRESS`; returns the ones it has not.
async fn wait_observed(client: &Client, ns: &str, names: &[String], deadline: Duration) -> anyhow::Result<Vec<String>> {
    let start = Instant::now();
    let mut last_change = (Instant::now(), usize::MAX);
    loop {
        let all = list_rollouts(client, ns).await?;
        let behind: Vec<String> = names.iter().filter(|n| !all.get(*n).is_some_and(observed)).cloned().collect();
        if behind.len() != last_change.1 {
            last_change = (Instant::now(), behind.len());
        }
        if behind.is_empty() || start.elapsed() > deadline || last_change.0.elapsed() > NO_PROGRESS {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Releases a second version of the Rollouts the generator chose (those with a template):
/// their steps, analyses and routers run.
async fn update_random(client: &Client, ns: &str, cases: &[&Case]) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &rollouts_resource());
    let results: Vec<anyhow::Result<()>> = stream::iter(cases)
        .map(|case| {
            let api = api.clone();
            async move {
                let mut containers = case.manifest["spec"]["template"]["spec"]["containers"].clone();
                containers[0]["image"] = json!(format!("example.invalid/{}:2", case.name));
                let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
                api.patch(&case.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::Error::from(e).context(format!("update Rollout {}", case.name)))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(condition: Option<&Value>) -> bool {
    condition.is_some_and(|c| c["status"] == "True")
}

/// The outcome of a Rollout, for the table: its phase and the reason that matters most.
fn outcome(status: &Value) -> String {
    let phase = status["phase"].as_str().unwrap_or("<none>");
    let reason = if is_true(condition(status, "InvalidSpec")) {
        "InvalidSpec".to_string()
    } else if is_true(condition(status, "ReconcileError")) {
        "ReconcileError".to_string()
    } else if let Some(pause) = status["pauseConditions"].as_array().and_then(|p| p.first()) {
        pause["reason"].as_str().unwrap_or_default().to_string()
    } else if phase != "Healthy" {
        condition(status, "Progressing").and_then(|c| c["reason"].as_str()).unwrap_or_default().to_string()
    } else {
        String::new()
    };
    if reason.is_empty() { phase.to_string() } else { format!("{phase} / {reason}") }
}

/// What is wrong with the final status of an accepted Rollout, if anything: it must be observed,
/// in a known phase, every error condition must say what is at fault, a Degraded one must say
/// why, and a fault the controller can see from the spec must be named in an InvalidSpec.
fn judge(case: &Case, object: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let status = &object["status"];
    if !observed(object) {
        wrong.push(format!(
            "status.observedGeneration {} never reached metadata.generation {}",
            status["observedGeneration"], object["metadata"]["generation"]
        ));
        return wrong;
    }
    let phase = status["phase"].as_str().unwrap_or_default();
    if !["Healthy", "Progressing", "Paused", "Degraded"].contains(&phase) {
        wrong.push(format!("phase {phase:?} is not one of Healthy, Progressing, Paused, Degraded"));
    }
    let names = referenced_names(case);
    let points_at_something = |message: &str| names_a_field(message) || names.iter().any(|n| message.contains(n));
    for type_ in ["InvalidSpec", "ReconcileError"] {
        let c = condition(status, type_);
        if is_true(c) {
            let message = c.and_then(|c| c["message"].as_str()).unwrap_or_default();
            if !points_at_something(message) {
                wrong.push(format!("the {type_} condition names no field nor object: {message:?}"));
            }
        }
    }
    let message = status["message"].as_str().unwrap_or_default();
    if phase == "Degraded" {
        if message.is_empty() {
            wrong.push("Degraded without a status.message".into());
        }
        let conditions_say = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["message"].as_str())
            .any(points_at_something);
        if !points_at_something(message) && !conditions_say {
            wrong.push(format!("Degraded, but neither its message nor a condition names the fault: {message:?}"));
        }
    }
    let faults = predicted_faults(&case.manifest["spec"]);
    let invalid = condition(status, "InvalidSpec").filter(|c| c["status"] == "True");
    let invalid_message = invalid.and_then(|c| c["message"].as_str()).unwrap_or_default();
    if !faults.is_empty() {
        if phase != "Degraded" || invalid.is_none() {
            wrong.push(format!("has faults {faults:?} but is {phase} without an InvalidSpec condition"));
        } else if !faults.iter().any(|f| invalid_message.contains(f.as_str())) {
            wrong.push(format!("has faults {faults:?} but its InvalidSpec names none: {invalid_message:?}"));
        }
    } else if invalid.is_some() {
        wrong.push(format!("InvalidSpec for a spec without a known fault: {invalid_message:?}"));
    }
    wrong
}

/// The log without its colours.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence runs to its final letter (`m` for colours).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The actions the controller carried out in `log`, by Rollout, as its log lines show them.
fn actions_by_rollout(log: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_rollout: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in log.lines().map(plain).filter(|l| l.contains("stepwise_controller::execute: executing ")) {
        let Some(rest) = line.split_once(" rollout=").map(|(_, rest)| rest) else { continue };
        let name = rest.split_whitespace().next().unwrap_or_default().to_string();
        let shown: String = line.chars().take(240).collect();
        by_rollout.entry(name).or_default().push(shown);
    }
    by_rollout
}

/// The process is alive (not a zombie) under the same pid.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Prints a Rollout so that it can become a regression test: the manifest, the objects made
/// for it, and what the controller wrote.
fn report(case: &Case, object: Option<&Value>, wrong: &[String]) -> String {
    let objects: Vec<String> = supporting_objects(&case.manifest)
        .iter()
        .map(|(ar, o)| format!("{} {}", ar.kind, o["metadata"]["name"].as_str().unwrap_or_default()))
        .collect();
    format!(
        "--- {} (second version released: {}):\n  {}\nmanifest:\n{}objects made for it: {objects:?}\nstatus:\n{}",
        case.name,
        case.releases_second_version(),
        wrong.join("\n  "),
        serde_yaml::to_string(&case.manifest).unwrap_or_default(),
        object.map(|o| serde_yaml::to_string(&o["status"]).unwrap_or_default()).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn random_rollouts_never_panic_the_controller_never_stall_the_others_and_each_names_its_problem()
-> anyhow::Result<()> {
    let seed: u64 = env_number("CHAOS_SEED", DEFAULT_SEED)?;
    let count: usize = env_number("CHAOS_RANDOM_ROLLOUTS", DEFAULT_COUNT)?;
    println!("random rollouts: CHAOS_SEED={seed} CHAOS_RANDOM_ROLLOUTS={count}");
    let cases = generate(seed, count)?;

    let env = Env::new("random-rollouts").await?;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    let controller = &env.controllers[0];
    let pid = controller.pid();
    println!("namespace {ns}, controller pid {pid}, log {}", controller.log.display());
    router_crds(&client).await?;

    // Given: the templates, the witnesses released once, and the objects the manifests name.
    for template in analysis_templates() {
        create(&client, &ns, &template).await?;
    }
    let rollouts: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &rollouts_resource());
    for i in 0..WITNESSES {
        rollouts.create(&PostParams::default(), &serde_json::from_value(witness(i, 1))?).await?;
    }
    let typed: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    for i in 0..WITNESSES {
        let name = format!("witness-{i}");
        eventually(&format!("{name} Healthy"), secs(60), || async {
            Ok(witness_released(&typed.get(&name).await?, None))
        })
        .await?;
    }
    let objects: Vec<(ApiResource, Value)> = cases.iter().flat_map(|c| supporting_objects(&c.manifest)).collect();
    let created: Vec<anyhow::Result<()>> =
        stream::iter(&objects).map(|o| create(&client, &ns, o)).buffer_unordered(IN_FLIGHT).collect().await;
    created.into_iter().collect::<anyhow::Result<()>>()?;

    // How long a release takes on this machine now, with no random Rollout around.
    let baseline = release_witnesses(&client, &ns, 2, WITNESS_DEADLINE).await?;
    let witness_deadline = WITNESS_DEADLINE.max(baseline.iter().max().copied().unwrap_or_default() * WITNESS_SLOWDOWN);
    let mut failures: Vec<String> = Vec::new();
    let mut record_round = |round: anyhow::Result<Vec<Duration>>| match round {
        Ok(took) => format!("{took:?}"),
        Err(e) => {
            failures.push(format!("a witness stalled beside the random Rollouts: {e:#}"));
            "stalled".to_string()
        }
    };

    // When: half of the random Rollouts are applied, then the rest while the witnesses release
    // a third version.
    let (first, second) = cases.split_at(cases.len() / 2);
    let mut applied = apply_all(&client, &ns, first).await?;
    let (rest, witnesses) =
        tokio::join!(apply_all(&client, &ns, second), release_witnesses(&client, &ns, 3, witness_deadline));
    applied.extend(rest?);
    let round_one = record_round(witnesses);

    let accepted: Vec<String> =
        applied.iter().filter(|(_, a)| matches!(a, Applied::Accepted)).map(|(n, _)| n.clone()).collect();
    let refused: Vec<(&String, &String)> = applied
        .iter()
        .filter_map(|(n, a)| match a {
            Applied::Refused(m) => Some((n, m)),
            Applied::Accepted => None,
        })
        .collect();
    // The controller has a second per Rollout on a loaded 2-core machine, and a minute besides.
    let observe_deadline = Duration::from_secs(60 + count as u64);
    let waited = Instant::now();
    let behind = wait_observed(&client, &ns, &accepted, observe_deadline).await?;
    println!(
        "first version: {} of {} accepted Rollouts not observed after {:?}",
        behind.len(),
        accepted.len(),
        waited.elapsed()
    );

    // And: a second version of some of them, while the witnesses release a fourth.
    let by_name: BTreeMap<&str, &Case> = cases.iter().map(|c| (c.name.as_str(), c)).collect();
    let to_update: Vec<&Case> =
        accepted.iter().map(|n| by_name[n.as_str()]).filter(|c| c.releases_second_version()).collect();
    let (updated, witnesses) =
        tokio::join!(update_random(&client, &ns, &to_update), release_witnesses(&client, &ns, 4, witness_deadline));
    updated?;
    let round_two = record_round(witnesses);
    // Long enough for short pauses and the kwok Jobs of the analyses to play out.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let window_start = std::fs::metadata(&controller.log)?.len();
    tokio::time::sleep(SETTLED_WINDOW).await;
    let window = std::fs::read(&controller.log)?;
    let actions = actions_by_rollout(&String::from_utf8_lossy(&window[window_start as usize..]));
    let behind = wait_observed(&client, &ns, &accepted, observe_deadline).await?;
    let finals = list_rollouts(&client, &ns).await?;

    // Then: the refusals name a field.
    for (name, message) in &refused {
        if !names_a_field(message) {
            failures.push(report(
                by_name[name.as_str()],
                None,
                &[format!("refused without naming a field: {message}")],
            ));
        }
    }
    // Each accepted Rollout ends in a status that names its problem.
    let mut table: BTreeMap<String, usize> = BTreeMap::new();
    for name in &accepted {
        let case = by_name[name.as_str()];
        let object = finals.get(name);
        let mut wrong = match object {
            Some(o) => judge(case, o),
            None => vec!["the Rollout is gone".to_string()],
        };
        if behind.contains(name) && wrong.is_empty() {
            wrong.push("never observed".into());
        }
        *table.entry(object.map(|o| outcome(&o["status"])).unwrap_or_default()).or_default() += 1;
        if !wrong.is_empty() {
            failures.push(report(case, object, &wrong));
        }
    }
    // The controller settles: no Rollout is acted on without end.
    for (name, lines) in actions.iter().filter(|(_, lines)| lines.len() > MOST_ACTIONS_WHEN_SETTLED) {
        let wrong = format!(
            "the controller keeps acting on it: {} actions in {SETTLED_WINDOW:?}, such as:\n    {}",
            lines.len(),
            lines.iter().take(4).cloned().collect::<Vec<_>>().join("\n    ")
        );
        match by_name.get(name.as_str()) {
            Some(case) => failures.push(report(case, finals.get(name), &[wrong])),
            None => failures.push(format!("--- {name}: {wrong}")),
        }
    }
    // The controller never panicked and is the same process.
    let log = std::fs::read_to_string(&controller.log)?;
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    if !panics.is_empty() {
        failures.push(format!("the controller panicked:\n{}", panics.join("\n")));
    }
    if !alive(pid) {
        failures.push(format!("the controller (pid {pid}) is no longer running; log tail:\n{}", controller.log_tail()));
    }

    println!("\n{} Rollouts: {} refused by the API server, {} accepted", count, refused.len(), accepted.len());
    for (name, message) in refused.iter().take(8) {
        println!("  refused {name}: {message}");
    }
    println!("\noutcome of the accepted Rollouts:");
    for (outcome, n) in &table {
        println!("  {n:>4}  {outcome}");
    }
    println!(
        "witnesses released version 2 alone in {baseline:?}, version 3 in {round_one} and version 4 in {round_two} (deadline {witness_deadline:?})"
    );
    println!("second version released for {} Rollouts", to_update.len());

    env.cleanup().await?;
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {count} random Rollouts broke an assertion (CHAOS_SEED={seed}):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
