//! The real HorizontalPodAutoscaler of kube-controller-manager scales a Rollout through its scale
//! subresource during a canary, on requests per second that it reads from the lab's metrics
//! adapter (custom.metrics.k8s.io, through the API server): the replicas follow the load, the
//! step's canary ratio holds, and the replicas never go back down while the load is steady (no
//! oscillation). Runs inside the lab only (`scripts/just lab-test`).

mod common;

use std::time::{Duration, Instant};

use common::{Lab, TRAEFIK, canary, kubectl_apply, rollout, traefik_app};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, eventually};

const HPA: &str = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: app}
spec:
  scaleTargetRef: {apiVersion: stepwise.dev/v1alpha1, kind: Rollout, name: app}
  minReplicas: 2
  maxReplicas: 8
  metrics:
  - type: Pods
    pods:
      metric: {name: lab_requests_per_second}
      target: {type: AverageValue, averageValue: "10"}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0}
    scaleDown: {stabilizationWindowSeconds: 600}
"#;

#[tokio::test]
async fn an_hpa_scales_a_paused_canary_on_real_load_and_the_ratio_holds_without_oscillation() -> anyhow::Result<()> {
    let lab = Lab::get()?;
    let env = Env::new("hpa").await?;
    let ns = env.ns.clone();
    let host = format!("{ns}.hpa.lab");
    kubectl_apply(&ns, &traefik_app(&host))?;
    kubectl_apply(&ns, &rollout(2, &canary(TRAEFIK, "      - setWeight: 50\n      - pause: {}\n")))?;
    kubectl_apply(&ns, HPA)?;
    env.then_phase(RolloutPhase::Healthy, Duration::from_secs(60)).await?;
    env.when_image("lab.invalid/demo:2").await?;
    env.then_paused_at_step(1, Duration::from_secs(60)).await?;
    lab.until_served(&ns, "2", 1).await?;
    lab.until_share(&host, "2", 50.0).await?;

    // 60 requests a second over 3 pods is 20 per pod against a target of 10: the HPA scales up.
    let (stop, load) = lab.steady_load(&host, 60.0);

    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), &ns);
    let watched = async {
        eventually("the HPA to scale the Rollout up", Duration::from_secs(150), || async {
            Ok(env.get().await?.spec.replicas.unwrap_or(0) > 2)
        })
        .await?;
        // Steady load from here: sample the replicas every second for 60 s; they may still climb,
        // never fall.
        let mut samples = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            samples.push(env.get().await?.spec.replicas.unwrap_or(0));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::Ok(samples)
    }
    .await;
    stop.send(true)?;
    let report = load.await??;
    let samples = watched?;
    eprintln!("replicas sampled each second under steady load: {samples:?}\nload:\n{report}");
    assert!(samples.windows(2).all(|w| w[1] >= w[0]), "the replicas never fall under steady load: {samples:?}");

    let hpa = hpas.get("app").await?;
    let current = hpa.status.and_then(|s| s.current_metrics).unwrap_or_default();
    assert!(!current.is_empty(), "the HPA read lab_requests_per_second through the metrics API");
    // The step's ratio: 50 % of the replicas (rounded up) run the canary, all of them the stable.
    // The HPA may still take one more step after the last sample (its metric lags the load), so
    // the ratio is checked against the replicas the Rollout asks for once they have stopped moving.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let replicas = env.get().await?.spec.replicas.unwrap_or(0);
        let canary = (replicas * 50 + 99) / 100;
        let held = env.then_pods(canary, replicas, Duration::from_secs(30)).await;
        let unchanged = env.get().await?.spec.replicas.unwrap_or(0) == replicas;
        match held {
            Ok(()) if unchanged => break,
            Err(e) if unchanged || Instant::now() >= deadline => return Err(e),
            _ if Instant::now() >= deadline => anyhow::bail!("the HPA kept changing the replicas: {replicas} last"),
            _ => {}
        }
    }
    env.then_paused_at_step(1, Duration::from_secs(5)).await?;
    assert_eq!(report.failed(), 0, "no request failed while the HPA scaled");
    env.cleanup().await
}
