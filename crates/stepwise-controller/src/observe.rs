//! Observe: what the reflector caches say about one Rollout (no client required, no GETs).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use stepwise_api::{
    ANALYSIS_KIND_LABEL, AnalysisPhase, AnalysisRun, POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout,
    STEP_INDEX_LABEL,
};
use stepwise_core::{AnalysisKind, Observed, ObservedAnalysisRun, ObservedReplicaSet};

use crate::index::Index;

/// Annotation on a ReplicaSet: when it is to be scaled to zero (RFC 3339).
pub const SCALE_DOWN_DEADLINE_ANNOTATION: &str = "stepwise.dev/scale-down-deadline";

/// The caches the controller reads.
#[derive(Clone)]
pub struct Stores {
    /// ReplicaSets that carry the pod-template-hash label.
    pub replica_sets: Store<ReplicaSet>,
    /// The same ReplicaSets by owning Rollout.
    pub replica_sets_by_owner: Arc<Index<ReplicaSet>>,
    /// Services.
    pub services: Store<Service>,
    /// AnalysisRuns.
    pub analysis_runs: Store<AnalysisRun>,
    /// The same AnalysisRuns by owning Rollout.
    pub analysis_runs_by_owner: Arc<Index<AnalysisRun>>,
    /// Deployments, for workloadRef.
    pub deployments: Store<Deployment>,
}

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true) && r.uid == uid))
}

/// Gathers the observations for `rollout` from the caches.
pub fn observe(rollout: &Rollout, stores: &Stores) -> Observed {
    let ns = rollout.namespace().unwrap_or_default();
    let uid = rollout.uid().unwrap_or_default();
    // The index is updated just before the cache, so an object it names may not be cached yet
    // (skipped) and ownership is checked again on the cached object, which has the last word.
    let mut replica_sets: Vec<ObservedReplicaSet> = stores
        .replica_sets_by_owner
        .get(&uid)
        .iter()
        .filter_map(|r| stores.replica_sets.get(r))
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()) && owned_by(&rs.metadata, &uid))
        .map(|rs| observe_replica_set(&rs))
        .collect();
    replica_sets.sort_by(|a, b| a.name.cmp(&b.name));
    let mut analysis_runs: Vec<ObservedAnalysisRun> = stores
        .analysis_runs_by_owner
        .get(&uid)
        .iter()
        .filter_map(|r| stores.analysis_runs.get(r))
        .filter(|ar| ar.metadata.namespace.as_deref() == Some(ns.as_str()) && owned_by(&ar.metadata, &uid))
        .map(|ar| observe_analysis_run(&ar))
        .collect();
    analysis_runs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut services = BTreeMap::new();
    let spec = &rollout.spec;
    let names = [
        spec.strategy.canary.as_ref().and_then(|c| c.canary_service.clone()),
        spec.strategy.canary.as_ref().and_then(|c| c.stable_service.clone()),
        spec.strategy.blue_green.as_ref().map(|b| b.active_service.clone()),
        spec.strategy.blue_green.as_ref().and_then(|b| b.preview_service.clone()),
    ];
    for name in names.into_iter().flatten() {
        if let Some(svc) = stores.services.get(&ObjectRef::new(&name).within(&ns)) {
            let hash = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|sel| sel.get(POD_TEMPLATE_HASH_LABEL).cloned());
            services.insert(name, hash);
        }
    }
    let workload = spec.workload_ref.as_ref().and_then(|w| {
        let d = stores.deployments.get(&ObjectRef::new(&w.name).within(&ns))?;
        let dspec = d.spec.as_ref()?;
        Some((dspec.template.clone(), Some(dspec.selector.clone())))
    });
    Observed { replica_sets, analysis_runs, workload, services, weight_verified: None, pods_to_restart: Vec::new() }
}

fn observe_replica_set(rs: &ReplicaSet) -> ObservedReplicaSet {
    let annotations = rs.annotations();
    let status = rs.status.clone().unwrap_or_default();
    ObservedReplicaSet {
        name: rs.name_any(),
        hash: rs.labels().get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
        revision: annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0),
        spec_replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: status.replicas,
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        template: rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default(),
        scale_down_deadline: annotations.get(SCALE_DOWN_DEADLINE_ANNOTATION).and_then(|t| t.parse().ok()).map(Time),
        created: rs.meta().creation_timestamp.clone(),
    }
}

fn observe_analysis_run(ar: &AnalysisRun) -> ObservedAnalysisRun {
    let labels = ar.labels();
    let kind = match labels.get(ANALYSIS_KIND_LABEL).map(String::as_str) {
        Some("Background") => AnalysisKind::Background,
        Some("PrePromotion") => AnalysisKind::PrePromotion,
        Some("PostPromotion") => AnalysisKind::PostPromotion,
        _ => AnalysisKind::Step(labels.get(STEP_INDEX_LABEL).and_then(|i| i.parse().ok()).unwrap_or(0)),
    };
    let status = ar.status.clone().unwrap_or_default();
    ObservedAnalysisRun {
        name: ar.name_any(),
        hash: labels.get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default(),
        kind,
        phase: status.phase.unwrap_or(AnalysisPhase::Pending),
        message: status.message,
        terminating: ar.spec.terminate == Some(true),
    }
}
