//! Going back to older versions and what becomes of them: `rollbackWindow`,
//! `scaleDownDelayRevisionLimit`, `workloadRef.scaleDown`, and the settings that hold for every
//! version (`minReadySeconds`, `progressDeadlineAbort`).

mod support;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{AnalysisPhase, RolloutPhase};
use stepwise_core::{Action, AnalysisKind};
use support::{World, rollout, rollout_with};

/// Reconciles, lets pods settle and analyses finish, until nothing changes.
fn converge(w: &mut World) {
    for _ in 0..40 {
        let before = (w.rollout.status.clone(), w.observed.clone());
        w.reconcile();
        w.pods_settle();
        w.analyses_start();
        w.analyses_finish();
        if (w.rollout.status.clone(), w.observed.clone()) == before {
            break;
        }
    }
}

/// Releases `image` through every step (promote full), a minute after the previous version.
fn release(w: &mut World, image: &str) {
    w.wait(60);
    w.set_image(image);
    converge(w);
    w.promote_full();
    converge(w);
    // The older version's pods go after the scale-down delay.
    w.wait(301);
    converge(w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{image} released: {:?}", w.status().message);
}

const CANARY: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      analysis: {templates: [{templateName: bg}]}\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - analysis: {templates: [{templateName: check}]}\n";

/// demo:1, demo:2 and demo:3 released one after the other; demo:3 is stable.
fn three_versions(strategy: &str, window: i32) -> World {
    let mut w = World::new(rollout_with(4, strategy));
    w.rollout.spec.rollback_window = Some(stepwise_api::RollbackWindow { revisions: window });
    w.analysis_outcome = AnalysisPhase::Successful;
    converge(&mut w);
    release(&mut w, "demo:2");
    release(&mut w, "demo:3");
    w
}

fn runs_created(w: &World) -> usize {
    w.observed.analysis_runs.len()
}

#[test]
fn an_undo_within_the_rollback_window_skips_steps_and_analyses() {
    let mut w = three_versions(CANARY, 2);
    let runs = runs_created(&w);
    let v2 = w.observed.replica_sets.iter().find(|rs| rs.revision == 2).unwrap().hash.clone();
    // Back to demo:2, one version before the stable demo:3: within a window of 2.
    w.wait(60);
    w.set_image("demo:2");
    let first = w.reconcile();
    assert!(
        w.events.iter().any(|e| e.starts_with("SkipSteps: Rollback within window")),
        "the skip is told: {:?}",
        w.events
    );
    assert_eq!(w.status().promote_full, Some(true), "carried out as a full promotion");
    assert!(
        first.actions.iter().any(|a| matches!(a, Action::SetRevision { revision: 4, .. })),
        "revision 4 for the reused ReplicaSet"
    );
    converge(&mut w);
    let st = w.status();
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", st.message);
    assert_eq!(st.stable_rs.as_deref(), Some(v2.as_str()), "demo:2 is stable again");
    assert_eq!(st.current_step_index, Some(3), "no step was walked");
    assert_eq!(st.promote_full, None);
    assert!(st.pause_conditions.is_empty());
    assert_eq!(runs_created(&w), runs, "no analysis (step or background) was started");
    assert_eq!(w.pods(&v2), (4, 4));
    assert_eq!(w.service("app-stable").as_deref(), Some(v2.as_str()));
}

#[test]
fn an_undo_beyond_the_rollback_window_walks_the_steps() {
    let mut w = three_versions(CANARY, 1);
    // Back to demo:1: demo:2 lies between it and the stable demo:3, and the window is 1.
    w.wait(60);
    w.set_image("demo:1");
    converge(&mut w);
    let st = w.status();
    assert_eq!(w.phase(), Some(RolloutPhase::Paused), "{:?}", st.message);
    assert_eq!(st.current_step_index, Some(1), "paused at the pause step");
    assert_eq!(st.promote_full, None);
    assert!(!w.events.iter().any(|e| e.contains("Rollback within window")));
    assert!(w.run_of(AnalysisKind::Background).is_some_and(|r| r.hash == w.hash()), "background analysis runs");
}

#[test]
fn without_a_rollback_window_an_undo_walks_the_steps() {
    let mut w = three_versions(CANARY, 0);
    w.wait(60);
    w.set_image("demo:2");
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    assert_eq!(w.step(), 1);
}

#[test]
fn a_new_template_is_never_within_the_rollback_window() {
    let mut w = three_versions(CANARY, 5);
    w.wait(60);
    w.set_image("demo:4");
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    assert_eq!(w.status().promote_full, None);
}

const BLUE_GREEN: &str = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n      prePromotionAnalysis: {templates: [{templateName: pre}]}\n      postPromotionAnalysis: {templates: [{templateName: post}]}\n      scaleDownDelaySeconds: 30\n";

#[test]
fn a_blue_green_undo_within_the_window_switches_without_pause_or_analysis() {
    let mut w = three_versions(BLUE_GREEN, 3);
    let runs = runs_created(&w);
    w.wait(60);
    w.set_image("demo:1");
    converge(&mut w);
    let new = w.hash();
    assert_eq!(w.status().stable_rs.as_deref(), Some(new.as_str()), "promoted at once: {:?}", w.status().message);
    // The previous active version goes after scaleDownDelaySeconds.
    w.wait(31);
    converge(&mut w);
    let st = w.status();
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy), "{:?}", st.message);
    assert_eq!(st.stable_rs.as_deref(), Some(new.as_str()));
    assert_eq!(w.service("app-active").as_deref(), Some(new.as_str()));
    assert_eq!(runs_created(&w), runs, "neither pre- nor post-promotion analysis ran");
}

/// Blue-green with three releases in a row, each switched before the previous one's delay ends.
fn blue_green_releases(limit: Option<i32>) -> World {
    let strategy = "    blueGreen:\n      activeService: app-active\n      scaleDownDelaySeconds: 300\n";
    let mut w = World::new(rollout_with(2, strategy));
    w.rollout.spec.strategy.blue_green.as_mut().unwrap().scale_down_delay_revision_limit = limit;
    converge(&mut w);
    for image in ["demo:2", "demo:3"] {
        w.wait(10);
        w.set_image(image);
        converge(&mut w);
    }
    w
}

fn spec_by_revision(w: &World) -> Vec<(i64, i32)> {
    let mut v: Vec<(i64, i32)> = w.observed.replica_sets.iter().map(|rs| (rs.revision, rs.spec_replicas)).collect();
    v.sort();
    v
}

#[test]
fn blue_green_keeps_every_older_version_for_the_delay_without_a_revision_limit() {
    let w = blue_green_releases(None);
    assert_eq!(spec_by_revision(&w), [(1, 2), (2, 2), (3, 2)]);
}

#[test]
fn blue_green_scale_down_delay_revision_limit_keeps_only_the_newest_older_versions() {
    let w = blue_green_releases(Some(1));
    assert_eq!(spec_by_revision(&w), [(1, 0), (2, 2), (3, 2)], "only revision 2 waits for its delay");
    let w = blue_green_releases(Some(0));
    assert_eq!(spec_by_revision(&w), [(1, 0), (2, 0), (3, 2)], "no older version waits");
    let mut w = blue_green_releases(Some(1));
    w.wait(301);
    converge(&mut w);
    assert_eq!(spec_by_revision(&w), [(1, 0), (2, 0), (3, 2)], "the delay still ends");
}

#[test]
fn routed_canary_scale_down_delay_revision_limit_keeps_only_the_newest_older_versions() {
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      scaleDownDelaySeconds: 300\n      scaleDownDelayRevisionLimit: 1\n      trafficRouting: {istio: {virtualService: {name: vs}}}\n      steps:\n      - setWeight: 50\n";
    let mut w = World::new(rollout_with(2, strategy));
    converge(&mut w);
    for image in ["demo:2", "demo:3"] {
        w.wait(10);
        w.set_image(image);
        converge(&mut w);
        assert_eq!(w.status().stable_rs, Some(w.hash()), "{image}: {:?}", w.status().message);
    }
    assert_eq!(spec_by_revision(&w), [(1, 0), (2, 2), (3, 2)]);
}

/// A Rollout whose template comes from the Deployment `web`, which has `deployment` pods.
fn workload_world(scale_down: &str, deployment: i32) -> World {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app, namespace: t, generation: 1}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: demo}}}}\n  workloadRef: {{apiVersion: apps/v1, kind: Deployment, name: web{scale_down}}}\n  strategy:\n    canary: {{steps: [{{setWeight: 50}}, {{pause: {{}}}}]}}\n"
    );
    let mut w = World::new(rollout(&yaml));
    let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "app", "image": "demo:1"}]}
    }))
    .unwrap();
    w.observed.workload = Some((template, None));
    w.observed.workload_replicas = Some(deployment);
    w
}

fn scale_workload(p: &stepwise_core::Plan) -> Option<i32> {
    p.actions.iter().find_map(|a| match a {
        Action::ScaleWorkload { name, replicas } if name == "web" => Some(*replicas),
        _ => None,
    })
}

#[test]
fn workload_ref_scale_down_onsuccess_scales_the_deployment_to_zero_once_healthy() {
    let mut w = workload_world(", scaleDown: onsuccess", 3);
    let p = w.reconcile();
    assert_eq!(scale_workload(&p), None, "not before the Rollout is Healthy");
    w.one_pod_each();
    let p = w.reconcile();
    assert_eq!(scale_workload(&p), None, "1 of 3 pods available is not Healthy");
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(w.observed.workload_replicas, Some(0));
    assert!(
        w.events.iter().any(|e| e == "ScalingReplicaSet: Scaled down Deployment web from 3 to 0"),
        "{:?}",
        w.events
    );
    // Planning again asks for nothing more.
    assert_eq!(scale_workload(&w.reconcile()), None);
}

#[test]
fn workload_ref_scale_down_progressively_follows_the_rollouts_available_pods() {
    let mut w = workload_world(", scaleDown: progressively", 3);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let p = w.reconcile();
        // The plan scales the Deployment down after the pods of this plan, never before.
        if let Some(n) = scale_workload(&p) {
            seen.push(n);
        }
        w.one_pod_each();
    }
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    assert_eq!(seen, [2, 1, 0], "one Deployment pod fewer per available Rollout pod");
    assert_eq!(w.observed.workload_replicas, Some(0));

    // A Rollout pod that fails on the first version brings a Deployment pod back.
    w.observed.replica_sets[0].available = 2;
    let p = w.reconcile();
    assert_eq!(scale_workload(&p), Some(1));
}

#[test]
fn workload_ref_scale_down_progressively_never_scales_the_deployment_up_for_a_later_version() {
    let mut w = workload_world(", scaleDown: progressively", 3);
    converge(&mut w);
    assert_eq!(w.observed.workload_replicas, Some(0));
    // The Deployment's template changes: a second version, with fewer pods available meanwhile.
    let (t, _) = w.observed.workload.as_mut().unwrap();
    t.spec.as_mut().unwrap().containers[0].image = Some("demo:2".into());
    w.observed.replica_sets[0].available = 1;
    for _ in 0..5 {
        let p = w.reconcile();
        assert_eq!(scale_workload(&p), None, "the Deployment now holds the new template");
        w.pods_settle();
    }
}

#[test]
fn workload_ref_scale_down_never_leaves_the_deployment_alone() {
    for scale_down in ["", ", scaleDown: never"] {
        let mut w = workload_world(scale_down, 3);
        converge(&mut w);
        assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
        assert_eq!(w.observed.workload_replicas, Some(3), "{scale_down:?}");
    }
}

#[test]
fn min_ready_seconds_is_given_to_every_new_replica_set() {
    let mut w = World::new(rollout_with(2, "    canary: {}\n"));
    w.rollout.spec.min_ready_seconds = Some(7);
    let p = w.reconcile();
    let created = p.actions.iter().find_map(|a| match a {
        Action::CreateReplicaSet { min_ready_seconds, .. } => Some(*min_ready_seconds),
        _ => None,
    });
    assert_eq!(created, Some(7));
}

#[test]
fn progress_deadline_abort_set_after_the_deadline_passed_aborts_the_timed_out_update() {
    let mut w = World::new(rollout_with(2, "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n"));
    w.rollout.spec.progress_deadline_seconds = Some(60);
    converge(&mut w);
    let mut probe = w.clone();
    probe.set_image("demo:never");
    let h = stepwise_core::hash::pod_template_hash(probe.rollout.spec.template.as_ref().unwrap(), None);
    w.never_ready.insert(h);
    w.set_image("demo:never");
    converge(&mut w);
    w.wait(61);
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Degraded));
    assert_ne!(w.status().abort, Some(true), "timed out, not aborted");
    // The user turns progressDeadlineAbort on afterwards.
    w.rollout.spec.progress_deadline_abort = Some(true);
    converge(&mut w);
    let st = w.status();
    assert_eq!(st.abort, Some(true), "{:?}", st.message);
    let new = w.hash();
    assert_eq!(w.pods(&new).0, 0, "the new version's pods are gone");
    assert!(
        w.events.iter().any(|e| e.starts_with("RolloutAborted: ReplicaSet") && e.contains("timed out")),
        "{:?}",
        w.events
    );
}

/// The time each version's ReplicaSet records it became stable and stopped being it, by revision.
fn stable_periods(w: &World) -> Vec<(i64, Option<Time>, Option<Time>)> {
    let mut periods: Vec<_> = w
        .observed
        .replica_sets
        .iter()
        .map(|rs| (rs.revision, rs.stable_since.clone(), rs.stable_until.clone()))
        .collect();
    periods.sort_by_key(|(revision, ..)| *revision);
    periods
}

/// The records written, as (ReplicaSet name, action), in the order the plans wrote them.
fn records_written(w: &World) -> Vec<(String, Action)> {
    w.history
        .iter()
        .flat_map(|(_, p)| &p.actions)
        .filter_map(|a| match a {
            Action::SetStableSince { name, .. } | Action::SetStableUntil { name, .. } => {
                Some((name.clone(), a.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_version_records_that_it_is_stable_in_the_plan_that_creates_its_replica_set() {
    let mut w = World::new(rollout_with(2, CANARY));
    let first = w.reconcile();
    let created = first.actions.iter().position(|a| matches!(a, Action::CreateReplicaSet { .. }));
    let recorded = first.actions.iter().position(|a| matches!(a, Action::SetStableSince { .. }));
    assert!(created.is_some() && recorded > created, "created, then recorded: {:#?}", first.actions);
    assert_eq!(stable_periods(&w), vec![(1, Some(w.now.clone()), None)]);
    converge(&mut w);
    assert_eq!(records_written(&w).len(), 1, "recorded once");
}

#[test]
fn each_promotion_records_when_the_new_version_became_stable_and_the_one_before_stopped() {
    let w = three_versions(CANARY, 0);
    let periods = stable_periods(&w);
    let since = |r: usize| periods[r].1.clone().expect("every version was stable once");
    let until = |r: usize| periods[r].2.clone();
    assert!(since(0) < since(1) && since(1) < since(2), "in the order of the versions: {periods:?}");
    assert_eq!(until(0), Some(since(1)), "demo:1 was stable until demo:2 was");
    assert_eq!(until(1), Some(since(2)), "demo:2 was stable until demo:3 was");
    assert_eq!(until(2), None, "demo:3 is stable");
    assert_eq!(records_written(&w).len(), 5, "one since each, one until for each one replaced, written once");
    // Written by the plan that made demo:2 and demo:3 stable, not before.
    for revision in [2, 3] {
        let rs = w.observed.replica_sets.iter().find(|rs| rs.revision == revision).unwrap();
        let first_stable = w.history.iter().position(|(_, p)| p.status.stable_rs.as_deref() == Some(rs.hash.as_str()));
        let written = w.history.iter().position(|(_, p)| {
            p.actions.iter().any(|a| matches!(a, Action::SetStableSince { name, .. } if *name == rs.name))
        });
        assert_eq!(written, first_stable, "revision {revision}");
    }
}

#[test]
fn a_version_stable_again_after_an_undo_records_it_anew_and_the_others_keep_their_times() {
    let mut w = three_versions(CANARY, 2);
    let before = stable_periods(&w);
    w.wait(60);
    w.set_image("demo:2");
    converge(&mut w);
    assert_eq!(w.phase(), Some(RolloutPhase::Healthy));
    let after = stable_periods(&w);
    // demo:2 is revision 4 now, stable again and with no end; demo:1 keeps the time demo:2 first
    // became stable as its end, demo:3 ends when demo:2 is stable again.
    assert_eq!(after.iter().map(|(r, ..)| *r).collect::<Vec<_>>(), vec![1, 3, 4]);
    assert_eq!(after[0], before[0]);
    assert_eq!((&after[1].1, &after[1].2), (&before[2].1, &Some(w.now.clone())));
    assert_eq!((&after[2].1, &after[2].2), (&Some(w.now.clone()), &None));
}

#[test]
fn a_record_is_never_before_another_one_even_when_the_clock_is_behind() {
    let mut w = three_versions(CANARY, 2);
    let demo3 = stable_periods(&w)[2].1.clone();
    // A controller whose clock is an hour behind the one that recorded demo:3 undoes to demo:2.
    w.now = stepwise_core::add_seconds(&w.now, -3600);
    w.set_image("demo:2");
    let writes = records_written(&w).len();
    converge(&mut w);
    assert_eq!(w.stable(), w.hash(), "demo:2 is stable again");
    let periods = stable_periods(&w);
    assert_eq!((&periods[1].2, &periods[2].1), (&demo3, &demo3), "at demo:3's time, not before it");
    assert_eq!(records_written(&w).len(), writes + 2, "and only once");
}

#[test]
fn a_stable_version_without_a_record_is_left_without_one_rather_than_given_a_later_time() {
    // Versions made stable before the controller recorded it: when they became stable is not
    // known, and the time of the first plan after an upgrade would be wrong.
    let mut w = three_versions(CANARY, 0);
    for rs in &mut w.observed.replica_sets {
        (rs.stable_since, rs.stable_until) = (None, None);
    }
    let writes = records_written(&w).len();
    w.wait(60);
    w.reconcile();
    w.set_image("demo:4");
    converge(&mut w);
    assert_eq!(records_written(&w).len(), writes, "nothing recorded while demo:3 stays stable");
    w.promote_full();
    converge(&mut w);
    let periods = stable_periods(&w);
    let now = Some(w.now.clone());
    assert_eq!(periods[2], (3, None, now.clone()), "demo:3's end is known, its start is not");
    assert_eq!(periods[3], (4, now, None), "demo:4's start");
}
