//! `just bench`: N Rollouts (4 replicas; steps setWeight 25, pause 5s, setWeight 50, pause 5s,
//! setWeight 100) updated at once on the local control plane. Reports the time until all are
//! Healthy, the time beyond the pauses, the controller's CPU seconds and peak RSS, and the API
//! writes per Rollout.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{ControllerProcess, client, install_crds};

const STRATEGY: &str = "canary:\n  steps:\n  - setWeight: 25\n  - pause: {duration: 5s}\n  - setWeight: 50\n  - pause: {duration: 5s}\n  - setWeight: 100\n";
const PAUSES: f64 = 10.0;

fn rollout(i: usize) -> anyhow::Result<Rollout> {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: r{i}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: r{i}}}}}\n  template:\n    metadata: {{labels: {{app: r{i}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/bench:1'}}]}}\n  strategy:\n{}",
        STRATEGY.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0) / ticks
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

/// CPU seconds so far of each control-plane component, from the "pid binary" files that
/// `tests/cluster/up.sh` writes.
fn cluster_cpu() -> Vec<(String, f64)> {
    ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        .iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(format!("target/cluster/run/{name}.pid"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), proc_stats(pid).0))
        })
        .collect()
}

/// How many Rollouts are Healthy at full size (and, for the update, at a new version), read from
/// a watch-fed cache so that measuring does not load the API server.
fn all_healthy(
    rollouts: &Store<Rollout>,
    hash_differs_from: Option<&std::collections::HashMap<String, String>>,
) -> usize {
    rollouts
        .state()
        .iter()
        .filter(|r| {
            let st = r.status.clone().unwrap_or_default();
            let updated = hash_differs_from.is_none_or(|m| m.get(&r.name_any()) != st.current_pod_hash.as_ref());
            st.phase == Some(RolloutPhase::Healthy)
                && st.stable_rs == st.current_pod_hash
                && st.available_replicas == Some(4)
                && st.replicas == Some(4)
                && updated
        })
        .count()
}

async fn run(n: usize) -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!("bench-{n}");
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    stepwise_e2e::eventually("old namespace gone", Duration::from_secs(180), || async {
        Ok(nss.get_opt(&ns).await?.is_none())
    })
    .await?;
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let (rollouts, writer) = reflector::store();
    let watch = tokio::spawn(
        watcher(api.clone(), watcher::Config::default()).default_backoff().reflect(writer).for_each(|_| async {}),
    );
    rollouts.wait_until_ready().await?;

    let bin = std::env::var("STEPWISE_BENCH_BIN").unwrap_or_else(|_| "target/release/stepwise-controller".into());
    let mut controller = ControllerProcess::start_binary(
        &bin,
        &ns,
        "bench",
        &["--leader-elect=false", "--qps=1000", "--burst=2000", "--concurrency=32"],
    )?;
    let pid = controller.pid();

    for i in 0..n {
        api.create(&PostParams::default(), &rollout(i)?).await?;
    }
    let t0 = Instant::now();
    while all_healthy(&rollouts, None) < n {
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("initial deploy of {n} Rollouts did not finish");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let initial = t0.elapsed().as_secs_f64();
    let hashes: std::collections::HashMap<String, String> = rollouts
        .state()
        .iter()
        .map(|r| (r.name_any(), r.status.clone().unwrap_or_default().current_pod_hash.unwrap_or_default()))
        .collect();
    let writes_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    let reconciles_before = controller.metric_sum("stepwise_reconciles_total").await?;
    let (cpu_before, _) = proc_stats(pid);
    let cluster_before = cluster_cpu();

    let t1 = Instant::now();
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.invalid/bench:2"}]}}}});
    // "At once": 32 patches in flight, as a CI system releasing many services would send them.
    let patched: Vec<kube::Result<Rollout>> = futures::stream::iter(0..n)
        .map(|i| {
            let (api, patch) = (&api, &patch);
            async move { api.patch(&format!("r{i}"), &PatchParams::default(), &Patch::Merge(patch)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    patched.into_iter().collect::<kube::Result<Vec<_>>>()?;
    let updated_in = t1.elapsed().as_secs_f64();
    while all_healthy(&rollouts, Some(&hashes)) < n {
        if t1.elapsed() > Duration::from_secs(1200) {
            anyhow::bail!("update of {n} Rollouts did not finish");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = t1.elapsed().as_secs_f64();
    let writes = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - writes_before;
    let reconciles = controller.metric_sum("stepwise_reconciles_total").await? - reconciles_before;
    let (cpu_after, hwm_kib) = proc_stats(pid);
    let cluster_after = cluster_cpu();
    // Steady state: nothing changes for 10 s; the controller should write nothing.
    let idle_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_writes = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - idle_before;
    let (cpu_total, _) = proc_stats(pid);
    controller.kill_hard();

    println!(
        "bench: N={n} Rollouts x 4 replicas, steps setWeight 25 / pause 5s / setWeight 50 / pause 5s / setWeight 100"
    );
    println!("  initial deploy of all:          {initial:.1} s");
    println!("  image patched on all in:        {updated_in:.1} s");
    println!(
        "  update until all Healthy:       {total:.1} s  (pauses: {PAUSES:.0} s, beyond the pauses: {:.1} s)",
        total - PAUSES
    );
    println!("  controller CPU during update:   {:.1} s  (whole run: {cpu_total:.1} s)", cpu_after - cpu_before);
    let cluster: Vec<String> = cluster_after
        .iter()
        .zip(&cluster_before)
        .map(|((name, after), (_, before))| format!("{name} {:.1}", after - before))
        .collect();
    println!("  control plane CPU during update: {} s", cluster.join(", "));
    println!("  controller peak RSS:            {:.1} MiB", hwm_kib as f64 / 1024.0);
    println!("  API writes per Rollout update:  {:.1}  (events included)", writes / n as f64);
    println!("  reconciles per Rollout update:  {:.1}", reconciles / n as f64);
    println!("  API writes at steady state:     {idle_writes} in 10 s");
    watch.abort();
    // Wait for the namespace to go, so that its deletion does not load the next measurement.
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    stepwise_e2e::eventually("namespace deleted", Duration::from_secs(600), || async {
        Ok(nss.get_opt(&ns).await?.is_none())
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![100, 500] } else { counts };
    for n in counts {
        run(n).await?;
    }
    Ok(())
}
