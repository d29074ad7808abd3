//! Property tests of the safety invariants and of idempotence, over random Rollouts and random
//! sequences of observations and user requests: pods that are slow or never become ready,
//! analyses that start, pass, fail or are inconclusive, aborts and retries (with
//! dynamicStableScale too), promotions and full promotions, user pauses, new templates, scaling,
//! and changes of maxSurge and maxUnavailable; canaries with setCanaryScale (above spec.replicas
//! too) and with a maxTrafficWeight other than 100.
//!
//! The invariants, checked after every plan (`check_plan`):
//! 1. traffic to the new version only moves up once its pods are available;
//! 2. on abort, traffic returns to stable before any new pod is removed;
//! 3. without traffic routing, available pods never fall below replicas − maxUnavailable;
//! 4. the stable ReplicaSet is not scaled down until the new one is promoted;
//! 5. every wait has a deadline (checked at the end of a history);
//! 6. the controller touches only what it owns;
//! 7. traffic is only ever routed to available pods;
//! 8. without traffic routing, a total above replicas + maxSurge only moves toward it;
//! 9. with Recreate, never pods of two versions at once (terminating pods included), checked on
//!    every state the world passes through;
//!
//! and planning again from the result asks for nothing more (idempotence).
//!
//! `PROPTEST_CASES` sets the number of cases (`just test-deep` runs 100,000).

mod support;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use stepwise_api::{AnalysisPhase, RolloutPhase};
use stepwise_core::replicas::{replicas_for_weight, resolve_fenceposts};
use stepwise_core::{Action, Plan, plan};
use support::{World, rollout_with};

/// Cases per property; `PROPTEST_CASES` overrides.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Debug)]
enum Op {
    NewImage {
        never_ready: bool,
    },
    OnePodEach,
    PodsSettle,
    AnalysesStart,
    AnalysesFinish(AnalysisPhase),
    Wait(i64),
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Scale(i32),
    Pause(bool),
    /// A new maxSurge (canary) or maxUnavailable (both strategies), as written in YAML.
    MaxSurge(String),
    MaxUnavailable(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|b| Op::NewImage { never_ready: b }),
        4 => Just(Op::OnePodEach),
        3 => Just(Op::PodsSettle),
        2 => prop_oneof![
            Just(AnalysisPhase::Successful),
            Just(AnalysisPhase::Failed),
            Just(AnalysisPhase::Inconclusive),
            Just(AnalysisPhase::Error)
        ]
        .prop_map(Op::AnalysesFinish),
        1 => Just(Op::AnalysesStart),
        3 => (1i64..120).prop_map(Op::Wait),
        2 => Just(Op::Promote),
        1 => Just(Op::PromoteFull),
        1 => Just(Op::Abort),
        1 => Just(Op::Retry),
        1 => (0i32..9).prop_map(Op::Scale),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => int_or_pct().prop_map(Op::MaxSurge),
        1 => int_or_pct().prop_map(Op::MaxUnavailable),
    ]
}

fn step() -> impl Strategy<Value = String> {
    routable_step(100)
}

/// A step that needs no router, with setWeight out of `max_weight`.
fn routable_step(max_weight: i32) -> impl Strategy<Value = String> {
    prop_oneof![
        (0i32..=max_weight).prop_map(|w| format!("      - setWeight: {w}\n")),
        Just("      - pause: {}\n".to_string()),
        (0i64..90).prop_map(|d| format!("      - pause: {{duration: {d}s}}\n")),
        Just("      - analysis: {templates: [{templateName: t}]}\n".to_string()),
    ]
}

/// A step of a routed canary; setCanaryScale may ask for more pods than spec.replicas (up to
/// 11, with at most 6 replicas), as Argo Rollouts allows.
fn routed_step(max_weight: i32) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => routable_step(max_weight),
        1 => (0i32..12).prop_map(|r| format!("      - setCanaryScale: {{replicas: {r}}}\n")),
        1 => (0i32..=100).prop_map(|w| format!("      - setCanaryScale: {{weight: {w}}}\n")),
        1 => Just("      - setCanaryScale: {matchTrafficWeight: true}\n".to_string()),
    ]
}

fn int_or_pct() -> impl Strategy<Value = String> {
    prop_oneof![(0i32..4).prop_map(|n| n.to_string()), (0i32..=100).prop_map(|p| format!("'{p}%'"))]
}

/// A random strategy (the YAML under `strategy:`) and whether it routes traffic.
fn strategy() -> impl Strategy<Value = (String, Kind)> {
    let basic = (prop::collection::vec(step(), 0..6), int_or_pct(), int_or_pct(), any::<bool>()).prop_map(|(steps, s, u, bg)| {
        let mut y = format!("    canary:\n      canaryService: c\n      stableService: s\n      maxSurge: {s}\n      maxUnavailable: {u}\n");
        if bg {
            y.push_str("      analysis: {templates: [{templateName: bg}]}\n");
        }
        y.push_str("      steps:\n");
        for st in &steps {
            y.push_str(st);
        }
        if steps.is_empty() {
            y = y.replace("      steps:\n", "");
        }
        (y, Kind::Basic)
    });
    let routed = prop_oneof![Just(100), Just(100), Just(1000), Just(10), Just(7)]
        .prop_flat_map(|max| {
            (Just(max), prop::collection::vec(routed_step(max), 0..6), any::<bool>(), 0i32..40, any::<bool>(), any::<bool>())
        })
        .prop_map(|(max, steps, dynamic, delay, explicit_abort_delay, bg)| {
            let mut y = "    canary:\n      canaryService: c\n      stableService: s\n      trafficRouting: {istio: {virtualService: {name: vs}}".to_string();
            if max != 100 {
                y.push_str(&format!(", maxTrafficWeight: {max}"));
            }
            y.push_str("}\n");
            if dynamic {
                y.push_str("      dynamicStableScale: true\n");
                if explicit_abort_delay {
                    y.push_str(&format!("      abortScaleDownDelaySeconds: {delay}\n"));
                }
            } else {
                y.push_str(&format!("      scaleDownDelaySeconds: {delay}\n      abortScaleDownDelaySeconds: {delay}\n"));
            }
            if bg {
                y.push_str("      analysis: {templates: [{templateName: bg}]}\n");
            }
            if !steps.is_empty() {
                y.push_str("      steps:\n");
                for st in &steps {
                    y.push_str(st);
                }
            }
            (y, if dynamic { Kind::RoutedDynamic } else { Kind::Routed })
        });
    let blue_green = (any::<bool>(), 0i32..40, prop::option::of(0i32..4), any::<bool>()).prop_map(|(auto, secs, preview, pre)| {
        let mut y = format!("    blueGreen:\n      activeService: a\n      previewService: p\n      autoPromotionEnabled: {auto}\n      scaleDownDelaySeconds: {secs}\n");
        if auto && secs % 2 == 0 {
            y.push_str(&format!("      autoPromotionSeconds: {secs}\n"));
        }
        if let Some(p) = preview {
            y.push_str(&format!("      previewReplicaCount: {p}\n"));
        }
        if pre {
            y.push_str("      prePromotionAnalysis: {templates: [{templateName: pre}]}\n");
        }
        (y, Kind::BlueGreen)
    });
    let recreate = Just(("    recreate: {}\n".to_string(), Kind::Recreate));
    prop_oneof![3 => basic, 3 => routed, 3 => blue_green, 1 => recreate]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Basic,
    Routed,
    RoutedDynamic,
    BlueGreen,
    Recreate,
}

/// 9. With Recreate, never pods of two versions at once.
fn check_one_version(kind: Kind, w: &World) -> Result<(), TestCaseError> {
    if kind == Kind::Recreate {
        let versions = w.versions_with_pods();
        prop_assert!(versions.len() <= 1, "pods of versions {versions:?} at once: {:?}", w.observed.replica_sets);
    }
    Ok(())
}

fn spec_pods(w: &World, hash: &str) -> (i32, i32) {
    w.observed
        .replica_sets
        .iter()
        .find(|r| r.hash == hash)
        .map(|r| (r.spec_replicas, r.available.min(r.spec_replicas)))
        .unwrap_or((0, 0))
}

/// The weight that means "all traffic" (maxTrafficWeight, 100 without a router).
fn max_weight(w: &World) -> i32 {
    let canary = w.rollout.spec.strategy.canary.as_ref();
    canary.and_then(|c| c.traffic_routing.as_ref()).and_then(|t| t.max_traffic_weight).unwrap_or(100)
}

/// The share of traffic each version's pods take, by pod template hash: the router gives the
/// canary Service its weight and the stable Service the rest, and each Service sends its share
/// to the version its selector holds (both shares to one version when both select it, as on
/// abort). Only for routed canaries. A share whose Service selects nothing yet goes under "".
fn traffic_by_version(w: &World) -> std::collections::BTreeMap<String, i32> {
    let max = max_weight(w);
    let canary_weight = w.router_weight.unwrap_or(0).clamp(0, max);
    let mut load = std::collections::BTreeMap::new();
    for (service, share) in [("c", canary_weight), ("s", max - canary_weight)] {
        *load.entry(w.service(service).unwrap_or_default()).or_insert(0) += share;
    }
    load
}

fn available_total(w: &World) -> i32 {
    w.observed.replica_sets.iter().map(|r| r.available.min(r.spec_replicas)).sum()
}

/// Checks one plan against the invariants, given the world before and after it was carried out.
fn check_plan(kind: Kind, before: &World, p: &Plan, after: &World) -> Result<(), TestCaseError> {
    let spec = &before.rollout.spec;
    let r = spec.replicas.unwrap_or(1);
    let st_in = before.status();
    let new_hash = p.status.current_pod_hash.clone().unwrap_or_default();
    let stable_in = st_in.stable_rs.clone();
    let (new_spec, new_avail) = spec_pods(before, &new_hash);

    // 6. Only what it owns: ReplicaSets it observed or creates, Services it was told about.
    let owned: Vec<String> = before.observed.replica_sets.iter().map(|r| r.name.clone()).collect();
    let mut created: Vec<String> = Vec::new();
    for a in &p.actions {
        match a {
            Action::CreateReplicaSet { name, .. } => {
                prop_assert!(name.starts_with("app-"), "created {name}");
                created.push(name.clone());
            }
            Action::ScaleReplicaSet { name, .. }
            | Action::SetRevision { name, .. }
            | Action::SetScaleDownDeadline { name, .. }
            | Action::SetStableSince { name, .. }
            | Action::SetStableUntil { name, .. }
            | Action::DeleteReplicaSet { name } => {
                prop_assert!(
                    owned.contains(name) || created.contains(name),
                    "touched a ReplicaSet it does not own: {name}"
                );
            }
            Action::SetServiceSelector { service, .. } => {
                prop_assert!(before.observed.services.contains_key(service), "touched Service {service}");
            }
            _ => {}
        }
    }

    // 1. Traffic to the new version only moves up once its pods are available.
    for a in &p.actions {
        match a {
            Action::SetTraffic(traffic) if traffic.canary_weight > before.router_weight.unwrap_or(0) => {
                // setCanaryScale may size the canary below what the weight needs: then all the
                // pods the plan leaves it must be available.
                let spec_after = spec_pods(after, &new_hash).0;
                let needed = replicas_for_weight(traffic.canary_weight, r, max_weight(before))
                    .min(new_spec.max(1))
                    .min(spec_after.max(1));
                prop_assert!(
                    new_avail >= needed.max(1),
                    "weight {} with {new_avail} available canary pods (needed {needed})",
                    traffic.canary_weight
                );
            }
            Action::SetServiceSelector { service, hash }
                if hash == &new_hash && before.service(service).as_deref() != Some(hash) =>
            {
                let need = if kind == Kind::BlueGreen && service == "a" { r.min(new_spec.max(r)) } else { 1 };
                prop_assert!(
                    new_avail >= need.max(1) || r == 0,
                    "Service {service} switched to {hash} with {new_avail} available pods"
                );
            }
            _ => {}
        }
    }

    // 2. On abort, traffic returns to stable before any new pod is removed.
    if p.status.abort == Some(true) {
        let mut traffic_back = before.router_weight.unwrap_or(0) == 0;
        let mut svc_back = !matches!(kind, Kind::Basic | Kind::Routed | Kind::RoutedDynamic)
            || before.service("c").as_deref() != Some(new_hash.as_str());
        let mut active_back = kind != Kind::BlueGreen || before.service("a").as_deref() != Some(new_hash.as_str());
        for a in &p.actions {
            match a {
                Action::SetTraffic(traffic) if traffic.canary_weight == 0 => traffic_back = true,
                Action::SetServiceSelector { service, hash } if hash != &new_hash => {
                    if service == "c" {
                        svc_back = true;
                    }
                    if service == "a" {
                        active_back = true;
                    }
                }
                Action::ScaleReplicaSet { name, replicas } if name.ends_with(&new_hash) && *replicas < new_spec => {
                    let routed = matches!(kind, Kind::Routed | Kind::RoutedDynamic);
                    prop_assert!(!routed || traffic_back, "canary scaled down before traffic returned to stable");
                    prop_assert!(
                        svc_back || new_avail == 0,
                        "canary scaled down while the canary Service still selects it"
                    );
                    prop_assert!(active_back, "preview scaled down while active still selects it");
                }
                _ => {}
            }
        }
    }

    // 3. Without traffic routing, available pods never fall below replicas - maxUnavailable.
    if kind == Kind::Basic {
        let c = spec.strategy.canary.as_ref().unwrap();
        let (_, u) = resolve_fenceposts(c.max_surge.as_ref(), c.max_unavailable.as_ref(), r);
        let floor = (r - u).min(available_total(before));
        prop_assert!(
            available_total(after) >= floor,
            "available fell from {} to {} (floor {floor})",
            available_total(before),
            available_total(after)
        );
    }

    // 4. The stable ReplicaSet is not scaled down until the new one is fully available and promoted.
    if matches!(kind, Kind::Routed | Kind::BlueGreen)
        && let Some(stable) = &stable_in
    {
        for a in &p.actions {
            if let Action::ScaleReplicaSet { name, replicas } = a
                && name.ends_with(stable.as_str())
                && *replicas < r
                && stable != &new_hash
            {
                let promoted_away = p.status.stable_rs.as_deref() != Some(stable.as_str());
                prop_assert!(promoted_away, "stable {name} scaled to {replicas} of {r} before promotion");
            }
        }
    }

    // 7. Traffic is only ever routed to available pods. A version's pods "carry" a share of
    // traffic when, at the spec the plan leaves them (a ReplicaSet keeps no more pods than its
    // spec, and pods it is given now are not available yet), at least
    // `replicas_for_weight(share)` of them are available: as many as that share of replicas.
    // After each plan, with the weight in effect at the router and the versions the Services
    // select:
    // - the canary Service's version takes a weight above 0 only with an available pod (the
    //   stable Service's version takes the rest whatever it has: with no other version, traffic
    //   has nowhere else to go);
    // - a version whose share grew carries its new share. Transitional rule, as in invariant 1:
    //   setCanaryScale may size the canary below what its weight needs, and then every pod the
    //   plan leaves it must be available. A share that did not grow is not judged: pods do not
    //   vanish by themselves in the simulation, and a user who raises spec.replicas has not
    //   moved traffic. Nor is traffic that had no pods before (a Service that selected nothing
    //   yet, as on a first deploy): it was moved off no pod. Nor traffic that leaves a version
    //   whose available pods did not carry it before the plan (spec.replicas was raised beneath
    //   it): it may go where it is least overloaded, and no choice keeps both sides carried.
    if matches!(kind, Kind::Routed | Kind::RoutedDynamic) && r > 0 {
        let max = max_weight(after);
        let available_after = |hash: &str| spec_pods(before, hash).1.min(spec_pods(after, hash).0);
        if let Some(canary) = after.service("c")
            && after.router_weight.unwrap_or(0) > 0
        {
            prop_assert!(
                available_after(&canary) > 0,
                "weight {:?} of {max} goes to {canary}, which has no available pod",
                after.router_weight
            );
        }
        let (load_before, load_after) = (traffic_by_version(before), traffic_by_version(after));
        let had_nowhere_to_go = load_before.get("").is_some_and(|&share| share > 0);
        let leaves_overloaded_pods = |hash: &String| {
            load_before.iter().any(|(from, &was)| {
                from != hash
                    && load_after.get(from).copied().unwrap_or(0) < was
                    && spec_pods(before, from).1 < replicas_for_weight(was, r, max)
            })
        };
        for (hash, &share) in load_after.iter().filter(|(hash, _)| !hash.is_empty()) {
            let available = available_after(hash);
            let was = load_before.get(hash).copied().unwrap_or(0);
            if share > was && !had_nowhere_to_go && !leaves_overloaded_pods(hash) {
                let spec_after = spec_pods(after, hash).0;
                let mut needed = replicas_for_weight(share, r, max);
                if hash == &new_hash {
                    needed = needed.min(spec_after.max(1));
                }
                prop_assert!(
                    available >= needed,
                    "traffic to {hash} rose from {was} to {share} of {max} with {available} available pods (needs {needed}; weight {:?} -> {:?})",
                    before.router_weight,
                    after.router_weight
                );
            }
        }
    }

    // 8. Without traffic routing, pods in all never exceed replicas + maxSurge, and a total above
    // it (maxSurge or replicas lowered mid-rollout) only moves toward it.
    if kind == Kind::Basic {
        let c = spec.strategy.canary.as_ref().unwrap();
        let (surge, _) = resolve_fenceposts(c.max_surge.as_ref(), c.max_unavailable.as_ref(), r);
        let total = |w: &World| w.observed.replica_sets.iter().map(|rs| rs.spec_replicas).sum::<i32>();
        let (was, now) = (total(before), total(after));
        prop_assert!(now <= was.max(r + surge), "pods in all went from {was} to {now}; the limit is {}", r + surge);
    }

    // Idempotence: planning again from the new status, with the world as the actions left it,
    // asks for nothing more.
    let again = plan(&after.rollout, &after.observed, &after.now);
    prop_assert!(again.actions.is_empty(), "planning again asked for {:#?}\nafter {:#?}", again.actions, p.actions);
    prop_assert_eq!(&again.status, after.rollout.status.as_ref().unwrap(), "planning again changed the status");
    Ok(())
}

fn reconcile_checked(kind: Kind, w: &mut World) -> Result<Plan, TestCaseError> {
    let before = w.clone();
    let p = w.reconcile();
    check_plan(kind, &before, &p, w)?;
    check_one_version(kind, w)?;
    Ok(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safety_invariants_and_idempotence_hold_over_random_histories(
        (strategy, kind) in strategy(),
        replicas in 0i32..7,
        deadline in prop::option::of(30i32..300),
        deadline_abort in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_history(&strategy, kind, replicas, deadline, deadline_abort, ops)?;
    }
}

fn run_history(
    strategy: &str,
    kind: Kind,
    replicas: i32,
    deadline: Option<i32>,
    deadline_abort: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut w = World::new(rollout_with(replicas, strategy));
    w.rollout.spec.progress_deadline_seconds = deadline;
    w.rollout.spec.progress_deadline_abort = Some(deadline_abort);
    let mut image = 1;
    for _ in 0..10 {
        reconcile_checked(kind, &mut w)?;
        w.pods_settle();
        check_one_version(kind, &w)?;
    }
    for op in ops {
        match op {
            Op::NewImage { never_ready } => {
                image += 1;
                w.set_image(&format!("demo:{image}"));
                if never_ready {
                    let h = stepwise_core::hash::pod_template_hash(w.rollout.spec.template.as_ref().unwrap(), None);
                    w.never_ready.insert(h);
                }
            }
            Op::OnePodEach => w.one_pod_each(),
            Op::PodsSettle => w.pods_settle(),
            Op::AnalysesStart => w.analyses_start(),
            Op::AnalysesFinish(phase) => {
                w.analysis_outcome = phase;
                w.analyses_finish();
            }
            Op::Wait(s) => w.wait(s),
            Op::Promote => w.promote(),
            Op::PromoteFull => w.promote_full(),
            Op::Abort => w.abort(),
            Op::Retry => w.retry(),
            Op::Scale(n) => w.rollout.spec.replicas = Some(n),
            Op::Pause(p) => w.rollout.spec.paused = Some(p),
            Op::MaxSurge(v) => {
                if let Some(c) = w.rollout.spec.strategy.canary.as_mut() {
                    c.max_surge = Some(int_or_string(&v));
                }
            }
            Op::MaxUnavailable(v) => {
                let v = Some(int_or_string(&v));
                match (w.rollout.spec.strategy.canary.as_mut(), w.rollout.spec.strategy.blue_green.as_mut()) {
                    (Some(c), _) => c.max_unavailable = v,
                    (None, Some(b)) => b.max_unavailable = v,
                    (None, None) => {}
                }
            }
        }
        check_one_version(kind, &w)?;
        reconcile_checked(kind, &mut w)?;
    }

    // 5. Every wait has a deadline: left alone (pods and analyses do what they do, time
    // passes, no person acts), the rollout ends Healthy, Degraded, or Paused waiting for a
    // person, with a message that says why.
    w.rollout.spec.paused = None;
    w.analysis_outcome = AnalysisPhase::Successful;
    for _ in 0..200 {
        let p = reconcile_checked(kind, &mut w)?;
        w.pods_settle();
        check_one_version(kind, &w)?;
        w.analyses_finish();
        let wait = p.requeue_after.map(|d| d.as_secs() as i64 + 1).unwrap_or(30).min(600);
        w.wait(wait);
        let st = w.status();
        if st.phase == Some(RolloutPhase::Healthy)
            || st.phase == Some(RolloutPhase::Degraded)
            || (st.phase == Some(RolloutPhase::Paused) && p.requeue_after.is_none())
        {
            break;
        }
    }
    let st = w.status();
    let phase = st.phase;
    prop_assert!(
        matches!(phase, Some(RolloutPhase::Healthy) | Some(RolloutPhase::Degraded) | Some(RolloutPhase::Paused)),
        "still {:?} after a long wait: {:?}",
        phase,
        st.message
    );
    if phase == Some(RolloutPhase::Paused) {
        prop_assert!(!st.pause_conditions.is_empty(), "Paused without a pause condition: {:?}", st.message);
    }
    prop_assert!(st.message.as_deref().is_some_and(|m| !m.is_empty()), "no message");
    Ok(())
}

/// An IntOrString as `int_or_pct` writes it in YAML.
fn int_or_string(yaml: &str) -> IntOrString {
    match yaml.parse() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(yaml.trim_matches('\'').to_string()),
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9%. ]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("spec".to_string()),
            Just("strategy".to_string()),
            Just("canary".to_string()),
            Just("steps".to_string()),
            Just("setWeight".to_string()),
            Just("pause".to_string()),
            Just("duration".to_string()),
            Just("replicas".to_string()),
            Just("blueGreen".to_string()),
            Just("activeService".to_string()),
            Just("template".to_string()),
            Just("status".to_string()),
            Just("currentStepIndex".to_string()),
            Just("maxSurge".to_string()),
            "[a-z]{1,5}".prop_map(String::from),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever JSON arrives, decoding returns an error or a Rollout, and planning a decoded
    /// Rollout never panics.
    #[test]
    fn random_json_never_panics_the_decoder_or_the_planner(value in json_value()) {
        let mut doc = serde_json::json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "x"}});
        if let serde_json::Value::Object(m) = &value {
            for (k, v) in m {
                doc[k] = v.clone();
            }
        }
        if let Ok(ro) = serde_json::from_value::<stepwise_api::Rollout>(doc) {
            let w = World::new(ro);
            let _ = plan(&w.rollout, &w.observed, &w.now);
        }
    }

    /// Odd but decodable specs (negative counts, weights past the maximum, indexes beyond the
    /// steps, missing services) become InvalidSpec or a plan, never a panic.
    #[test]
    fn random_specs_never_panic_the_planner(
        replicas in -3i32..12,
        weights in prop::collection::vec(-10i32..130, 0..5),
        index in -2i32..9,
        surge in int_or_pct(),
        unavailable in int_or_pct(),
        drop_services in any::<bool>(),
    ) {
        let mut steps = String::new();
        for w in &weights {
            steps.push_str(&format!("      - setWeight: {w}\n"));
        }
        let mut strategy = format!("    canary:\n      canaryService: c\n      stableService: s\n      maxSurge: {surge}\n      maxUnavailable: {unavailable}\n");
        if !steps.is_empty() {
            strategy.push_str("      steps:\n");
            strategy.push_str(&steps);
        }
        let mut w = World::new(rollout_with(replicas, &strategy));
        if drop_services {
            w.observed.services.clear();
        }
        w.reconcile();
        w.pods_settle();
        let mut st = w.status();
        st.current_step_index = Some(index);
        w.rollout.status = Some(st);
        let p = w.reconcile();
        if p.status.conditions.iter().any(|c| c.r#type == "InvalidSpec") {
            prop_assert!(p.actions.iter().all(|a| matches!(a, Action::Event { .. })), "InvalidSpec with actions");
            prop_assert_eq!(p.status.phase, Some(RolloutPhase::Degraded));
        }
    }
}
