//! The scale fleet (`bench --scale N`): Rollouts of 1 replica, created in stages up to N
//! (N/10, N/2, N), each stage left to settle and then watched at steady state for a window:
//! the controller's RSS and CPU seconds per minute, and every write to the fleet's objects by
//! anyone (the resourceVersions of every Rollout and ReplicaSet, and the namespace's Events, before
//! and after the window), so that "zero writes" does not rest on the controller's own count. Then
//! a new controller process starts on the whole fleet, to measure what a restart costs and the RSS
//! of a process that only ever held N. With `STEPWISE_BENCH_HEAP_BIN` (the build of `just
//! heap-profile`), that build is started on the whole fleet too, stopped once settled, and its heap
//! profile kept in `target/bench/`.
//!
//! Fake nodes are added (`bench-node-*`, 1,000 pods each) until the nodes hold N pods, and are
//! removed at the end with the namespace.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{ControllerProcess, client, eventually, install_crds};

use super::{STRATEGY, bench_binary, fresh_namespace, proc_stats, rss_kib, start_bench_controller, watch_rollouts};

const PODS_PER_NODE: usize = 1000;

fn scale_rollout(i: usize) -> anyhow::Result<Rollout> {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: s{i}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: s{i}}}}}\n  template:\n    metadata: {{labels: {{app: s{i}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/bench:1'}}]}}\n  strategy:\n{}",
        STRATEGY.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

fn healthy(rollouts: &Store<Rollout>) -> usize {
    let healthy = |r: &Rollout| {
        let st = r.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.available_replicas == Some(1) && st.stable_rs.is_some()
    };
    rollouts.state().iter().filter(|r| healthy(r)).count()
}

/// Pods the Ready nodes can hold.
async fn pod_capacity(nodes: &Api<Node>) -> anyhow::Result<usize> {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let pods = |n: &Node| {
        n.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("pods")).and_then(|q| count(&q.0))
    };
    Ok(nodes.list(&ListParams::default()).await?.items.iter().filter(|n| ready(n)).filter_map(pods).sum())
}

/// A count as a quantity writes it: "1k" is 1000.
fn count(quantity: &str) -> Option<usize> {
    match quantity.strip_suffix('k') {
        Some(thousands) => thousands.parse::<usize>().ok().map(|k| k * 1000),
        None => quantity.parse().ok(),
    }
}

/// Adds fake nodes (as `tests/cluster/up.sh` makes them) until the nodes hold `pods` pods.
async fn given_capacity(nodes: &Api<Node>, pods: usize) -> anyhow::Result<Vec<String>> {
    let mut added = Vec::new();
    let mut capacity = pod_capacity(nodes).await?;
    let mut i = 0;
    while capacity < pods {
        let name = format!("bench-node-{i}");
        i += 1;
        if nodes.get_opt(&name).await?.is_some() {
            continue;
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
            },
            "status": {
                "allocatable": {"cpu": "1000", "memory": "1Ti", "pods": PODS_PER_NODE.to_string()},
                "capacity": {"cpu": "1000", "memory": "1Ti", "pods": PODS_PER_NODE.to_string()},
            },
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        added.push(name);
        capacity += PODS_PER_NODE;
    }
    eventually(&format!("nodes Ready for {pods} pods"), Duration::from_secs(120), || async {
        Ok(pod_capacity(nodes).await? >= pods)
    })
    .await?;
    Ok(added)
}

/// Every object of the fleet by kind and name, with its resourceVersion.
async fn versions(client: &kube::Client, ns: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let list = ListParams::default();
    for r in Api::<Rollout>::namespaced(client.clone(), ns).list(&list).await?.items {
        out.insert(format!("Rollout/{}", r.name_any()), r.resource_version().unwrap_or_default());
    }
    for rs in Api::<ReplicaSet>::namespaced(client.clone(), ns).list(&list).await?.items {
        out.insert(format!("ReplicaSet/{}", rs.name_any()), rs.resource_version().unwrap_or_default());
    }
    for e in Api::<Event>::namespaced(client.clone(), ns).list(&list).await?.items {
        out.insert(format!("Event/{}", e.name_any()), e.resource_version().unwrap_or_default());
    }
    Ok(out)
}

/// The objects created, changed or deleted between two snapshots.
fn changed(before: &HashMap<String, String>, after: &HashMap<String, String>) -> Vec<String> {
    let mut changed: Vec<String> =
        after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    changed.extend(before.keys().filter(|k| !after.contains_key(*k)).cloned());
    changed.sort();
    changed
}

/// A steady window on a settled fleet: RSS, CPU seconds per minute, and the writes seen.
struct Steady {
    rss_mib: f64,
    cpu_per_minute: f64,
    writes_counted: f64,
    changed: Vec<String>,
}

async fn steady_window(
    client: &kube::Client,
    ns: &str,
    controller: &ControllerProcess,
    window: Duration,
) -> anyhow::Result<Steady> {
    let before = versions(client, ns).await?;
    let writes_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    let (cpu_before, _) = proc_stats(controller.pid());
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu_after, _) = proc_stats(controller.pid());
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    let writes_counted = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - writes_before;
    let after = versions(client, ns).await?;
    Ok(Steady {
        rss_mib: rss_kib(controller.pid()) as f64 / 1024.0,
        cpu_per_minute: (cpu_after - cpu_before) / minutes,
        writes_counted,
        changed: changed(&before, &after),
    })
}

/// Waits until the controller has finished reconciling what it found: its reconcile count stops
/// moving for 10 s.
async fn settled(controller: &ControllerProcess, timeout: Duration) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut last = -1.0;
    loop {
        let now = controller.metric_sum("stepwise_reconciles_total").await.unwrap_or(0.0);
        if now == last && now > 0.0 {
            return Ok(now);
        }
        if t.elapsed() > timeout {
            anyhow::bail!("the controller still reconciling after {timeout:?} ({now} reconciles)");
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

pub async fn run_scale(n: usize) -> anyhow::Result<()> {
    let window =
        Duration::from_secs(std::env::var("STEPWISE_BENCH_WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(60));
    let client = client().await?;
    install_crds(&client).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let added_nodes = given_capacity(&nodes, n + 100).await?;
    let ns = format!("bench-scale-{n}");
    let nss: Api<Namespace> = Api::all(client.clone());
    fresh_namespace(&nss, &ns, Duration::from_secs(1200)).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let (rollouts, watch) = watch_rollouts(&api);
    rollouts.wait_until_ready().await?;

    let bin = bench_binary();
    let mut controller = start_bench_controller(&bin, &ns, "scale")?;
    println!("bench --scale {n}: Rollouts of 1 replica, created in stages; steady windows of {} s", window.as_secs());
    println!("  stage  | created in | Healthy after | RSS MiB | CPU s/min | writes counted | objects changed");
    let mut created = 0;
    let mut stages = Vec::new();
    for stage in [n / 10, n / 2, n] {
        let t = Instant::now();
        let creates: Vec<kube::Result<Rollout>> = futures::stream::iter(created..stage)
            .map(|i| {
                let api = &api;
                async move { api.create(&PostParams::default(), &scale_rollout(i).expect("a valid Rollout")).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        creates.into_iter().collect::<kube::Result<Vec<_>>>()?;
        created = stage;
        let created_in = t.elapsed().as_secs_f64();
        let mut last_report = Instant::now();
        while healthy(&rollouts) < stage {
            if t.elapsed() > Duration::from_secs(3600) {
                anyhow::bail!("{} of {stage} Rollouts Healthy after an hour", healthy(&rollouts));
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                eprintln!("  … {} of {stage} Healthy after {:.0} s", healthy(&rollouts), t.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let healthy_after = t.elapsed().as_secs_f64();
        settled(&controller, Duration::from_secs(600)).await?;
        let steady = steady_window(&client, &ns, &controller, window).await?;
        println!(
            "  {stage:>6} | {created_in:>8.1} s | {healthy_after:>11.1} s | {:>7.1} | {:>9.2} | {:>14} | {} {}",
            steady.rss_mib,
            steady.cpu_per_minute,
            steady.writes_counted,
            steady.changed.len(),
            steady.changed.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
        stages.push((stage, steady.rss_mib));
    }
    if let (Some((n0, rss0)), Some((n1, rss1))) = (stages.first(), stages.last()) {
        let slope = (rss1 - rss0) / (*n1 - *n0) as f64 * 1024.0;
        println!("  RSS per Rollout from {n0} to {n1}: {slope:.1} KiB");
    }
    controller.kill_hard();

    // A new process on the whole fleet: the cost of a restart, and the RSS of a process that never
    // held fewer.
    let before = versions(&client, &ns).await?;
    let t = Instant::now();
    let fresh = start_bench_controller(&bin, &ns, "scale-restart")?;
    eventually("the new controller ready", Duration::from_secs(600), || async {
        Ok(fresh.get("/readyz").await.map(|(code, _)| code == 200).unwrap_or(false))
    })
    .await?;
    let ready_in = t.elapsed().as_secs_f64();
    let reconciles = settled(&fresh, Duration::from_secs(900)).await?;
    let settled_in = t.elapsed().as_secs_f64();
    let (cpu, hwm) = proc_stats(fresh.pid());
    let restart_changes = changed(&before, &versions(&client, &ns).await?);
    let steady = steady_window(&client, &ns, &fresh, window).await?;
    println!(
        "  restart on {n}: caches synced in {ready_in:.1} s; {reconciles} reconciles, settled in {settled_in:.1} s, {cpu:.1} CPU s; peak RSS {:.1} MiB; objects changed by the restart: {}",
        hwm as f64 / 1024.0,
        restart_changes.len()
    );
    println!(
        "  then at steady state: RSS {:.1} MiB, {:.2} CPU s/min, {} writes counted, {} objects changed",
        steady.rss_mib,
        steady.cpu_per_minute,
        steady.writes_counted,
        steady.changed.len()
    );
    drop(fresh);

    if let Ok(heap_bin) = std::env::var("STEPWISE_BENCH_HEAP_BIN") {
        heap_profile(&heap_bin, &ns, n).await?;
    }

    watch.abort();
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    eprintln!("  deleting the namespace (up to 20 min)…");
    eventually("namespace deleted", Duration::from_secs(1200), || async { Ok(nss.get_opt(&ns).await?.is_none()) })
        .await?;
    for name in added_nodes {
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
    Ok(())
}

/// The heap-profiling build on the whole fleet, stopped once settled; its profile is moved to
/// `target/bench/dhat-heap-<n>.json`.
async fn heap_profile(bin: &str, ns: &str, n: usize) -> anyhow::Result<()> {
    let profile = std::path::Path::new("dhat-heap.json");
    let _ = std::fs::remove_file(profile);
    let mut profiled = start_bench_controller(bin, ns, "scale-heap")?;
    eventually("the profiled controller ready", Duration::from_secs(1800), || async {
        Ok(profiled.get("/readyz").await.map(|(code, _)| code == 200).unwrap_or(false))
    })
    .await?;
    settled(&profiled, Duration::from_secs(1800)).await?;
    let rss = rss_kib(profiled.pid()) as f64 / 1024.0;
    profiled.terminate()?;
    eventually("the heap profile written", Duration::from_secs(120), || async { Ok(profile.exists()) }).await?;
    std::fs::create_dir_all("target/bench")?;
    let kept = format!("target/bench/dhat-heap-{n}.json");
    std::fs::rename(profile, &kept)?;
    println!("  heap profile of the settled controller on {n} (RSS {rss:.1} MiB under the profiler): {kept}");
    Ok(())
}
