//! Argo analysis manifests on the real API server and controller: templates composed of other
//! templates, Argo's providers and their fields accepted as written, and a run using an
//! authentication stepwise does not do ending in Error at once, naming it.

use std::time::Duration;

use kube::Api;
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, AnalysisRun};
use stepwise_e2e::{Env, eventually};

/// Creates an object of `plural` in the test's namespace from raw JSON, so that the API server,
/// not our types, judges it: the object as stored, or the message it was refused with.
async fn create(env: &Env, plural: &str, object: Value) -> anyhow::Result<Result<Value, String>> {
    let req = http::Request::post(format!("/apis/stepwise.dev/v1alpha1/namespaces/{}/{plural}", env.ns))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&object)?)?;
    match env.client.request_text(req).await {
        Ok(body) => Ok(Ok(serde_json::from_str(&body)?)),
        Err(kube::Error::Api(e)) => Ok(Err(e.message.clone())),
        Err(e) => Err(e.into()),
    }
}

fn template(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread")]
async fn argo_sources_are_accepted_as_written_and_a_run_using_an_authentication_stepwise_does_not_do_ends_in_error_naming_it()
-> anyhow::Result<()> {
    let env = Env::new("argo-sources").await?;
    let datadog = json!({"apiVersion": "v2", "interval": "5m", "queries": {"a": "sum:requests.error{service:api}.as_count()"}, "formula": "a"});
    let stored = create(
        &env,
        "analysistemplates",
        template("dd", json!({"metrics": [{"name": "errors", "successCondition": "result < 0.05", "provider": {"datadog": datadog}}]})),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    assert_eq!(stored["spec"]["metrics"][0]["provider"]["datadog"], datadog, "kept as written");

    // Argo's composition: a template of templates only, and fields Argo has on its providers.
    let composed = json!({"templates": [{"templateName": "dd"}, {"templateName": "shared", "clusterScope": true}]});
    create(&env, "analysistemplates", template("composed", composed)).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let providers = json!({"metrics": [
        {"name": "range", "provider": {"prometheus": {"address": "https://prom.example.invalid", "query": "up", "insecure": true,
            "rangeQuery": {"start": "now() - duration('10m')", "end": "now()", "step": "1m"},
            "authentication": {"sigv4": {"region": "eu-west-1"}}}}},
        {"name": "post", "provider": {"web": {"url": "https://example.invalid", "method": "POST", "jsonBody": {"service": "api"},
            "authentication": {"oauth2": {"tokenUrl": "https://example.invalid/token", "clientId": "c", "clientSecret": "s"}}}}}
    ]});
    create(&env, "analysistemplates", template("providers", providers)).await?.map_err(|e| anyhow::anyhow!("{e}"))?;

    // A template with neither metrics nor templates is refused at apply time.
    let empty = create(&env, "analysistemplates", template("empty", json!({"args": [{"name": "x"}]}))).await?;
    let message = empty.expect_err("a template with nothing to measure is refused");
    assert!(message.contains("a template needs metrics, templates, or both"), "{message}");

    // The controller ends a run using sigv4 in Error before measuring, naming the field.
    let sigv4 = json!({"address": "https://prom.example.invalid", "query": "up", "authentication": {"sigv4": {"region": "eu-west-1"}}});
    let run = json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "AnalysisRun", "metadata": {"name": "amp-run"},
        "spec": {"metrics": [{"name": "rate", "provider": {"prometheus": sigv4}}]}});
    create(&env, "analysisruns", run).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("the sigv4 run ends in Error", Duration::from_secs(30), || async {
        let run = runs.get("amp-run").await?;
        Ok(run.status.and_then(|s| s.phase) == Some(AnalysisPhase::Error))
    })
    .await?;
    let status = runs.get("amp-run").await?.status.unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message
            .starts_with("metrics[0] (rate): provider.prometheus.authentication.sigv4 is not supported; use headers"),
        "{message}"
    );
    assert!(status.metric_results.iter().all(|m| m.measurements.is_empty()), "nothing was measured: {status:?}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_analysis_naming_a_template_of_templates_runs_the_metrics_of_both() -> anyhow::Result<()> {
    let env = Env::new("nested-templates").await?;
    let web = |name: &str| json!({"name": name, "provider": {"web": {"url": "http://127.0.0.1:1/never"}}});
    let top = json!({"metrics": [web("own")], "templates": [{"templateName": "leaf"}]});
    create(&env, "analysistemplates", template("top", top)).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let leaf = json!({"metrics": [web("from-leaf")]});
    create(&env, "analysistemplates", template("leaf", leaf)).await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    env.given_rollout(
        2,
        "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: top}]}\n",
    )
    .await?;
    env.when_image("example.invalid/demo:2").await?;

    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let metrics = std::sync::Mutex::new(Vec::new());
    eventually("the step's AnalysisRun is created", Duration::from_secs(60), || async {
        let list = runs.list(&Default::default()).await?;
        if let Some(run) = list.items.first() {
            *metrics.lock().unwrap() = run.spec.metrics.iter().map(|m| m.name.clone()).collect();
        }
        Ok(!list.items.is_empty())
    })
    .await?;
    assert_eq!(*metrics.lock().unwrap(), ["own", "from-leaf"], "the template's own metric, then its nested template's");
    env.cleanup().await
}
