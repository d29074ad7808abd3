//! The example router, registered into the controller's table at start (src/main.rs), walking a
//! canary on the local control plane: the ConfigMap its proxy would read carries each step's
//! weight, and the controller reads it back before a step goes on (`weights.verified`).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{ControllerProcess, Env, eventually, secs};

const STRATEGY: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        plugins:\n          example.dev/configmap: {configMap: app-split}\n      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n";

/// Waits until the ConfigMap sends `canary` of 100 to app-canary and the rest to app-stable.
async fn then_split(config_maps: &Api<ConfigMap>, canary: i32) -> anyhow::Result<()> {
    let wanted = [
        ("canaryWeight", canary.to_string()),
        ("stableWeight", (100 - canary).to_string()),
        ("canaryService", "app-canary".to_string()),
        ("stableService", "app-stable".to_string()),
    ];
    eventually(&format!("the ConfigMap at canary weight {canary}"), secs(60), || async {
        let data = config_maps.get("app-split").await?.data.unwrap_or_default();
        Ok(wanted.iter().all(|(key, value)| data.get(*key) == Some(value)))
    })
    .await
}

/// Waits until the Rollout is paused at `step` with `weight` read back from the ConfigMap.
async fn then_verified_at(env: &Env, step: i32, weight: i32) -> anyhow::Result<()> {
    env.then_paused_at_step(step, secs(90)).await?;
    env.then(&format!("weight {weight} verified"), secs(30), |ro| {
        let weights = ro.status.as_ref().and_then(|s| s.canary.as_ref()).and_then(|c| c.weights.as_ref());
        weights.is_some_and(|w| w.canary.weight == weight && w.verified == Some(true))
    })
    .await
}

#[tokio::test]
async fn a_router_registered_at_start_walks_a_canary_and_its_weight_is_read_back() -> anyhow::Result<()> {
    let mut env = Env::without_controller("example-router").await?;
    let controller = ControllerProcess::start_binary(
        env!("CARGO_BIN_EXE_stepwise-example-router"),
        &env.ns,
        "controller-0",
        &["--leader-elect=false"],
    )?;
    env.controllers.push(controller);
    env.given_services(&["app-stable", "app-canary"]).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    config_maps
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "app-split"}}))?)
        .await?;
    env.given_rollout(4, STRATEGY).await?;

    env.when_image("demo:2").await?;
    then_split(&config_maps, 20).await?;
    then_verified_at(&env, 1, 20).await?;

    env.when_promote().await?;
    then_split(&config_maps, 60).await?;
    then_verified_at(&env, 3, 60).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(120)).await?;
    then_split(&config_maps, 0).await?;
    let events = env.events().await?;
    assert!(
        events.iter().any(|(reason, message)| reason == "TrafficWeightUpdated" && message.ends_with("to 60")),
        "{events:?}"
    );
    env.cleanup().await
}
