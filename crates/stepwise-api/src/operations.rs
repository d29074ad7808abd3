//! User operations as the patches they make, so that every client (the kubectl plugin, CI
//! scripts, tests) makes exactly the same change. `docs/operations.md` lists them.
//!
//! Status patches go to the `status` subresource; spec patches to the Rollout itself. All are
//! JSON merge patches unless said otherwise.

use serde_json::{Value, json};

use crate::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout};

/// The patches of one operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patches {
    /// Merge patch of the Rollout (spec), if any.
    pub spec: Option<Value>,
    /// Merge patch of the status subresource, if any.
    pub status: Option<Value>,
}

/// Promote: resume a manual pause, end the current pause (or inconclusive analysis), or, when
/// nothing is paused, skip the current step.
///
/// What to clear or skip is decided from `rollout` as read, so the status patch carries its
/// `resourceVersion` as a precondition: if the controller paused anew (or moved on) meanwhile,
/// the patch fails with 409 Conflict and the client reads again and decides again, instead of
/// clearing a pause the person never saw. (A manual-pause resume comes with a spec patch, which
/// changes the resourceVersion; its status patch then goes without.)
pub fn promote(rollout: &Rollout) -> Patches {
    let status = rollout.status.clone().unwrap_or_default();
    let spec = (rollout.spec.paused == Some(true)).then(|| json!({"spec": {"paused": false}}));
    let status_patch = if !status.pause_conditions.is_empty() {
        Some(json!({"status": {"pauseConditions": null}}))
    } else if rollout.spec.paused == Some(true) {
        None
    } else if let Some(canary) = &rollout.spec.strategy.canary {
        let n = canary.steps.as_ref().map(Vec::len).unwrap_or(0) as i32;
        let idx = status.current_step_index.unwrap_or(0);
        (idx < n).then(|| json!({"status": {"currentStepIndex": idx + 1}}))
    } else {
        None
    };
    let status_patch = match (status_patch, &spec, rollout.metadata.resource_version.as_deref()) {
        (Some(mut patch), None, Some(version)) => {
            patch["metadata"] = json!({"resourceVersion": version});
            Some(patch)
        }
        (patch, _, _) => patch,
    };
    Patches { spec, status: status_patch }
}

/// Promote full: skip every remaining step, pause and analysis.
pub fn promote_full(rollout: &Rollout) -> Patches {
    let paused = rollout.spec.paused == Some(true);
    Patches {
        spec: paused.then(|| json!({"spec": {"paused": false}})),
        status: Some(json!({"status": {"promoteFull": true}})),
    }
}

/// Abort: return all traffic and pods to the stable version.
pub fn abort() -> Patches {
    Patches { spec: None, status: Some(json!({"status": {"abort": true}})) }
}

/// Retry an aborted update from its first step.
pub fn retry() -> Patches {
    Patches { spec: None, status: Some(json!({"status": {"abort": false}})) }
}

/// Pause (true) or resume (false) by hand.
pub fn set_paused(paused: bool) -> Patches {
    Patches { spec: Some(json!({"spec": {"paused": paused}})), status: None }
}

/// Restart: replace every pod created before `at` (RFC 3339).
pub fn restart(at: &str) -> Patches {
    Patches { spec: Some(json!({"spec": {"restartAt": at}})), status: None }
}

/// Scale to `replicas` (what `kubectl scale` and an HPA do through the scale subresource).
pub fn scale(replicas: i32) -> Patches {
    Patches { spec: Some(json!({"spec": {"replicas": replicas}})), status: None }
}

/// Undo: the JSON patch (RFC 6902) that puts back the pod template of the ReplicaSet with
/// revision `to` (or the newest revision before the current one), without its hash label or
/// the anti-affinity stepwise added to it.
/// `replica_sets` are the Rollout's ReplicaSets as `(revision, template)`. None when there is
/// no such revision or the template is already in place.
pub fn undo(rollout: &Rollout, replica_sets: &[(i64, Value)], to: Option<i64>) -> Result<Option<Value>, String> {
    let mut revisions: Vec<&(i64, Value)> = replica_sets.iter().collect();
    revisions.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    let target = match to {
        Some(r) => revisions.iter().find(|(rev, _)| *rev == r).ok_or_else(|| format!("revision {r} not found"))?,
        None => revisions.get(1).ok_or_else(|| "no previous revision to go back to".to_string())?,
    };
    let mut template = target.1.clone();
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    // The anti-affinity against that revision's stable version belongs to the ReplicaSet, not to
    // the version: copied into the Rollout it would outlive the stable it names.
    crate::anti_affinity::strip_json(&mut template);
    let current = serde_json::to_value(&rollout.spec.template).unwrap_or(Value::Null);
    if current == template {
        return Ok(None);
    }
    Ok(Some(json!([{"op": "replace", "path": "/spec/template", "value": template}])))
}

/// The revision of a ReplicaSet from its annotations.
pub fn revision_of(annotations: &std::collections::BTreeMap<String, String>) -> i64 {
    annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CanaryStep, CanaryStrategy, PauseCondition, PauseReason, RolloutStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn canary(steps: usize, status: RolloutStatus) -> Rollout {
        let mut r = Rollout::new("r", Default::default());
        r.spec.strategy.canary =
            Some(CanaryStrategy { steps: Some(vec![CanaryStep::default(); steps]), ..Default::default() });
        r.status = Some(status);
        r
    }

    #[test]
    fn promote_clears_pause_conditions_when_paused_by_the_controller() {
        let status = RolloutStatus {
            current_step_index: Some(1),
            pause_conditions: vec![PauseCondition {
                reason: PauseReason::CanaryPauseStep,
                start_time: Time(Default::default()),
            }],
            ..Default::default()
        };
        assert_eq!(promote(&canary(3, status)).status, Some(json!({"status": {"pauseConditions": null}})));
    }

    #[test]
    fn promote_skips_the_current_step_when_nothing_is_paused_and_never_past_the_end() {
        let at = |i| canary(3, RolloutStatus { current_step_index: Some(i), ..Default::default() });
        assert_eq!(promote(&at(1)).status, Some(json!({"status": {"currentStepIndex": 2}})));
        assert_eq!(promote(&at(3)).status, None);
    }

    #[test]
    fn promote_is_conditional_on_the_version_it_was_decided_from() {
        let mut r = canary(3, RolloutStatus { current_step_index: Some(1), ..Default::default() });
        r.metadata.resource_version = Some("42".into());
        assert_eq!(
            promote(&r).status,
            Some(json!({"metadata": {"resourceVersion": "42"}, "status": {"currentStepIndex": 2}}))
        );
    }

    #[test]
    fn promote_resumes_a_manual_pause_first() {
        let mut r = canary(3, RolloutStatus { current_step_index: Some(1), ..Default::default() });
        r.spec.paused = Some(true);
        let p = promote(&r);
        assert_eq!(p.spec, Some(json!({"spec": {"paused": false}})));
        assert_eq!(p.status, None);
    }

    #[test]
    fn undo_goes_to_the_previous_revision_without_the_hash_label() {
        let r = canary(0, Default::default());
        let t = |img: &str| json!({"metadata": {"labels": {"app": "a", POD_TEMPLATE_HASH_LABEL: "h"}}, "spec": {"containers": [{"name": "c", "image": img}]}});
        let patch = undo(&r, &[(1, t("a:1")), (3, t("a:3")), (2, t("a:2"))], None).unwrap().unwrap();
        assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "a:2");
        assert!(patch[0]["value"]["metadata"]["labels"].get(POD_TEMPLATE_HASH_LABEL).is_none());
        assert!(undo(&r, &[(1, t("a:1"))], None).is_err());
        assert!(undo(&r, &[(1, t("a:1"))], Some(7)).is_err());
    }
}
