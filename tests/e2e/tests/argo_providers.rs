//! Argo's metric providers through the real controller: an AnalysisRun whose metric is written as
//! Argo's docs write it for Datadog, its keys in the Secret `datadog` of the controller's
//! namespace on the real API server, measured against a local server on 127.0.0.1 answering as
//! Datadog's API does. The provider's own tests check every request against Datadog's
//! specification; this one checks the wiring: the Secret read where Argo keeps it, the keys sent,
//! the value kept in the measurement, the run's phase decided by the condition.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, AnalysisRun};
use stepwise_e2e::{Env, eventually, secs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request as the local Datadog got it: the request line and the API key header.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    api_key: String,
}

/// A local Datadog answering every v2 scalar query with `value`; returns its URL and what it saw.
async fn given_datadog(value: f64) -> anyhow::Result<(String, Arc<Mutex<Vec<Seen>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| {
                        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
                    })
                    .unwrap_or_default()
                    .to_string()
            };
            let request_line = text.lines().next().unwrap_or_default().to_string();
            record.lock().unwrap().push(Seen { request_line, api_key: header("dd-api-key") });
            let column = json!({"name": "query", "type": "number", "values": [value], "meta": {"unit": null}});
            let body = json!({"data": {"type": "scalar_response", "attributes": {"columns": [column]}}}).to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok((url, seen))
}

async fn then_run_phase(env: &Env, name: &str, phase: AnalysisPhase) -> anyhow::Result<AnalysisRun> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(&format!("run {name} {phase}"), secs(60), || async {
        Ok(api.get_opt(name).await?.and_then(|r| r.status).and_then(|s| s.phase) == Some(phase))
    })
    .await?;
    Ok(api.get(name).await?)
}

/// The metric of Argo's docs/analysis/datadog.md (v2, one query), as an AnalysisRun.
fn run(name: &str) -> anyhow::Result<AnalysisRun> {
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}}}
spec:
  metrics:
  - name: error-rate
    successCondition: default(result, 0) < 0.05
    provider:
      datadog:
        apiVersion: v2
        interval: 5m
        query: |
          sum:requests.error.rate{{service:checkout}} / sum:requests.request.rate{{service:checkout}}
"
    ))?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_datadog_metric_reads_its_keys_from_the_controller_namespace_and_judges_the_value() -> anyhow::Result<()> {
    let (address, seen) = given_datadog(0.02).await?;
    let mut env = Env::without_controller("datadog").await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "datadog"},
        "stringData": {"address": address, "api-key": "dd-api-s3cr3t", "app-key": "dd-app-s3cr3t"},
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &secret).await?;
    let home = format!("--lease-namespace={}", env.ns);
    env.start_controller(&["--leader-elect=false", &home])?;
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    runs.create(&PostParams::default(), &run("low-errors")?).await?;

    let done = then_run_phase(&env, "low-errors", AnalysisPhase::Successful).await?;
    let result = &done.status.unwrap().metric_results[0];
    let value: Value = serde_json::from_str(result.measurements[0].value.as_deref().unwrap_or("null"))?;
    assert_eq!(value, json!(0.02), "the value Datadog answered: {result:?}");
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.request_line, "POST /api/v2/query/scalar HTTP/1.1");
        assert_eq!(request.api_key, "dd-api-s3cr3t", "the key of the Secret datadog");
    }
    assert!(!env.controllers[0].log_text().contains("s3cr3t"), "no key in the controller's log");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_secret_datadog_the_run_ends_in_error_naming_it() -> anyhow::Result<()> {
    let mut env = Env::without_controller("datadog-nokeys").await?;
    let home = format!("--lease-namespace={}", env.ns);
    env.start_controller(&["--leader-elect=false", &home])?;
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    runs.create(&PostParams::default(), &run("no-keys")?).await?;
    let done = then_run_phase(&env, "no-keys", AnalysisPhase::Error).await?;
    let status = done.status.unwrap();
    let message = status.metric_results[0].measurements.last().and_then(|m| m.message.clone()).unwrap_or_default();
    assert!(message.contains("datadog") && message.contains(&env.ns), "{message}");
    env.cleanup().await
}
