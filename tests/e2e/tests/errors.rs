//! What a person must fix is told on the Rollout, not only in the controller's log: a spec core
//! refuses (InvalidSpec) and an action the API server refuses (ReconcileError) each show as a
//! condition, the status message and a Warning event.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use stepwise_api::{Rollout, RolloutCondition, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};

const STRATEGY: &str = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

/// Merge-patches the Rollout's spec and waits until the controller has seen it.
async fn when_spec(env: &Env, spec: Value) -> anyhow::Result<()> {
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let changed = api.patch(&env.rollout, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await?;
    let generation = changed.metadata.generation;
    env.then("the controller to observe the change", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.observed_generation) >= generation
    })
    .await
}

fn condition<'r>(ro: &'r Rollout, type_: &str) -> Option<&'r RolloutCondition> {
    ro.status.as_ref()?.conditions.iter().find(|c| c.r#type == type_)
}

async fn then_warned(env: &Env, reason: &str, expected: &str) -> anyhow::Result<()> {
    eventually(&format!("a {reason} event saying {expected:?}"), secs(30), || async {
        Ok(env.events().await?.iter().any(|(r, message)| r == reason && message.contains(expected)))
    })
    .await
}

/// The Rollout is Degraded with `message`, an InvalidSpec condition and an InvalidSpec event.
async fn then_invalid_spec(env: &Env, message: &str) -> anyhow::Result<()> {
    let expected = format!("InvalidSpec: {message}");
    env.then(&format!("status.message {expected:?}"), secs(30), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Degraded)
            && st.message.as_deref() == Some(expected.as_str())
            && condition(ro, "InvalidSpec").is_some_and(|c| c.status == "True" && c.message.as_deref() == Some(message))
    })
    .await?;
    then_warned(env, "InvalidSpec", message).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_analysis_step_naming_a_missing_template_makes_the_spec_invalid() -> anyhow::Result<()> {
    let env = Env::new("missing-template").await?;
    env.given_rollout(2, STRATEGY).await?;
    let steps = json!([{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "nowhere"}]}}]);
    when_spec(&env, json!({"strategy": {"canary": {"steps": steps}}})).await?;
    then_invalid_spec(&env, "spec.strategy.canary.steps[1].analysis: AnalysisTemplate nowhere not found").await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traffic_router_this_build_lacks_makes_the_spec_invalid() -> anyhow::Result<()> {
    let env = Env::new("no-router").await?;
    env.given_services(&["app-canary", "app-stable"]).await?;
    env.given_rollout(
        2,
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      steps:\n      - setWeight: 50\n",
    )
    .await?;
    when_spec(&env, json!({"strategy": {"canary": {"trafficRouting": {"plugins": {"example.com/other": {}}}}}}))
        .await?;
    then_invalid_spec(
        &env,
        "spec.strategy.canary.trafficRouting.plugins.example.com/other: the router plugin example.com/other is not registered with this controller; start it with --router-plugin example.com/other=URL (docs/plugins.md)",
    )
    .await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_set_the_api_server_refuses_is_a_reconcile_error_and_the_progress_deadline_still_runs()
-> anyhow::Result<()> {
    let env = Env::new("refused-rs").await?;
    env.given_rollout(2, STRATEGY).await?;
    when_spec(&env, json!({"progressDeadlineSeconds": 10})).await?;
    // The Rollout's schema lets an empty image through; a ReplicaSet's validation does not.
    env.when_image("").await?;

    env.then("a ReconcileError condition naming the refusal", secs(30), |ro| {
        condition(ro, "ReconcileError").is_some_and(|c| {
            let message = c.message.as_deref().unwrap_or_default();
            c.status == "True" && message.starts_with("create ReplicaSet app-") && message.contains("422 Invalid")
        })
    })
    .await?;
    let st = env.get().await?.status.unwrap_or_default();
    let message = st.message.clone().unwrap_or_default();
    assert!(message.contains("ReconcileError: create ReplicaSet app-"), "{message}");
    assert!(message.contains("spec.template.spec.containers[0].image"), "the refusal is named: {message}");
    assert_eq!(st.phase, Some(RolloutPhase::Degraded), "a spec that cannot be carried out is not Healthy");
    then_warned(&env, "ReconcileError", "422 Invalid").await?;

    env.then("the progress deadline to pass", secs(60), |ro| {
        condition(ro, "Progressing").and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded")
    })
    .await?;
    let st = env.get().await?.status.unwrap_or_default();
    let message = st.message.unwrap_or_default();
    assert!(message.starts_with("ProgressDeadlineExceeded: "), "{message}");
    assert!(message.contains("; ReconcileError: create ReplicaSet app-"), "{message}");
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    env.cleanup().await
}

/// Two Rollouts naming one Service would point its selector at their own pods in turn, for ever
/// (found by the chaos suite's random Rollouts): the second is refused, naming the first, and
/// the Service stays with the first.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_rollout_naming_a_service_another_manages_is_refused_and_the_service_stays() -> anyhow::Result<()> {
    let env = Env::new("shared-service").await?;
    env.given_services(&["app-canary", "app-stable"]).await?;
    let strategy = "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      steps:\n      - setWeight: 50\n";
    let first = env.given_rollout(2, strategy).await?;
    let selected = env.service_hash("app-stable").await?;
    assert!(selected.is_some(), "the first Rollout manages the stable Service");

    let mut second: Rollout = serde_json::from_value(serde_json::to_value(&first)?)?;
    second.metadata = kube::api::ObjectMeta { name: Some("second".into()), ..Default::default() };
    second.status = None;
    let template = second.spec.template.as_mut().unwrap();
    template.metadata.as_mut().unwrap().labels = Some([("app".to_string(), "second".to_string())].into());
    second.spec.selector.as_mut().unwrap().match_labels = Some([("app".to_string(), "second".to_string())].into());
    env.rollouts().create(&Default::default(), &second).await?;

    let expected = "InvalidSpec: spec.strategy.canary.canaryService: Service app-canary is managed by Rollout app, which names it too; a Service serves one Rollout";
    eventually("the second Rollout to be refused", secs(30), || async {
        let second = env.rollouts().get("second").await?;
        Ok(second.status.and_then(|s| s.message).as_deref() == Some(expected))
    })
    .await?;
    assert!(
        env.replica_sets().await?.iter().all(|rs| rs.metadata.name.as_deref().is_some_and(|n| n.starts_with("app-")))
    );
    tokio::time::sleep(secs(3)).await;
    assert_eq!(env.service_hash("app-stable").await?, selected, "the Service stays with the first Rollout");
    env.cleanup().await
}
