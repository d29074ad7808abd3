//! The objects core writes, read back: the labels and annotations it gives ReplicaSets and
//! AnalysisRuns are parsed here, next to where they are written, so that the controller only
//! copies objects out of its caches. Also the selector of a Rollout's pods, rendered as the API
//! server reads it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use stepwise_api::{
    AnalysisPhase, AnalysisRun, POD_TEMPLATE_HASH_LABEL, PodMetadata, REVISION_ANNOTATION, Rollout,
    SCALE_DOWN_DEADLINE_ANNOTATION, STEP_INDEX_LABEL,
};

use crate::Action;
use crate::analysis_run::owner_reference;
use crate::observed::{AnalysisKind, Observed, ObservedAnalysisRun, ObservedReplicaSet, RoleMetadata};

/// The annotation on a ReplicaSet that records the role metadata stepwise put on its pod
/// template and its pods (JSON: `{"labels": {..}, "annotations": {..}}`), written once they are
/// all in place, so that only those keys are ever taken off again.
pub const ROLE_METADATA_ANNOTATION: &str = "stepwise.dev/role-metadata";

/// The annotation on a ReplicaSet that records when its version last became the stable one
/// (RFC 3339), which `kubectl stepwise history` shows: nothing else records it once the events
/// have expired.
pub const STABLE_SINCE_ANNOTATION: &str = "stepwise.dev/stable-since";

/// The annotation on a ReplicaSet that records when its version stopped being the stable one
/// (RFC 3339), after [`STABLE_SINCE_ANNOTATION`]; none while it is stable.
pub const STABLE_UNTIL_ANNOTATION: &str = "stepwise.dev/stable-until";

/// The annotation `kubectl rollout history` reads as the reason for a revision. A Rollout's is
/// copied to the ReplicaSet its template creates, as the Deployment controller copies a
/// Deployment's, so that each revision keeps the cause it was made for.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

/// What planning needs of a ReplicaSet.
pub fn observe_replica_set(rs: &ReplicaSet) -> ObservedReplicaSet {
    let meta = &rs.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let spec = rs.spec.as_ref();
    let status = rs.status.clone().unwrap_or_default();
    // An annotation that cannot be read records nothing: nothing is taken off then.
    let role_metadata: RoleMetadata = annotations
        .get(ROLE_METADATA_ANNOTATION)
        .and_then(|v| serde_json::from_str::<PodMetadata>(v).ok())
        .map(|m| RoleMetadata::from_spec(Some(&m)))
        .unwrap_or_default();
    let mut template = spec.and_then(|s| s.template.clone()).unwrap_or_default();
    without_role_metadata(&mut template, &role_metadata);
    ObservedReplicaSet {
        name: meta.name.clone().unwrap_or_default(),
        hash: labels.get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
        revision: annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0),
        // The API server defaults spec.replicas to 1.
        spec_replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        replicas: status.replicas,
        terminating: status.terminating_replicas.unwrap_or(0),
        status_stale: status.observed_generation.unwrap_or(0) < meta.generation.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        template,
        role_metadata,
        scale_down_deadline: annotations.get(SCALE_DOWN_DEADLINE_ANNOTATION).and_then(|t| t.parse().ok()).map(Time),
        stable_since: annotations.get(STABLE_SINCE_ANNOTATION).and_then(|t| t.parse().ok()).map(Time),
        stable_until: annotations.get(STABLE_UNTIL_ANNOTATION).and_then(|t| t.parse().ok()).map(Time),
        created: meta.creation_timestamp.clone(),
    }
}

/// What planning needs of an AnalysisRun.
pub fn observe_analysis_run(run: &AnalysisRun) -> ObservedAnalysisRun {
    let labels = run.metadata.labels.clone().unwrap_or_default();
    // A run without core's labels was not made by core; without a hash label it is never taken
    // for the run of a step or of the background analysis, whatever kind it reads as.
    let kind = AnalysisKind::from_labels(&labels)
        .unwrap_or_else(|| AnalysisKind::Step(labels.get(STEP_INDEX_LABEL).and_then(|i| i.parse().ok()).unwrap_or(0)));
    let status = run.status.clone().unwrap_or_default();
    ObservedAnalysisRun {
        name: run.metadata.name.clone().unwrap_or_default(),
        hash: labels.get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
        kind,
        phase: status.phase.unwrap_or(AnalysisPhase::Pending),
        message: status.message,
        terminating: run.spec.terminate == Some(true),
        created: run.metadata.creation_timestamp.clone(),
    }
}

/// The ReplicaSet a [`Action::CreateReplicaSet`] asks for, owned by the Rollout and labelled so
/// that [`observe_replica_set`] reads it back, with the Rollout's change-cause; None for any other
/// action.
pub fn replica_set(rollout: &Rollout, action: &Action) -> Option<ReplicaSet> {
    let Action::CreateReplicaSet { name, hash, revision, replicas, template, selector, min_ready_seconds } = action
    else {
        return None;
    };
    let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let mut annotations = BTreeMap::from([(REVISION_ANNOTATION.to_string(), revision.to_string())]);
    if let Some(cause) = rollout.metadata.annotations.as_ref().and_then(|a| a.get(CHANGE_CAUSE_ANNOTATION)) {
        annotations.insert(CHANGE_CAUSE_ANNOTATION.to_string(), cause.clone());
    }
    Some(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: rollout.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(rollout)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(*replicas),
            min_ready_seconds: Some(*min_ready_seconds),
            selector: selector.clone(),
            template: Some(template.clone()),
        }),
        status: None,
    })
}

/// Takes the role metadata stepwise put on a pod template off it: what is left is the version's
/// own template, as the Rollout had it.
fn without_role_metadata(template: &mut PodTemplateSpec, role: &RoleMetadata) {
    let Some(meta) = template.metadata.as_mut() else { return };
    for (map, role) in [(&mut meta.labels, &role.labels), (&mut meta.annotations, &role.annotations)] {
        if let Some(m) = map.as_mut() {
            m.retain(|k, v| role.get(k) != Some(v));
            if m.is_empty() {
                *map = None;
            }
        }
    }
}

/// The value of the role-metadata annotation that records `role`, as [`observe_replica_set`]
/// reads it; None (the annotation is removed) when there is none.
pub fn role_metadata_value(role: &RoleMetadata) -> Option<String> {
    let some = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    let recorded = PodMetadata { labels: some(&role.labels), annotations: some(&role.annotations) };
    if role.is_empty() { None } else { serde_json::to_string(&recorded).ok() }
}

/// The value of the scale-down-deadline annotation for a deadline, as
/// [`observe_replica_set`] parses it.
pub fn scale_down_deadline_value(deadline: &Time) -> String {
    deadline.0.to_string()
}

/// The value of the stable-since and stable-until annotations, as [`observe_replica_set`] parses
/// them.
pub fn stable_time_value(time: &Time) -> String {
    time.0.to_string()
}

/// The selector of the Rollout's pods: `spec.selector`, or for a `workloadRef` without one, the
/// referenced Deployment's. None when there is none (yet): then no pod is the Rollout's.
pub fn pod_selector(rollout: &Rollout, observed: &Observed) -> Option<LabelSelector> {
    rollout.spec.selector.clone().or_else(|| {
        rollout.spec.workload_ref.as_ref()?;
        observed.workload.as_ref()?.1.clone()
    })
}

/// A selector in the API server's label-selector syntax (`a=b,c in (d,e),!f`), matchLabels
/// first, then each expression. An empty selector renders as "" (which selects everything).
pub fn label_selector_string(selector: &LabelSelector) -> Result<String, String> {
    let mut parts: Vec<String> =
        selector.match_labels.iter().flatten().map(|(key, value)| format!("{key}={value}")).collect();
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("matchExpressions[{i}]");
        let values = e.values.clone().unwrap_or_default();
        let part = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(format!("{field}: {} needs values", e.operator)),
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!("{field}: {} takes no values", e.operator));
            }
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => return Err(format!("{field}: unknown operator {other:?}")),
        };
        parts.push(part);
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use k8s_openapi::jiff::Timestamp;
    use stepwise_api::{ANALYSIS_KIND_LABEL, AnalysisRunSpec, AnalysisRunStatus};

    use super::*;

    fn rollout(yaml: &str) -> Rollout {
        serde_yaml::from_str(yaml).expect("a valid Rollout")
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: if values.is_empty() { None } else { Some(values.iter().map(|v| v.to_string()).collect()) },
        }
    }

    fn run(labels: Option<BTreeMap<String, String>>) -> AnalysisRun {
        AnalysisRun {
            metadata: ObjectMeta { name: Some("app-abc-2-3".into()), labels, ..Default::default() },
            spec: AnalysisRunSpec::default(),
            status: None,
        }
    }

    #[test]
    fn a_replica_set_core_created_reads_back_as_the_action_that_created_it() {
        let ro = rollout("metadata: {name: app, namespace: ns, uid: u1}\nspec: {strategy: {canary: {}}}\n");
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: labels(&[("app", "demo")]), ..Default::default() }),
            spec: None,
        };
        let action = Action::CreateReplicaSet {
            name: "app-abc".into(),
            hash: "abc".into(),
            revision: 3,
            replicas: 2,
            template: template.clone(),
            selector: LabelSelector { match_labels: labels(&[("app", "demo")]), match_expressions: None },
            min_ready_seconds: 5,
        };
        let mut rs = replica_set(&ro, &action).expect("a ReplicaSet");
        assert_eq!(rs.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(rs.metadata.owner_references.as_ref().map(|o| o[0].uid.as_str()), Some("u1"));
        assert_eq!(rs.metadata.labels, labels(&[("app", "demo"), (POD_TEMPLATE_HASH_LABEL, "abc")]));
        let deadline = Time(Timestamp::from_second(1_700_000_000).unwrap());
        rs.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SCALE_DOWN_DEADLINE_ANNOTATION.into(), scale_down_deadline_value(&deadline));
        let (stable_since, stable_until) = (
            Time(Timestamp::from_second(1_690_000_000).unwrap()),
            Time(Timestamp::from_second(1_690_000_060).unwrap()),
        );
        let annotations = rs.metadata.annotations.as_mut().unwrap();
        annotations.insert(STABLE_SINCE_ANNOTATION.into(), stable_time_value(&stable_since));
        annotations.insert(STABLE_UNTIL_ANNOTATION.into(), stable_time_value(&stable_until));
        rs.status = Some(ReplicaSetStatus {
            replicas: 2,
            ready_replicas: Some(2),
            available_replicas: Some(1),
            ..Default::default()
        });
        let seen = observe_replica_set(&rs);
        assert_eq!(
            seen,
            ObservedReplicaSet {
                name: "app-abc".into(),
                hash: "abc".into(),
                revision: 3,
                spec_replicas: 2,
                replicas: 2,
                terminating: 0,
                status_stale: false,
                ready: 2,
                available: 1,
                template,
                role_metadata: RoleMetadata::default(),
                scale_down_deadline: Some(deadline),
                stable_since: Some(stable_since),
                stable_until: Some(stable_until),
                created: None,
            }
        );
        assert_eq!(replica_set(&ro, &Action::DeleteReplicaSet { name: "app-abc".into() }), None);
    }

    #[test]
    fn a_replica_set_carries_the_change_cause_the_rollout_had_when_it_was_created() {
        let action = Action::CreateReplicaSet {
            name: "app-abc".into(),
            hash: "abc".into(),
            revision: 2,
            replicas: 1,
            template: PodTemplateSpec::default(),
            selector: LabelSelector::default(),
            min_ready_seconds: 0,
        };
        let annotated = rollout(
            "metadata: {name: app, annotations: {kubernetes.io/change-cause: deploy demo:2, other: x}}\nspec: {strategy: {canary: {}}}\n",
        );
        let rs = replica_set(&annotated, &action).expect("a ReplicaSet");
        assert_eq!(
            rs.metadata.annotations,
            Some(BTreeMap::from([
                (CHANGE_CAUSE_ANNOTATION.to_string(), "deploy demo:2".to_string()),
                (REVISION_ANNOTATION.to_string(), "2".to_string()),
            ])),
            "the change-cause and the revision, no other annotation of the Rollout"
        );
        let plain = rollout("metadata: {name: app}\nspec: {strategy: {canary: {}}}\n");
        let rs = replica_set(&plain, &action).expect("a ReplicaSet");
        assert_eq!(rs.metadata.annotations.unwrap().get(CHANGE_CAUSE_ANNOTATION), None);
    }

    #[test]
    fn a_replica_set_without_spec_replicas_counts_as_one_as_the_api_server_defaults_it() {
        let rs = ReplicaSet { spec: Some(ReplicaSetSpec::default()), ..Default::default() };
        assert_eq!(observe_replica_set(&rs).spec_replicas, 1);
        assert_eq!(observe_replica_set(&rs).revision, 0);
    }

    #[test]
    fn a_replica_set_reads_back_its_terminating_pods_and_whether_its_status_caught_up_with_its_spec() {
        let mut rs = ReplicaSet {
            metadata: ObjectMeta { generation: Some(3), ..Default::default() },
            spec: Some(ReplicaSetSpec { replicas: Some(0), ..Default::default() }),
            status: Some(ReplicaSetStatus {
                replicas: 0,
                terminating_replicas: Some(2),
                observed_generation: Some(2),
                ..Default::default()
            }),
        };
        let seen = observe_replica_set(&rs);
        assert_eq!((seen.terminating, seen.status_stale), (2, true), "status of generation 2, spec of 3");
        rs.status = Some(ReplicaSetStatus { replicas: 0, observed_generation: Some(3), ..Default::default() });
        let seen = observe_replica_set(&rs);
        assert_eq!((seen.terminating, seen.status_stale), (0, false), "no terminatingReplicas: none reported");
        rs.status = None;
        assert!(observe_replica_set(&rs).status_stale, "a ReplicaSet with no status yet");
    }

    #[test]
    fn an_analysis_run_reads_back_its_kind_hash_phase_and_termination() {
        let mut step =
            run(labels(&[(ANALYSIS_KIND_LABEL, "Step"), (STEP_INDEX_LABEL, "3"), (POD_TEMPLATE_HASH_LABEL, "abc")]));
        step.spec.terminate = Some(true);
        step.status = Some(AnalysisRunStatus {
            phase: Some(AnalysisPhase::Running),
            message: Some("measuring".into()),
            ..Default::default()
        });
        assert_eq!(
            observe_analysis_run(&step),
            ObservedAnalysisRun {
                name: "app-abc-2-3".into(),
                hash: "abc".into(),
                kind: AnalysisKind::Step(3),
                phase: AnalysisPhase::Running,
                message: Some("measuring".into()),
                terminating: true,
                created: None,
            }
        );
        for (label, kind) in [
            ("Background", AnalysisKind::Background),
            ("PrePromotion", AnalysisKind::PrePromotion),
            ("PostPromotion", AnalysisKind::PostPromotion),
        ] {
            let seen = observe_analysis_run(&run(labels(&[(ANALYSIS_KIND_LABEL, label)])));
            assert_eq!((seen.kind, seen.phase, seen.terminating), (kind, AnalysisPhase::Pending, false));
        }
    }

    #[test]
    fn an_analysis_run_without_core_labels_has_no_hash_so_it_judges_no_version() {
        let seen = observe_analysis_run(&run(None));
        assert_eq!((seen.hash.as_str(), seen.kind), ("", AnalysisKind::Step(0)));
    }

    #[test]
    fn the_pods_of_a_rollout_are_those_of_its_selector() {
        let ro = rollout(
            "metadata: {name: app}\nspec:\n  selector: {matchLabels: {app: demo}}\n  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  strategy: {canary: {}}\n",
        );
        let deployment = LabelSelector { match_labels: labels(&[("app", "web")]), match_expressions: None };
        let observed =
            Observed { workload: Some((PodTemplateSpec::default(), Some(deployment))), ..Default::default() };
        assert_eq!(pod_selector(&ro, &observed).and_then(|s| s.match_labels), labels(&[("app", "demo")]));
    }

    #[test]
    fn a_workload_ref_rollout_without_a_selector_selects_the_pods_of_the_deployments_selector() {
        let ro = rollout(
            "metadata: {name: app}\nspec:\n  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  strategy: {canary: {}}\n",
        );
        let deployment = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: Some(vec![expression("tier", "In", &["a", "b"])]),
        };
        let observed =
            Observed { workload: Some((PodTemplateSpec::default(), Some(deployment.clone()))), ..Default::default() };
        assert_eq!(pod_selector(&ro, &observed), Some(deployment));
        assert_eq!(pod_selector(&ro, &Observed::default()), None, "the Deployment is not observed yet");
    }

    #[test]
    fn a_rollout_with_neither_selector_nor_workload_ref_selects_no_pods() {
        let ro = rollout("metadata: {name: app}\nspec: {strategy: {canary: {}}}\n");
        let other = LabelSelector { match_labels: labels(&[("app", "web")]), match_expressions: None };
        let observed = Observed { workload: Some((PodTemplateSpec::default(), Some(other))), ..Default::default() };
        assert_eq!(pod_selector(&ro, &observed), None);
    }

    #[test]
    fn a_selector_renders_match_labels_and_every_operator_in_the_api_servers_syntax() {
        let selector = LabelSelector {
            match_labels: labels(&[("app", "demo"), ("a.io/team", "x")]),
            match_expressions: Some(vec![
                expression("tier", "In", &["web", "api"]),
                expression("env", "NotIn", &["dev"]),
                expression("canary", "Exists", &[]),
                expression("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert_eq!(
            label_selector_string(&selector).as_deref(),
            Ok("a.io/team=x,app=demo,tier in (web,api),env notin (dev),canary,!legacy")
        );
        assert_eq!(label_selector_string(&LabelSelector::default()).as_deref(), Ok(""));
    }

    #[test]
    fn a_selector_the_api_server_would_refuse_is_an_error_naming_the_expression() {
        for (e, expected) in [
            (expression("tier", "In", &[]), "matchExpressions[0]: In needs values"),
            (expression("tier", "NotIn", &[]), "matchExpressions[0]: NotIn needs values"),
            (expression("tier", "Exists", &["x"]), "matchExpressions[0]: Exists takes no values"),
            (expression("tier", "DoesNotExist", &["x"]), "matchExpressions[0]: DoesNotExist takes no values"),
            (expression("tier", "Gt", &["1"]), "matchExpressions[0]: unknown operator \"Gt\""),
        ] {
            let selector = LabelSelector { match_labels: None, match_expressions: Some(vec![e]) };
            assert_eq!(label_selector_string(&selector), Err(expected.to_string()));
        }
    }
}
