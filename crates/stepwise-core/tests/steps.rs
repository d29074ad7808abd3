//! The step machine, table-tested: each case is a script of operations on a simulated cluster
//! and the state expected after each one, worked out by hand from the rules in
//! docs/steps.md (replica arithmetic as in Argo Rollouts).

mod support;

use stepwise_api::AnalysisPhase;
use support::{World, rollout_with};

/// One operation and what must hold afterwards, as `key=value` pairs:
/// `step` (status.currentStepIndex), `canary` and `stable` (spec.replicas of the newest and
/// the stable ReplicaSet), `old` (spec.replicas of all other ReplicaSets), `phase`, `weight`
/// (traffic weight at the router), `promoted` (stable is the newest), `svc:<name>` (`new`,
/// `stable` or `none`: what a Service selects), `aborted`, `runs` (AnalysisRuns created).
type Script = &'static [(&'static str, &'static str)];

fn run_case(name: &str, replicas: i32, strategy: &str, script: Script, setup: impl Fn(&mut World)) -> usize {
    let mut w = World::new(rollout_with(replicas, strategy));
    setup(&mut w);
    w.settle(30);
    assert_eq!(
        w.phase(),
        Some(stepwise_api::RolloutPhase::Healthy),
        "{name}: initial deploy is Healthy: {:?}",
        w.status().message
    );
    let first = w.hash();
    let mut checked = 0;
    for (op, expect) in script {
        let mut parts = op.split_whitespace();
        match (parts.next().unwrap(), parts.next()) {
            ("image", Some(img)) => w.set_image(img),
            ("settle", _) => {}
            ("promote", _) => w.promote(),
            ("full", _) => w.promote_full(),
            ("abort", _) => w.abort(),
            ("retry", _) => w.retry(),
            ("pause", _) => w.rollout.spec.paused = Some(true),
            ("resume", _) => w.rollout.spec.paused = None,
            ("wait", Some(s)) => w.wait(s.parse().unwrap()),
            ("scale", Some(n)) => w.rollout.spec.replicas = Some(n.parse().unwrap()),
            ("neverready", _) => {
                // The next version's pods never become ready.
                let mut probe = w.clone();
                probe.set_image("demo:never");
                let h = stepwise_core::hash::pod_template_hash(probe.rollout.spec.template.as_ref().unwrap(), None);
                w.never_ready.insert(h);
            }
            ("analysis", Some(phase)) => {
                w.analysis_outcome = match phase {
                    "Successful" => AnalysisPhase::Successful,
                    "Failed" => AnalysisPhase::Failed,
                    "Inconclusive" => AnalysisPhase::Inconclusive,
                    "Error" => AnalysisPhase::Error,
                    other => panic!("unknown phase {other}"),
                };
            }
            (other, _) => panic!("unknown op {other}"),
        }
        // Let the world converge: reconcile, pods settle, analyses finish.
        for _ in 0..40 {
            let before = (w.rollout.status.clone(), w.observed.clone());
            w.reconcile();
            w.pods_settle();
            w.analyses_finish();
            if (w.rollout.status.clone(), w.observed.clone()) == before {
                break;
            }
        }
        let st = w.status();
        let new = w.hash();
        let stable = st.stable_rs.clone().unwrap();
        let role = |h: Option<String>| match h {
            None => "none".to_string(),
            Some(h) if h == new => "new".into(),
            Some(h) if h == stable => "stable".into(),
            Some(h) if h == first => "first".into(),
            Some(_) => "other".into(),
        };
        for kv in expect.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap();
            let actual = match k {
                "step" => st.current_step_index.map(|i| i.to_string()).unwrap_or_default(),
                "canary" => w.pods(&new).0.to_string(),
                "stable" => w.pods(&stable).0.to_string(),
                "old" => w
                    .observed
                    .replica_sets
                    .iter()
                    .filter(|r| r.hash != new && r.hash != stable)
                    .map(|r| r.spec_replicas)
                    .sum::<i32>()
                    .to_string(),
                "phase" => format!("{:?}", st.phase.unwrap()),
                "weight" => w.router_weight.map(|x| x.to_string()).unwrap_or("none".into()),
                "promoted" => (stable == new).to_string(),
                "aborted" => (st.abort == Some(true)).to_string(),
                "runs" => w.observed.analysis_runs.len().to_string(),
                "rsets" => w.observed.replica_sets.len().to_string(),
                svc if svc.starts_with("svc:") => role(w.service(&svc[4..])),
                other => panic!("unknown key {other}"),
            };
            assert_eq!(actual, v, "{name}: after `{op}`, {k} (status message: {:?})", st.message);
            checked += 1;
        }
    }
    checked
}

/// A Rollout deployed and settled, then given the image `demo:2`, before any plan for it.
fn updated(replicas: i32, strategy: &str) -> World {
    let mut w = World::new(rollout_with(replicas, strategy));
    w.settle(30);
    w.set_image("demo:2");
    w
}

const BASIC: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {duration: 30s}\n";

#[test]
fn basic_canary_walks_set_weight_and_pause_steps_with_pod_counts_from_the_approximation() {
    let n = run_case(
        "basic",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1 canary=1 stable=3 phase=Paused svc:app-canary=new svc:app-stable=stable"),
            ("promote", "step=3 canary=2 stable=2 phase=Paused"),
            ("wait 10", "step=3 canary=2 stable=2 phase=Paused"),
            ("wait 21", "step=4 canary=4 promoted=true old=0 phase=Healthy svc:app-stable=new svc:app-canary=new"),
        ],
        |_| {},
    );
    assert_eq!(n, 21);
}

#[test]
fn abort_returns_to_stable_and_retry_starts_the_steps_again() {
    run_case(
        "abort",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1 canary=1 stable=3"),
            ("abort", "aborted=true canary=0 stable=4 phase=Degraded step=0 svc:app-canary=stable"),
            ("retry", "aborted=false step=1 canary=1 stable=3 phase=Paused svc:app-canary=new"),
        ],
        |_| {},
    );
}

#[test]
fn promote_full_skips_the_remaining_steps() {
    run_case(
        "full",
        4,
        BASIC,
        &[("image demo:2", "step=1"), ("full", "promoted=true canary=4 old=0 phase=Healthy step=4")],
        |_| {},
    );
}

#[test]
fn a_new_template_mid_rollout_supersedes_the_canary() {
    run_case(
        "supersede",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1 canary=1 stable=3"),
            ("image demo:3", "step=1 canary=1 stable=3 old=0 rsets=3"),
            ("promote", "step=3 canary=2 stable=2 old=0"),
        ],
        |_| {},
    );
}

#[test]
fn a_timed_pause_waits_its_duration() {
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {duration: 1m}\n";
    run_case(
        "timed",
        2,
        strategy,
        &[
            ("image demo:2", "step=1 canary=1 stable=1 phase=Paused"),
            ("wait 30", "step=1 phase=Paused"),
            ("wait 31", "step=2 promoted=true canary=2 old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn a_canary_without_steps_is_a_rolling_update() {
    run_case(
        "nosteps",
        4,
        "    canary: {}\n",
        &[("image demo:2", "promoted=true canary=4 old=0 phase=Healthy step=0")],
        |_| {},
    );
}

#[test]
fn scaling_mid_step_keeps_the_step_ratio() {
    run_case(
        "scale",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1 canary=1 stable=3"),
            ("scale 8", "step=1 canary=2 stable=6 phase=Paused"),
            ("scale 2", "canary=1 stable=2"),
        ],
        |_| {},
    );
}

#[test]
fn a_manual_pause_freezes_the_pod_counts() {
    run_case(
        "manual",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1 canary=1 stable=3"),
            ("pause", "phase=Paused"),
            ("promote", "step=1 canary=1 stable=3 phase=Paused"),
            ("resume", "step=3 canary=2 stable=2"),
        ],
        |_| {},
    );
}

const ROUTED: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 10\n      - pause: {}\n      - setCanaryScale: {replicas: 3}\n      - setWeight: 50\n      - pause: {}\n";

#[test]
fn traffic_routed_canary_scales_by_weight_rounded_up_and_keeps_stable_full() {
    run_case(
        "routed",
        10,
        ROUTED,
        &[
            (
                "image demo:2",
                "step=1 canary=1 stable=10 weight=10 phase=Paused svc:app-canary=new svc:app-stable=stable",
            ),
            ("promote", "step=4 canary=3 stable=10 weight=50 phase=Paused"),
            ("promote", "promoted=true canary=10 old=10 weight=0 svc:app-stable=new"),
            ("wait 31", "old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn routed_abort_returns_traffic_first_and_scales_the_canary_down_after_the_delay() {
    run_case(
        "routed-abort",
        10,
        ROUTED,
        &[
            ("image demo:2", "step=1 canary=1 weight=10"),
            ("abort", "weight=0 canary=1 stable=10 phase=Degraded svc:app-canary=stable"),
            ("wait 31", "canary=0 stable=10 phase=Degraded"),
        ],
        |_| {},
    );
}

const ANALYSIS: &str =
    "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: success-rate}]}\n";

#[test]
fn a_successful_analysis_step_advances() {
    run_case(
        "analysis-ok",
        4,
        ANALYSIS,
        &[("image demo:2", "runs=1 promoted=true phase=Healthy canary=4 old=0")],
        |_| {},
    );
}

#[test]
fn a_failed_analysis_step_aborts() {
    run_case(
        "analysis-failed",
        4,
        ANALYSIS,
        &[
            ("analysis Failed", "phase=Healthy"),
            ("image demo:2", "runs=1 aborted=true phase=Degraded canary=0 stable=4"),
        ],
        |_| {},
    );
}

#[test]
fn an_inconclusive_analysis_pauses_until_a_person_promotes() {
    run_case(
        "analysis-inconclusive",
        4,
        ANALYSIS,
        &[
            ("analysis Inconclusive", "phase=Healthy"),
            ("image demo:2", "runs=1 phase=Paused step=1 canary=2 stable=2"),
            ("promote", "promoted=true phase=Healthy canary=4"),
        ],
        |_| {},
    );
}

#[test]
fn background_analysis_failure_aborts() {
    let strategy = "    canary:\n      analysis: {templates: [{templateName: errors}], startingStep: 1}\n      steps:\n      - setWeight: 50\n      - pause: {}\n";
    run_case(
        "background",
        4,
        strategy,
        &[
            ("analysis Failed", "phase=Healthy"),
            ("image demo:2", "runs=1 aborted=true canary=0 stable=4 phase=Degraded"),
        ],
        |_| {},
    );
}

const BLUE_GREEN: &str = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n";

#[test]
fn blue_green_switches_active_only_after_promote_and_scales_old_down_after_the_delay() {
    run_case(
        "bluegreen",
        3,
        BLUE_GREEN,
        &[
            ("image demo:2", "canary=3 stable=3 phase=Paused svc:app-preview=new svc:app-active=stable"),
            ("promote", "promoted=true svc:app-active=new old=3"),
            ("wait 31", "old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn blue_green_auto_promotes_after_auto_promotion_seconds() {
    let strategy = "    blueGreen:\n      activeService: app-active\n      autoPromotionSeconds: 20\n      scaleDownDelaySeconds: 5\n";
    run_case(
        "bluegreen-auto",
        2,
        strategy,
        &[
            ("image demo:2", "canary=2 stable=2 phase=Paused svc:app-active=stable"),
            ("wait 10", "phase=Paused svc:app-active=stable"),
            ("wait 11", "promoted=true svc:app-active=new old=2"),
            ("wait 6", "old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn blue_green_preview_replica_count_scales_up_before_the_switch() {
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewReplicaCount: 1\n      autoPromotionEnabled: false\n";
    run_case(
        "bluegreen-preview",
        3,
        strategy,
        &[
            ("image demo:2", "canary=1 stable=3 phase=Paused svc:app-active=stable"),
            ("promote", "canary=3 promoted=true svc:app-active=new"),
        ],
        |_| {},
    );
}

#[test]
fn blue_green_abort_keeps_active_on_stable_and_removes_the_preview_after_the_delay() {
    run_case(
        "bluegreen-abort",
        3,
        BLUE_GREEN,
        &[
            ("image demo:2", "canary=3 phase=Paused"),
            ("abort", "aborted=true svc:app-active=stable svc:app-preview=stable canary=3 phase=Degraded"),
            ("wait 31", "canary=0 stable=3"),
        ],
        |_| {},
    );
}

#[test]
fn the_progress_deadline_marks_the_rollout_degraded() {
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";
    let setup = |w: &mut World| w.rollout.spec.progress_deadline_seconds = Some(60);
    run_case(
        "deadline",
        4,
        strategy,
        &[
            ("neverready", "phase=Healthy"),
            ("image demo:never", "step=0 phase=Progressing"),
            ("wait 61", "phase=Degraded aborted=false step=0"),
        ],
        setup,
    );
}

#[test]
fn progress_deadline_abort_aborts_and_returns_to_stable() {
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";
    let setup = |w: &mut World| {
        w.rollout.spec.progress_deadline_seconds = Some(60);
        w.rollout.spec.progress_deadline_abort = Some(true);
    };
    run_case(
        "deadline-abort",
        4,
        strategy,
        &[
            ("neverready", "phase=Healthy"),
            ("image demo:never", "phase=Progressing"),
            ("wait 61", "phase=Degraded aborted=true canary=0 stable=4"),
        ],
        setup,
    );
}

#[test]
fn undo_to_the_previous_template_reuses_its_replica_set_with_a_new_revision() {
    run_case(
        "undo",
        4,
        BASIC,
        &[
            ("image demo:2", "step=1"),
            ("full", "promoted=true rsets=2"),
            // Back to the first template: its ReplicaSet is reused, the steps run again.
            ("image demo:1", "step=1 canary=1 stable=3 rsets=2 svc:app-canary=new"),
        ],
        |_| {},
    );
}

#[test]
fn going_back_to_the_stable_template_mid_rollout_skips_the_steps() {
    run_case(
        "back-to-stable",
        4,
        BASIC,
        &[("image demo:2", "step=1 canary=1"), ("image demo:1", "promoted=true step=4 canary=4 old=0 phase=Healthy")],
        |_| {},
    );
}

#[test]
fn revision_history_keeps_only_the_limit_of_old_replica_sets() {
    let setup = |w: &mut World| w.rollout.spec.revision_history_limit = Some(1);
    run_case(
        "history",
        2,
        "    canary: {}\n",
        &[("image demo:2", "rsets=2"), ("image demo:3", "rsets=2"), ("image demo:4", "rsets=2 promoted=true old=0")],
        setup,
    );
}

const SCALE_STEPS: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setCanaryScale: {replicas: 3}\n      - setWeight: 20\n      - pause: {}\n      - setCanaryScale: {weight: 50}\n      - pause: {}\n      - setCanaryScale: {matchTrafficWeight: true}\n      - pause: {}\n";

#[test]
fn set_canary_scale_sizes_the_canary_apart_from_the_traffic_weight_until_match_traffic_weight() {
    // R=10, routed, so stable stays at 10 throughout. replicas:3 → 3 pods whatever the weight;
    // weight:50 → ceil(10×50%) = 5 pods at 20% traffic; matchTrafficWeight → ceil(10×20%) = 2.
    run_case(
        "canary-scale",
        10,
        SCALE_STEPS,
        &[
            ("image demo:2", "step=2 canary=3 stable=10 weight=20 phase=Paused"),
            ("promote", "step=4 canary=5 stable=10 weight=20 phase=Paused"),
            ("promote", "step=6 canary=2 stable=10 weight=20 phase=Paused"),
            ("promote", "step=7 promoted=true canary=10 weight=0 phase=Progressing"),
        ],
        |_| {},
    );
}

#[test]
fn dynamic_stable_scale_shrinks_the_stable_as_traffic_moves_to_the_canary() {
    // R=10 at 30%: canary ceil(3) = 3 pods; the stable keeps what carries the other 70%: 7.
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      dynamicStableScale: true\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 30\n      - pause: {}\n";
    run_case(
        "dynamic-stable",
        10,
        strategy,
        &[
            ("image demo:2", "step=1 canary=3 stable=7 weight=30 phase=Paused"),
            ("promote", "promoted=true canary=10 weight=0"),
        ],
        |_| {},
    );
}

#[test]
fn min_pods_per_replica_set_raises_a_tiny_canary() {
    // R=10 at 5%: ceil(0.5) = 1 pod, raised to minPodsPerReplicaSet = 2.
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      minPodsPerReplicaSet: 2\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 5\n      - pause: {}\n";
    run_case("min-pods", 10, strategy, &[("image demo:2", "step=1 canary=2 stable=10 weight=5 phase=Paused")], |_| {});
}

#[test]
fn a_basic_canary_without_surge_makes_room_before_adding_canary_pods() {
    // maxSurge 0: never more than 4 pods; 50% of 4 = 2 canary and 2 stable once settled.
    let strategy = "    canary:\n      maxSurge: 0\n      maxUnavailable: 1\n      steps:\n      - setWeight: 50\n      - pause: {}\n";
    run_case(
        "no-surge",
        4,
        strategy,
        &[
            ("image demo:2", "step=1 canary=2 stable=2 phase=Paused"),
            ("promote", "promoted=true canary=4 old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn an_analysis_error_aborts_like_a_failure() {
    run_case(
        "analysis-error",
        4,
        ANALYSIS,
        &[
            ("analysis Error", "phase=Healthy"),
            ("image demo:2", "runs=1 aborted=true phase=Degraded canary=0 stable=4"),
        ],
        |_| {},
    );
}

#[test]
fn an_inconclusive_background_analysis_pauses_the_rollout() {
    let strategy = "    canary:\n      analysis: {templates: [{templateName: errors}]}\n      steps:\n      - setWeight: 50\n      - pause: {duration: 1m}\n";
    run_case(
        "background-inconclusive",
        4,
        strategy,
        &[
            ("analysis Inconclusive", "phase=Healthy"),
            ("image demo:2", "runs=1 aborted=false step=0 phase=Paused canary=2 stable=2"),
            ("wait 120", "runs=1 step=0 phase=Paused"),
            // Promote accepts the verdict; a fresh run keeps judging the canary.
            ("analysis Successful", "runs=1 step=0 phase=Paused"),
            ("promote", "runs=2 step=1 phase=Paused canary=2 stable=2"),
            ("wait 61", "runs=2 promoted=true phase=Healthy canary=4 old=0"),
        ],
        |_| {},
    );
}

#[test]
fn scaling_a_healthy_rollout_scales_the_stable_replica_set() {
    run_case(
        "scale-healthy",
        4,
        BASIC,
        &[("scale 6", "stable=6 phase=Healthy"), ("scale 1", "stable=1 phase=Healthy")],
        |_| {},
    );
}

#[test]
fn promote_full_during_a_blue_green_pause_switches_the_active_service() {
    run_case(
        "bluegreen-full",
        3,
        BLUE_GREEN,
        &[
            ("image demo:2", "canary=3 stable=3 phase=Paused svc:app-active=stable svc:app-preview=new"),
            ("full", "promoted=true svc:app-active=new"),
        ],
        |_| {},
    );
}

#[test]
fn status_messages_say_where_the_rollout_is_and_when_a_timed_pause_ends() {
    // The world's clock starts at 2027-01-15T08:00:00Z and settling takes no time.
    let mut w = updated(4, BASIC);
    w.settle(30);
    assert_eq!(w.status().message.as_deref(), Some("Paused at step 2/4: pause, waiting for promote"));
    w.wait(5);
    w.promote();
    w.settle(30);
    assert_eq!(w.status().message.as_deref(), Some("Paused at step 4/4: pause 30s, resumes at 2027-01-15T08:00:35Z"));
}

#[test]
fn an_abort_message_names_the_analysis_that_failed() {
    let mut w = World::new(rollout_with(4, ANALYSIS));
    w.settle(30);
    w.analysis_outcome = AnalysisPhase::Failed;
    w.set_image("demo:2");
    for _ in 0..10 {
        w.reconcile();
        w.pods_settle();
        w.analyses_finish();
    }
    let message = w.status().message.unwrap_or_default();
    assert!(message.starts_with("Aborted: "), "{message}");
    assert!(message.contains("Failed") && message.contains("metric success-rate assessed Failed"), "{message}");
}

#[test]
fn an_inconclusive_pre_promotion_analysis_holds_the_switch_until_a_person_promotes() {
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      prePromotionAnalysis: {templates: [{templateName: smoke}]}\n";
    run_case(
        "pre-promotion-inconclusive",
        3,
        strategy,
        &[
            ("analysis Inconclusive", "phase=Healthy"),
            ("image demo:2", "runs=1 canary=3 stable=3 phase=Paused svc:app-active=stable svc:app-preview=new"),
            ("wait 120", "runs=1 phase=Paused svc:app-active=stable"),
            ("promote", "runs=1 promoted=true svc:app-active=new"),
            ("wait 31", "old=0 phase=Healthy"),
        ],
        |_| {},
    );
}

#[test]
fn one_promote_accepts_an_inconclusive_pre_promotion_analysis_and_ends_the_blue_green_pause() {
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n      prePromotionAnalysis: {templates: [{templateName: smoke}]}\n";
    run_case(
        "pre-promotion-inconclusive-manual",
        3,
        strategy,
        &[
            ("analysis Inconclusive", "phase=Healthy"),
            ("image demo:2", "runs=1 phase=Paused svc:app-active=stable svc:app-preview=new"),
            ("promote", "runs=1 promoted=true svc:app-active=new"),
        ],
        |_| {},
    );
}

#[test]
fn a_retry_with_the_new_pods_still_at_full_size_switches_in_one_plan() {
    // Found by the property test: promote full scaled the new version to 3, an abort kept its
    // pods (abortScaleDownDelaySeconds), and the retry used to point the preview Service first
    // and the active one only on the next reconcile.
    let strategy = "    blueGreen:\n      activeService: a\n      previewService: p\n      previewReplicaCount: 2\n";
    let mut w = updated(3, strategy);
    w.reconcile();
    w.promote_full();
    w.reconcile();
    w.abort();
    w.reconcile();
    w.pods_settle();
    w.reconcile();
    w.retry();
    let plan = w.reconcile();
    let mut switched: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            stepwise_core::Action::SetServiceSelector { service, .. } => Some(service.as_str()),
            _ => None,
        })
        .collect();
    switched.sort();
    assert_eq!(switched, ["a", "p"], "{:?}", w.status().message);
    assert_eq!(w.stable(), w.hash());
}

#[test]
fn a_service_cache_that_lags_behind_the_switch_does_not_pause_blue_green_again() {
    // A post-promotion analysis keeps the rollout short of stable after the switch.
    let strategy = format!("{BLUE_GREEN}      postPromotionAnalysis: {{templates: [{{templateName: smoke}}]}}\n");
    let mut w = World::new(rollout_with(3, &strategy));
    w.settle(30);
    let old = w.hash();
    w.set_image("demo:2");
    w.settle(30);
    assert_eq!(w.phase(), Some(stepwise_api::RolloutPhase::Paused));
    w.promote();
    w.reconcile();
    assert_eq!(w.service("app-active"), Some(w.hash()));
    // The next reconcile still sees the Service as it was before the switch.
    w.observed.services.insert("app-active".into(), Some(old));
    let plan = w.reconcile();
    assert!(w.status().pause_conditions.is_empty(), "paused again: {:?}", w.status().message);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, stepwise_core::Action::Event { reason, .. } if reason == "RolloutPaused")),
        "{:?}",
        plan.actions
    );
}

fn set_run_phase(w: &mut World, kind: stepwise_core::AnalysisKind, phase: AnalysisPhase) {
    w.observed.analysis_runs.iter_mut().find(|r| r.kind == kind).expect("a run of that kind").phase = phase;
}

#[test]
fn a_failed_step_analysis_aborts_even_while_an_inconclusive_background_analysis_holds_the_steps() {
    use stepwise_core::AnalysisKind;
    let strategy = "    canary:\n      analysis: {templates: [{templateName: bg}], startingStep: 1}\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: smoke}]}\n      - pause: {}\n";
    let mut w = updated(4, strategy);
    for _ in 0..10 {
        w.reconcile();
        w.pods_settle();
    }
    assert!(w.run_of(AnalysisKind::Step(1)).is_some() && w.run_of(AnalysisKind::Background).is_some());
    set_run_phase(&mut w, AnalysisKind::Background, AnalysisPhase::Inconclusive);
    w.reconcile();
    assert_eq!(w.phase(), Some(stepwise_api::RolloutPhase::Paused));
    set_run_phase(&mut w, AnalysisKind::Step(1), AnalysisPhase::Failed);
    w.reconcile();
    assert_eq!(w.status().abort, Some(true), "{:?}", w.status().message);
}

#[test]
fn a_run_recorded_for_another_step_does_not_judge_the_current_one() {
    use stepwise_core::AnalysisKind;
    // The person skips the first analysis step while it runs; the second analysis step gets a
    // run of its own and the first run is stopped.
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: a}]}\n      - analysis: {templates: [{templateName: b}]}\n";
    let mut w = updated(4, strategy);
    for _ in 0..10 {
        w.reconcile();
        w.pods_settle();
    }
    let first = w.run_of(AnalysisKind::Step(1)).map(|r| r.name.clone()).expect("the first step's run");
    assert_eq!(w.step(), 1);
    w.promote();
    w.reconcile();
    let second = w.run_of(AnalysisKind::Step(2)).map(|r| r.name.clone()).expect("a run for the second step");
    assert_ne!(first, second);
    assert!(w.run_of(AnalysisKind::Step(1)).unwrap().terminating, "the skipped step's run is stopped");
    assert_eq!(w.step(), 2);
}

#[test]
fn a_run_created_but_never_recorded_is_adopted_not_started_twice() {
    let mut w = updated(4, ANALYSIS);
    let mut created = 0;
    for _ in 0..10 {
        let before = w.rollout.status.clone();
        let plan = w.reconcile();
        if plan.actions.iter().any(|a| matches!(a, stepwise_core::Action::CreateAnalysisRun { .. })) {
            created += 1;
            // The status write that would have recorded it lost a conflict.
            w.rollout.status = before;
        }
        w.pods_settle();
    }
    assert_eq!(created, 1);
    assert_eq!(w.observed.analysis_runs.len(), 1);
    let recorded = w.status().canary.and_then(|c| c.current_step_analysis_run_status).map(|r| r.name);
    assert_eq!(recorded.as_deref(), Some(w.observed.analysis_runs[0].name.as_str()));
}

#[test]
fn a_routed_set_weight_step_completed_in_passing_still_sets_its_weight() {
    // R=2 at 50%: the one canary pod carries the weight, so the step completes in the plan that
    // sees it available, and the steps go on to the end; the router must still be told 50.
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 50\n";
    let mut w = updated(2, strategy);
    let mut weights = Vec::new();
    for _ in 0..10 {
        w.reconcile();
        weights.push(w.router_weight.unwrap_or(0));
        w.pods_settle();
    }
    weights.dedup();
    assert_eq!(weights, [0, 50, 0], "the router's weight over time");
    assert_eq!(w.stable(), w.hash());
}

#[test]
fn an_inconclusive_background_verdict_stops_the_steps_in_the_plan_that_sees_it() {
    use stepwise_core::AnalysisKind;
    let strategy = "    canary:\n      analysis: {templates: [{templateName: bg}]}\n      steps:\n      - setWeight: 50\n      - pause: {duration: 1m}\n";
    let mut w = updated(4, strategy);
    w.reconcile();
    assert!(w.run_of(AnalysisKind::Background).is_some());
    // Bring the canary to the point where the next plan would complete the setWeight step.
    for _ in 0..20 {
        let mut probe = w.clone();
        probe.reconcile();
        if probe.step() >= 1 {
            break;
        }
        w.reconcile();
        w.pods_settle();
    }
    assert_eq!(w.step(), 0);
    // The verdict arrives in that very plan.
    set_run_phase(&mut w, AnalysisKind::Background, AnalysisPhase::Inconclusive);
    w.reconcile();
    assert_eq!(w.phase(), Some(stepwise_api::RolloutPhase::Paused), "{:?}", w.status().message);
    assert_eq!(w.step(), 0, "a step was completed in the plan that saw the verdict");
}

/// A typo in a template's condition is told when the Rollout that uses it is applied, with its
/// position, rather than when its analysis step is reached.
#[test]
fn a_broken_condition_in_a_template_makes_the_spec_invalid_before_any_step_runs() {
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: success-rate}]}\n";
    let mut w = World::new(rollout_with(4, strategy));
    let metric = &mut w.observed.analysis_templates.get_mut("success-rate").unwrap().metrics[0];
    metric.success_condition = Some("result[0] >=".into());
    let p = w.reconcile();
    let invalid = p.status.conditions.iter().find(|c| c.r#type == "InvalidSpec");
    let message = invalid.and_then(|c| c.message.clone()).unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.steps[1].analysis: metric success-rate successCondition")
            && message.contains("column"),
        "{message:?}"
    );
    assert_eq!(p.status.phase, Some(stepwise_api::RolloutPhase::Degraded));

    // The same condition with an argument in it is valid: the run fills the value in.
    w.observed.analysis_templates.get_mut("success-rate").unwrap().metrics[0].success_condition =
        Some("result[0] >= {{args.threshold}}".into());
    let p = w.reconcile();
    assert!(!p.status.conditions.iter().any(|c| c.r#type == "InvalidSpec"), "{:?}", p.status.conditions);
}
