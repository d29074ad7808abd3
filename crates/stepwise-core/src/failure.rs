//! The status to write when an action of a plan failed, so that the status still tells the
//! truth: what the plan decided on its own stands, what only an action would have made true is
//! taken back, and the error is on the Rollout as a condition and in its message.
//!
//! What stands: the new version recognised, replica counts, the step, pauses, abort, promotion
//! and the Progressing condition, so that the progress deadline runs on wall time however often
//! the actions fail. What is taken back, field by field, is what the next plan reads as done:
//! a traffic weight, a Service's selector, the record of an AnalysisRun that was never created
//! (the next plan would wait for ever on it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{RolloutAnalysisRunStatus, RolloutCondition, RolloutPhase, RolloutStatus};

use crate::condition::RECONCILE_ERROR;
use crate::{Action, Plan, action_event};

/// The status after `plan.actions[failed_at]` failed with `error` (the actions before it were
/// done, none after it). `needs_a_person` marks an error that no retry can fix by itself: the
/// Rollout is then Degraded.
pub fn status_after_failure(
    rollout: &stepwise_api::Rollout,
    prev: &RolloutStatus,
    plan: &Plan,
    failed_at: usize,
    error: &str,
    needs_a_person: bool,
    now: &Time,
) -> RolloutStatus {
    let mut status = plan.status.clone();
    let not_done = plan.actions.get(failed_at..).unwrap_or_default();
    for action in not_done {
        take_back(rollout, prev, &mut status, action);
    }
    set_reconcile_error(&mut status, error, now);
    let done = failed_at.min(plan.actions.len());
    let report = format!("ReconcileError: {error} ({done} of {} actions done)", plan.actions.len());
    let planned = plan.status.phase;
    status.phase = Some(match planned {
        _ if needs_a_person => RolloutPhase::Degraded,
        // The spec this plan was made for is not carried out.
        Some(RolloutPhase::Healthy) | None => RolloutPhase::Progressing,
        Some(phase) => phase,
    });
    status.message = Some(match (planned, &plan.status.message) {
        (Some(RolloutPhase::Degraded), Some(why)) => format!("{why}; {report}"),
        _ => report,
    });
    crate::readiness::report(&mut status, now);
    status
}

/// The events of a plan that failed part-way that are still true, since the status written
/// records their decisions (a step completed, a pause, an abort, the progress deadline): the next
/// plan starts from that status and will not tell them again, so the controller tells them now.
/// (Events come last in a plan, so none was told before the failure.) Events of actions are left
/// out, done or not: one not done is untrue, and one done is seen by the next plan, which does
/// not repeat it.
pub fn decision_events(plan: &Plan) -> Vec<&Action> {
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Event { reason, .. } if !action_event::ALL.contains(&reason.as_str())))
        .collect()
}

/// Drops the ReconcileError condition: the plan copies it from the last status, and only the
/// controller knows that this time every action was done.
pub fn clear_reconcile_error(status: &mut RolloutStatus) {
    status.conditions.retain(|c| c.r#type != RECONCILE_ERROR);
}

/// Restores from `prev` what `status` records as the effect of `action`, which was not done.
fn take_back(rollout: &stepwise_api::Rollout, prev: &RolloutStatus, status: &mut RolloutStatus, action: &Action) {
    match action {
        Action::SetTraffic(_) => {
            let before = prev.canary.clone().unwrap_or_default();
            let now = status.canary.get_or_insert_with(Default::default);
            now.weights = before.weights;
            now.managed_routes = before.managed_routes;
        }
        Action::SetServiceSelector { service, .. } => {
            let Some(bg) = &rollout.spec.strategy.blue_green else { return };
            let before = prev.blue_green.clone().unwrap_or_default();
            let Some(now) = status.blue_green.as_mut() else { return };
            if *service == bg.active_service {
                now.active_selector = before.active_selector;
                // The scale subresource reports the pods the active Service selects.
                status.selector = prev.selector.clone();
                status.hpa_replicas = prev.hpa_replicas;
            } else if bg.preview_service.as_ref() == Some(service) {
                now.preview_selector = before.preview_selector;
            }
        }
        Action::CreateAnalysisRun { run, .. } => {
            let Some(name) = run.metadata.name.as_deref() else { return };
            let (prev_canary, prev_bg) =
                (prev.canary.clone().unwrap_or_default(), prev.blue_green.clone().unwrap_or_default());
            if let Some(c) = status.canary.as_mut() {
                take_back_run(
                    &mut c.current_step_analysis_run_status,
                    &prev_canary.current_step_analysis_run_status,
                    name,
                );
                take_back_run(
                    &mut c.current_background_analysis_run_status,
                    &prev_canary.current_background_analysis_run_status,
                    name,
                );
            }
            if let Some(b) = status.blue_green.as_mut() {
                take_back_run(
                    &mut b.pre_promotion_analysis_run_status,
                    &prev_bg.pre_promotion_analysis_run_status,
                    name,
                );
                take_back_run(
                    &mut b.post_promotion_analysis_run_status,
                    &prev_bg.post_promotion_analysis_run_status,
                    name,
                );
            }
        }
        _ => {}
    }
    if status.canary == Some(Default::default()) {
        status.canary = None;
    }
}

fn take_back_run(
    recorded: &mut Option<RolloutAnalysisRunStatus>,
    before: &Option<RolloutAnalysisRunStatus>,
    not_created: &str,
) {
    if recorded.as_ref().is_some_and(|r| r.name == not_created) {
        *recorded = before.clone();
    }
}

/// Sets the condition; its times move only when it changes, so that the same error on every
/// retry leaves the status as it is (and so unwritten).
fn set_reconcile_error(status: &mut RolloutStatus, error: &str, now: &Time) {
    match status.conditions.iter_mut().find(|c| c.r#type == RECONCILE_ERROR) {
        Some(c) => {
            if c.status != "True" {
                c.last_transition_time = Some(now.clone());
            }
            if c.status != "True" || c.message.as_deref() != Some(error) || c.reason.as_deref() != Some(RECONCILE_ERROR)
            {
                c.last_update_time = Some(now.clone());
            }
            c.status = "True".into();
            c.reason = Some(RECONCILE_ERROR.into());
            c.message = Some(error.into());
        }
        None => status.conditions.push(RolloutCondition {
            r#type: RECONCILE_ERROR.into(),
            status: "True".into(),
            reason: Some(RECONCILE_ERROR.into()),
            message: Some(error.into()),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;
    use stepwise_api::{
        AnalysisPhase, AnalysisRun, BlueGreenStatus, CanaryStatus, Rollout, TrafficWeights, WeightDestination,
    };

    use super::*;
    use crate::{AnalysisKind, EventType};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    fn rollout(strategy: &str) -> Rollout {
        serde_yaml::from_str(&format!("metadata: {{name: app, namespace: ns}}\nspec:\n  strategy:\n{strategy}"))
            .expect("a valid Rollout")
    }

    fn blue_green() -> Rollout {
        rollout("    blueGreen: {activeService: active, previewService: preview}\n")
    }

    fn canary() -> Rollout {
        rollout("    canary: {canaryService: c, stableService: s}\n")
    }

    fn run(name: &str) -> RolloutAnalysisRunStatus {
        RolloutAnalysisRunStatus { name: name.into(), status: AnalysisPhase::Pending, message: None, accepted: None }
    }

    fn create_run(name: &str, kind: AnalysisKind) -> Action {
        let run = AnalysisRun {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Default::default(),
            status: None,
        };
        Action::CreateAnalysisRun { kind, run: Box::new(run) }
    }

    fn traffic(canary_weight: i32) -> Action {
        let split = crate::traffic::Traffic::split("canary", "stable", canary_weight, 100);
        Action::SetTraffic(crate::traffic::Traffic {
            canary_hash: Some("new".into()),
            stable_hash: Some("old".into()),
            ..split
        })
    }

    fn scale(replicas: i32) -> Action {
        Action::ScaleReplicaSet { name: "app-new".into(), replicas }
    }

    fn point(service: &str) -> Action {
        Action::SetServiceSelector { service: service.into(), hash: "new".into() }
    }

    fn event() -> Action {
        Action::Event { type_: EventType::Normal, reason: "Something".into(), message: "happened".into() }
    }

    fn weights(canary: i32) -> TrafficWeights {
        TrafficWeights {
            canary: WeightDestination { weight: canary, pod_template_hash: Some("new".into()), service_name: None },
            stable: WeightDestination {
                weight: 100 - canary,
                pod_template_hash: Some("old".into()),
                service_name: None,
            },
            verified: None,
        }
    }

    fn status(phase: RolloutPhase, message: &str) -> RolloutStatus {
        RolloutStatus {
            phase: Some(phase),
            message: Some(message.into()),
            current_pod_hash: Some("new".into()),
            current_revision: Some(2),
            ..Default::default()
        }
    }

    fn old_status() -> RolloutStatus {
        RolloutStatus {
            phase: Some(RolloutPhase::Healthy),
            message: Some("Healthy at revision 1".into()),
            current_pod_hash: Some("old".into()),
            current_revision: Some(1),
            ..Default::default()
        }
    }

    fn fail(rollout: &Rollout, prev: &RolloutStatus, plan: &Plan, failed_at: usize) -> RolloutStatus {
        status_after_failure(rollout, prev, plan, failed_at, "boom", false, &at(10))
    }

    fn reconcile_error(status: &RolloutStatus) -> Option<&RolloutCondition> {
        status.conditions.iter().find(|c| c.r#type == RECONCILE_ERROR)
    }

    /// A blue-green plan that creates the preview, points the preview Service at it, starts the
    /// pre-promotion analysis and switches the active Service.
    fn blue_green_plan() -> (RolloutStatus, Plan) {
        let prev = RolloutStatus {
            selector: Some("app=demo,hash=old".into()),
            hpa_replicas: Some(2),
            blue_green: Some(BlueGreenStatus {
                active_selector: Some("old".into()),
                preview_selector: Some("old".into()),
                ..Default::default()
            }),
            ..old_status()
        };
        let planned = RolloutStatus {
            selector: Some("app=demo,hash=new".into()),
            hpa_replicas: Some(3),
            blue_green: Some(BlueGreenStatus {
                active_selector: Some("new".into()),
                preview_selector: Some("new".into()),
                pre_promotion_analysis_run_status: Some(run("app-new-2-pre")),
                ..Default::default()
            }),
            ..status(RolloutPhase::Progressing, "Promoted; 2 old pods pending termination")
        };
        let actions = vec![
            scale(3),
            point("preview"),
            create_run("app-new-2-pre", AnalysisKind::PrePromotion),
            point("active"),
            event(),
        ];
        (prev, Plan { actions, status: planned, requeue_after: None })
    }

    #[test]
    fn the_decisions_are_told_after_a_failure_and_the_actions_are_not() {
        let (_, mut plan) = blue_green_plan();
        let told =
            |reason: &str| Action::Event { type_: EventType::Normal, reason: reason.into(), message: "m".into() };
        plan.actions.extend(action_event::ALL.map(told));
        plan.actions.push(told("RolloutStepCompleted"));
        let reasons: Vec<&str> = decision_events(&plan)
            .into_iter()
            .map(|a| match a {
                Action::Event { reason, .. } => reason.as_str(),
                other => panic!("not an event: {other:?}"),
            })
            .collect();
        assert_eq!(reasons, ["Something", "RolloutStepCompleted"]);
    }

    #[test]
    fn a_blue_green_status_takes_back_each_service_switch_and_run_that_was_not_done() {
        let ro = blue_green();
        let (prev, plan) = blue_green_plan();
        for failed_at in 0..plan.actions.len() {
            let st = fail(&ro, &prev, &plan, failed_at);
            let bg = st.blue_green.clone().unwrap();
            let was = |index: usize| if failed_at <= index { "taken back" } else { "kept" };
            let preview = if bg.preview_selector.as_deref() == Some("old") { "taken back" } else { "kept" };
            assert_eq!(preview, was(1), "preview selector when action {failed_at} failed");
            let run = if bg.pre_promotion_analysis_run_status.is_none() { "taken back" } else { "kept" };
            assert_eq!(run, was(2), "pre-promotion run when action {failed_at} failed");
            let active = match (bg.active_selector.as_deref(), st.selector.as_deref(), st.hpa_replicas) {
                (Some("old"), Some("app=demo,hash=old"), Some(2)) => "taken back",
                (Some("new"), Some("app=demo,hash=new"), Some(3)) => "kept",
                other => panic!("active selector, scale selector and HPA replicas disagree: {other:?}"),
            };
            assert_eq!(active, was(3), "active selector when action {failed_at} failed");
            assert_eq!(st.current_pod_hash.as_deref(), Some("new"), "the new version stays recognised");
            assert_eq!(st.current_revision, Some(2));
            assert_eq!(
                st.message.as_deref(),
                Some(format!("ReconcileError: boom ({failed_at} of 5 actions done)").as_str())
            );
            let c = reconcile_error(&st).expect("a ReconcileError condition");
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("True", Some(RECONCILE_ERROR), Some("boom"))
            );
        }
    }

    /// A routed canary plan that scales, sets the weight and starts a step and a background run.
    fn canary_plan() -> (RolloutStatus, Plan) {
        let prev = RolloutStatus {
            canary: Some(CanaryStatus {
                weights: Some(weights(0)),
                current_background_analysis_run_status: Some(run("app-old-1")),
                ..Default::default()
            }),
            ..old_status()
        };
        let planned = RolloutStatus {
            canary: Some(CanaryStatus {
                weights: Some(weights(50)),
                current_step_analysis_run_status: Some(run("app-new-2-1")),
                current_background_analysis_run_status: Some(run("app-new-2")),
                managed_routes: None,
                stable_ping_pong: None,
            }),
            current_step_index: Some(1),
            ..status(RolloutPhase::Progressing, "Step 2/3: analysis")
        };
        let actions = vec![
            scale(2),
            traffic(50),
            create_run("app-new-2-1", AnalysisKind::Step(1)),
            create_run("app-new-2", AnalysisKind::Background),
            event(),
            event(),
        ];
        (prev, Plan { actions, status: planned, requeue_after: None })
    }

    #[test]
    fn a_canary_status_takes_back_the_weight_and_the_runs_that_were_not_done() {
        let ro = canary();
        let (prev, plan) = canary_plan();
        for failed_at in 0..plan.actions.len() {
            let st = fail(&ro, &prev, &plan, failed_at);
            let c = st.canary.clone().unwrap();
            let weight = c.weights.as_ref().map(|w| w.canary.weight);
            assert_eq!(weight, Some(if failed_at <= 1 { 0 } else { 50 }), "weight when action {failed_at} failed");
            let step = c.current_step_analysis_run_status.map(|r| r.name);
            assert_eq!(
                step.as_deref(),
                if failed_at <= 2 { None } else { Some("app-new-2-1") },
                "step run when action {failed_at} failed"
            );
            let background = c.current_background_analysis_run_status.map(|r| r.name);
            assert_eq!(
                background.as_deref(),
                Some(if failed_at <= 3 { "app-old-1" } else { "app-new-2" }),
                "background run when action {failed_at} failed"
            );
            assert_eq!(st.current_step_index, Some(1), "the step stays as planned");
            assert!(reconcile_error(&st).is_some());
        }
    }

    #[test]
    fn a_canary_status_with_nothing_left_to_record_is_absent_as_the_plan_leaves_it() {
        let ro = canary();
        let plan = Plan {
            actions: vec![traffic(10)],
            status: RolloutStatus {
                canary: Some(CanaryStatus { weights: Some(weights(10)), ..Default::default() }),
                ..status(RolloutPhase::Progressing, "x")
            },
            requeue_after: None,
        };
        assert_eq!(fail(&ro, &old_status(), &plan, 0).canary, None);
    }

    #[test]
    fn a_run_recorded_under_another_name_than_the_one_not_created_stays_recorded() {
        let ro = canary();
        let (prev, mut plan) = canary_plan();
        plan.actions = vec![create_run("app-new-2-9", AnalysisKind::Step(9))];
        let st = fail(&ro, &prev, &plan, 0);
        let c = st.canary.unwrap();
        assert_eq!(c.current_step_analysis_run_status.map(|r| r.name).as_deref(), Some("app-new-2-1"));
        assert_eq!(c.current_background_analysis_run_status.map(|r| r.name).as_deref(), Some("app-new-2"));
    }

    #[test]
    fn a_failure_never_leaves_the_rollout_healthy() {
        let ro = canary();
        let plan = Plan {
            actions: vec![Action::DeleteReplicaSet { name: "app-older".into() }],
            status: status(RolloutPhase::Healthy, "Healthy at revision 2"),
            requeue_after: None,
        };
        let st = fail(&ro, &old_status(), &plan, 0);
        assert_eq!(st.phase, Some(RolloutPhase::Progressing));
        assert_eq!(st.message.as_deref(), Some("ReconcileError: boom (0 of 1 actions done)"));
    }

    #[test]
    fn a_transient_failure_keeps_the_planned_phase_and_one_a_person_must_fix_is_degraded() {
        let ro = canary();
        let plan = Plan {
            actions: vec![event(), scale(1)],
            status: status(RolloutPhase::Paused, "Paused at step 2/3: pause, waiting for promote"),
            requeue_after: None,
        };
        assert_eq!(fail(&ro, &old_status(), &plan, 1).phase, Some(RolloutPhase::Paused));
        let st = status_after_failure(&ro, &old_status(), &plan, 1, "forbidden", true, &at(10));
        assert_eq!(st.phase, Some(RolloutPhase::Degraded));
        assert_eq!(st.message.as_deref(), Some("ReconcileError: forbidden (1 of 2 actions done)"));
    }

    #[test]
    fn a_degraded_plan_keeps_its_reason_first_so_a_missed_progress_deadline_still_shows() {
        let ro = canary();
        let mut planned = status(RolloutPhase::Degraded, "ProgressDeadlineExceeded: ReplicaSet app-new has timed out");
        planned.conditions.push(RolloutCondition {
            r#type: crate::condition::PROGRESSING.into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..Default::default()
        });
        let plan = Plan { actions: vec![scale(1)], status: planned.clone(), requeue_after: None };
        for needs_a_person in [false, true] {
            let st = status_after_failure(&ro, &old_status(), &plan, 0, "boom", needs_a_person, &at(10));
            assert_eq!(st.phase, Some(RolloutPhase::Degraded));
            assert_eq!(
                st.message.as_deref(),
                Some(
                    "ProgressDeadlineExceeded: ReplicaSet app-new has timed out; ReconcileError: boom (0 of 1 actions done)"
                )
            );
            assert_eq!(st.conditions[0], planned.conditions[0], "the Progressing condition is the plan's");
        }
    }

    #[test]
    fn the_same_error_again_changes_nothing_and_another_error_updates_the_condition() {
        let ro = canary();
        let plan =
            Plan { actions: vec![scale(1)], status: status(RolloutPhase::Progressing, "x"), requeue_after: None };
        let first = fail(&ro, &old_status(), &plan, 0);
        let again_plan = Plan {
            status: RolloutStatus { conditions: first.conditions.clone(), ..plan.status.clone() },
            ..plan.clone()
        };
        let again = status_after_failure(&ro, &first, &again_plan, 0, "boom", false, &at(50));
        assert_eq!(again, first, "nothing to write");
        let other = status_after_failure(&ro, &first, &again_plan, 0, "bang", false, &at(60));
        let c = reconcile_error(&other).unwrap();
        assert_eq!(c.message.as_deref(), Some("bang"));
        assert_eq!(c.last_transition_time, Some(at(10)), "still True since the first failure");
        assert_eq!(c.last_update_time, Some(at(60)));
    }

    #[test]
    fn a_successful_reconcile_clears_the_reconcile_error_and_nothing_else() {
        let ro = canary();
        let plan =
            Plan { actions: vec![scale(1)], status: status(RolloutPhase::Progressing, "x"), requeue_after: None };
        let mut st = fail(&ro, &old_status(), &plan, 0);
        st.conditions.insert(0, RolloutCondition { r#type: "Available".into(), ..Default::default() });
        let types = |st: &RolloutStatus| st.conditions.iter().map(|c| c.r#type.clone()).collect::<Vec<_>>();
        let others: Vec<String> = types(&st).into_iter().filter(|t| t != RECONCILE_ERROR).collect();
        assert!(others.len() < st.conditions.len() && others.contains(&"Available".to_string()));
        clear_reconcile_error(&mut st);
        assert_eq!(types(&st), others);
    }
}
