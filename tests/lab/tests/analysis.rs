//! A canary judged by a Prometheus success-rate analysis computed from real requests: the
//! responders count every request they answer, Prometheus scrapes them, stepwise asks Prometheus.
//! A version that fails 30 % of its requests is aborted and the traffic returns to the stable
//! version; one that fails none is promoted. Runs inside the lab only (`scripts/just lab-test`).

mod common;

use std::time::Duration;

use common::{
    JUDGED_STEPS, Lab, TRAEFIK, canary, describe, kubectl_apply, rollout, success_rate_template, tolerated_failures,
    traefik_app,
};
use stepwise_api::RolloutPhase;
use stepwise_e2e::Env;

/// The success rate of the canary's pods, from the requests the responders counted.
fn prometheus_provider(ns: &str, prometheus: &str) -> String {
    let selector = format!("namespace=\"{ns}\",pod_template_hash=\"{{{{args.hash}}}}\"");
    format!(
        "      prometheus:\n        address: {prometheus}\n        query: |\n          sum(rate(lab_http_requests_total{{{selector},code!~\"5..\"}}[15s]))\n          / sum(rate(lab_http_requests_total{{{selector}}}[15s]))\n"
    )
}

#[tokio::test]
async fn a_version_failing_30_percent_of_real_requests_is_aborted_and_a_good_one_is_promoted() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("judged").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.analysis.lab");
    kubectl_apply(&ns, &traefik_app(&host))?;
    kubectl_apply(&ns, &success_rate_template(&prometheus_provider(&ns, &lab.prometheus)))?;
    kubectl_apply(&ns, &rollout(4, &canary(TRAEFIK, JUDGED_STEPS)))?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 4).await?;
    lab.until_share(&host, "1", 100.0).await?;

    // The bad version: its analysis fails on the requests it really failed, and it is aborted.
    let bad = lab.release(&env, &host, "2", "0.3").await?;
    let ro = env.get().await?;
    let message = ro.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("success-rate"), "the abort names the failed metric: {message}");
    assert!(bad.failed() > 0, "some of the bad version's requests really failed: {}", describe(&bad, "2"));
    lab.until_traefik_weights(&format!("{ns}-demo@kubernetescrd"), &[("demo-stable", 100), ("demo-canary", 0)]).await?;
    let after = lab.send(&host, 2_000).await?;
    assert_eq!(after.failed(), 0, "after the abort nothing fails: {}", describe(&after, "2"));
    assert_eq!(after.share("2"), 0.0, "after the abort the bad version gets nothing: {}", describe(&after, "2"));

    // The good version: same analysis, promoted.
    let good = lab.release(&env, &host, "3", "0").await?;
    assert!(
        good.failed() <= tolerated_failures(&good),
        "the good version's release fails (almost) no request: {}",
        describe(&good, "3")
    );
    lab.until_served(&ns, "3", 4).await?;
    let after = lab.send(&host, 2_000).await?;
    assert_eq!(after.share("3"), 1.0, "after the promotion the good version answers all: {}", describe(&after, "3"));
    env.cleanup().await
}
