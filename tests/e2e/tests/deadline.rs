//! The progress deadline: pods that never become ready (here: no node matches their selector).

use serde_json::json;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, secs};

const STRATEGY: &str = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

async fn unschedulable_update(env: &Env) -> anyhow::Result<()> {
    env.when_template(json!({"spec": {"nodeSelector": {"stepwise.dev/no-such-node": "true"}}})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_progress_deadline_marks_the_rollout_degraded_without_aborting() -> anyhow::Result<()> {
    let env = Env::new("deadline").await?;
    env.given_rollout(2, STRATEGY).await?;
    let ro = env.get().await?;
    let stable = ro.status.unwrap().stable_rs.unwrap();
    env.when_paused(false).await?;
    let api: kube::Api<stepwise_api::Rollout> = kube::Api::namespaced(env.client.clone(), &env.ns);
    api.patch("app", &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"progressDeadlineSeconds": 5}})))
        .await?;
    unschedulable_update(&env).await?;
    env.then_phase(RolloutPhase::Degraded, secs(40)).await?;
    let st = env.get().await?.status.unwrap();
    assert!(st.message.as_deref().unwrap_or_default().starts_with("ProgressDeadlineExceeded"), "{:?}", st.message);
    assert_ne!(st.abort, Some(true), "without progressDeadlineAbort the rollout is not aborted");
    // maxUnavailable rounds 25% of 2 down to 0: no stable pod goes while the canary is not
    // available, so the service keeps full capacity throughout.
    assert_eq!(env.ready_pods(&stable).await?, 2, "the stable keeps all its pods");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_deadline_abort_aborts_and_returns_to_stable() -> anyhow::Result<()> {
    let env = Env::new("deadline-abort").await?;
    env.given_rollout(2, STRATEGY).await?;
    let api: kube::Api<stepwise_api::Rollout> = kube::Api::namespaced(env.client.clone(), &env.ns);
    api.patch(
        "app",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"progressDeadlineSeconds": 5, "progressDeadlineAbort": true}})),
    )
    .await?;
    unschedulable_update(&env).await?;
    env.then("aborted", secs(40), |ro| ro.status.as_ref().and_then(|s| s.abort) == Some(true)).await?;
    env.then_phase(RolloutPhase::Degraded, secs(10)).await?;
    env.then_pods(0, 2, secs(30)).await?;
    let st = env.get().await?.status.unwrap();
    assert!(st.message.as_deref().unwrap_or_default().contains("timed out progressing"), "{:?}", st.message);
    env.cleanup().await
}
