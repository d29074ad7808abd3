//! Observe: what the reflector caches say about one Rollout (no client required, no GETs).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use stepwise_api::{
    AnalysisRun, AnalysisTemplateRef, AnalysisTemplateSpec, MANAGED_BY_ANNOTATION, POD_TEMPLATE_HASH_LABEL, Rollout,
};
use stepwise_core::Observed;
use stepwise_core::objects::{observe_analysis_run, observe_replica_set};
use stepwise_traffic::Routers;

use crate::context::AnalysisStores;
use crate::index::{Index, controller_ref, named_key};

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
    /// The Rollouts by the Services and Deployment they name (`named_key`).
    pub rollouts_by_reference: Arc<Index<DeserializeGuard<Rollout>>>,
}

/// The cached objects that the Rollout with this UID controls, in name order. The index is
/// updated just before the cache, so an object it names may not be cached yet (skipped), and
/// ownership is checked again on the cached object, which has the last word.
fn owned<K>(index: &Index<K>, cache: &Store<K>, namespace: &str, uid: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut objects: Vec<Arc<K>> = index
        .get(uid)
        .iter()
        .filter_map(|r| cache.get(r))
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace) && controller_ref(o.meta()).is_some_and(|c| c.uid == uid)
        })
        .collect();
    objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    objects
}

/// Gathers the observations for `rollout` from the caches.
pub fn observe(rollout: &Rollout, stores: &Stores, templates: &AnalysisStores, routers: &Routers) -> Observed {
    let ns = rollout.namespace().unwrap_or_default();
    let uid = rollout.uid().unwrap_or_default();
    let replica_sets = owned(&stores.replica_sets_by_owner, &stores.replica_sets, &ns, &uid)
        .iter()
        .map(|rs| observe_replica_set(rs))
        .collect();
    let analysis_runs = owned(&stores.analysis_runs_by_owner, &stores.analysis_runs, &ns, &uid)
        .iter()
        .map(|ar| observe_analysis_run(ar))
        .collect();
    let mut services = BTreeMap::new();
    let mut services_of_others = BTreeMap::new();
    let spec = &rollout.spec;
    for name in spec.strategy.service_names() {
        if let Some(svc) = stores.services.get(&ObjectRef::new(name).within(&ns)) {
            let hash = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|sel| sel.get(POD_TEMPLATE_HASH_LABEL).cloned());
            services.insert(name.to_string(), hash);
            if let Some(other) = managed_by_another(rollout, &svc, stores) {
                services_of_others.insert(name.to_string(), other);
            }
        }
    }
    let workload = spec.workload_ref.as_ref().and_then(|w| {
        let d = stores.deployments.get(&ObjectRef::new(&w.name).within(&ns))?;
        let dspec = d.spec.as_ref()?;
        Some((dspec.template.clone(), Some(dspec.selector.clone())))
    });
    let workload_replicas = spec.workload_ref.as_ref().and_then(|w| {
        let d = stores.deployments.get(&ObjectRef::new(&w.name).within(&ns))?;
        Some(d.spec.as_ref()?.replicas.unwrap_or(1))
    });
    let (analysis_templates, cluster_analysis_templates) = named_templates(rollout, templates);
    Observed {
        replica_sets,
        analysis_runs,
        workload,
        workload_replicas,
        services,
        services_of_others,
        weight_checkable: crate::route::weight_checkable(rollout, routers),
        weight_verified: None,
        weight_not_in_effect: None,
        pods_to_restart: Vec::new(),
        analysis_templates,
        cluster_analysis_templates,
        // Core refuses a Rollout naming any other router before a pod moves. A registered
        // router plugin is accepted for header and mirror routes whatever its v1/info says:
        // admission must not depend on whether the plugin has answered yet, and a plugin refuses
        // what it cannot make with an error the Rollout shows.
        router_kinds: routers.kinds(|_| true),
        header_route_kinds: routers.kinds(|r| r.header_routes),
        mirror_route_kinds: routers.kinds(|r| r.mirror_routes),
        ping_pong_kinds: routers.kinds(|r| r.ping_pong),
    }
}

/// The other Rollout that manages `service` (its annotation names it) and still names it: two
/// Rollouts pointing one Service's selector at their own pods would flip it for ever. A Rollout
/// that no longer names the Service, or is gone, leaves it free.
fn managed_by_another(rollout: &Rollout, service: &Service, stores: &Stores) -> Option<String> {
    let manager = service.annotations().get(MANAGED_BY_ANNOTATION)?;
    if *manager == rollout.name_any() {
        return None;
    }
    let key = named_key(rollout.namespace().as_deref(), "Service", &service.name_any());
    let naming = stores.rollouts_by_reference.get(&key);
    naming.iter().any(|r| r.name == *manager).then(|| manager.clone())
}

type Templates = BTreeMap<String, AnalysisTemplateSpec>;

/// The templates the Rollout names, and the templates those name in turn (`spec.templates`), as
/// cached: (namespaced, cluster-scoped). Core combines them and names any that is missing.
fn named_templates(rollout: &Rollout, stores: &AnalysisStores) -> (Templates, Templates) {
    let ns = rollout.namespace().unwrap_or_default();
    let mut namespaced = BTreeMap::new();
    let mut cluster = BTreeMap::new();
    let mut pending: Vec<AnalysisTemplateRef> =
        rollout.spec.strategy.analysis_template_refs().into_iter().cloned().collect();
    while let Some(t) = pending.pop() {
        let spec = if t.cluster_scope == Some(true) {
            if cluster.contains_key(&t.template_name) {
                continue;
            }
            stores.cluster_templates.get(&ObjectRef::new(&t.template_name)).map(|c| c.spec.template.clone())
        } else {
            if namespaced.contains_key(&t.template_name) {
                continue;
            }
            stores.templates.get(&ObjectRef::new(&t.template_name).within(&ns)).map(|c| c.spec.clone())
        };
        let Some(spec) = spec else { continue };
        pending.extend(spec.templates.iter().flatten().cloned());
        let map = if t.cluster_scope == Some(true) { &mut cluster } else { &mut namespaced };
        map.insert(t.template_name.clone(), spec);
    }
    (namespaced, cluster)
}
