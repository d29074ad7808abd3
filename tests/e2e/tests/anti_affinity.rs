//! `antiAffinity` on the local control plane, with the real scheduler and three kwok nodes: the
//! canary's pods are placed only on nodes without a stable pod, and the release completes.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};

/// The nodes the pods of `hash` are on, once all `count` of them are scheduled.
async fn nodes_of(env: &Env, hash: &str, count: usize) -> anyhow::Result<BTreeSet<String>> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let selector = format!("{POD_TEMPLATE_HASH_LABEL}={hash}");
    let scheduled = || async {
        let pods = api.list(&ListParams::default().labels(&selector)).await?.items;
        anyhow::Ok(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                .collect::<Vec<_>>(),
        )
    };
    eventually(&format!("{count} scheduled pods of {hash}"), secs(30), || async {
        Ok(scheduled().await?.len() == count)
    })
    .await?;
    Ok(scheduled().await?.into_iter().collect())
}

const REQUIRED: &str = "    canary:\n      steps: [{setWeight: 34}, {pause: {}}]\n      antiAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution: {}\n";

#[tokio::test(flavor = "multi_thread")]
async fn canary_pods_are_scheduled_only_on_nodes_without_a_stable_pod() -> anyhow::Result<()> {
    let env = Env::new("anti-affinity").await?;
    env.given_rollout(2, REQUIRED).await?;
    let stable = env.get().await?.status.unwrap().stable_rs.unwrap();
    let stable_nodes = nodes_of(&env, &stable, 2).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let canary = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    let canary_nodes = nodes_of(&env, &canary, 1).await?;
    assert!(
        canary_nodes.is_disjoint(&stable_nodes),
        "the canary's node {canary_nodes:?} runs no stable pod ({stable_nodes:?})"
    );
    let rs = env
        .replica_sets()
        .await?
        .into_iter()
        .find(|rs| rs.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL)) == Some(&canary))
        .expect("the canary's ReplicaSet");
    let template = serde_json::to_value(rs.spec.unwrap().template.unwrap())?;
    let term = template
        .pointer("/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/0")
        .cloned()
        .unwrap_or_default();
    assert_eq!(term["labelSelector"]["matchExpressions"][0]["values"][0], stable.as_str(), "{template}");
    let rollout_template = serde_json::to_value(env.get().await?.spec.template)?;
    assert!(rollout_template.pointer("/spec/affinity").is_none(), "the Rollout's template is left as written");

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.stable_rs.as_deref(), Some(canary.as_str()), "promoted without a new version");
    env.cleanup().await
}
