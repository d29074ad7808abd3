//! Role metadata (canaryMetadata/stableMetadata, previewMetadata/activeMetadata) on the local
//! control plane: the pods of each role carry its labels and annotations, and when the role
//! changes the same pods (same names and UIDs, no restart) carry the new role's.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};

/// The pods of a version that are not terminating.
async fn pods_of(env: &Env, hash: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pods = api.list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}"))).await?.items;
    Ok(pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect())
}

/// (name, uid) of each pod.
fn identities(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter().map(|p| (p.name_any(), p.uid().unwrap_or_default())).collect()
}

/// The pods of `hash` number `count`, all with label `role` = `value` (None: without it), and
/// the annotation `annotation` present or not.
async fn then_role(
    env: &Env,
    hash: &str,
    count: usize,
    value: Option<&str>,
    annotation: (&str, bool),
) -> anyhow::Result<()> {
    let what = format!("{count} pods of {hash} with role {value:?} and {annotation:?}");
    eventually(&what, secs(30), || async {
        let pods = pods_of(env, hash).await?;
        Ok(pods.len() == count
            && pods.iter().all(|p| {
                p.labels().get("role").map(String::as_str) == value
                    && p.annotations().contains_key(annotation.0) == annotation.1
            }))
    })
    .await
}

/// The `role` label of the pod template of the ReplicaSet of `hash`.
async fn template_role(env: &Env, hash: &str) -> anyhow::Result<Option<String>> {
    let api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let rs = api.list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}"))).await?.items;
    Ok(rs
        .first()
        .and_then(|rs| rs.spec.as_ref())
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get("role").cloned()))
}

const CANARY: &str = "    canary:\n      steps: [{setWeight: 50}, {pause: {}}]\n      canaryMetadata:\n        labels: {role: canary}\n        annotations: {example.com/trying: 'yes'}\n      stableMetadata:\n        labels: {role: stable}\n";

#[tokio::test(flavor = "multi_thread")]
async fn canary_pods_carry_the_canary_metadata_and_the_same_pods_take_the_stable_metadata_when_promoted()
-> anyhow::Result<()> {
    let env = Env::new("metadata-canary").await?;
    env.given_rollout(2, CANARY).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();
    then_role(&env, &blue, 2, Some("stable"), ("example.com/trying", false)).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(30)).await?;
    let green = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    assert_ne!(green, blue);
    then_role(&env, &green, 1, Some("canary"), ("example.com/trying", true)).await?;
    then_role(&env, &blue, 1, Some("stable"), ("example.com/trying", false)).await?;
    assert_eq!(template_role(&env, &green).await?.as_deref(), Some("canary"));
    let canary_pods = identities(&pods_of(&env, &green).await?);

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.stable_rs.as_deref(), Some(green.as_str()));
    assert_eq!(st.current_pod_hash.as_deref(), Some(green.as_str()), "role metadata made no new version");
    then_role(&env, &green, 2, Some("stable"), ("example.com/trying", false)).await?;
    let now = identities(&pods_of(&env, &green).await?);
    assert!(canary_pods.is_subset(&now), "the canary pods were relabelled, not replaced: {canary_pods:?} vs {now:?}");
    assert_eq!(template_role(&env, &green).await?.as_deref(), Some("stable"));
    assert_eq!(env.replica_sets().await?.len(), 2, "no ReplicaSet beyond the two versions");
    env.cleanup().await
}

const BLUE_GREEN: &str = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n      scaleDownDelaySeconds: 60\n      activeMetadata:\n        labels: {role: active}\n      previewMetadata:\n        labels: {role: preview}\n        annotations: {example.com/preview: 'yes'}\n";

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_pods_carry_the_preview_metadata_until_the_switch_and_the_active_metadata_after_it()
-> anyhow::Result<()> {
    let env = Env::new("metadata-bluegreen").await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    env.given_rollout(2, BLUE_GREEN).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();
    then_role(&env, &blue, 2, Some("active"), ("example.com/preview", false)).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_phase(RolloutPhase::Paused, secs(30)).await?;
    let green = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    then_role(&env, &green, 2, Some("preview"), ("example.com/preview", true)).await?;
    then_role(&env, &blue, 2, Some("active"), ("example.com/preview", false)).await?;
    let preview_pods = identities(&pods_of(&env, &green).await?);
    let blue_pods = identities(&pods_of(&env, &blue).await?);

    env.when_promote().await?;
    env.then("green promoted", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.stable_rs.clone()) == Some(green.clone())
    })
    .await?;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(green.as_str()));
    then_role(&env, &green, 2, Some("active"), ("example.com/preview", false)).await?;
    assert_eq!(identities(&pods_of(&env, &green).await?), preview_pods, "the same pods, relabelled in place");
    // Blue keeps its pods for the scale-down delay, without the active metadata.
    then_role(&env, &blue, 2, None, ("example.com/preview", false)).await?;
    assert_eq!(identities(&pods_of(&env, &blue).await?), blue_pods);
    assert_eq!(template_role(&env, &blue).await?, None);
    env.cleanup().await
}
