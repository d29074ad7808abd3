//! The API server restarted in the middle of a fleet's update: the real kube-apiserver of the
//! local control plane is stopped (TERM, then KILL after the grace of
//! `tests/cluster/restart-apiserver.sh`), left down for ten seconds and started again with the same
//! flags on the same etcd. The controller talks to it directly, with no proxy in between, so what
//! it meets is what a control-plane upgrade gives it: connections refused, every watch cut, and a
//! new API server whose watch cache starts afresh.
//!
//! It must ride it out in the same process: retry at a bounded rate while nothing answers, get
//! back to work soon after the API server is ready, and finish every Rollout as if nothing had
//! happened (one ReplicaSet per pod template, every canary step in order, never fewer available
//! pods than `replicas - maxUnavailable`). The rest of the control plane must come back by itself
//! too: a ReplicaSet created after the restart gets its pods scheduled and Ready.
//!
//! One test function: it restarts the API server every test of this binary uses, and cargo runs
//! test binaries one at a time. Runs on the local control plane (`tests/cluster/up.sh`) with the
//! debug build of the controller (`cargo build --bins`). See docs/reliability.md.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use stepwise_chaos::fleet::{Fleet, Sampler, describe, image};
use stepwise_e2e::{ControllerProcess, Env, cluster_dir, eventually, repo_root, secs};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

const ROLLOUTS: usize = 6;
/// How long nothing listens where the API server was, once its process is gone.
const DOWN_SECONDS: u64 = 10;
const CONTROLLER_FLAGS: &[&str] = &["--leader-elect=false"];
/// The components that must reconnect by themselves: none of them is restarted.
const OTHERS: [&str; 4] = ["etcd", "kube-controller-manager", "kube-scheduler", "kwok"];
/// Above this many attempts a second while nothing answers, the controller is in a hot loop (the
/// same bound as for refused connections in `watch_expiry.rs`).
const MAX_ATTEMPTS_PER_SECOND: f64 = 20.0;
/// Its watches back off to at most 5 s (with jitter) and failed reconciles retry after 5 s, so a
/// controller still idle this long after the API server is ready did not come back by itself.
const MAX_RECOVERY: Duration = Duration::from_secs(60);

/// The pid up.sh recorded for a component of the control plane.
fn component_pid(name: &str) -> anyhow::Result<u32> {
    let path = cluster_dir().join("run").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
    Ok(text.split_whitespace().next().unwrap_or_default().parse()?)
}

/// What the controller has counted so far; the differences over the outage are its attempts.
#[derive(Clone, Debug, Default)]
struct Counts {
    /// Reconciles of Rollouts that failed (`stepwise_reconciles_total{controller="rollout",result="error"}`).
    failed_reconciles: f64,
    /// Reconcile errors by kind (`stepwise_errors_total`).
    errors: BTreeMap<String, f64>,
    /// Writes of successful reconciles (`stepwise_api_writes_total`): a reconcile whose status
    /// write conflicts, because a cache is still stale, counts none.
    writes: f64,
    /// Watches that failed and were started again: the log's "watch error" lines.
    watch_retries: usize,
    /// Requests that got no answer or an error status: the client logs each one ("failed with").
    failed_requests: usize,
}

async fn counts(controller: &ControllerProcess) -> anyhow::Result<Counts> {
    let reconciles = controller.metric_values("stepwise_reconciles_total").await?;
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    Ok(Counts {
        failed_reconciles: reconciles.get("{controller=\"rollout\",result=\"error\"}").copied().unwrap_or(0.0),
        errors: controller.metric_values("stepwise_errors_total").await?,
        writes: controller.metric_sum("stepwise_api_writes_total").await?,
        watch_retries: log.lines().filter(|l| l.contains("watch error")).count(),
        failed_requests: log.lines().filter(|l| l.contains("kube_client") && l.contains("failed with")).count(),
    })
}

/// The moments of the restart, as the script reports them and as this test saw them.
#[derive(Debug)]
struct Outage {
    /// TERM sent.
    stopping: Instant,
    /// The process is gone.
    stopped: Instant,
    /// The new one answers /readyz.
    ready: Instant,
    /// The same moment in seconds since the epoch, to compare with the times objects record.
    ready_unix: f64,
    /// The controller's counts when TERM was sent and when /readyz answered.
    at_stop: Counts,
    at_ready: Counts,
}

/// Restarts the API server with `tests/cluster/restart-apiserver.sh`, reading the controller's
/// counts at the moments its output names.
async fn restart_api_server(controller: &ControllerProcess) -> anyhow::Result<Outage> {
    let script = repo_root().join("tests/cluster/restart-apiserver.sh");
    let mut child = tokio::process::Command::new(&script)
        .arg(DOWN_SECONDS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("run {}: {e}", script.display()))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let progress = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let (mut stopping, mut stopped, mut ready, mut at_stop, mut at_ready) = (None, None, None, None, None);
    let mut ready_unix = 0.0;
    while let Some(line) = lines.next_line().await? {
        match line.split_whitespace().next() {
            Some("stopping") => {
                stopping = Some(Instant::now());
                at_stop = Some(counts(controller).await?);
            }
            Some("stopped") => stopped = Some(Instant::now()),
            Some("ready") => {
                ready = Some(Instant::now());
                ready_unix = line.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or(0.0);
                at_ready = Some(counts(controller).await?);
            }
            _ => {}
        }
    }
    let status = child.wait().await?;
    let progress = progress.await.unwrap_or_default();
    eprint!("{progress}");
    match (status.success(), stopping, stopped, ready, at_stop, at_ready) {
        (true, Some(stopping), Some(stopped), Some(ready), Some(at_stop), Some(at_ready)) => {
            Ok(Outage { stopping, stopped, ready, ready_unix, at_stop, at_ready })
        }
        _ => anyhow::bail!("{} failed ({status}):\n{progress}", script.display()),
    }
}

/// A plain ReplicaSet, which only kube-controller-manager, kube-scheduler and kwok act on.
fn plain_replica_set(name: &str, replicas: i32) -> anyhow::Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image(1)}]},
            },
        },
    }))?)
}

/// When a pod's condition became true, in seconds since the epoch.
fn became_true(pod: &Pod, condition: &str) -> Option<i64> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == condition && c.status == "True")?;
    Some(c.last_transition_time.as_ref()?.0.as_second())
}

/// The pods of `app` that are on a node and Ready, as (created, scheduled, Ready) in seconds
/// since the epoch: what kube-controller-manager, kube-scheduler and kwok each did, and when.
async fn ready_scheduled_pods(pods: &Api<Pod>, app: &str) -> anyhow::Result<Vec<(i64, i64, i64)>> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .iter()
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
        .filter_map(|p| {
            let created = p.metadata.creation_timestamp.as_ref()?.0.as_second();
            Some((created, became_true(p, "PodScheduled")?, became_true(p, "Ready")?))
        })
        .collect())
}

fn secs_f(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_mid_update_when_the_api_server_restarts_converges_with_the_same_controller_process_which_retried_at_a_bounded_rate_and_resumed_soon_after()
-> anyhow::Result<()> {
    let mut env = Env::without_controller("chaos-restart").await?;
    env.start_controller(CONTROLLER_FLAGS)?;
    let fleet = Fleet::mixed(env.client.clone(), &env.ns, ROLLOUTS);
    let timeout = secs(300);
    fleet.create(&image(1)).await?;
    let before = fleet.wait_healthy(timeout).await?;
    let old_events = fleet.event_names().await?;
    let others_before: Vec<u32> = OTHERS.iter().map(|c| component_pid(c)).collect::<anyhow::Result<_>>()?;
    let controller_pid = env.controllers[0].pid();

    // Given a fleet in the middle of its update: every Rollout has pods of the new version.
    let sampler = Sampler::start(fleet.clone(), before.clone(), Duration::from_secs(1));
    let updated_at = Instant::now();
    fleet.set_image(&image(2)).await?;
    eventually("every Rollout has pods of the new version", secs(120), || async {
        let rollouts = fleet.rollouts().await?;
        Ok(rollouts.len() == ROLLOUTS
            && rollouts.iter().all(|r| {
                let status = r.status.clone().unwrap_or_default();
                status.current_pod_hash.is_some()
                    && status.current_pod_hash.as_ref() != before.get(&r.name_any())
                    && status.updated_replicas.unwrap_or(0) > 0
            }))
    })
    .await?;
    let at_stop = fleet.rollouts().await?;
    let mid_update = fleet.lagging(&at_stop, &before);
    println!(
        "{}/{ROLLOUTS} Rollouts mid-update {} after the update: {}",
        mid_update.len(),
        secs_f(updated_at.elapsed()),
        describe(&at_stop, &mid_update)
    );
    assert!(!mid_update.is_empty(), "the fleet finished before the API server stopped: the test tested nothing");

    // When the API server stops, stays down for DOWN_SECONDS and starts again.
    let outage = restart_api_server(&env.controllers[0]).await?;
    let ready_at = outage.ready;
    let (down_for, unreachable_for) = (outage.ready - outage.stopped, outage.ready - outage.stopping);

    // Then the controller got back to work soon after it was ready, and the fleet converges; a
    // ReplicaSet created now gets its pods from the rest of the control plane.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("a ReplicaSet can be created after the restart", secs(60), || async {
        match replica_sets.create(&PostParams::default(), &plain_replica_set("after-restart", 2)?).await {
            Ok(_) => Ok(true),
            // Created by an earlier attempt whose answer was lost.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(true),
            Err(_) => Ok(false),
        }
    })
    .await?;
    let (mut first_write, mut last_watch_retry, mut pods_ready, mut converged) = (None, None, None, None);
    let mut pod_times = Vec::new();
    let mut watch_retries = outage.at_ready.watch_retries;
    while first_write.is_none() || pods_ready.is_none() || converged.is_none() {
        let now = counts(&env.controllers[0]).await?;
        let at = Instant::now();
        // Counted from /readyz on: a reconcile under way at TERM may still finish on its open
        // connection, which says nothing of the recovery.
        if first_write.is_none() && now.writes > outage.at_ready.writes {
            first_write = Some(at);
        }
        if now.watch_retries > watch_retries {
            (watch_retries, last_watch_retry) = (now.watch_retries, Some(at));
        }
        if pods_ready.is_none() {
            pod_times = ready_scheduled_pods(&pods, "after-restart").await.unwrap_or_default();
            if pod_times.len() == 2 {
                pods_ready = Some(at);
            }
        }
        if converged.is_none() && fleet.rollouts().await.is_ok_and(|r| fleet.lagging(&r, &before).is_empty()) {
            converged = Some(at);
            // Its last write may have come before the first sample of the counter.
            first_write.get_or_insert(at);
        }
        if ready_at.elapsed() > timeout {
            let now = fleet.rollouts().await?;
            let lagging = fleet.lagging(&now, &before);
            anyhow::bail!(
                "{timeout:?} after the restart: first write {first_write:?}, pods {pods_ready:?}, {}\ncontroller log:\n{}",
                describe(&now, &lagging),
                env.controllers[0].log_tail_lines(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (first_write, pods_ready, converged) =
        (first_write.unwrap_or(ready_at), pods_ready.unwrap_or(ready_at), converged.unwrap_or(ready_at));
    fleet.wait_old_versions_gone(secs(120)).await?;
    let samples = sampler.stop().await?;
    let replica_set_report = fleet.replica_set_report(2).await?;
    let steps = fleet.step_report(&old_events).await?;

    // Reconciles planned from a cache its watch had not refilled yet conflict on the status write.
    let at_end = counts(&env.controllers[0]).await?;
    let conflicts_after = at_end.errors.get("{kind=\"conflict\"}").copied().unwrap_or(0.0)
        - outage.at_ready.errors.get("{kind=\"conflict\"}").copied().unwrap_or(0.0);
    let (a, b) = (&outage.at_stop, &outage.at_ready);
    let failed_reconciles = b.failed_reconciles - a.failed_reconciles;
    let errors: BTreeMap<&str, f64> = b
        .errors
        .iter()
        .map(|(kind, n)| (kind.as_str(), n - a.errors.get(kind).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let retries = b.watch_retries - a.watch_retries;
    let failed_requests = b.failed_requests - a.failed_requests;
    let attempts_per_second = failed_requests as f64 / unreachable_for.as_secs_f64();
    // Whole seconds, as objects record them.
    let latest = |pick: fn(&(i64, i64, i64)) -> i64| {
        pod_times.iter().map(pick).max().map_or("?".to_string(), |t| format!("{:.0}s", t as f64 - outage.ready_unix))
    };
    let since_ready = |t: Instant| secs_f(t.saturating_duration_since(ready_at));
    println!(
        "apiserver_restart: TERM to gone {}, gone to ready {} (unreachable {}); while unreachable the controller had {failed_requests} requests fail ({attempts_per_second:.2}/s), retried {retries} watches and failed {failed_reconciles} reconciles ({errors:?})",
        secs_f(outage.stopped - outage.stopping),
        secs_f(down_for),
        secs_f(unreachable_for),
    );
    println!(
        "apiserver_restart: after ready: controller's first successful reconcile with writes {}, last watch retry {}, {conflicts_after} conflicts from then on; a new ReplicaSet's pods created {}, scheduled {}, Ready {} (seen {}); fleet converged {} ({} after the update)",
        since_ready(first_write),
        last_watch_retry.map_or("none".to_string(), since_ready),
        latest(|t| t.0),
        latest(|t| t.1),
        latest(|t| t.2),
        since_ready(pods_ready),
        since_ready(converged),
        secs_f(converged - updated_at),
    );
    println!(
        "apiserver_restart: {} ReplicaSets, {} samples ({} lost to the outage), min available margin {:?}, {} step events on {} canaries ({} recorded twice)",
        replica_set_report.total,
        samples.taken,
        samples.errors,
        samples.min_margin,
        steps.completions,
        steps.canaries,
        steps.repeated
    );

    // The same process rode it out: never restarted, never panicked.
    let controller = &mut env.controllers[0];
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(controller.is_running(), "the controller exited:\n{}", controller.log_tail_lines(40));
    assert_eq!(controller.pid(), controller_pid);
    assert!(!log.contains("panicked"), "the controller panicked:\n{}", controller.log_tail_lines(60));
    // It noticed, and retried without a hot loop.
    assert!(retries > 0, "no watch failed while the API server was down: the test tested nothing");
    assert!(failed_requests > 0, "no request failed while the API server was down: the log no longer tells");
    assert!(
        attempts_per_second < MAX_ATTEMPTS_PER_SECOND,
        "{attempts_per_second:.1} failed requests a second while the API server was down"
    );
    assert!(
        first_write.saturating_duration_since(ready_at) < MAX_RECOVERY,
        "no reconcile of the controller wrote and succeeded for {} after the API server was ready",
        since_ready(first_write)
    );
    // Nothing of the update was lost or done twice.
    let mut problems = replica_set_report.problems;
    problems.extend(steps.problems);
    problems.extend(samples.details.iter().cloned());
    assert!(problems.is_empty(), "{problems:#?}\ncontroller log:\n{}", controller.log_tail_lines(60));
    assert_eq!(replica_set_report.total, 2 * ROLLOUTS, "two ReplicaSets per Rollout: one per pod template");
    assert!(samples.errors > 0, "no sample was lost: the API server never went away");
    // The rest of the control plane reconnected by itself, in the same processes.
    let others_after: Vec<u32> = OTHERS.iter().map(|c| component_pid(c)).collect::<anyhow::Result<_>>()?;
    assert_eq!(others_after, others_before, "{OTHERS:?} were restarted");

    env.cleanup().await
}
