//! Going back to older versions, and the Deployment of a workloadRef, on the local control plane:
//! `rollbackWindow` and `workloadRef.scaleDown`.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};

const STEPS: &str = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

/// Releases `image` through its steps with a full promotion, until Healthy.
async fn release(env: &Env, image: &str) -> anyhow::Result<()> {
    env.when_image(image).await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote_full().await?;
    env.then("promoted", secs(60), |ro| {
        let st = ro.status.as_ref();
        st.and_then(|s| s.stable_rs.as_ref()).is_some()
            && st.and_then(|s| s.stable_rs.as_ref()) == st.and_then(|s| s.current_pod_hash.as_ref())
    })
    .await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await
}

/// demo:1, demo:2 and demo:3 released in turn, with a rollback window of `revisions`.
async fn three_versions(env: &Env, revisions: i32) -> anyhow::Result<()> {
    env.given_rollout(2, STEPS).await?;
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let window = json!({"spec": {"rollbackWindow": {"revisions": revisions}}});
    api.patch(&env.rollout, &PatchParams::default(), &Patch::Merge(window)).await?;
    // ReplicaSets are ordered by creation time, which has a resolution of one second.
    for image in ["example.invalid/demo:2", "example.invalid/demo:3"] {
        tokio::time::sleep(secs(1)).await;
        release(env, image).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_within_the_rollback_window_is_healthy_without_walking_the_steps() -> anyhow::Result<()> {
    let env = Env::new("rbwindow").await?;
    three_versions(&env, 2).await?;
    // Back to demo:2, the version just before the stable one.
    env.when_undo().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.stable_rs, st.current_pod_hash, "demo:2 is stable again");
    assert_eq!(st.current_step_index, Some(2), "no step was walked");
    assert!(st.pause_conditions.is_empty());
    let events = env.events().await?;
    assert!(
        events.iter().any(|(r, m)| r == "SkipSteps" && m.starts_with("Rollback within window")),
        "the skip is told: {events:?}"
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undo_beyond_the_rollback_window_walks_the_steps() -> anyhow::Result<()> {
    let env = Env::new("rbwindow-out").await?;
    three_versions(&env, 1).await?;
    // Back to demo:1: demo:2 lies between it and the stable demo:3.
    env.when_image("example.invalid/demo:1").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let st = env.get().await?.status.unwrap();
    assert_ne!(st.stable_rs, st.current_pod_hash);
    assert_eq!(st.promote_full, None);
    env.cleanup().await
}

/// A Deployment `web` with `replicas` pods, and a Rollout that takes its template with `scale_down`.
async fn given_workload(env: &Env, replicas: i32, scale_down: &str) -> anyhow::Result<Api<Deployment>> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let deployment = json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}
        }
    });
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment)?).await?;
    eventually("the Deployment's pods", secs(60), || async {
        let d = deployments.get("web").await?;
        Ok(d.status.and_then(|s| s.available_replicas) == Some(replicas))
    })
    .await?;
    let rollout = json!({
        "apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "app"},
        "spec": {
            "replicas": replicas,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "scaleDown": scale_down},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        }
    });
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_json::from_value(rollout)?).await?;
    Ok(deployments)
}

async fn deployment_replicas(deployments: &Api<Deployment>) -> anyhow::Result<Option<i32>> {
    Ok(deployments.get("web").await?.spec.and_then(|s| s.replicas))
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_ref_scale_down_onsuccess_scales_the_deployment_to_zero_once_healthy() -> anyhow::Result<()> {
    let env = Env::new("wl-onsuccess").await?;
    let deployments = given_workload(&env, 2, "onsuccess").await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    eventually("the Deployment scaled to 0", secs(30), || async {
        Ok(deployment_replicas(&deployments).await? == Some(0))
    })
    .await?;
    let events = env.events().await?;
    assert!(events.iter().any(|(_, m)| m == "Scaled down Deployment web from 2 to 0"), "{events:?}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_ref_scale_down_progressively_hands_the_pods_over_to_the_rollout() -> anyhow::Result<()> {
    let env = Env::new("wl-progressively").await?;
    let deployments = given_workload(&env, 3, "progressively").await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    eventually("the Deployment scaled to 0", secs(30), || async {
        Ok(deployment_replicas(&deployments).await? == Some(0))
    })
    .await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.available_replicas, Some(3));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_ref_scale_down_never_leaves_the_deployment_alone() -> anyhow::Result<()> {
    let env = Env::new("wl-never").await?;
    let deployments = given_workload(&env, 1, "never").await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    tokio::time::sleep(secs(3)).await;
    assert_eq!(deployment_replicas(&deployments).await?, Some(1));
    env.cleanup().await
}
