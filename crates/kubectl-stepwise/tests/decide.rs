//! What each operation patches, and what it refuses with the reason, from the Rollout as read.

use kubectl_stepwise::decide::{self, Verdict};
use serde_json::{Value, json};
use stepwise_api::Rollout;

/// A canary with four steps, in the given status; generation 3 observed unless the status says
/// otherwise.
fn rollout(status: Value) -> Rollout {
    let mut status = status;
    if status.get("observedGeneration").is_none() {
        status["observedGeneration"] = json!(3);
    }
    serde_json::from_value(json!({
        "apiVersion": "stepwise.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "app", "generation": 3, "resourceVersion": "77"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": "demo:2"}, {"name": "proxy", "image": "envoy:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}]}}
        },
        "status": status,
    }))
    .unwrap()
}

fn healthy() -> Rollout {
    rollout(json!({"phase": "Healthy", "currentStepIndex": 4, "message": "Healthy at revision 2"}))
}

fn paused_at_pause_step() -> Rollout {
    rollout(json!({"phase": "Paused", "currentStepIndex": 1,
        "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}]}))
}

fn aborted() -> Rollout {
    rollout(json!({"phase": "Degraded", "abort": true, "currentStepIndex": 0, "message": "Aborted: by the user"}))
}

#[test]
fn promote_of_a_healthy_rollout_is_refused_because_nothing_is_in_progress() {
    let refused = decide::promote(&healthy(), false).unwrap_err();
    assert_eq!(refused, r#"rollout "app" is Healthy: there is no update in progress to promote"#);
    assert!(decide::promote(&healthy(), true).is_err());
}

#[test]
fn promote_ends_a_pause_step_conditionally_on_the_version_it_was_decided_from() {
    let decision = decide::promote(&paused_at_pause_step(), false).unwrap();
    assert_eq!(decision.patches.spec, None);
    assert_eq!(
        decision.patches.status,
        Some(json!({"status": {"pauseConditions": null}, "metadata": {"resourceVersion": "77"}}))
    );
    assert_eq!(decision.done, r#"rollout "app" promoted: pause at step 2/4 ended (CanaryPauseStep)"#);
}

#[test]
fn promote_skips_a_step_that_is_not_a_pause_but_never_past_the_last() {
    let at_weight = rollout(json!({"phase": "Progressing", "currentStepIndex": 2}));
    let decision = decide::promote(&at_weight, false).unwrap();
    assert_eq!(decision.done, r#"rollout "app" promoted: step 3/4 (setWeight) skipped"#);
    assert_eq!(decision.patches.status.unwrap()["status"], json!({"currentStepIndex": 3}));

    let past_the_end = rollout(json!({"phase": "Progressing", "currentStepIndex": 4}));
    let refused = decide::promote(&past_the_end, false).unwrap_err();
    assert!(refused.contains("past its last step"), "{refused}");
}

#[test]
fn promote_resumes_a_rollout_paused_by_hand() {
    let mut ro = paused_at_pause_step();
    ro.spec.paused = Some(true);
    let decision = decide::promote(&ro, false).unwrap();
    assert_eq!(decision.patches.spec, Some(json!({"spec": {"paused": false}})));
    assert_eq!(decision.done, r#"rollout "app" resumed: it was paused by hand"#);
}

#[test]
fn promote_full_skips_everything_that_remains() {
    let decision = decide::promote(&paused_at_pause_step(), true).unwrap();
    assert_eq!(decision.patches.status, Some(json!({"status": {"promoteFull": true}})));
}

#[test]
fn promote_of_an_aborted_rollout_points_to_retry() {
    let refused = decide::promote(&aborted(), false).unwrap_err();
    assert!(refused.contains("is aborted: `retry`"), "{refused}");
}

#[test]
fn nothing_is_decided_from_a_status_older_than_the_spec() {
    let stale = rollout(json!({"phase": "Healthy", "observedGeneration": 2}));
    let refused = decide::promote(&stale, false).unwrap_err();
    assert!(
        refused.starts_with("the controller has not observed the latest change yet (generation 3, status describes 2)")
    );
    assert!(matches!(decide::verdict(&stale), Verdict::InProgress(_)));
}

#[test]
fn retry_is_refused_unless_aborted() {
    let refused = decide::retry(&healthy()).unwrap_err();
    assert_eq!(refused, r#"rollout "app" is not aborted (it is Healthy): retry only restarts an aborted update"#);
    assert_eq!(decide::retry(&aborted()).unwrap().patches.status, Some(json!({"status": {"abort": false}})));
}

#[test]
fn abort_is_refused_when_healthy_or_already_aborted() {
    assert!(decide::abort(&healthy()).unwrap_err().contains("no update in progress to abort"));
    assert_eq!(decide::abort(&aborted()).unwrap_err(), r#"rollout "app" is already aborted"#);
    assert_eq!(
        decide::abort(&paused_at_pause_step()).unwrap().patches.status,
        Some(json!({"status": {"abort": true}}))
    );
}

#[test]
fn resume_of_a_controller_pause_points_to_promote() {
    let refused = decide::set_paused(&paused_at_pause_step(), false).unwrap_err();
    assert!(refused.contains("`promote` continues it"), "{refused}");
    let mut by_hand = paused_at_pause_step();
    by_hand.spec.paused = Some(true);
    assert!(decide::set_paused(&by_hand, true).unwrap_err().contains("already paused by hand"));
    assert_eq!(decide::set_paused(&by_hand, false).unwrap().patches.spec, Some(json!({"spec": {"paused": false}})));
}

#[test]
fn set_image_patches_that_container_only_and_refuses_an_unknown_one_or_the_same_image() {
    let (patch, done) = decide::set_image(&healthy(), "proxy", "envoy:2").unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "proxy"},
            {"op": "add", "path": "/spec/template/spec/containers/1/image", "value": "envoy:2"},
        ])
    );
    assert_eq!(done, r#"rollout "app": container "proxy" set to envoy:2; a new update starts"#);
    assert_eq!(
        decide::set_image(&healthy(), "web", "x:1").unwrap_err(),
        r#"rollout "app" has no container "web"; its containers: app, proxy"#
    );
    assert!(decide::set_image(&healthy(), "app", "demo:2").unwrap_err().contains("already runs demo:2"));
}

#[test]
fn undo_names_the_revision_it_goes_back_to_and_refuses_the_current_one() {
    let template = |image: &str| json!({"spec": {"containers": [{"name": "app", "image": image}]}});
    let revisions = [(1, template("demo:1")), (2, template("demo:2"))];
    let (patch, done) = decide::undo(&healthy(), &revisions, None).unwrap();
    assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "demo:1");
    assert_eq!(done, r#"rollout "app" rolled back to the template of revision 1"#);
    let mut current = healthy();
    current.spec.template = serde_json::from_value(template("demo:1")).unwrap();
    assert_eq!(
        decide::undo(&current, &revisions, Some(1)).unwrap_err(),
        r#"rollout "app" already runs the template of revision 1"#
    );
    assert_eq!(
        decide::undo(&healthy(), &revisions, Some(9)).unwrap_err(),
        r#"cannot undo rollout "app": revision 9 not found (its revisions: 2, 1)"#
    );
}

#[test]
fn status_exits_0_when_healthy_1_when_degraded_or_aborted_and_2_while_in_progress() {
    assert_eq!(decide::verdict(&healthy()), Verdict::Healthy("Healthy at revision 2".into()));
    assert_eq!(decide::verdict(&aborted()), Verdict::Failed("Aborted: by the user".into()));
    let timed_out = rollout(json!({"phase": "Degraded", "message": "ProgressDeadlineExceeded"}));
    assert_eq!(decide::verdict(&timed_out).exit_code(), 1);
    let abort_requested = rollout(json!({"phase": "Paused", "abort": true, "message": "Paused at step 2/4"}));
    assert_eq!(
        decide::verdict(&abort_requested),
        Verdict::Failed("Aborted: the controller is taking traffic and pods back to the stable version".into())
    );
    assert_eq!(decide::verdict(&paused_at_pause_step()), Verdict::InProgress("Paused".into()));
    assert_eq!(decide::verdict(&paused_at_pause_step()).exit_code(), 2);
}
