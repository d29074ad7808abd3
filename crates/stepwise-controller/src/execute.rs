//! Execute: the only place that turns the plan's actions into API calls, in the plan's order.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use stepwise_api::{
    AnalysisRun, MANAGED_BY_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout,
    SCALE_DOWN_DEADLINE_ANNOTATION,
};
use stepwise_core::objects::{STABLE_SINCE_ANNOTATION, STABLE_UNTIL_ANNOTATION};
use stepwise_core::{Action, EventType, RoleMetadata};
use tracing::{debug, info};

use crate::context::Context;
use crate::error::{Error, KubeContext};

/// The field manager of every write stepwise makes.
pub const FIELD_MANAGER: &str = "stepwise-controller";

/// How far a failed [`execute`] got: the actions before `done` were carried out, the one at
/// `done` failed with `error`, none after it was tried.
#[derive(Debug)]
pub struct ExecuteError {
    /// The index of the action that failed, which is also the number of actions done.
    pub done: usize,
    /// Why it failed.
    pub error: Error,
}

/// Carries out `actions` for `rollout` in the plan's order, stopping at the first failure: the
/// order is what keeps a half-done plan safe, and the next reconcile plans again from what is
/// then observed. Returns the number of API writes made.
pub async fn execute(ctx: &Context, rollout: &Rollout, actions: &[Action]) -> Result<usize, ExecuteError> {
    let mut writes = 0;
    for (done, action) in actions.iter().enumerate() {
        if !matches!(action, Action::Event { .. }) {
            ctx.limiter.acquire().await;
            writes += 1;
        }
        debug!(rollout = %rollout.name_any(), ?action, "executing");
        execute_one(ctx, rollout, action).await.map_err(|error| ExecuteError { done, error })?;
    }
    Ok(writes)
}

async fn execute_one(ctx: &Context, rollout: &Rollout, action: &Action) -> Result<(), Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let runs: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
    let create = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match action {
        Action::CreateReplicaSet { name: rs_name, replicas, .. } => {
            let Some(rs) = stepwise_core::objects::replica_set(rollout, action) else { return Ok(()) };
            match replica_sets.create(&create, &rs).await {
                Ok(_) => info!(rollout = %name, replicaset = %rs_name, replicas, "created ReplicaSet"),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // The cache has not seen our own create yet, or a name collision.
                    let existing = replica_sets.get(rs_name).await.during(|| format!("get ReplicaSet {rs_name}"))?;
                    let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == rollout.uid().as_ref());
                    if !ours {
                        return Err(Error::Collision(rs_name.clone()));
                    }
                }
                Err(e) => return Err(e).during(|| format!("create ReplicaSet {rs_name}")),
            }
        }
        Action::ScaleReplicaSet { name: rs_name, replicas } => {
            let patch = json!({"spec": {"replicas": replicas}});
            replica_sets
                .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("scale ReplicaSet {rs_name} to {replicas}"))?;
            info!(rollout = %name, replicaset = %rs_name, replicas, "scaled ReplicaSet");
        }
        Action::SetRevision { name: rs_name, revision } => {
            let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
            replica_sets
                .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("set revision of {rs_name}"))?;
        }
        Action::SetScaleDownDeadline { name: rs_name, deadline } => {
            let value = deadline.as_ref().map(stepwise_core::objects::scale_down_deadline_value);
            let patch = json!({"metadata": {"annotations": {SCALE_DOWN_DEADLINE_ANNOTATION: value}}});
            replica_sets
                .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("set scale-down deadline of {rs_name}"))?;
        }
        Action::SetStableSince { name: rs_name, since } => {
            let since = stepwise_core::objects::stable_time_value(since);
            // A version stable again has no end any more: null takes the one recorded before off.
            let annotations = json!({STABLE_SINCE_ANNOTATION: since, STABLE_UNTIL_ANNOTATION: null});
            replica_sets
                .patch(
                    rs_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
                )
                .await
                .during(|| format!("record when {rs_name} became stable"))?;
        }
        Action::SetStableUntil { name: rs_name, until } => {
            let until = stepwise_core::objects::stable_time_value(until);
            let patch = json!({"metadata": {"annotations": {STABLE_UNTIL_ANNOTATION: until}}});
            replica_sets
                .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("record when {rs_name} stopped being stable"))?;
        }
        Action::DeleteReplicaSet { name: rs_name } => {
            match replica_sets.delete(rs_name, &DeleteParams::background()).await {
                Ok(_) => info!(rollout = %name, replicaset = %rs_name, "deleted old ReplicaSet"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).during(|| format!("delete ReplicaSet {rs_name}")),
            }
        }
        Action::SetServiceSelector { service, hash } => {
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({
                "metadata": {"annotations": {MANAGED_BY_ANNOTATION: name}},
                "spec": {"selector": {POD_TEMPLATE_HASH_LABEL: hash}},
            });
            api.patch(service, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("point Service {service} at {hash}"))?;
            info!(rollout = %name, service = %service, hash = %hash, "switched Service selector");
        }
        Action::SetTraffic(desired) => crate::route::set_traffic(ctx, rollout, desired).await?,
        Action::CreateAnalysisRun { run, .. } => {
            let run_name = run.name_any();
            match runs.create(&create, run).await {
                Ok(_) => info!(rollout = %name, analysisrun = %run_name, "created AnalysisRun"),
                // Created by an earlier reconcile whose status write was lost; the plan adopts it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).during(|| format!("create AnalysisRun {run_name}")),
            }
        }
        Action::DeleteAnalysisRun { name: run_name } => {
            match runs.delete(run_name, &DeleteParams::background()).await {
                Ok(_) => {
                    info!(rollout = %name, analysisrun = %run_name, "deleted AnalysisRun beyond the history limits")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).during(|| format!("delete AnalysisRun {run_name}")),
            }
        }
        Action::TerminateAnalysisRun { name: run_name } => {
            let patch = json!({"spec": {"terminate": true}});
            match runs.patch(run_name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).during(|| format!("terminate AnalysisRun {run_name}")),
            }
        }
        Action::RestartPod { name: pod } => restart_pod(ctx, &ns, &name, pod).await?,
        Action::ScaleWorkload { name: deployment, replicas } => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"spec": {"replicas": replicas}});
            api.patch(deployment, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .during(|| format!("scale Deployment {deployment} to {replicas}"))?;
            info!(rollout = %name, deployment = %deployment, replicas, "scaled workloadRef Deployment");
        }
        Action::SetRoleMetadata { name: rs_name, pods, metadata, remove, .. } => {
            set_role_metadata(ctx, &ns, &name, rs_name, pods, metadata, remove).await?
        }
        Action::AddTrafficFinalizer => drop(crate::finalizer::add(ctx, rollout).await?),
        Action::Event { type_, reason, message } => {
            let type_ = match type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            };
            publish_event(ctx, rollout, type_, reason, message).await;
        }
    }
    Ok(())
}

/// Evicts the pod `name`, so that its ReplicaSet replaces it.
async fn restart_pod(ctx: &Context, ns: &str, rollout: &str, name: &str) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match pods.evict(name, &EvictParams::default()).await {
        Ok(_) => info!(rollout = %rollout, pod = %name, "evicted pod for restart"),
        // A disruption budget said no, or it is gone already: the next plan looks again.
        Err(kube::Error::Api(e)) if e.code == 429 || e.code == 404 => {}
        Err(e) => return Err(e).during(|| format!("evict pod {name}")),
    }
    Ok(())
}

/// The merge patch of a labels or annotations map that sets `set` and takes off the keys of
/// `remove` where `current` still has the value stepwise gave them (None: nothing to change).
/// With `current` None (a pod template, where stepwise is the only writer of these keys) every
/// key of `remove` goes.
fn metadata_patch(
    current: Option<&std::collections::BTreeMap<String, String>>,
    set: &std::collections::BTreeMap<String, String>,
    remove: &std::collections::BTreeMap<String, String>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut patch = serde_json::Map::new();
    for (k, v) in set {
        if current.is_none_or(|c| c.get(k) != Some(v)) {
            patch.insert(k.clone(), json!(v));
        }
    }
    for (k, v) in remove {
        if current.is_none_or(|c| c.get(k) == Some(v)) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    (!patch.is_empty()).then_some(patch)
}

/// Role metadata, in the order that leaves no pod behind: the ReplicaSet's pod template first
/// (the pods it creates from now on carry it), then every pod of the version that differs,
/// patched in place, then the record on the ReplicaSet. Until the record is written the next
/// plan asks again, so a failure half-way is finished by the next reconcile.
///
/// The ReplicaSet controller may still create a pod from the template it had before (its cache
/// lags): the record is written only once the ReplicaSet's status shows the template changed
/// (status.observedGeneration), after which no such pod can appear. Until then the pods seen are
/// patched and the record waits for the reconcile that the ReplicaSet's status update brings.
async fn set_role_metadata(
    ctx: &Context,
    ns: &str,
    rollout: &str,
    rs_name: &str,
    pods_selector: &str,
    metadata: &RoleMetadata,
    remove: &RoleMetadata,
) -> Result<(), Error> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
    let mut template = serde_json::Map::new();
    if let Some(labels) = metadata_patch(None, &metadata.labels, &remove.labels) {
        template.insert("labels".into(), labels.into());
    }
    if let Some(annotations) = metadata_patch(None, &metadata.annotations, &remove.annotations) {
        template.insert("annotations".into(), annotations.into());
    }
    // A patch that changes nothing leaves the generation as it is.
    let patch = json!({"spec": {"template": {"metadata": template}}});
    let rs = replica_sets
        .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .during(|| format!("set the role metadata of ReplicaSet {rs_name}"))?;
    let template_seen = rs.status.as_ref().and_then(|s| s.observed_generation) >= rs.metadata.generation;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(pods_selector))
        .await
        .during(|| format!("list the pods of ReplicaSet {rs_name}"))?;
    let mut patched = 0;
    for pod in &list.items {
        let owned = pod.owner_references().iter().any(|o| o.controller == Some(true) && o.name == rs_name);
        if !owned || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let mut meta = serde_json::Map::new();
        if let Some(labels) = metadata_patch(Some(pod.labels()), &metadata.labels, &remove.labels) {
            meta.insert("labels".into(), labels.into());
        }
        if let Some(annotations) = metadata_patch(Some(pod.annotations()), &metadata.annotations, &remove.annotations) {
            meta.insert("annotations".into(), annotations.into());
        }
        if meta.is_empty() {
            continue;
        }
        let pod_name = pod.name_any();
        ctx.limiter.acquire().await;
        match pods.patch(&pod_name, &PatchParams::default(), &Patch::Merge(json!({"metadata": meta}))).await {
            Ok(_) => patched += 1,
            // Gone meanwhile: nothing to label.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).during(|| format!("set the role metadata of pod {pod_name}")),
        }
    }
    if !template_seen {
        debug!(rollout = %rollout, replicaset = %rs_name, pods = patched, "role metadata: waiting for the ReplicaSet controller");
        return Ok(());
    }
    let record = stepwise_core::objects::role_metadata_value(metadata);
    let patch = json!({"metadata": {"annotations": {stepwise_core::objects::ROLE_METADATA_ANNOTATION: record}}});
    replica_sets
        .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .during(|| format!("record the role metadata of ReplicaSet {rs_name}"))?;
    info!(rollout = %rollout, replicaset = %rs_name, pods = patched, "set role metadata");
    Ok(())
}

/// Records a Kubernetes Event on the Rollout. Events with the same action are merged into one
/// series, so the action carries the message: distinct transitions stay distinct events, and a
/// repeated one counts up. An event that cannot be recorded must not stop the rollout, so a
/// failure is only logged.
pub async fn publish_event(ctx: &Context, rollout: &Rollout, type_: KubeEventType, reason: &str, message: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: message.chars().take(128).collect(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &rollout.object_ref(&())).await {
        tracing::warn!(rollout = %rollout.name_any(), error = %e, "could not record event");
    }
}
