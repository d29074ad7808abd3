//! Execute: the only place that turns the plan's actions into API calls, in the plan's order.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use stepwise_api::{
    AnalysisRun, MANAGED_BY_ANNOTATION, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout,
    SCALE_DOWN_DEADLINE_ANNOTATION,
};
use stepwise_core::{Action, EventType};
use tracing::{debug, info};

use crate::context::Context;
use crate::error::{Error, KubeContext};

/// The field manager of every write stepwise makes.
pub const FIELD_MANAGER: &str = "stepwise-controller";

/// Carries out `actions` for `rollout`, stopping at the first failure: the next reconcile plans
/// again from what is then observed, so nothing is left half-done.
pub async fn execute(ctx: &Context, rollout: &Rollout, actions: &[Action]) -> Result<usize, Error> {
    let ns = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let mut writes = 0;
    for action in actions {
        if !matches!(action, Action::Event { .. }) {
            ctx.limiter.acquire().await;
            writes += 1;
        }
        debug!(rollout = %name, ?action, "executing");
        match action {
            Action::CreateReplicaSet {
                name: rs_name,
                hash,
                revision,
                replicas,
                template,
                selector,
                min_ready_seconds,
            } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
                labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
                let rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(rs_name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        annotations: Some(BTreeMap::from([(REVISION_ANNOTATION.to_string(), revision.to_string())])),
                        owner_references: Some(vec![stepwise_core::analysis_run::owner_reference(rollout)]),
                        ..Default::default()
                    },
                    spec: Some(ReplicaSetSpec {
                        replicas: Some(*replicas),
                        min_ready_seconds: Some(*min_ready_seconds),
                        selector: selector.clone(),
                        template: Some(template.clone()),
                    }),
                    status: None,
                };
                match api
                    .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &rs)
                    .await
                {
                    Ok(_) => info!(rollout = %name, replicaset = %rs_name, replicas, "created ReplicaSet"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        // The cache has not seen our own create yet, or a name collision.
                        let existing = api.get(rs_name).await.during(|| format!("get ReplicaSet {rs_name}"))?;
                        let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == rollout.uid().as_ref());
                        if !ours {
                            return Err(Error::Collision(rs_name.clone()));
                        }
                    }
                    Err(e) => return Err(e).during(|| format!("create ReplicaSet {rs_name}")),
                }
            }
            Action::ScaleReplicaSet { name: rs_name, replicas } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                api.patch(rs_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
                    .await
                    .during(|| format!("scale ReplicaSet {rs_name} to {replicas}"))?;
                info!(rollout = %name, replicaset = %rs_name, replicas, "scaled ReplicaSet");
            }
            Action::SetRevision { name: rs_name, revision } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
                api.patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .during(|| format!("set revision of {rs_name}"))?;
            }
            Action::SetScaleDownDeadline { name: rs_name, deadline } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                let value = deadline.as_ref().map(|t| t.0.to_string());
                let patch = json!({"metadata": {"annotations": {SCALE_DOWN_DEADLINE_ANNOTATION: value}}});
                api.patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .during(|| format!("set scale-down deadline of {rs_name}"))?;
            }
            Action::DeleteReplicaSet { name: rs_name } => {
                let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
                match api.delete(rs_name, &DeleteParams::background()).await {
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
            Action::SetTrafficWeight { .. }
            | Action::SetHeaderRoute(_)
            | Action::SetMirrorRoute(_)
            | Action::RemoveManagedRoutes => {
                route(rollout, action)?;
            }
            Action::CreateAnalysisRun { run, .. } => {
                let run_name = run.name_any();
                let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
                match api
                    .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, run)
                    .await
                {
                    Ok(_) => info!(rollout = %name, analysisrun = %run_name, "created AnalysisRun"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e).during(|| format!("create AnalysisRun {run_name}")),
                }
            }
            Action::TerminateAnalysisRun { name: run_name } => {
                let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &ns);
                match api
                    .patch(run_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"terminate": true}})))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e).during(|| format!("terminate AnalysisRun {run_name}")),
                }
            }
            Action::RestartPods { hash, before, max } => {
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                let list = pods
                    .list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}")))
                    .await
                    .during(|| "list pods to restart".into())?;
                let stale = list.items.iter().filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.metadata.creation_timestamp.as_ref().is_some_and(|c| c.0 < before.0)
                });
                for pod in stale.take(*max as usize) {
                    let pod_name = pod.name_any();
                    match pods.evict(&pod_name, &EvictParams::default()).await {
                        Ok(_) => info!(rollout = %name, pod = %pod_name, "evicted pod for restart"),
                        // A disruption budget said no: try again on the next reconcile.
                        Err(kube::Error::Api(e)) if e.code == 429 || e.code == 404 => {}
                        Err(e) => return Err(e).during(|| format!("evict pod {pod_name}")),
                    }
                }
            }
            Action::Event { type_, reason, message } => {
                let type_ = match type_ {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                };
                publish_event(ctx, rollout, type_, reason, message).await;
            }
        }
    }
    Ok(writes)
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

/// Traffic routers arrive with the traffic-routing issue; until then a Rollout that asks for one
/// is told so rather than silently served without its router.
fn route(rollout: &Rollout, action: &Action) -> Result<(), Error> {
    let routing = rollout.spec.strategy.canary.as_ref().and_then(|c| c.traffic_routing.as_ref());
    match (routing, action) {
        (None, _) => Ok(()),
        (Some(_), Action::SetTrafficWeight { canary_weight: 0, .. } | Action::RemoveManagedRoutes) => Ok(()),
        (Some(r), _) => {
            let kind = if r.istio.is_some() {
                "istio"
            } else if r.nginx.is_some() {
                "nginx"
            } else if r.traefik.is_some() {
                "traefik"
            } else if r.gateway_api.is_some() {
                "gatewayAPI"
            } else {
                "plugins"
            };
            Err(Error::Traffic(format!("the {kind} router is not available in this build of stepwise")))
        }
    }
}
