//! The conditions GitOps tools read to tell whether a release is done: `Ready`, `Reconciling` and
//! `Stalled`, as kstatus (the library Flux's `wait` and health checks use) and Kubernetes' API
//! conventions define them, beside the Argo conditions Argo CD reads.
//!
//! kstatus reads a resource as Failed while `Stalled` is True, InProgress while `Reconciling` is
//! True or `Ready` False, and otherwise Current once `observedGeneration` is the object's
//! generation. Without these a canary paused at 20 % and an aborted one both read as Current:
//! done. So a release under way or waiting (for a timer, an analysis or a person) is Reconciling,
//! an aborted one, one past its progress deadline and an invalid spec are Stalled, and only a
//! Healthy Rollout is Ready.
//! The two abnormal conditions are present only while True, as the conventions ask.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::{RolloutPhase, RolloutStatus};

use crate::condition;
use crate::plan::{remove_condition, set_condition};

/// Writes `Ready`, `Reconciling` and `Stalled` from the phase and message already in `status`.
pub(crate) fn report(status: &mut RolloutStatus, now: &Time) {
    let phase = status.phase.unwrap_or(RolloutPhase::Progressing);
    let message = status.message.clone().unwrap_or_default();
    let reason = phase.to_string();
    let ready = if phase == RolloutPhase::Healthy { "True" } else { "False" };
    set_condition(status, condition::READY, ready, &reason, &message, now);
    let (reconciling, stalled) = match phase {
        RolloutPhase::Healthy => (false, false),
        RolloutPhase::Progressing | RolloutPhase::Paused => (true, false),
        RolloutPhase::Degraded => (false, true),
    };
    for (type_, holds) in [(condition::RECONCILING, reconciling), (condition::STALLED, stalled)] {
        if holds {
            set_condition(status, type_, "True", &reason, &message, now);
        } else {
            remove_condition(status, type_);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    fn after(phase: RolloutPhase, message: &str) -> RolloutStatus {
        let mut status = RolloutStatus { phase: Some(phase), message: Some(message.into()), ..Default::default() };
        report(&mut status, &at(0));
        status
    }

    fn holds(status: &RolloutStatus, type_: &str) -> Option<String> {
        status.conditions.iter().find(|c| c.r#type == type_).map(|c| c.status.clone())
    }

    #[test]
    fn a_rollout_paused_at_a_step_is_reconciling_and_not_ready() {
        let status = after(RolloutPhase::Paused, "CanaryPauseStep: paused at step 2 of 4 (setWeight 20)");
        assert_eq!(holds(&status, condition::READY).as_deref(), Some("False"));
        assert_eq!(holds(&status, condition::RECONCILING).as_deref(), Some("True"));
        assert_eq!(holds(&status, condition::STALLED), None);
    }

    #[test]
    fn an_aborted_rollout_is_stalled_with_the_reason_in_its_message() {
        let status = after(RolloutPhase::Degraded, "RolloutAborted: metric success-rate failed");
        let stalled = status.conditions.iter().find(|c| c.r#type == condition::STALLED).unwrap();
        assert_eq!(stalled.status, "True");
        assert_eq!(stalled.message.as_deref(), Some("RolloutAborted: metric success-rate failed"));
        assert_eq!(holds(&status, condition::RECONCILING), None);
        assert_eq!(holds(&status, condition::READY).as_deref(), Some("False"));
    }

    #[test]
    fn a_healthy_rollout_is_ready_and_neither_reconciling_nor_stalled() {
        let mut status = after(RolloutPhase::Progressing, "updating");
        status.phase = Some(RolloutPhase::Healthy);
        report(&mut status, &at(0));
        assert_eq!(holds(&status, condition::READY).as_deref(), Some("True"));
        assert_eq!(holds(&status, condition::RECONCILING), None);
        assert_eq!(holds(&status, condition::STALLED), None);
    }

    #[test]
    fn reporting_twice_changes_nothing() {
        let once = after(RolloutPhase::Progressing, "1 of 4 updated");
        let mut twice = once.clone();
        report(&mut twice, &at(300));
        assert_eq!(once, twice);
    }
}
