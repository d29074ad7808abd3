//! A manifest that breaks the schema is rejected at apply time with a message naming the field.

use stepwise_e2e::Env;

const BASE: &str = "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: bad}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n";

/// The API server's answer to creating the Rollout named `name` with this strategy: the created
/// object, or the message it was refused with.
async fn create(env: &Env, name: &str, strategy: &str) -> anyhow::Result<Result<String, String>> {
    let mut value: serde_json::Value = serde_yaml::from_str(&format!("{BASE}{strategy}"))?;
    value["metadata"]["name"] = name.into();
    // Sent as raw JSON so that the API server, not our types, judges it.
    let data = serde_json::to_vec(&value)?;
    let req = http::Request::post(format!("/apis/stepwise.dev/v1alpha1/namespaces/{}/rollouts", env.ns))
        .header("Content-Type", "application/json")
        .body(data)?;
    match env.client.request_text(req).await {
        Ok(body) => Ok(Ok(body)),
        Err(kube::Error::Api(e)) => Ok(Err(e.message.clone())),
        Err(e) => Err(e.into()),
    }
}

async fn rejected(env: &Env, strategy: &str) -> anyhow::Result<String> {
    match create(env, "bad", strategy).await? {
        Ok(body) => anyhow::bail!("accepted: {body}"),
        Err(message) => Ok(message),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rollouts_are_rejected_at_apply_time_with_a_message_naming_the_field() -> anyhow::Result<()> {
    let env = Env::without_controller("admission").await?;
    let cases = [
        ("    canary: {}\n    blueGreen: {activeService: a}\n", "exactly one of canary, blueGreen and recreate"),
        (
            "    canary:\n      steps:\n      - {setWeight: 10, pause: {}}\n",
            "at most one of setWeight, pause, analysis and experiment",
        ),
        ("    canary:\n      steps:\n      - setWeight: 150\n", "setWeight"),
        ("    canary:\n      steps:\n      - setWeight: -1\n", "setWeight"),
        (
            "    canary:\n      canaryService: c\n      stableService: s\n      trafficRouting: {istio: {virtualService: {name: vs}}}\n      steps:\n      - setWeight: 101\n",
            "setWeight must be at most 100",
        ),
        (
            "    canary:\n      canaryService: c\n      stableService: s\n      trafficRouting: {maxTrafficWeight: 1000, istio: {virtualService: {name: vs}}}\n      steps:\n      - setWeight: 1001\n",
            "maxTrafficWeight",
        ),
        ("    canary: {maxSurge: 0, maxUnavailable: '0%'}\n", "maxSurge and maxUnavailable cannot both be zero"),
        ("    canary: {canaryService: s, stableService: s}\n", "canaryService must differ from stableService"),
        ("    canary:\n      steps:\n      - pause: {duration: 10x}\n", "a number of seconds, not \"10x\""),
        ("    canary:\n      steps:\n      - setCanaryScale: {replicas: 2}\n", "need trafficRouting"),
        ("    blueGreen: {activeService: a, previewService: a}\n", "previewService must differ from activeService"),
        ("    canary: {maxSurge: 'lots'}\n", "maxSurge"),
        // Beyond an i32, the controller could not read the Rollout back to say what is wrong.
        (
            "    canary:\n      steps:\n      - setCanaryScale: {replicas: 3000000000}\n",
            "steps[0].setCanaryScale.replicas",
        ),
        ("    canary: {scaleDownDelaySeconds: 2147483648}\n", "scaleDownDelaySeconds"),
    ];
    for (strategy, expected) in cases {
        let message = rejected(&env, strategy).await?;
        assert!(message.contains(expected), "for\n{strategy}expected a message with {expected:?}, got: {message}");
    }
    env.cleanup().await
}

/// What Argo Rollouts accepts and stepwise acts on passes the schema too: a weight out of a
/// maxTrafficWeight above 100, and a setCanaryScale larger than spec.replicas.
#[tokio::test(flavor = "multi_thread")]
async fn argo_manifests_at_the_edges_of_the_rules_are_accepted() -> anyhow::Result<()> {
    let env = Env::without_controller("admission-accepts").await?;
    let routed = "    canary:\n      canaryService: c\n      stableService: s\n      trafficRouting: {maxTrafficWeight: 1000, istio: {virtualService: {name: vs}}}\n      steps:\n";
    let cases = [
        ("weight-1000", format!("{routed}      - setWeight: 1000\n")),
        ("weight-600", format!("{routed}      - setWeight: 600\n      - pause: {{}}\n")),
        ("scale-9", format!("{routed}      - setCanaryScale: {{replicas: 9}}\n")),
        ("basic-100", "    canary:\n      steps:\n      - setWeight: 100\n".to_string()),
    ];
    for (name, strategy) in &cases {
        if let Err(message) = create(&env, name, strategy).await? {
            panic!("{name} was refused: {message}\n{strategy}");
        }
    }
    env.cleanup().await
}
