//! The SMI, APISIX and Ambassador routers on the local control plane, against the real CRDs of
//! smi-sdk-go, apisix-ingress-controller and Emissary-ingress (installed from their Go modules by
//! tests/cluster/router-crds.sh): the weights after every step, everything else untouched, traffic
//! back on stable before the canary loses its pods, and the examples working as documented.

use std::sync::{Arc, Mutex};

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::routing::{check_traffic_leaves_before_pods, given_object, objects, router_crds, without_weights};
use stepwise_e2e::{Env, eventually, repo_root, secs};

fn traffic_splits(env: &Env) -> Api<DynamicObject> {
    objects(env, "split.smi-spec.io", "v1alpha2", "TrafficSplit", "trafficsplits")
}

fn apisix_routes(env: &Env) -> Api<DynamicObject> {
    objects(env, "apisix.apache.org", "v2", "ApisixRoute", "apisixroutes")
}

/// Mappings as stepwise reads and writes them (v2, the CRD's storage version).
fn mappings(env: &Env) -> Api<DynamicObject> {
    objects(env, "getambassador.io", "v2", "Mapping", "mappings")
}

/// An ApisixRoute as users write them: a header rule to a preview Service, and the rule to split
/// with a host, a timeout, a plugin and ports.
fn apisix_route() -> Value {
    json!({
        "apiVersion": "apisix.apache.org/v2",
        "kind": "ApisixRoute",
        "metadata": {"name": "app"},
        "spec": {"http": [
            {"name": "preview",
             "match": {"paths": ["/*"], "exprs": [{"subject": {"scope": "Header", "name": "x-preview"}, "op": "Equal", "value": "1"}]},
             "backends": [{"serviceName": "app-preview", "servicePort": 80}]},
            {"name": "primary", "priority": 1, "timeout": {"read": "10s"},
             "match": {"hosts": ["app.example.invalid"], "paths": ["/*"]},
             "plugins": [{"name": "proxy-rewrite", "enable": true, "config": {"regex_uri": ["^/api/(.*)", "/$1"]}}],
             "backends": [
                {"serviceName": "app-stable", "servicePort": 80, "weight": 100},
                {"serviceName": "app-canary", "servicePort": 80, "weight": 0}
             ]}
        ]}
    })
}

/// A Mapping as users of Emissary 3 write them (v3alpha1, with fields v2 shares, since the test
/// cluster converts between versions only by relabelling): a prefix, a rewrite, a host, a
/// timeout and the stable Service with its port.
fn base_mapping() -> Value {
    json!({
        "apiVersion": "getambassador.io/v3alpha1",
        "kind": "Mapping",
        "metadata": {"name": "app"},
        "spec": {"prefix": "/app/", "rewrite": "/", "host": "app.example.invalid", "timeout_ms": 10000,
                 "service": "app-stable:80"}
    })
}

#[derive(Clone, Copy)]
enum Router {
    /// The weight lives in the TrafficSplit stepwise generates, named as the Rollout.
    Smi,
    Apisix,
    /// The weight lives in the canary Mapping stepwise generates beside the base one.
    Ambassador,
}

impl Router {
    /// The API of the objects that carry the weight.
    fn api(self, env: &Env) -> Api<DynamicObject> {
        match self {
            Router::Smi => traffic_splits(env),
            Router::Apisix => apisix_routes(env),
            Router::Ambassador => mappings(env),
        }
    }

    /// (canary, stable) weights `object` carries; (None, None) for an object that carries none
    /// (the base Mapping).
    fn weights(self, object: &Value) -> (Option<i64>, Option<i64>) {
        match self {
            Router::Smi => {
                let weight = |service: &str| {
                    object.pointer("/spec/backends").and_then(Value::as_array).and_then(|backends| {
                        backends
                            .iter()
                            .find(|b| b["service"] == service)
                            .and_then(|b| b.get("weight"))
                            .and_then(Value::as_i64)
                    })
                };
                (weight("app-canary"), weight("app-stable"))
            }
            Router::Apisix => (
                object.pointer("/spec/http/1/backends/1/weight").and_then(Value::as_i64),
                object.pointer("/spec/http/1/backends/0/weight").and_then(Value::as_i64),
            ),
            Router::Ambassador => {
                let canary = object.pointer("/spec/weight").and_then(Value::as_i64);
                (canary, canary.map(|w| 100 - w))
            }
        }
    }

    /// The name of the object that carries the weight, and whether stepwise generates it (absent
    /// until the first write, which sends nothing to the canary).
    fn weighted_name(self, env: &Env) -> (String, bool) {
        match self {
            Router::Smi => (env.rollout.clone(), true),
            Router::Apisix => (env.rollout.clone(), false),
            Router::Ambassador => (format!("{}-canary", env.rollout), true),
        }
    }

    /// Waits until the router splits `canary` / 100 − `canary`, then checks what else it wrote:
    /// for APISIX, nothing but the two weights of the ApisixRoute as `created`; for SMI, a
    /// TrafficSplit owned by the Rollout of the root Service `root`; for Ambassador, a canary
    /// Mapping copied from the base Mapping `created`, which is untouched.
    async fn then_weight(self, env: &Env, created: &Value, root: &str, canary: i64) -> anyhow::Result<()> {
        let api = self.api(env);
        let (name, generated) = self.weighted_name(env);
        let seen = Arc::new(Mutex::new(None));
        let result = eventually(&format!("canary weight {canary}"), secs(20), || {
            let (api, seen, name) = (api.clone(), seen.clone(), name.clone());
            async move {
                let weights = match api.get_opt(&name).await? {
                    Some(object) => self.weights(&serde_json::to_value(object)?),
                    None if generated => (Some(0), Some(100)),
                    None => anyhow::bail!("{name} is gone"),
                };
                *seen.lock().unwrap() = Some(weights);
                Ok(weights == (Some(canary), Some(100 - canary)))
            }
        })
        .await;
        if let Err(e) = result {
            anyhow::bail!("{e}: (canary, stable) = {:?}", seen.lock().unwrap());
        }
        let Some(object) = api.get_opt(&name).await? else { return Ok(()) };
        let object = serde_json::to_value(object)?;
        match self {
            Router::Apisix => assert_eq!(
                without_weights(&object["spec"]),
                without_weights(&created["spec"]),
                "only the weights of the split rule changed"
            ),
            Router::Smi => {
                assert_eq!(
                    object["spec"],
                    json!({"service": root, "backends": [
                        {"service": "app-canary", "weight": canary}, {"service": "app-stable", "weight": 100 - canary}
                    ]})
                );
                assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "Rollout");
            }
            Router::Ambassador => {
                let base = serde_json::to_value(api.get(&env.rollout).await?)?;
                assert_eq!(base["spec"], created["spec"], "the base Mapping is never written");
                let mut expected = created["spec"].clone();
                let port = expected["service"].as_str().and_then(|s| s.split_once(':')).map(|(_, p)| p.to_string());
                expected["service"] = json!(format!("app-canary:{}", port.unwrap_or_default()));
                expected["weight"] = json!(canary);
                assert_eq!(object["spec"], expected, "the base Mapping's spec, to the canary Service");
                assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "Rollout");
            }
        }
        Ok(())
    }
}

const STEPS: &str =
    "      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n";

/// A namespace with the two Services, the router's object (APISIX's ApisixRoute, Ambassador's
/// base Mapping; SMI reads none) and a Healthy Rollout of 5 pods routed through it; and the
/// object as created.
async fn routed_env(name: &str, router: Router, routing: &str) -> anyhow::Result<(Env, Value)> {
    let env = Env::new(name).await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    let created = match router {
        Router::Smi => Value::Null,
        Router::Apisix => given_object(&apisix_routes(&env), apisix_route()).await?,
        Router::Ambassador => {
            let v3 = objects(&env, "getambassador.io", "v3alpha1", "Mapping", "mappings");
            given_object(&v3, base_mapping()).await?
        }
    };
    let strategy = format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      abortScaleDownDelaySeconds: 1\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n{routing}{STEPS}"
    );
    env.given_rollout(5, &strategy).await?;
    Ok((env, created))
}

/// Walks a canary through its steps, checking the router's objects after each.
async fn walk(env: &Env, router: Router, created: &Value) -> anyhow::Result<()> {
    router.then_weight(env, created, "app-stable", 0).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 5, secs(30)).await?;
    router.then_weight(env, created, "app-stable", 20).await?;

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    env.then_pods(3, 5, secs(30)).await?;
    router.then_weight(env, created, "app-stable", 60).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(5, 0, secs(60)).await?;
    router.then_weight(env, created, "app-stable", 0).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(env.service_hash("app-stable").await?, st.current_pod_hash);
    Ok(())
}

const SMI: &str = "        smi: {}\n";
const APISIX: &str = "        apisix:\n          route: {name: app, rules: [primary]}\n";
const AMBASSADOR: &str = "        ambassador:\n          mappings: [app]\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_smi_canary_generates_a_traffic_split_with_the_weights_at_every_step() -> anyhow::Result<()> {
    let (env, created) = routed_env("smi-walk", Router::Smi, SMI).await?;
    walk(&env, Router::Smi, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apisix_canary_sets_the_apisix_route_backend_weights_at_every_step() -> anyhow::Result<()> {
    let (env, created) = routed_env("apisix-walk", Router::Apisix, APISIX).await?;
    walk(&env, Router::Apisix, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ambassador_canary_generates_a_canary_mapping_with_the_weight_at_every_step() -> anyhow::Result<()> {
    let (env, created) = routed_env("ambassador-walk", Router::Ambassador, AMBASSADOR).await?;
    walk(&env, Router::Ambassador, &created).await?;
    env.cleanup().await
}

/// What the watches saw, in the API server's order (resourceVersions): when the canary's weight
/// reached 0, and when its ReplicaSet was first scaled down.
/// Aborts at step 3 and checks, from watches of the router's objects and the ReplicaSets, that
/// the weight was 0 before the canary's ReplicaSet was scaled down.
async fn abort_moves_traffic_before_pods(env: &Env, router: Router, created: &Value) -> anyhow::Result<()> {
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    env.then_pods(3, 5, secs(30)).await?;
    router.then_weight(env, created, "app-stable", 60).await?;
    let canary = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    check_traffic_leaves_before_pods(
        env,
        router.api(env),
        move |o| router.weights(o).0,
        canary,
        3,
        || async {
            env.when_abort().await?;
            env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
            env.then_pods(0, 5, secs(60)).await?;
            router.then_weight(env, created, "app-stable", 0).await
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_smi_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let (env, created) = routed_env("smi-abort", Router::Smi, SMI).await?;
    abort_moves_traffic_before_pods(&env, Router::Smi, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apisix_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let (env, created) = routed_env("apisix-abort", Router::Apisix, APISIX).await?;
    abort_moves_traffic_before_pods(&env, Router::Apisix, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ambassador_abort_sends_all_traffic_to_stable_before_the_canary_is_scaled_down() -> anyhow::Result<()> {
    let (env, created) = routed_env("ambassador-abort", Router::Ambassador, AMBASSADOR).await?;
    abort_moves_traffic_before_pods(&env, Router::Ambassador, &created).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traffic_split_a_person_made_is_never_replaced() -> anyhow::Result<()> {
    let env = Env::new("smi-taken").await?;
    router_crds(&env).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    let theirs = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {"name": "app"},
        "spec": {"service": "app-stable", "backends": [{"service": "app-stable", "weight": 100}]}
    });
    let theirs = given_object(&traffic_splits(&env), theirs).await?;
    let yaml = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        smi: {}\n      steps:\n      - setWeight: 20\n";
    let rollouts: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    rollouts.create(&PostParams::default(), &serde_yaml::from_str(yaml)?).await?;
    let expected = format!("TrafficSplit {}/app exists and is not owned by this Rollout", env.ns);
    env.then("a ReconcileError naming the TrafficSplit", secs(60), |ro| {
        ro.status.as_ref().and_then(|s| s.message.clone()).is_some_and(|m| m.contains(&expected))
    })
    .await?;
    let now = serde_json::to_value(traffic_splits(&env).get("app").await?)?;
    assert_eq!(now["spec"], theirs["spec"], "their TrafficSplit is untouched");
    env.cleanup().await
}

/// The API of a kind the examples hold.
fn api_of(env: &Env, api_version: &str, kind: &str) -> anyhow::Result<Api<DynamicObject>> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Service" => "services",
        "Rollout" => "rollouts",
        "ApisixRoute" => "apisixroutes",
        "Mapping" => "mappings",
        other => anyhow::bail!("no API for {other} in the examples"),
    };
    Ok(objects(env, group, version, kind, plural))
}

/// Applies `examples/<file>` as a user would, then walks its canary to the first pause and
/// promotes it: the example in docs/routers.md works as written. `root` is the root Service the
/// SMI example's TrafficSplit divides.
async fn the_example_shifts_traffic(name: &str, file: &str, router: Router, root: &str) -> anyhow::Result<()> {
    let mut env = Env::new(name).await?;
    router_crds(&env).await?;
    env.rollout = "demo".into();
    let text = std::fs::read_to_string(repo_root().join("examples").join(file))?;
    let mut created = Value::Null;
    for doc in text.split("\n---\n") {
        let object: Value = serde_yaml::from_str(doc)?;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let stored = given_object(&api_of(&env, &api_version, &kind)?, object).await?;
        if matches!(kind.as_str(), "ApisixRoute" | "Mapping") {
            created = stored;
        }
    }
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let weights = |canary: i64| {
        let (env, created) = (&env, &created);
        async move {
            match router {
                // The example's Services are demo-*, the walk's app-*: read the weights only.
                Router::Smi => smi_example_weight(env, root, canary).await,
                _ => example_weight(env, router, created, canary).await,
            }
        }
    };
    weights(0).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    weights(20).await?;
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    weights(0).await?;
    env.cleanup().await
}

/// Waits until the example's TrafficSplit divides `root` as `canary` / 100 − `canary` between
/// demo-canary and demo-stable (absent before its first write, sending nothing to the canary).
async fn smi_example_weight(env: &Env, root: &str, canary: i64) -> anyhow::Result<()> {
    let want = json!({"service": root, "backends": [
        {"service": "demo-canary", "weight": canary}, {"service": "demo-stable", "weight": 100 - canary}
    ]});
    eventually(&format!("the TrafficSplit at canary weight {canary}"), secs(20), || {
        let want = want.clone();
        async move {
            Ok(match traffic_splits(env).get_opt(&env.rollout).await? {
                Some(split) => serde_json::to_value(split)?["spec"] == want,
                None => canary == 0,
            })
        }
    })
    .await
}

/// Waits until the example's ApisixRoute or canary Mapping carries `canary` (the demo-* Services
/// sit where the walk's app-* do), and checks that the ApisixRoute or base Mapping changed in its
/// weights only.
async fn example_weight(env: &Env, router: Router, created: &Value, canary: i64) -> anyhow::Result<()> {
    let (name, generated) = router.weighted_name(env);
    let api = router.api(env);
    eventually(&format!("canary weight {canary}"), secs(20), || {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let weights = match (router, api.get_opt(&name).await?) {
                (Router::Apisix, Some(route)) => {
                    let route = serde_json::to_value(route)?;
                    let weight = |service: &str| {
                        route.pointer("/spec/http/0/backends").and_then(Value::as_array).and_then(|backends| {
                            backends.iter().find(|b| b["serviceName"] == service).and_then(|b| b["weight"].as_i64())
                        })
                    };
                    (weight("demo-canary"), weight("demo-stable"))
                }
                (_, Some(object)) => router.weights(&serde_json::to_value(object)?),
                (_, None) if generated => (Some(0), Some(100)),
                (_, None) => anyhow::bail!("{name} is gone"),
            };
            Ok(weights == (Some(canary), Some(100 - canary)))
        }
    })
    .await?;
    let named = serde_json::to_value(api.get(&env.rollout).await?)?;
    assert_eq!(without_weights(&named["spec"]), without_weights(&created["spec"]), "only weights changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smi_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("smi-example", "canary-smi.yaml", Router::Smi, "demo").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apisix_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("apisix-example", "canary-apisix.yaml", Router::Apisix, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ambassador_example_shifts_traffic_as_documented() -> anyhow::Result<()> {
    the_example_shifts_traffic("ambassador-example", "canary-ambassador.yaml", Router::Ambassador, "").await
}
