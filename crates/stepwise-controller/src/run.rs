//! Wires the caches and the controller together and runs them until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use stepwise_api::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate, POD_TEMPLATE_HASH_LABEL, Rollout};

use k8s_openapi::api::batch::v1::Job;
use stepwise_metrics::Providers;
use stepwise_metrics::cloudwatch::CloudWatchProvider;
use stepwise_metrics::datadog::DatadogProvider;
use stepwise_metrics::graphite::GraphiteProvider;
use stepwise_metrics::influxdb::InfluxdbProvider;
use stepwise_metrics::job::{ANALYSIS_RUN_LABEL, JobProvider};
use stepwise_metrics::kayenta::KayentaProvider;
use stepwise_metrics::kubernetes::KubernetesProvider;
use stepwise_metrics::newrelic::NewRelicProvider;
use stepwise_metrics::plugin::PluginProvider;
use stepwise_metrics::prometheus::PrometheusProvider;
use stepwise_metrics::secrets::{KubeSecrets, SecretStore};
use stepwise_metrics::skywalking::SkywalkingProvider;
use stepwise_metrics::wavefront::WavefrontProvider;
use stepwise_metrics::web::WebProvider;

use crate::analysis::{AnalysisContext, reconcile_run, run_error_policy};
use crate::context::{AnalysisStores, Context, Limiter};
use crate::index::{Index, controller_ref, controller_uid, named_key};
use crate::metrics::Metrics;
use crate::observe::Stores;
use crate::reconcile::{error_policy, reconcile};
use crate::shard::Shard;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Only this namespace, or all.
    pub namespace: Option<String>,
    /// API writes per second.
    pub qps: f64,
    /// API write burst.
    pub burst: u32,
    /// Rollouts reconciled at once.
    pub concurrency: u16,
    /// Name of this instance in events.
    pub identity: String,
    /// The Prometheus server of metrics that name no address.
    pub prometheus_address: Option<String>,
    /// Metric plugins by name: the executable that answers for each.
    pub metric_plugins: BTreeMap<String, PathBuf>,
    /// The kubernetes metric provider, with a client of its own that does not retry a 503
    /// (`KubernetesProvider::from_config`).
    pub kubernetes_metrics: KubernetesProvider,
    /// The router plugins of `--router-plugin`.
    pub router_plugins: Arc<crate::router_plugin::RouterPlugins>,
    /// Every router the controller drives: built in, registered at start, and the router
    /// plugins by name.
    pub routers: Arc<stepwise_traffic::Routers>,
    /// The Rollouts this controller acts on (`--shard`).
    pub shard: Shard,
    /// The controller's own namespace (the Lease's): where Argo's metric providers keep their
    /// credentials (the Secrets `datadog`, `newrelic`, `wavefront-api-tokens`, `influxdb`).
    pub home_namespace: String,
    /// Where the notifications' configuration is.
    pub notifications: crate::notify::NotifierSettings,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache fed by its own watch, shared with the controller's triggers. `on_event` sees every
/// event first: it keeps indexes and turns deletions into triggers, which a shared cache does not
/// pass on.
fn shared_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    on_event: impl Fn(&watcher::Event<K>) + Send + Sync + 'static,
) -> (Store<K>, reflector::ReflectHandle<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store_shared(4096);
    let subscriber = writer.subscribe().expect("a shared store can be subscribed");
    // Indexes learn of an object before the cache and the triggers do, so a reconcile that a new
    // object triggers finds it in both.
    let seen = watcher(api, config).backoff(watch_backoff()).modify(slim).map_ok(move |event| {
        on_event(&event);
        event
    });
    let driver = seen.reflect_shared(writer).for_each(|event| {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch error; retrying");
        }
        futures::future::ready(())
    });
    (reader, subscriber, driver)
}

type RolloutRef = ObjectRef<DeserializeGuard<Rollout>>;

/// How long a watch waits before it tries again: kube's default doubles from 0.8 s up to 30 s,
/// so after an outage of 20 s (an API server restarting) every cache would wait up to 30 s more
/// before it relists, and the controller would plan from stale caches all that while. Capped at
/// 5 s, the seven watches retry at most 1.4 times a second together, and the caches are back
/// within 5 s of the API server.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(120))
}

/// What the caches never read: who wrote which field (often the largest part of an object) and
/// the copy of the whole object `kubectl apply` keeps in an annotation. Dropped as objects arrive,
/// so the memory of each cached object is what the controller uses.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Where `kubectl apply` keeps the last object it applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Rollout that controls a deleted object, to reconcile (a deleted ReplicaSet is recreated).
fn controlling_rollout<K: Resource>(obj: &K) -> Option<RolloutRef> {
    let owner = controller_ref(obj.meta())?;
    let ns = obj.meta().namespace.as_deref()?;
    (owner.kind == "Rollout").then(|| ObjectRef::new(&owner.name).within(ns))
}

/// Keeps `index` and reconciles the Rollout that controlled a deleted object. After a relist
/// (the watch was interrupted) every Rollout is reconciled: an object deleted meanwhile left no
/// Delete event, and the relist only names the objects that still exist.
fn index_and_trigger_owner<K>(
    index: Arc<Index<K>>,
    rollouts: Store<DeserializeGuard<Rollout>>,
    deleted: UnboundedSender<RolloutRef>,
) -> impl Fn(&watcher::Event<K>)
where
    K: Resource<DynamicType = ()>,
{
    move |event| {
        index.apply(event);
        match event {
            watcher::Event::Delete(obj) => {
                if let Some(rollout) = controlling_rollout(obj) {
                    let _ = deleted.unbounded_send(rollout);
                }
            }
            watcher::Event::InitDone => {
                for rollout in rollouts.state() {
                    let _ = deleted.unbounded_send(ObjectRef::from_obj(&*rollout));
                }
            }
            _ => {}
        }
    }
}

/// Takes deleted Rollouts out of the phase gauge. A Rollout deleted without finalizers is gone
/// from the cache before any reconcile could see it go, and one deleted while the watch was down
/// leaves no Delete event at all: the relist that follows names only the Rollouts that still
/// exist, so at its end every other one is forgotten.
fn forget_deleted(metrics: Arc<Metrics>) -> impl Fn(&watcher::Event<DeserializeGuard<Rollout>>) + Send + Sync {
    let listed = std::sync::Mutex::new(None::<std::collections::BTreeSet<String>>);
    move |event| {
        let key = |rollout: &DeserializeGuard<Rollout>| Metrics::rollout_key(rollout.meta());
        let mut listed = listed.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Delete(rollout) => metrics.set_phase(&key(rollout), None),
            watcher::Event::Init => *listed = Some(std::collections::BTreeSet::new()),
            watcher::Event::InitApply(rollout) => {
                if let Some(keys) = listed.as_mut() {
                    keys.insert(key(rollout));
                }
            }
            watcher::Event::InitDone => {
                if let Some(keys) = listed.take() {
                    metrics.retain_phases(|key| keys.contains(key));
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }
}

/// Reconciles the Rollouts that name a deleted Service or Deployment.
fn trigger_naming_rollouts<K: Resource>(
    rollouts: Arc<Index<DeserializeGuard<Rollout>>>,
    kind: &'static str,
    deleted: UnboundedSender<RolloutRef>,
) -> impl Fn(&watcher::Event<K>) {
    move |event| {
        if let watcher::Event::Delete(obj) = event {
            for rollout in rollouts.get(&key_of(obj, kind)) {
                let _ = deleted.unbounded_send(rollout);
            }
        }
    }
}

/// Runs the Rollout controller until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let ns = &settings.namespace;
    let rollouts = api::<DeserializeGuard<Rollout>>(&client, ns);
    if let Err(e) = api::<Rollout>(&client, ns).list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!("cannot list Rollouts ({e}): are the CRDs installed? kubectl apply -f crds/");
    }

    let rs_index = Arc::new(Index::new(controller_uid));
    let ar_index = Arc::new(Index::new(controller_uid));
    let rollout_index = Arc::new(Index::new(named_objects));
    // Deletions reach the controller through this channel.
    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded::<RolloutRef>();
    let shard_rollouts = watcher::Config::default().labels(&settings.shard.selector());
    let (rollout_store, rollout_events, rollout_driver) = shared_cache(rollouts, shard_rollouts, {
        let index = rollout_index.clone();
        let forget = forget_deleted(metrics.clone());
        move |event: &watcher::Event<DeserializeGuard<Rollout>>| {
            index.apply(event);
            forget(event);
        }
    });
    let (rs_store, rs_events, rs_driver) = shared_cache(
        api::<ReplicaSet>(&client, ns),
        watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL),
        index_and_trigger_owner(rs_index.clone(), rollout_store.clone(), deleted_tx.clone()),
    );
    let (svc_store, svc_events, svc_driver) = shared_cache(
        api::<Service>(&client, ns),
        watcher::Config::default(),
        trigger_naming_rollouts(rollout_index.clone(), "Service", deleted_tx.clone()),
    );
    let (ar_store, ar_events, ar_driver) = shared_cache(
        api::<AnalysisRun>(&client, ns),
        watcher::Config::default(),
        index_and_trigger_owner(ar_index.clone(), rollout_store.clone(), deleted_tx.clone()),
    );
    let (dep_store, dep_events, dep_driver) = shared_cache(
        api::<Deployment>(&client, ns),
        watcher::Config::default(),
        trigger_naming_rollouts(rollout_index.clone(), "Deployment", deleted_tx.clone()),
    );
    let (at_store, _, at_driver) =
        shared_cache(api::<AnalysisTemplate>(&client, ns), watcher::Config::default(), |_: &watcher::Event<_>| {});
    drop(deleted_tx);
    let (cat_reader, cat_writer) = reflector::store();
    let cat_driver = watcher(Api::<ClusterAnalysisTemplate>::all(client.clone()), watcher::Config::default())
        .backoff(watch_backoff())
        .modify(slim)
        .reflect(cat_writer)
        .for_each(|_| futures::future::ready(()));
    for driver in [
        Box::pin(rollout_driver) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        Box::pin(rs_driver),
        Box::pin(svc_driver),
        Box::pin(ar_driver),
        Box::pin(dep_driver),
        Box::pin(at_driver),
        Box::pin(cat_driver),
    ] {
        tokio::spawn(driver);
    }
    // Plan only on complete caches: a half-filled cache would look like missing ReplicaSets.
    for (what, ready_fut) in [
        (
            "Rollouts",
            Box::pin(rollout_store.wait_until_ready())
                as std::pin::Pin<Box<dyn Future<Output = Result<(), reflector::store::WriterDropped>> + Send>>,
        ),
        ("ReplicaSets", Box::pin(rs_store.wait_until_ready())),
        ("Services", Box::pin(svc_store.wait_until_ready())),
        ("AnalysisRuns", Box::pin(ar_store.wait_until_ready())),
        ("Deployments", Box::pin(dep_store.wait_until_ready())),
        ("AnalysisTemplates", Box::pin(at_store.wait_until_ready())),
        ("ClusterAnalysisTemplates", Box::pin(cat_reader.wait_until_ready())),
    ] {
        ready_fut.await.map_err(|e| anyhow::anyhow!("cache of {what} stopped: {e}"))?;
    }
    tracing::info!("caches synced");

    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "stepwise-controller".into(), instance: Some(settings.identity.clone()) },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: Stores {
            replica_sets: rs_store,
            replica_sets_by_owner: rs_index,
            services: svc_store,
            analysis_runs: ar_store.clone(),
            analysis_runs_by_owner: ar_index,
            deployments: dep_store,
            rollouts_by_reference: rollout_index.clone(),
        },
        stores_analysis: AnalysisStores { templates: at_store, cluster_templates: cat_reader },
        recorder,
        metrics,
        limiter: Limiter::new(settings.qps, settings.burst),
        router_plugins: settings.router_plugins.clone(),
        routers: settings.routers.clone(),
    });

    let (shutdown_rollouts, shutdown_runs, shutdown_notifier) = {
        let shared = shutdown.shared();
        (shared.clone(), shared.clone(), shared)
    };
    let notifier = crate::notify::run(
        client.clone(),
        rollout_store.clone(),
        settings.notifications.clone(),
        ctx.metrics.clone(),
        ctx.recorder.clone(),
        shutdown_notifier,
    );
    let runs = run_controller(
        &client,
        &settings,
        RunSources {
            shared: ctx.clone(),
            runs: ar_store.clone(),
            run_events: ar_events.clone(),
            runs_by_owner: ctx.stores.analysis_runs_by_owner.clone(),
            rollouts: rollout_store.clone(),
            rollout_events: rollout_events.clone(),
        },
        shutdown_runs,
    );
    let controller = Controller::for_shared_stream(rollout_events, rollout_store);
    let by_service = rollout_index.clone();
    let by_deployment = rollout_index;
    ready.store(true, Ordering::Relaxed);
    let rollouts = controller
        .reconcile_on(deleted_rx)
        .owns_shared_stream(rs_events)
        .owns_shared_stream(ar_events)
        .watches_shared_stream(svc_events, move |svc: Arc<Service>| by_service.get(&key_of(&*svc, "Service")))
        .watches_shared_stream(dep_events, move |dep: Arc<Deployment>| by_deployment.get(&key_of(&*dep, "Deployment")))
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown_rollouts)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
            futures::future::ready(())
        });
    futures::join!(rollouts, runs, notifier);
    tracing::info!("controllers stopped");
    Ok(())
}

/// What the AnalysisRun controller reads: the caches it shares with the Rollout controller.
struct RunSources {
    shared: Arc<Context>,
    runs: Store<AnalysisRun>,
    run_events: reflector::ReflectHandle<AnalysisRun>,
    runs_by_owner: Arc<Index<AnalysisRun>>,
    rollouts: Store<DeserializeGuard<Rollout>>,
    rollout_events: reflector::ReflectHandle<DeserializeGuard<Rollout>>,
}

/// The AnalysisRun controller, on the same cache of runs as the Rollout controller, woken also by
/// the Jobs its measurements own, and by its Rollouts: a Rollout that moves into this shard
/// brings its unfinished runs with it.
fn run_controller(
    client: &Client,
    settings: &Settings,
    sources: RunSources,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> + Send {
    let secrets: Arc<dyn SecretStore> = Arc::new(KubeSecrets::new(client.clone()));
    let home = &settings.home_namespace;
    let providers = Providers::default()
        .with(PrometheusProvider::new(settings.prometheus_address.clone()))
        .with(DatadogProvider::new(secrets.clone(), home).with_environment(|key| std::env::var(key).ok()))
        .with(NewRelicProvider::new(secrets.clone(), home))
        .with(WavefrontProvider::new(secrets.clone(), home))
        .with(InfluxdbProvider::new(secrets, home))
        .with(CloudWatchProvider::from_env())
        .with(GraphiteProvider::new())
        .with(SkywalkingProvider::new())
        .with(KayentaProvider::new())
        .with(WebProvider::new())
        .with(JobProvider::new(client.clone()))
        .with(settings.kubernetes_metrics.clone())
        .with(PluginProvider::new(
            settings.metric_plugins.clone(),
            Duration::from_secs(stepwise_metrics::plugin::DEFAULT_TIMEOUT_SECONDS),
        ));
    let RunSources { shared, runs, run_events, runs_by_owner, rollouts, rollout_events } = sources;
    let ctx = Arc::new(AnalysisContext::new(shared, providers, settings.shard.clone(), rollouts));
    let unfinished_runs_of = {
        let runs = runs.clone();
        move |rollout: Arc<DeserializeGuard<Rollout>>| {
            let uid = rollout.meta().uid.clone().unwrap_or_default();
            let unfinished = |run: &ObjectRef<AnalysisRun>| {
                runs.get(run).is_some_and(|run| run.status.as_ref().and_then(|s| s.completed_at.as_ref()).is_none())
            };
            runs_by_owner.get(&uid).into_iter().filter(unfinished).collect::<Vec<_>>()
        }
    };
    Controller::for_shared_stream(run_events, runs)
        .owns(api::<Job>(client, &settings.namespace), watcher::Config::default().labels(ANALYSIS_RUN_LABEL))
        .watches_shared_stream(rollout_events, unfinished_runs_of)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_run, run_error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error of an AnalysisRun");
            }
            futures::future::ready(())
        })
}

/// The index key of an object a Rollout names.
/// The index key of a Service or Deployment that changed.
fn key_of<K: Resource>(obj: &K, kind: &str) -> String {
    let meta = obj.meta();
    named_key(meta.namespace.as_deref(), kind, meta.name.as_deref().unwrap_or_default())
}

/// A Rollout's index keys: the Services and the Deployment (workloadRef) it names.
fn named_objects(guard: &DeserializeGuard<Rollout>) -> Vec<String> {
    let Ok(rollout) = &guard.0 else { return Vec::new() };
    let ns = rollout.metadata.namespace.as_deref();
    let services = rollout.spec.strategy.service_names().into_iter().map(|name| named_key(ns, "Service", name));
    let deployment = rollout.spec.workload_ref.as_ref().map(|w| named_key(ns, "Deployment", &w.name));
    services.chain(deployment).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(yaml: &str) -> DeserializeGuard<Rollout> {
        DeserializeGuard(Ok(serde_yaml::from_str(yaml).expect("a valid Rollout")))
    }

    #[test]
    fn cached_objects_keep_what_the_controller_reads_and_drop_field_ownership_and_the_applied_copy() {
        let mut rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "app-1",
                "labels": {"app": "demo"},
                "annotations": {LAST_APPLIED_ANNOTATION: "{\"a whole\": \"object\"}", "stepwise.dev/revision": "2"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "demo"}}}
        }))
        .unwrap();
        slim(&mut rs);
        assert_eq!(rs.metadata.managed_fields, None);
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["stepwise.dev/revision"]);
        assert_eq!(rs.metadata.labels.unwrap_or_default().get("app").map(String::as_str), Some("demo"));
        assert_eq!(rs.spec.and_then(|s| s.replicas), Some(3));
    }

    #[test]
    fn a_rollout_is_indexed_by_every_service_and_the_deployment_it_names() {
        let canary = guard(
            "metadata: {name: a, namespace: ns}\nspec:\n  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  strategy:\n    canary: {canaryService: web-canary, stableService: web-stable}\n",
        );
        assert_eq!(named_objects(&canary), ["ns/Service/web-canary", "ns/Service/web-stable", "ns/Deployment/web"]);
        let blue_green = guard(
            "metadata: {name: b, namespace: ns}\nspec:\n  strategy:\n    blueGreen: {activeService: web, previewService: web-preview}\n",
        );
        assert_eq!(named_objects(&blue_green), ["ns/Service/web", "ns/Service/web-preview"]);
        assert_eq!(named_key(Some("ns"), "Service", "web"), "ns/Service/web");
    }
}
