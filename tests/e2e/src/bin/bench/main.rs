//! `just bench`: N Rollouts (4 replicas; steps setWeight 25, pause 5s, setWeight 50, pause 5s,
//! setWeight 100) updated at once on the local control plane. Reports the time until all are
//! Healthy, the time beyond the pauses, the controller's CPU seconds and peak RSS, and the API
//! writes per Rollout.
//!
//! The analysed fleet (`bench --analysed N`): N Rollouts paused at 50 % with a background
//! Prometheus analysis measuring every 5 s against a real Prometheus on 127.0.0.1 (the fixture of
//! `stepwise_e2e::prometheus`). Reports, over a steady window, the controller's CPU and RSS, its
//! writes, and the queries per second Prometheus answered, expected against measured.
//!
//! The routed fleet (`bench --routed N`): N Rollouts, each with its own Istio VirtualService (the
//! real CRD, from `tests/cluster/router-crds.sh`) and canary and stable Services, steps
//! setWeight 20, pause 5s, setWeight 60, pause 5s, updated at once. Reports what the plain fleet
//! does, plus the VirtualService patches per Rollout, and fails unless every Rollout ends Healthy
//! with its VirtualService back at canary 0 / stable 100.
//!
//! The scale fleet (`bench --scale N`, in `bench/scale.rs`): Rollouts of 1 replica created in
//! stages up to N and watched at steady state: RSS, CPU per minute, every write, and a restart.
//!
//! Usage: `bench [N...] [--analysed N]... [--routed N]... [--scale N]...`; no arguments runs
//! N = 100 and 500, then the analysed fleet at N = 100. `STEPWISE_BENCH_WINDOW` sets the steady
//! windows of the analysed and scale fleets (seconds, 60).

mod scale;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisTemplate, Rollout, RolloutPhase};
use stepwise_e2e::prometheus::{Prometheus, TestExporter, success_rate_query};
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

/// Deletes namespace `ns` if a previous run left it, waits until it is gone, and creates it again.
async fn fresh_namespace(
    nss: &Api<k8s_openapi::api::core::v1::Namespace>,
    ns: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let _ = nss.delete(ns, &DeleteParams::default()).await;
    stepwise_e2e::eventually("old namespace gone", timeout, || async { Ok(nss.get_opt(ns).await?.is_none()) }).await?;
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?).await?;
    Ok(())
}

/// A cache of the namespace's Rollouts fed by a watch, so that measuring does not load the API
/// server, and the task that feeds it.
fn watch_rollouts(api: &Api<Rollout>) -> (Store<Rollout>, tokio::task::JoinHandle<()>) {
    let (rollouts, writer) = reflector::store();
    let watch = tokio::spawn(
        watcher(api.clone(), watcher::Config::default()).default_backoff().reflect(writer).for_each(|_| async {}),
    );
    (rollouts, watch)
}

/// The controller build measured: `STEPWISE_BENCH_BIN`, or the release build.
fn bench_binary() -> String {
    std::env::var("STEPWISE_BENCH_BIN").unwrap_or_else(|_| "target/release/stepwise-controller".into())
}

/// A controller on namespace `ns` with the benchmark's flags: no leader election, and limits high
/// enough that they are not what is measured.
fn start_bench_controller(bin: &str, ns: &str, name: &str) -> anyhow::Result<ControllerProcess> {
    ControllerProcess::start_binary(
        bin,
        ns,
        name,
        &["--leader-elect=false", "--qps=1000", "--burst=2000", "--concurrency=32"],
    )
}

/// CPU seconds and peak RSS (KiB) of a process.
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
    fresh_namespace(&nss, &ns, Duration::from_secs(180)).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let (rollouts, watch) = watch_rollouts(&api);
    rollouts.wait_until_ready().await?;

    let mut controller = start_bench_controller(&bench_binary(), &ns, "bench")?;
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

/// Seconds between the measurements of the analysed fleet's metric.
const ANALYSIS_INTERVAL: f64 = 5.0;

/// The analysed fleet's template: one metric, a measurement every 5 s with no count (measuring
/// until the run is stopped), the fixture's success rate of the Rollout's app.
fn analysis_template() -> anyhow::Result<AnalysisTemplate> {
    let query = success_rate_query("{{args.app}}");
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: success-rate}}\nspec:\n  args: [{{name: app}}, {{name: prometheus}}]\n  metrics:\n  - name: success-rate\n    interval: {ANALYSIS_INTERVAL}s\n    failureLimit: 1\n    successCondition: result[0] >= 0.95\n    provider:\n      prometheus:\n        address: '{{{{args.prometheus}}}}'\n        query: {}\n",
        serde_json::to_string(&query)?
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

/// An analysed Rollout: a background analysis of its app, and a canary that stops at 50 % for
/// good (`pause: {}`), so that the analysis goes on measuring.
fn analysed_rollout(i: usize, prometheus: &str) -> anyhow::Result<Rollout> {
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: r{i}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: r{i}}}}}\n  template:\n    metadata: {{labels: {{app: r{i}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/bench:1'}}]}}\n  strategy:\n    canary:\n      analysis:\n        templates: [{{templateName: success-rate}}]\n        args: [{{name: app, value: r{i}}}, {{name: prometheus, value: '{prometheus}'}}]\n      steps:\n      - setWeight: 50\n      - pause: {{}}\n"
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

/// The resident set (KiB) of a process now.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What Prometheus counted of the queries it answered, from its own `/metrics`: the requests to
/// `/api/v1/query`, and the queries its engine evaluated.
async fn prometheus_queries(port: u16) -> anyhow::Result<(f64, f64)> {
    let body = stepwise_e2e::prometheus::http_get(port, "/metrics").await?;
    let sum = |name: &str, label: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum("prometheus_http_requests_total{", "handler=\"/api/v1/query\""),
        sum("prometheus_engine_query_duration_seconds_count{", "slice=\"inner_eval\""),
    ))
}

/// Measurements taken (errors included) by each run, by name, from the watch-fed cache.
fn measurement_counts(runs: &Store<AnalysisRun>) -> std::collections::HashMap<String, i32> {
    runs.state()
        .iter()
        .map(|r| {
            let taken = r.status.as_ref().map_or(0, |s| s.metric_results.iter().map(|m| m.count + m.error).sum());
            (r.name_any(), taken)
        })
        .collect()
}

/// The runs measuring (Running, at least one measurement, none failed nor in error).
fn measuring(runs: &Store<AnalysisRun>) -> usize {
    runs.state()
        .iter()
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(AnalysisPhase::Running)
                    && s.metric_results.iter().any(|m| m.count >= 1)
                    && s.metric_results.iter().all(|m| m.failed == 0 && m.error == 0)
            })
        })
        .count()
}

/// The analysed fleet: N Rollouts, each updated to a canary paused at 50 % with a background
/// AnalysisRun querying Prometheus every 5 s, measured over a steady window. Fails when the runs
/// do not measure.
async fn run_analysed(n: usize) -> anyhow::Result<()> {
    let window: u64 = std::env::var("STEPWISE_BENCH_WINDOW").ok().and_then(|w| w.parse().ok()).unwrap_or(60);
    let apps: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let exporter = TestExporter::start(&apps.iter().map(String::as_str).collect::<Vec<_>>())?;
    let prometheus = Prometheus::start(&exporter).await?;
    prometheus.wait_for_data(&success_rate_query("r0"), Duration::from_secs(60)).await?;
    let prometheus_port: u16 = prometheus
        .address()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in {}", prometheus.address()))?;

    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!("bench-analysed-{n}");
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    fresh_namespace(&nss, &ns, Duration::from_secs(180)).await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
    templates.create(&PostParams::default(), &analysis_template()?).await?;
    let (rollouts, watch) = watch_rollouts(&api);
    let (runs, run_writer) = reflector::store();
    let run_watch = tokio::spawn(
        watcher(Api::<AnalysisRun>::namespaced(client.clone(), &ns), watcher::Config::default())
            .default_backoff()
            .reflect(run_writer)
            .for_each(|_| async {}),
    );
    rollouts.wait_until_ready().await?;
    runs.wait_until_ready().await?;

    let mut controller = start_bench_controller(&bench_binary(), &ns, "bench")?;
    let pid = controller.pid();

    let address = prometheus.address();
    for i in 0..n {
        api.create(&PostParams::default(), &analysed_rollout(i, &address)?).await?;
    }
    let t0 = Instant::now();
    while all_healthy(&rollouts, None) < n {
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("initial deploy of {n} Rollouts did not finish");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let initial = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.invalid/bench:2"}]}}}});
    let patched: Vec<kube::Result<Rollout>> = futures::stream::iter(0..n)
        .map(|i| {
            let (api, patch) = (&api, &patch);
            async move { api.patch(&format!("r{i}"), &PatchParams::default(), &Patch::Merge(patch)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    patched.into_iter().collect::<kube::Result<Vec<_>>>()?;
    // Every Rollout paused at 50 % and every run measuring.
    let paused = |rollouts: &Store<Rollout>| {
        rollouts
            .state()
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Some(RolloutPhase::Paused)))
            .count()
    };
    while paused(&rollouts) < n || runs.state().len() < n || measuring(&runs) < n {
        if t1.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "after 600 s, {} of {n} Rollouts paused, {} AnalysisRuns, {} measuring",
                paused(&rollouts),
                runs.state().len(),
                measuring(&runs)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let started = t1.elapsed().as_secs_f64();
    // Let the update's own work (pods, ReplicaSets) settle before the window.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let counts_before = measurement_counts(&runs);
    let writes_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    let reconciles_before = controller.metric_sum("stepwise_reconciles_total").await?;
    let (queries_before, evals_before) = prometheus_queries(prometheus_port).await?;
    let (cpu_before, _) = proc_stats(pid);
    let cluster_before = cluster_cpu();
    let w0 = Instant::now();
    let mut rss_max = 0;
    while w0.elapsed() < Duration::from_secs(window) {
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (cpu_after, hwm_kib) = proc_stats(pid);
    let (queries_after, evals_after) = prometheus_queries(prometheus_port).await?;
    let elapsed = w0.elapsed().as_secs_f64();
    let cluster_after = cluster_cpu();
    let writes = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - writes_before;
    let reconciles = controller.metric_sum("stepwise_reconciles_total").await? - reconciles_before;
    let rss_end = rss_kib(pid);
    let counts_after = measurement_counts(&runs);
    let still_measuring = measuring(&runs);
    let log = controller.log_tail();
    controller.kill_hard();

    let taken: Vec<i32> =
        counts_after.iter().map(|(name, after)| after - counts_before.get(name).copied().unwrap_or(0)).collect();
    let measurements: i32 = taken.iter().sum();
    let fewest = taken.iter().copied().min().unwrap_or(0);
    let most = taken.iter().copied().max().unwrap_or(0);
    let sample = runs
        .state()
        .iter()
        .find(|r| r.name_any().starts_with("r0-"))
        .cloned()
        .or_else(|| runs.state().first().cloned());
    let sample_result = sample.as_ref().and_then(|r| r.status.as_ref()).and_then(|s| s.metric_results.first().cloned());
    let expected = n as f64 / ANALYSIS_INTERVAL;
    let cpu = cpu_after - cpu_before;

    println!(
        "bench: analysed fleet, N={n} Rollouts x 4 replicas paused at setWeight 50, each with a background Prometheus analysis every {ANALYSIS_INTERVAL:.0} s"
    );
    println!("  initial deploy of all:          {initial:.1} s");
    println!("  update until all runs measuring: {started:.1} s");
    println!("  steady window:                  {elapsed:.1} s");
    println!("  controller CPU in the window:   {cpu:.1} s  ({:.1} % of one core)", 100.0 * cpu / elapsed);
    let cluster: Vec<String> = cluster_after
        .iter()
        .zip(&cluster_before)
        .map(|((name, after), (_, before))| format!("{name} {:.1}", after - before))
        .collect();
    println!("  control plane CPU in the window: {} s", cluster.join(", "));
    println!(
        "  controller RSS:                 {:.1} MiB at the end, {:.1} MiB most in the window, {:.1} MiB peak of the run",
        rss_end as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    println!(
        "  Prometheus queries per second:  {:.1} measured (/api/v1/query requests), {:.1} evaluated, {expected:.1} expected (N / {ANALYSIS_INTERVAL:.0} s)",
        (queries_after - queries_before) / elapsed,
        (evals_after - evals_before) / elapsed
    );
    println!(
        "  measurements in the window:     {measurements} ({:.1}/s; per run {fewest} to {most}, {:.0} expected)",
        measurements as f64 / elapsed,
        elapsed / ANALYSIS_INTERVAL
    );
    println!(
        "  controller API writes:          {writes} ({:.1}/s, {:.2} per measurement)",
        writes / elapsed,
        writes / f64::from(measurements.max(1))
    );
    println!("  reconciles:                     {reconciles} ({:.1}/s)", reconciles / elapsed);
    if let (Some(run), Some(result)) = (&sample, &sample_result) {
        println!(
            "  sample run {}: {:?}, count {}, successful {}, last value {}",
            run.name_any(),
            run.status.as_ref().and_then(|s| s.phase),
            result.count,
            result.successful,
            result.measurements.last().and_then(|m| m.value.clone()).unwrap_or_default()
        );
    }

    watch.abort();
    run_watch.abort();
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    stepwise_e2e::eventually("namespace deleted", Duration::from_secs(600), || async {
        Ok(nss.get_opt(&ns).await?.is_none())
    })
    .await?;
    drop(prometheus);
    drop(exporter);

    // A benchmark that measured nothing fails.
    let floor = (elapsed / ANALYSIS_INTERVAL) as i32 - 2;
    anyhow::ensure!(
        counts_after.len() == n && still_measuring == n && fewest >= floor.max(1),
        "the analyses did not measure: {} runs, {still_measuring} Running without failures, {fewest} to {most} measurements per run in {elapsed:.0} s (at least {} expected)\n----- controller log -----\n{log}",
        counts_after.len(),
        floor.max(1)
    );
    let measured_qps = (queries_after - queries_before) / elapsed;
    anyhow::ensure!(
        measured_qps > 0.5 * expected,
        "Prometheus answered {measured_qps:.1} queries/s, expected about {expected:.1}"
    );
    Ok(())
}

/// The routed fleet's two pauses, the plain fleet's (10 s in all), so that the times beyond the
/// pauses of the two fleets compare.
const ROUTED_PAUSES: f64 = 10.0;

/// Seconds the routed fleet watches the controller after all are Healthy, for writes it should
/// not make.
const ROUTED_IDLE: u64 = 30;

/// A routed Rollout: canary and stable Services, its own VirtualService, and the steps
/// setWeight 20, pause 5s, setWeight 60, pause 5s.
fn routed_rollout(i: usize) -> anyhow::Result<Rollout> {
    // scaleDownDelaySeconds 0: after promotion the old pods would otherwise wait the default 30 s
    // (for proxies to drain, and there are none here) before the Rollout is Healthy, a wait as
    // fixed as a pause, which would hide the work in the total.
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: r{i}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: r{i}}}}}\n  template:\n    metadata: {{labels: {{app: r{i}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/bench:1'}}]}}\n  strategy:\n    canary:\n      canaryService: r{i}-canary\n      stableService: r{i}-stable\n      scaleDownDelaySeconds: 0\n      trafficRouting:\n        istio:\n          virtualService: {{name: r{i}, routes: [primary]}}\n      steps:\n      - setWeight: 20\n      - pause: {{duration: 5s}}\n      - setWeight: 60\n      - pause: {{duration: 5s}}\n"
    );
    Ok(serde_yaml::from_str(&yaml)?)
}

/// A Service of Rollout `r{i}` (the controller adds the pod-template-hash to its selector).
fn routed_service(i: usize, role: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("r{i}-{role}")},
        "spec": {"selector": {"app": format!("r{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?)
}

/// Rollout `r{i}`'s VirtualService: one route, all of it to the stable Service.
fn routed_virtual_service(i: usize) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": format!("r{i}")},
        "spec": {
            "hosts": [format!("r{i}.example.invalid")],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": format!("r{i}-stable"), "port": {"number": 80}}, "weight": 100},
                {"destination": {"host": format!("r{i}-canary"), "port": {"number": 80}}, "weight": 0}
            ]}]
        }
    }))?)
}

fn virtual_services(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Each VirtualService's metadata.generation, by name, from one LIST. The API server raises it
/// on every write that changes the spec (the CRD has a status subresource, so nothing else
/// does); a patch that changes nothing leaves it, and is no patch of the weights.
async fn generations(api: &Api<DynamicObject>) -> anyhow::Result<std::collections::HashMap<String, i64>> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|vs| (vs.name_any(), vs.metadata.generation.unwrap_or(0)))
        .collect())
}

/// Per VirtualService, how many times its generation rose from `before` to `after` (one absent
/// from `before` counts from 1, the generation of a created object); (sum, fewest, most).
fn generation_changes(
    before: &std::collections::HashMap<String, i64>,
    after: &std::collections::HashMap<String, i64>,
) -> (i64, i64, i64) {
    let changes: Vec<i64> = after.iter().map(|(name, g)| g - before.get(name).copied().unwrap_or(1)).collect();
    (changes.iter().sum(), changes.iter().copied().min().unwrap_or(0), changes.iter().copied().max().unwrap_or(0))
}

/// The (canary, stable) weights of a VirtualService's route `primary`, found by destination host.
fn routed_weights(vs: &DynamicObject) -> (Option<i64>, Option<i64>) {
    let name = vs.name_any();
    let spec = vs.data.get("spec").cloned().unwrap_or(Value::Null);
    let route = spec
        .get("http")
        .and_then(Value::as_array)
        .and_then(|routes| routes.iter().find(|r| r.get("name").and_then(Value::as_str) == Some("primary")))
        .and_then(|r| r.get("route"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let weight = |host: String| {
        route
            .iter()
            .find(|d| d.pointer("/destination/host").and_then(Value::as_str) == Some(host.as_str()))
            .and_then(|d| d.get("weight"))
            .and_then(Value::as_i64)
    };
    (weight(format!("{name}-canary")), weight(format!("{name}-stable")))
}

/// The routed fleet: N Rollouts behind Istio VirtualServices, updated at once. Measures as the
/// plain fleet does, counts the VirtualService patches, and fails unless every Rollout ends
/// Healthy at the new version with its VirtualService at canary 0 / stable 100.
async fn run_routed(n: usize) -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = format!("bench-routed-{n}");
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);
    // A run that stopped half-way leaves Rollouts whose traffic finalizer no controller will
    // remove any more: the namespace would never go.
    if nss.get_opt(&ns).await?.is_some() {
        for r in api.list(&ListParams::default()).await?.items {
            let unfinalized = json!({"metadata": {"finalizers": null}});
            let _ = api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&unfinalized)).await;
        }
    }
    fresh_namespace(&nss, &ns, Duration::from_secs(300)).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let vss = virtual_services(&client, &ns);
    vss.list(&ListParams::default().limit(1)).await.map_err(|e| {
        anyhow::anyhow!("VirtualServices are not served ({e}): install the CRDs with tests/cluster/router-crds.sh")
    })?;

    // The routing objects exist before their Rollouts, as users create them; 32 creations in
    // flight, so that setting up 500 takes seconds, not minutes.
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (services, vss) = (&services, &vss);
            async move {
                services.create(&PostParams::default(), &routed_service(i, "stable")?).await?;
                services.create(&PostParams::default(), &routed_service(i, "canary")?).await?;
                vss.create(&PostParams::default(), &routed_virtual_service(i)?).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let (rollouts, watch) = watch_rollouts(&api);
    rollouts.wait_until_ready().await?;

    let mut controller = start_bench_controller(&bench_binary(), &ns, "bench")?;
    let pid = controller.pid();

    for i in 0..n {
        api.create(&PostParams::default(), &routed_rollout(i)?).await?;
    }
    let t0 = Instant::now();
    while all_healthy(&rollouts, None) < n {
        if t0.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "initial deploy of {n} routed Rollouts did not finish\n----- controller log -----\n{}",
                controller.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let initial = t0.elapsed().as_secs_f64();
    let hashes: std::collections::HashMap<String, String> = rollouts
        .state()
        .iter()
        .map(|r| (r.name_any(), r.status.clone().unwrap_or_default().current_pod_hash.unwrap_or_default()))
        .collect();
    let generations_before = generations(&vss).await?;
    let writes_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    let reconciles_before = controller.metric_sum("stepwise_reconciles_total").await?;
    let (cpu_before, _) = proc_stats(pid);
    let cluster_before = cluster_cpu();

    let t1 = Instant::now();
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.invalid/bench:2"}]}}}});
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
            anyhow::bail!(
                "update of {n} routed Rollouts did not finish: {} Healthy\n----- controller log -----\n{}",
                all_healthy(&rollouts, Some(&hashes)),
                controller.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total = t1.elapsed().as_secs_f64();
    let writes = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - writes_before;
    let reconciles = controller.metric_sum("stepwise_reconciles_total").await? - reconciles_before;
    let (cpu_after, hwm_kib) = proc_stats(pid);
    let cluster_after = cluster_cpu();
    let generations_healthy = generations(&vss).await?;

    // Steady state: nothing changes; the controller should write nothing, to the VirtualServices
    // least of all.
    let idle_before = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(ROUTED_IDLE)).await;
    let idle_writes = controller.metric("stepwise_api_writes_total").await?.unwrap_or(0.0) - idle_before;
    let generations_end = generations(&vss).await?;
    let (cpu_total, _) = proc_stats(pid);
    let log = controller.log_tail();

    // The end state, read after the steady window: every Rollout Healthy at the new version, and
    // every VirtualService sending everything to stable.
    let healthy_at_end = all_healthy(&rollouts, Some(&hashes));
    let wrong_weights: Vec<String> = vss
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|vs| {
            let weights = routed_weights(vs);
            (weights != (Some(0), Some(100))).then(|| format!("{} (canary, stable) = {weights:?}", vs.name_any()))
        })
        .collect();
    let vs_count = generations_end.len();

    let (initial_patches, _, _) = generation_changes(&Default::default(), &generations_before);
    let (update_patches, fewest, most) = generation_changes(&generations_before, &generations_healthy);
    let (idle_patches, _, _) = generation_changes(&generations_healthy, &generations_end);
    let cpu = cpu_after - cpu_before;

    println!(
        "bench: routed fleet, N={n} Rollouts x 4 replicas, each with its own Istio VirtualService and canary/stable Services, steps setWeight 20 / pause 5s / setWeight 60 / pause 5s, scaleDownDelaySeconds 0"
    );
    println!("  initial deploy of all:          {initial:.1} s");
    println!("  image patched on all in:        {updated_in:.1} s");
    println!(
        "  update until all Healthy:       {total:.1} s  (pauses: {ROUTED_PAUSES:.0} s, beyond the pauses: {:.1} s)",
        total - ROUTED_PAUSES
    );
    println!(
        "  controller CPU during update:   {cpu:.1} s  ({:.1} % of one core; whole run: {cpu_total:.1} s)",
        100.0 * cpu / total
    );
    let cluster: Vec<String> = cluster_after
        .iter()
        .zip(&cluster_before)
        .map(|((name, after), (_, before))| format!("{name} {:.1}", after - before))
        .collect();
    println!("  control plane CPU during update: {} s", cluster.join(", "));
    println!("  controller peak RSS:            {:.1} MiB", hwm_kib as f64 / 1024.0);
    println!("  API writes per Rollout update:  {:.1}  (events included)", writes / n as f64);
    println!("  reconciles per Rollout update:  {:.1}", reconciles / n as f64);
    println!(
        "  VirtualService patches per Rollout update: {:.2}  (generation changes; {fewest} to {most} per VirtualService; initial deploy: {initial_patches} in all)",
        update_patches as f64 / n as f64
    );
    println!(
        "  API writes at steady state:     {idle_writes} in {ROUTED_IDLE} s  (VirtualService generation changes: {idle_patches})"
    );
    println!(
        "  end state:                      {healthy_at_end} of {n} Healthy at the new version, {} of {vs_count} VirtualServices at canary 0 / stable 100",
        vs_count - wrong_weights.len()
    );

    watch.abort();
    // The controller stays until the namespace is gone: each routed Rollout's finalizer (traffic
    // back to stable before deletion) is its to remove.
    let _ = nss.delete(&ns, &DeleteParams::background()).await;
    stepwise_e2e::eventually("namespace deleted", Duration::from_secs(600), || async {
        Ok(nss.get_opt(&ns).await?.is_none())
    })
    .await?;
    controller.kill_hard();

    // Only correctness is asserted, never a time.
    anyhow::ensure!(
        healthy_at_end == n && vs_count == n && wrong_weights.is_empty(),
        "the routed fleet did not end as it should: {healthy_at_end} of {n} Rollouts Healthy at the new version, {vs_count} VirtualServices, {} with other weights than canary 0 / stable 100: {}\n----- controller log -----\n{log}",
        wrong_weights.len(),
        wrong_weights.iter().take(10).cloned().collect::<Vec<_>>().join("; ")
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut counts = Vec::new();
    let mut analysed = Vec::new();
    let mut routed = Vec::new();
    let mut scaled = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--analysed" {
            let n = args.next().and_then(|n| n.parse().ok());
            analysed.push(n.ok_or_else(|| anyhow::anyhow!("--analysed needs a number of Rollouts"))?);
        } else if arg == "--routed" {
            let n = args.next().and_then(|n| n.parse().ok());
            routed.push(n.ok_or_else(|| anyhow::anyhow!("--routed needs a number of Rollouts"))?);
        } else if arg == "--scale" {
            let n = args.next().and_then(|n| n.parse().ok());
            scaled.push(n.ok_or_else(|| anyhow::anyhow!("--scale needs a number of Rollouts"))?);
        } else if let Ok(n) = arg.parse() {
            counts.push(n);
        } else {
            anyhow::bail!(
                "unknown argument {arg:?}: usage: bench [N...] [--analysed N]... [--routed N]... [--scale N]..."
            );
        }
    }
    if counts.is_empty() && analysed.is_empty() && routed.is_empty() && scaled.is_empty() {
        (counts, analysed) = (vec![100, 500], vec![100]);
    }
    for n in counts {
        run(n).await?;
    }
    for n in analysed {
        run_analysed(n).await?;
    }
    for n in routed {
        run_routed(n).await?;
    }
    for n in scaled {
        scale::run_scale(n).await?;
    }
    Ok(())
}
