//! Blue-green on the local control plane.

use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, secs};

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_switches_active_only_after_the_preview_is_available_auto_promotes_and_scales_the_old_version_down_after_the_delay()
-> anyhow::Result<()> {
    let env = Env::new("bluegreen").await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionSeconds: 4\n      scaleDownDelaySeconds: 3\n";
    env.given_rollout(3, strategy).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(blue.as_str()));

    env.when_image("example.invalid/demo:2").await?;
    env.then_phase(RolloutPhase::Paused, secs(30)).await?;
    let green = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    // The preview is fully available before anything switches; active still on blue.
    assert_eq!(env.ready_pods(&green).await?, 3);
    assert_eq!(env.service_hash("app-preview").await?.as_deref(), Some(green.as_str()));
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(blue.as_str()));
    let message = env.get().await?.status.unwrap().message.unwrap();
    assert!(message.contains("promotes automatically"), "{message}");

    // autoPromotionSeconds later the active Service switches to green.
    env.then("active switched", secs(20), |ro| {
        ro.status.as_ref().and_then(|s| s.stable_rs.clone()) == Some(green.clone())
    })
    .await?;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(green.as_str()));
    // Blue stays up for scaleDownDelaySeconds, then goes.
    assert_eq!(env.ready_pods(&blue).await?, 3, "blue is kept during the scale-down delay");
    env.then_phase(RolloutPhase::Healthy, secs(30)).await?;
    env.then_pods(3, 0, secs(30)).await?;
    assert_eq!(env.pods(&blue).await?, 0);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_without_auto_promotion_waits_for_promote_and_abort_keeps_active_on_blue() -> anyhow::Result<()> {
    let env = Env::new("bluegreen-manual").await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n      abortScaleDownDelaySeconds: 2\n";
    env.given_rollout(2, strategy).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();

    env.when_image("example.invalid/demo:2").await?;
    env.then_phase(RolloutPhase::Paused, secs(30)).await?;
    let green = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    tokio::time::sleep(secs(2)).await;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(blue.as_str()), "no switch without promote");

    env.when_abort().await?;
    env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(blue.as_str()));
    env.then("green scaled down after the abort delay", secs(30), |_| true).await?;
    stepwise_e2e::eventually("green has no pods", secs(30), || async { Ok(env.pods(&green).await? == 0) }).await?;
    assert_eq!(env.ready_pods(&blue).await?, 2);

    env.when_retry().await?;
    env.then_phase(RolloutPhase::Paused, secs(30)).await?;
    env.when_promote().await?;
    env.then("green promoted", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.stable_rs.clone()) == Some(green.clone())
    })
    .await?;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(green.as_str()));
    env.cleanup().await
}
