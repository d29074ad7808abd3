//! workloadRef and restart on the local control plane.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_ref_takes_the_template_and_selector_from_a_deployment() -> anyhow::Result<()> {
    let env = Env::new("workloadref").await?;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let deployment = json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}
        }
    });
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment)?).await?;
    let rollout = json!({
        "apiVersion": "stepwise.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "app"},
        "spec": {
            "replicas": 2,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        }
    });
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_json::from_value(rollout)?).await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(2, 0, secs(30)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.selector.as_deref(), Some("app=web"), "the selector comes from the Deployment");

    // A new template in the Deployment is a new version of the Rollout.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "example.invalid/web:2"}]}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 1, secs(30)).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_replaces_every_pod_created_before_restart_at() -> anyhow::Result<()> {
    let env = Env::new("restart").await?;
    env.given_rollout(3, "    canary: {maxUnavailable: 1}\n").await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let before: Vec<String> = pods
        .list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(before.len(), 3);
    // Pod creation times have a resolution of one second.
    tokio::time::sleep(secs(1)).await;
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    api.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"restartAt": at}}))).await?;
    env.then("restartedAt recorded", secs(90), |ro| ro.status.as_ref().and_then(|s| s.restarted_at.as_ref()).is_some())
        .await?;
    eventually("3 new ready pods", secs(30), || async {
        let now: Vec<Pod> = pods.list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL)).await?.items;
        let fresh = now
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !before.contains(p.metadata.name.as_ref().unwrap()))
            .count();
        Ok(fresh == 3 && now.len() == 3)
    })
    .await?;
    env.then_phase(RolloutPhase::Healthy, secs(30)).await?;
    env.cleanup().await
}
