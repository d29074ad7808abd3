//! Zero downtime, measured: a good version rolled out under steady load through Traefik loses no
//! request, with a routed canary and with blue-green. The responders drain in-flight requests when
//! their pod is deleted, as a well-behaved app does; stepwise must keep old pods until the router
//! no longer sends them traffic. Runs inside the lab only (`scripts/just lab-test`).

mod common;

use std::time::Duration;

use common::{Lab, kubectl_apply};
use stepwise_api::RolloutPhase;
use stepwise_e2e::Env;
use stepwise_lab::load::{self, LoadConfig, LoadReport};
use tokio::sync::watch;

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: demo-stable}\nspec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: demo-canary}\nspec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}\n";

fn rollout(strategy: &str) -> String {
    format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'lab.invalid/demo:1', ports: [{{containerPort: 8080}}]}}]}}\n  strategy:\n{strategy}"
    )
}

fn ingress_route(host: &str, service: &str, kind: &str) -> String {
    format!(
        "apiVersion: traefik.io/v1alpha1\nkind: IngressRoute\nmetadata: {{name: demo}}\nspec:\n  entryPoints: [web]\n  routes:\n  - match: Host(`{host}`)\n    kind: Rule\n    services: [{{name: {service}, kind: {kind}, port: 80}}]\n"
    )
}

/// Rolls out version 2 under 100 requests a second and returns what the load saw, from the
/// update until the Rollout is Healthy and its old pods are gone.
async fn update_under_load(env: &Env, lab: &Lab, host: &str) -> anyhow::Result<LoadReport> {
    let (stop, stopped) = watch::channel(false);
    let config = LoadConfig {
        url: format!("{}/", lab.traefik),
        host: Some(host.to_string()),
        requests: None,
        duration: Some(Duration::from_secs(300)),
        rate: 100.0,
        concurrency: 4,
        timeout: Duration::from_secs(5),
    };
    let load = tokio::spawn(load::run(config, Some(stopped)));
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

#[tokio::test]
async fn a_routed_canary_rolled_out_under_load_loses_no_request() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("zd-canary").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.zd.lab");
    kubectl_apply(&ns, SERVICES)?;
    kubectl_apply(
        &ns,
        "apiVersion: traefik.io/v1alpha1\nkind: TraefikService\nmetadata: {name: demo}\nspec:\n  weighted:\n    services:\n    - {name: demo-stable, port: 80, weight: 100}\n    - {name: demo-canary, port: 80, weight: 0}\n",
    )?;
    kubectl_apply(&ns, &ingress_route(&host, "demo", "TraefikService"))?;
    kubectl_apply(
        &ns,
        &rollout(
            "    canary:\n      canaryService: demo-canary\n      stableService: demo-stable\n      scaleDownDelaySeconds: 5\n      trafficRouting:\n        traefik: {weightedTraefikServiceName: demo}\n      steps:\n      - setWeight: 25\n      - pause: {duration: 3s}\n      - setWeight: 75\n      - pause: {duration: 3s}\n",
        ),
    )?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 4).await?;
    lab.until_share(&host, "1", 100.0).await?;

    let report = update_under_load(&env, &lab, &host).await?;
    eprintln!("canary under load:\n{report}");
    assert!(report.share("2") > 0.0 && report.share("1") > 0.0, "both versions answered during the update");
    assert_eq!(report.failed(), 0, "no request may be lost: {} of {} failed", report.failed(), report.total());
    env.cleanup().await
}

#[tokio::test]
async fn a_blue_green_switch_under_load_loses_no_request() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("zd-bluegreen").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.zd.lab");
    kubectl_apply(&ns, SERVICES)?;
    kubectl_apply(&ns, &ingress_route(&host, "demo-stable", "Service"))?;
    kubectl_apply(
        &ns,
        &rollout(
            "    blueGreen:\n      activeService: demo-stable\n      previewService: demo-canary\n      autoPromotionEnabled: true\n      scaleDownDelaySeconds: 5\n",
        ),
    )?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "1", 4).await?;
    lab.until_share(&host, "1", 100.0).await?;

    let report = update_under_load(&env, &lab, &host).await?;
    eprintln!("blue-green under load:\n{report}");
    assert!(report.share("2") > 0.0, "the new version answered after the switch");
    assert_eq!(report.failed(), 0, "no request may be lost: {} of {} failed", report.failed(), report.total());
    env.cleanup().await
}
