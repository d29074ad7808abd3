//! Real requests through Traefik, routed by the weights stepwise writes: at every setWeight step
//! the share of requests the canary answers is the step's weight (within 3 points over 2,000
//! requests), and after an abort no request reaches the canary. Runs inside the lab only
//! (`scripts/just lab-test`).

mod common;

use std::time::Duration;

use common::{Lab, SERVICES, TRAEFIK, canary, describe, kubectl_apply, rollout, traefik_app};
use stepwise_api::RolloutPhase;
use stepwise_e2e::Env;

const REQUESTS: u64 = 2_000;
const TOLERANCE_POINTS: f64 = 3.0;

/// A canary of 5 replicas routed by `router` that pauses for a person after each weight.
fn paused_at_each(router: &str, weights: &[u32]) -> String {
    let steps: String = weights.iter().map(|w| format!("      - setWeight: {w}\n      - pause: {{}}\n")).collect();
    rollout(5, &canary(router, &steps))
}

/// The canary's pods at `weight` % of the 5 replicas (rounded up, as stepwise and Argo do).
fn canary_pods(weight: u64) -> usize {
    (5 * weight).div_ceil(100) as usize
}

/// Checks that `version` answers `weight` % of the requests, within the tolerance.
fn assert_share(report: &stepwise_lab::load::LoadReport, version: &str, weight: f64) {
    let share = 100.0 * report.share(version);
    assert_eq!(report.failed(), 0, "no request may fail: {}", describe(report, version));
    assert!(
        (share - weight).abs() <= TOLERANCE_POINTS,
        "the canary should answer {weight}% of requests, within {TOLERANCE_POINTS} points: {}",
        describe(report, version)
    );
    eprintln!("weight {weight}%: {}", describe(report, version));
}

#[tokio::test]
async fn traefik_sends_each_step_s_weight_to_the_canary_and_nothing_after_an_abort() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("traefik").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.traefik.lab");
    kubectl_apply(&ns, &traefik_app(&host))?;
    kubectl_apply(&ns, &paused_at_each(TRAEFIK, &[20, 50, 80]))?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 5).await?;
    let service = format!("{ns}-demo@kubernetescrd");
    lab.until_traefik_weights(&service, &[("demo-stable", 100), ("demo-canary", 0)]).await?;
    assert_share(&lab.send(&host, REQUESTS).await?, "1", 100.0);

    env.when_image("lab.invalid/demo:2").await?;
    for (step, weight) in [(1, 20), (3, 50), (5, 80)] {
        env.then_paused_at_step(step, Duration::from_secs(60)).await?;
        lab.until_served(&ns, "2", canary_pods(weight)).await?;
        lab.until_traefik_weights(&service, &[("demo-stable", 100 - weight), ("demo-canary", weight)]).await?;
        // The weights can be in Traefik before the canary Service's new endpoints are: until
        // then its share still reaches the old pods.
        lab.until_share(&host, "2", weight as f64).await?;
        assert_share(&lab.send(&host, REQUESTS).await?, "2", weight as f64);
        if weight != 80 {
            env.when_promote().await?;
        }
    }

    env.when_abort().await?;
    lab.until_traefik_weights(&service, &[("demo-stable", 100), ("demo-canary", 0)]).await?;
    let after = lab.send(&host, REQUESTS).await?;
    eprintln!("after the abort: {}", describe(&after, "2"));
    assert_eq!(after.failed(), 0, "no request may fail after the abort");
    assert_eq!(after.share("2"), 0.0, "no request may reach the canary after an abort: {}", describe(&after, "2"));
    env.cleanup().await
}

#[tokio::test]
async fn a_gateway_api_route_served_by_traefik_follows_the_steps_then_the_promotion() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("gateway").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.gateway.lab");
    kubectl_apply(&ns, SERVICES)?;
    kubectl_apply(
        &ns,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: demo}}\nspec:\n  parentRefs: [{{name: lab, namespace: lab-gateway}}]\n  hostnames: ['{host}']\n  rules:\n  - backendRefs:\n    - {{name: demo-stable, port: 80, weight: 100}}\n    - {{name: demo-canary, port: 80, weight: 0}}\n"
        ),
    )?;
    kubectl_apply(&ns, &paused_at_each("gatewayAPI: {httpRoute: demo}", &[30, 60]))?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 5).await?;
    // Traefik names the route's weighted service after the route and rule; poll the traffic
    // itself rather than Traefik's API.
    lab.until_share(&host, "1", 100.0).await?;

    env.when_image("lab.invalid/demo:2").await?;
    for (step, weight) in [(1, 30.0), (3, 60.0)] {
        env.then_paused_at_step(step, Duration::from_secs(60)).await?;
        lab.until_served(&ns, "2", canary_pods(weight as u64)).await?;
        lab.until_share(&host, "2", weight).await?;
        assert_share(&lab.send(&host, REQUESTS).await?, "2", weight);
        env.when_promote().await?;
    }
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(90)).await?;
    lab.until_served(&ns, "2", 5).await?;
    lab.until_share(&host, "2", 100.0).await?;
    let after = lab.send(&host, REQUESTS).await?;
    assert_eq!(after.failed(), 0, "no request may fail after the promotion");
    assert_eq!(after.share("2"), 1.0, "every request goes to the promoted version: {}", describe(&after, "2"));
    env.cleanup().await
}
