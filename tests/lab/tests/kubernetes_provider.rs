//! The `kubernetes` metric provider end to end: a canary judged by the success rate of its own
//! pods as the external metrics API serves it. The responders count real requests, Prometheus
//! scrapes them, the lab's metrics adapter answers `external.metrics.k8s.io` from Prometheus, and
//! the API server proxies stepwise's request to it: nothing in the analysis knows Prometheus.
//! A version failing 30 % of its requests is aborted on values it really measured; a good one is
//! promoted. Runs inside the lab only (`scripts/just lab-test`).

mod common;

use std::time::Duration;

use common::{
    JUDGED_STEPS, Lab, TRAEFIK, canary, describe, kubectl_apply, rollout, success_rate_template, tolerated_failures,
    traefik_app,
};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use stepwise_api::{AnalysisPhase, AnalysisRun, RolloutPhase};
use stepwise_e2e::Env;

/// The share of non-5xx answers among the canary's requests, from the lab's adapter.
const EXTERNAL_SUCCESS_RATE: &str = "      kubernetes:\n        api: external\n        metricName: lab_success_rate\n        selector: pod_template_hash={{args.hash}}\n";

/// The values the newest run measured (numbers only), and the paths it asked.
async fn last_run_values(env: &Env) -> anyhow::Result<(AnalysisPhase, Vec<f64>, Vec<String>)> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let mut runs = api.list(&ListParams::default()).await?.items;
    runs.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let run = runs.pop().ok_or_else(|| anyhow::anyhow!("no AnalysisRun"))?;
    let status = run.status.unwrap_or_default();
    let measurements = status.metric_results.iter().flat_map(|m| m.measurements.iter());
    let (mut values, mut paths) = (Vec::new(), Vec::new());
    for m in measurements {
        let value: Value = m.value.as_deref().and_then(|v| serde_json::from_str(v).ok()).unwrap_or(Value::Null);
        values.extend(value.as_array().into_iter().flatten().filter_map(Value::as_f64));
        paths.extend(m.metadata.as_ref().and_then(|md| md.get("path")).cloned());
    }
    Ok((status.phase.unwrap_or_default(), values, paths))
}

#[tokio::test]
async fn a_canary_is_judged_by_the_external_metrics_api_aborted_when_it_fails_and_promoted_when_it_does_not()
-> anyhow::Result<()> {
    if std::env::var_os("LAB_PROMETHEUS_URL").is_none() {
        anyhow::bail!("run inside the lab: scripts/just lab-test");
    }
    let lab = Lab::get()?;
    let env = Env::new("k8s-metrics").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.kubernetes-provider.lab");
    kubectl_apply(&ns, &traefik_app(&host))?;
    kubectl_apply(&ns, &success_rate_template(EXTERNAL_SUCCESS_RATE))?;
    kubectl_apply(&ns, &rollout(4, &canary(TRAEFIK, JUDGED_STEPS)))?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 4).await?;

    // The bad version: the adapter's success rate of its pods (about 0.7) fails the condition.
    let bad = lab.release(&env, &host, "2", "0.3").await?;
    let message = env.get().await?.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("success-rate"), "the abort names the failed metric: {message}");
    let (phase, values, paths) = last_run_values(&env).await?;
    assert_eq!(phase, AnalysisPhase::Failed, "failed on values, not on errors: {values:?} {message}");
    assert!(values.iter().any(|v| *v < 0.95 && *v > 0.4), "the run measured the canary's real rate: {values:?}");
    assert!(
        paths.iter().all(|p| p.starts_with("/apis/external.metrics.k8s.io/v1beta1/") && p.contains("lab_success_rate")),
        "{paths:?}"
    );
    assert!(bad.failed() > 0, "some of the bad version's requests really failed: {}", describe(&bad, "2"));
    // Degraded means the weights were written; Traefik applies them a moment later, and the good
    // version's load must not count the bad version's last answers.
    lab.until_traefik_weights(&format!("{ns}-demo@kubernetescrd"), &[("demo-stable", 100), ("demo-canary", 0)]).await?;
    let after = lab.send(&host, 1_000).await?;
    assert_eq!(after.share("2"), 0.0, "after the abort the bad version gets nothing: {}", describe(&after, "2"));

    // The good version: the same analysis passes, and it is promoted.
    let good = lab.release(&env, &host, "3", "0").await?;
    assert!(
        good.failed() <= tolerated_failures(&good),
        "the good version's release fails (almost) no request: {}",
        describe(&good, "3")
    );
    let (phase, values, _) = last_run_values(&env).await?;
    assert_eq!(phase, AnalysisPhase::Successful, "{values:?}");
    assert!(!values.is_empty() && values.iter().all(|v| *v >= 0.95), "{values:?}");
    env.cleanup().await
}
