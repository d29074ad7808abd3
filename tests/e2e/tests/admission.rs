//! A manifest that breaks the schema is rejected at apply time with a message naming the field.

use stepwise_e2e::Env;

const BASE: &str = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: bad}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n";

async fn rejected(env: &Env, strategy: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_yaml::from_str(&format!("{BASE}{strategy}"))?;
    // Sent as raw JSON so that the API server, not our types, judges it.
    let data = serde_json::to_vec(&value)?;
    let req = http::Request::post(format!("/apis/stepwise.dev/v1alpha1/namespaces/{}/rollouts", env.ns))
        .header("Content-Type", "application/json")
        .body(data)?;
    match env.client.request_text(req).await {
        Ok(body) => anyhow::bail!("accepted: {body}"),
        Err(kube::Error::Api(e)) => Ok(e.message.clone()),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rollouts_are_rejected_at_apply_time_with_a_message_naming_the_field() -> anyhow::Result<()> {
    let env = Env::without_controller("admission").await?;
    let cases = [
        ("    canary: {}\n    blueGreen: {activeService: a}\n", "exactly one of canary and blueGreen"),
        ("    canary:\n      steps:\n      - {setWeight: 10, pause: {}}\n", "each step must set exactly one of"),
        ("    canary:\n      steps:\n      - setWeight: 150\n", "setWeight"),
        ("    canary: {maxSurge: 0, maxUnavailable: '0%'}\n", "maxSurge and maxUnavailable cannot both be zero"),
        ("    canary: {canaryService: s, stableService: s}\n", "canaryService must differ from stableService"),
        ("    canary:\n      steps:\n      - pause: {duration: 10x}\n", "duration"),
        ("    canary:\n      steps:\n      - setCanaryScale: {replicas: 2}\n", "need trafficRouting"),
        ("    blueGreen: {activeService: a, previewService: a}\n", "previewService must differ from activeService"),
        ("    canary: {maxSurge: 'lots'}\n", "maxSurge"),
    ];
    for (strategy, expected) in cases {
        let message = rejected(&env, strategy).await?;
        assert!(message.contains(expected), "for\n{strategy}expected a message with {expected:?}, got: {message}");
    }
    env.cleanup().await
}
