//! What a person must fix is told on the Rollout, not only in the controller's log.

use stepwise_e2e::{Env, eventually, secs};

async fn then_warned(env: &Env, expected: &str) -> anyhow::Result<()> {
    eventually(&format!("a ReconcileError event saying {expected:?}"), secs(30), || async {
        Ok(env.events().await?.iter().any(|(reason, message)| reason == "ReconcileError" && message.contains(expected)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysis_step_naming_a_missing_template_is_reported_as_a_warning_event() -> anyhow::Result<()> {
    let env = Env::new("missing-template").await?;
    env.given_rollout(
        2,
        "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: nowhere}]}\n",
    )
    .await?;
    env.when_image("example.invalid/demo:2").await?;
    then_warned(&env, "template nowhere not found").await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traffic_router_this_build_lacks_is_reported_as_a_warning_event() -> anyhow::Result<()> {
    let env = Env::new("no-router").await?;
    env.given_services(&["app-canary", "app-stable"]).await?;
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      trafficRouting:\n        istio: {virtualService: {name: app}}\n      steps:\n      - setWeight: 50\n";
    // The initial deploy needs no router; the update does.
    env.given_rollout(2, strategy).await?;
    env.when_image("example.invalid/demo:2").await?;
    then_warned(&env, "router is not available").await?;
    env.cleanup().await
}
