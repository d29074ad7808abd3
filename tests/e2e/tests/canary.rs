//! A basic canary (no traffic router) on the local control plane.

use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, secs};

const STEPS: &str = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {duration: 2s}\n      - setWeight: 75\n      - pause: {}\n";

async fn canary_env(name: &str) -> anyhow::Result<Env> {
    let env = Env::new(name).await?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    env.given_rollout(4, STEPS).await?;
    Ok(env)
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_canary_walks_its_steps_with_the_right_pod_counts_at_every_step() -> anyhow::Result<()> {
    let env = canary_env("walk").await?;
    let first = env.get().await?.status.unwrap().stable_rs.unwrap();

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 3, secs(30)).await?;
    let new = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    assert_ne!(new, first);
    assert_eq!(
        env.service_hash("app-canary").await?.as_deref(),
        Some(new.as_str()),
        "canary Service selects the new pods"
    );
    assert_eq!(
        env.service_hash("app-stable").await?.as_deref(),
        Some(first.as_str()),
        "stable Service keeps the old pods"
    );
    let message = env.get().await?.status.unwrap().message.unwrap();
    assert!(message.contains("Paused at step 2/6"), "{message}");

    env.when_promote().await?;
    env.then_paused_at_step(5, secs(60)).await?;
    env.then_pods(3, 1, secs(30)).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(4, 0, secs(30)).await?;
    assert_eq!(
        env.service_hash("app-stable").await?.as_deref(),
        Some(new.as_str()),
        "stable Service follows the promotion"
    );

    let completed: Vec<String> =
        env.events().await?.into_iter().filter(|(r, _)| r == "RolloutStepCompleted").map(|(_, m)| m).collect();
    for i in 1..=6 {
        assert!(
            completed.iter().any(|m| m.starts_with(&format!("Rollout step {i}/6 completed"))),
            "step {i} completed: {completed:?}"
        );
    }
    // What the controller logged while reconciling names the loop and the Rollout.
    let log = env.controllers[0].log_text();
    let span = format!("reconcile{{controller=\"rollout\" namespace=\"{}\" rollout=\"app\" trace_id=", env.ns);
    assert!(log.lines().any(|l| l.contains(&span) && l.contains("created ReplicaSet")), "{span} in the log:\n{log}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indefinite_pause_waits_for_promote_and_promote_full_skips_the_remaining_steps() -> anyhow::Result<()> {
    let env = canary_env("full").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    // Nothing moves while paused.
    tokio::time::sleep(secs(3)).await;
    env.then_paused_at_step(1, secs(1)).await?;
    env.then_pods(1, 3, secs(5)).await?;

    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(4, 0, secs(30)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.current_step_index, Some(6));
    assert_eq!(st.stable_rs, st.current_pod_hash);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_returns_to_stable_and_scales_the_canary_down_and_retry_starts_again() -> anyhow::Result<()> {
    let env = canary_env("abort").await?;
    let stable = env.get().await?.status.unwrap().stable_rs.unwrap();
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;

    env.when_abort().await?;
    env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
    env.then_pods(0, 4, secs(30)).await?;
    assert_eq!(
        env.service_hash("app-canary").await?.as_deref(),
        Some(stable.as_str()),
        "canary Service back on stable"
    );
    let message = env.get().await?.status.unwrap().message.unwrap();
    assert!(message.starts_with("Aborted"), "{message}");

    env.when_retry().await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 3, secs(30)).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_template_in_the_middle_of_a_rollout_supersedes_the_canary() -> anyhow::Result<()> {
    let env = canary_env("supersede").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let v2 = env.get().await?.status.unwrap().current_pod_hash.unwrap();

    env.when_image("example.invalid/demo:3").await?;
    env.then("a new canary", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.current_pod_hash.clone()) != Some(v2.clone())
    })
    .await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 3, secs(30)).await?;
    assert_eq!(env.pods(&v2).await?, 0, "the superseded canary has no pods");
    assert_eq!(env.replica_sets().await?.len(), 3);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_goes_back_to_the_previous_template_and_scaling_keeps_the_ratio() -> anyhow::Result<()> {
    let env = canary_env("undo").await?;
    let v1 = env.get().await?.status.unwrap().stable_rs.unwrap();
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;

    // Undo: the first template again, through its existing ReplicaSet, with the steps.
    env.when_undo().await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.current_pod_hash.as_deref(), Some(v1.as_str()), "undo returns to the first template");
    assert_eq!(env.replica_sets().await?.len(), 2, "its ReplicaSet is reused");
    assert_eq!(st.current_revision, Some(3), "with a new revision");
    env.then_pods(1, 3, secs(30)).await?;

    // Scaling through the scale subresource keeps the step's 25%.
    env.when_scaled(8).await?;
    env.then_pods(2, 6, secs(60)).await?;
    env.then_paused_at_step(1, secs(10)).await?;
    // The status that counts them may land a moment after the pods.
    env.then("the status counts the 8 replicas", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.hpa_replicas) == Some(8)
    })
    .await?;
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.selector.as_deref(), Some("app=demo"));

    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(8, 0, secs(30)).await?;
    env.when_scaled(3).await?;
    env.then_pods(3, 0, secs(30)).await?;
    env.then_phase(RolloutPhase::Healthy, secs(30)).await?;
    env.cleanup().await
}
