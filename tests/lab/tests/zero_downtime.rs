//! Zero downtime, measured: a good version rolled out under steady load through Traefik loses no
//! request, with a routed canary and with blue-green. The responders drain in-flight requests when
//! their pod is deleted, as a well-behaved app does; stepwise must keep old pods until the router
//! no longer sends them traffic. Runs inside the lab only (`scripts/just lab-test`).

mod common;

use std::time::Duration;

use common::{Lab, TRAEFIK, canary, kubectl_apply, rollout, tolerated_failures, traefik_app};
use stepwise_api::RolloutPhase;
use stepwise_e2e::Env;
use stepwise_lab::load::LoadReport;

/// Rolls out version 2 under 100 requests a second and returns what the load saw, from the
/// update until the Rollout is Healthy and its old pods are gone.
async fn update_under_load(env: &Env, lab: &Lab, host: &str) -> anyhow::Result<LoadReport> {
    let (stop, load) = lab.steady_load(host, 100.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rolled = async {
        env.when_image("lab.invalid/demo:2").await?;
        env.then_phase(RolloutPhase::Healthy, Duration::from_secs(120)).await?;
        env.then_pods(4, 0, Duration::from_secs(120)).await?;
        // The old pods' drain: their last requests are answered before the load stops.
        tokio::time::sleep(Duration::from_secs(5)).await;
        anyhow::Ok(())
    }
    .await;
    stop.send(true)?;
    let report = load.await??;
    rolled?;
    Ok(report)
}

/// Version 1 of a Rollout of 4 pods with `strategy`, behind Traefik, answering; then version 2
/// rolled out under load. Returns the test's world and what the load saw, having checked that
/// (almost) no request was lost.
async fn released_under_load(name: &str, strategy: &str) -> anyhow::Result<(Env, LoadReport)> {
    let lab = Lab::get()?;
    let env = Env::new(name).await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.zd.lab");
    kubectl_apply(&ns, &traefik_app(&host))?;
    kubectl_apply(&ns, &rollout(4, strategy))?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 4).await?;
    lab.until_share(&host, "1", 100.0).await?;

    let report = update_under_load(&env, &lab, &host).await?;
    eprintln!("{name} under load:\n{report}");
    assert!(
        report.failed() <= tolerated_failures(&report),
        "no request may be lost (a tenth of a percent is tolerated): {} of {} failed (status codes {:?})",
        report.failed(),
        report.total(),
        report.codes
    );
    Ok((env, report))
}

#[tokio::test]
async fn a_routed_canary_rolled_out_under_load_loses_no_request() -> anyhow::Result<()> {
    let steps =
        "      - setWeight: 25\n      - pause: {duration: 3s}\n      - setWeight: 75\n      - pause: {duration: 3s}\n";
    let strategy = canary(TRAEFIK, steps).replace("    canary:\n", "    canary:\n      scaleDownDelaySeconds: 5\n");
    let (env, report) = released_under_load("zd-canary", &strategy).await?;
    assert!(report.share("2") > 0.0 && report.share("1") > 0.0, "both versions answered during the update");
    env.cleanup().await
}

#[tokio::test]
async fn a_blue_green_switch_under_load_loses_no_request() -> anyhow::Result<()> {
    // The TraefikService sends everything to demo-stable, the active Service.
    let strategy = "    blueGreen:\n      activeService: demo-stable\n      previewService: demo-canary\n      autoPromotionEnabled: true\n      scaleDownDelaySeconds: 5\n";
    let (env, report) = released_under_load("zd-bluegreen", strategy).await?;
    assert!(report.share("2") > 0.0, "the new version answered after the switch");
    env.cleanup().await
}
