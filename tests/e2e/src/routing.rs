//! Fixtures shared by the routers' e2e tests: the routers' real CRDs, routing objects as
//! dynamic objects, and the check that an abort moves traffic before pods.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::Value;
use stepwise_api::POD_TEMPLATE_HASH_LABEL;

use crate::{Env, eventually, repo_root, secs};

/// The CRDs tests/cluster/router-crds.sh installs, one of each router.
const ROUTER_CRDS: [&str; 6] = [
    "virtualservices.networking.istio.io",
    "httproutes.gateway.networking.k8s.io",
    "traefikservices.traefik.io",
    "trafficsplits.split.smi-spec.io",
    "apisixroutes.apisix.apache.org",
    "mappings.getambassador.io",
];

/// Installs the routers' CRDs once per test binary, unless they are served already (`just e2e`
/// installs them before the tests).
pub async fn router_crds(env: &Env) -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let mut served = true;
    for name in ROUTER_CRDS {
        served &= crds.get_opt(name).await?.is_some();
    }
    if served {
        return Ok(());
    }
    let result = tokio::task::spawn_blocking(|| {
        INSTALLED
            .get_or_init(|| {
                let status = std::process::Command::new(repo_root().join("tests/cluster/router-crds.sh"))
                    .status()
                    .map_err(|e| e.to_string())?;
                if status.success() { Ok(()) } else { Err(format!("router-crds.sh failed: {status}")) }
            })
            .clone()
    })
    .await?;
    result.map_err(anyhow::Error::msg)
}

/// The objects of one kind in the test's namespace, as dynamic objects.
pub fn objects(env: &Env, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(env.client.clone(), &env.ns, &resource)
}

/// Creates `object` and returns it as stored, with the defaults its CRD's schema adds (Gateway
/// API defaults a backendRef's kind, group and weight, for instance).
pub async fn given_object(api: &Api<DynamicObject>, object: Value) -> anyhow::Result<Value> {
    let created = api.create(&PostParams::default(), &serde_json::from_value(object)?).await?;
    Ok(serde_json::to_value(created)?)
}

/// The object with its weights taken out: what must never change.
pub fn without_weights(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| *k != "weight").map(|(k, v)| (k.clone(), without_weights(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_weights).collect()),
        other => other.clone(),
    }
}

#[derive(Default, Debug)]
struct AbortOrder {
    weight_zero_at: Option<u64>,
    scaled_down_at: Option<u64>,
}

/// Runs `abort` (which aborts and waits for its end) while watching the routing objects of `api`
/// and the ReplicaSets, and checks from the API server's own resource versions that an object
/// carried canary weight 0 (`canary_weight` reads it) before the canary's ReplicaSet, `canary`,
/// went below `canary_pods`.
pub async fn check_traffic_leaves_before_pods<W, F, Fut>(
    env: &Env,
    api: Api<DynamicObject>,
    canary_weight: W,
    canary: String,
    canary_pods: i32,
    abort: F,
) -> anyhow::Result<()>
where
    W: Fn(&Value) -> Option<i64> + Send + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let order = Arc::new(Mutex::new(AbortOrder::default()));
    let rv = |meta: &kube::api::ObjectMeta| meta.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
    let objects = {
        let order = order.clone();
        watcher(api, watcher::Config::default()).for_each(move |event| {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event
                && let Ok(value) = serde_json::to_value(&o)
                && canary_weight(&value) == Some(0)
            {
                let mut order = order.lock().unwrap();
                order.weight_zero_at = order.weight_zero_at.or(rv(&o.metadata));
            }
            futures::future::ready(())
        })
    };
    let replica_sets = {
        let order = order.clone();
        let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
        watcher(api, watcher::Config::default()).for_each(move |event| {
            if let Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) = event
                && rs.labels().get(POD_TEMPLATE_HASH_LABEL) == Some(&canary)
                && rs.spec.as_ref().and_then(|s| s.replicas).is_some_and(|r| r < canary_pods)
            {
                let mut order = order.lock().unwrap();
                order.scaled_down_at = order.scaled_down_at.or(rv(&rs.metadata));
            }
            futures::future::ready(())
        })
    };
    let watches = [tokio::spawn(objects), tokio::spawn(replica_sets)];
    // The watches have listed before the abort.
    tokio::time::sleep(secs(1)).await;

    abort().await?;
    eventually("the watches to see the abort", secs(10), || {
        let order = order.clone();
        async move {
            let order = order.lock().unwrap();
            Ok(order.weight_zero_at.is_some() && order.scaled_down_at.is_some())
        }
    })
    .await?;
    for w in watches {
        w.abort();
    }
    let order = order.lock().unwrap();
    assert!(order.weight_zero_at < order.scaled_down_at, "the weight is 0 before the canary is scaled down: {order:?}");
    Ok(())
}
