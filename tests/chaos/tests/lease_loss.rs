//! Lease loss: two controllers elect a leader on one Lease, each behind a fault proxy of its own,
//! so that each proxy's records are the API server's audit log for one identity: which requests
//! reached the API server, and when. The leader is cut off while Rollouts move; the standby takes
//! the Lease over once it has expired and finishes them. The audit log must show no moment with
//! two writers: every write of the old leader that reached the API server was answered before
//! the new leader's first write went out, even the writes the partition held and let go when it
//! healed, after the new leader had begun.
//!
//! Runs on the local control plane (`tests/cluster/up.sh`) with the debug build of the controller
//! (`cargo build --bins`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_chaos::fleet::image;
use stepwise_chaos::proxy::{Fault, FaultPlan, FaultProxy, Partition, RequestRecord, Upstream, Verb};
use stepwise_e2e::{ControllerProcess, Env, eventually, kubeconfig_path, repo_root, secs};

const LEASE: &str = "stepwise-lease-loss";
const ROLLOUTS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
/// Timed pauses, so that the leader has writes to make all through the partition.
const STEPS: &str = "[{setWeight: 25}, {pause: {duration: 4s}}, {setWeight: 50}, {pause: {duration: 4s}}, {setWeight: 75}, {pause: {duration: 4s}}]";

fn rollout(name: &str, image: &str) -> anyhow::Result<Rollout> {
    stepwise_chaos::fleet::plain_canary(name, image, STEPS)
}

/// A controller electing a leader on [`LEASE`] in `namespace`, as `identity`, through `proxy`.
fn start_electing(proxy: &FaultProxy, namespace: &str, identity: &str) -> anyhow::Result<ControllerProcess> {
    let bin = std::env::var_os("STEPWISE_CHAOS_CONTROLLER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/stepwise-controller"));
    let kubeconfig = repo_root().join(format!("target/chaos/{namespace}-{identity}.kubeconfig"));
    proxy.write_kubeconfig(&kubeconfig_path(), &kubeconfig)?;
    let flags = [
        "--leader-elect=true".to_string(),
        format!("--lease-name={LEASE}"),
        format!("--lease-namespace={namespace}"),
        format!("--identity={identity}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ControllerProcess::start_with_kubeconfig(&bin, &kubeconfig, namespace, identity, &flags)
}

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(leases.get_opt(LEASE).await?.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

fn healthy_on_a_version_other_than(rollout: &Rollout, old_hash: Option<&str>) -> bool {
    let status = rollout.status.clone().unwrap_or_default();
    status.phase == Some(RolloutPhase::Healthy)
        && status.observed_generation == rollout.metadata.generation
        && status.stable_rs.is_some()
        && status.stable_rs == status.current_pod_hash
        && status.current_pod_hash.as_deref() != old_hash
}

/// Whether a request changes what the API server holds: a write, deletions included.
fn changes_state(record: &RequestRecord) -> bool {
    matches!(record.verb, Verb::Create | Verb::Update | Verb::Patch | Verb::Delete)
}

/// The writes an audit log of the API server would show: those that reached it.
fn writes(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    records.iter().filter(|r| changes_state(r) && r.forwarded.is_some()).collect()
}

fn describe(record: &RequestRecord, zero: Instant) -> String {
    let at = |t: Option<Instant>| t.map(|t| format!("{:.3}s", (t - zero).as_secs_f64())).unwrap_or("-".into());
    format!(
        "{} {}{} arrived {} forwarded {} answered {} status {:?} faults {:?}",
        record.method,
        record.resource,
        record.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default(),
        at(Some(record.at)),
        at(record.forwarded),
        at(record.answered),
        record.status,
        record.faults,
    )
}

/// The scenario, for either kind of partition: the leader `a` is cut off mid-rollout, `b` takes
/// over, and `a`'s network heals a few seconds after `b` began writing.
async fn the_leader_cut_off_stops_writing_before_the_standby_takes_over(
    name: &str,
    partition: Partition,
) -> anyhow::Result<()> {
    let mut env = Env::without_controller(name).await?;
    let upstream = Upstream::from_kubeconfig(&kubeconfig_path()).await?;
    let (proxy_a, proxy_b) = (FaultProxy::start(upstream.clone()).await?, FaultProxy::start(upstream).await?);
    let zero = Instant::now();
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);

    // Given a leads, with b as a standby...
    env.controllers.push(start_electing(&proxy_a, &env.ns, "a")?);
    eventually("a leads", secs(30), || async { Ok(holder(&leases).await?.as_deref() == Some("a")) }).await?;
    env.controllers.push(start_electing(&proxy_b, &env.ns, "b")?);
    eventually("b runs as a standby", secs(30), || async {
        Ok(env.controllers[1].metric("stepwise_leader").await.ok().flatten() == Some(0.0))
    })
    .await?;
    // ...and Rollouts in the middle of an update, which a moves.
    for name in ROLLOUTS {
        api.create(&PostParams::default(), &rollout(name, &image(1))?).await?;
    }
    let mut old_hashes = Vec::new();
    for name in ROLLOUTS {
        eventually(&format!("{name} Healthy on version 1"), secs(90), || async {
            Ok(healthy_on_a_version_other_than(&api.get(name).await?, None))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\na's log:\n{}", env.controllers[0].log_tail_lines(40)))?;
        old_hashes.push(api.get(name).await?.status.and_then(|s| s.current_pod_hash));
    }
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image(2)}]}}}});
    for name in ROLLOUTS {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    eventually("every Rollout past its first step", secs(60), || async {
        let mut past = true;
        for name in ROLLOUTS {
            past &= api.get(name).await?.status.and_then(|s| s.current_step_index).unwrap_or(0) >= 1;
        }
        Ok(past)
    })
    .await?;

    // When a is cut off from the API server...
    let partitioned_at = Instant::now();
    proxy_a.set_plan(FaultPlan { partition: Some(partition), ..FaultPlan::default() });
    // ...a ends, unsure of its lease, and b takes the Lease over once it has expired...
    let (mut a_ended_at, mut b_leads_at) = (None, None);
    while b_leads_at.is_none() {
        if partitioned_at.elapsed() > secs(45) {
            anyhow::bail!("b did not take the lease over in 45 s\nb's log:\n{}", env.controllers[1].log_tail_lines(40));
        }
        if a_ended_at.is_none() && !env.controllers[0].is_running() {
            a_ended_at = Some(Instant::now());
        }
        if holder(&leases).await?.as_deref() == Some("b") {
            b_leads_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_leads_at = b_leads_at.unwrap_or(partitioned_at);
    // ...and begins to move the Rollouts...
    eventually("b writes a Rollout's status", secs(45), || async {
        Ok(writes(&proxy_b.records()).iter().any(|r| r.resource == "rollouts"))
    })
    .await?;
    // ...and a's network heals a few seconds later: whatever it still held goes through now.
    tokio::time::sleep(secs(3)).await;
    let healed_at = Instant::now();
    proxy_a.set_plan(FaultPlan::default());

    // Then every Rollout is Healthy on version 2...
    for (name, old_hash) in ROLLOUTS.iter().zip(&old_hashes) {
        eventually(&format!("{name} Healthy on version 2"), secs(90), || async {
            Ok(healthy_on_a_version_other_than(&api.get(name).await?, old_hash.as_deref()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nb's log:\n{}", env.controllers[1].log_tail_lines(40)))?;
    }
    let converged_at = Instant::now();
    // (Time for a late write of a's to show up in the audit log, were there one.)
    tokio::time::sleep(secs(2)).await;
    // ...with b still the Lease's holder, leading...
    assert_eq!(holder(&leases).await?.as_deref(), Some("b"), "the new leader keeps the Lease");
    assert_eq!(env.controllers[1].metric("stepwise_leader").await?, Some(1.0));

    // ...and the audit log shows no moment with two writers.
    let (records_a, records_b) = (proxy_a.records(), proxy_b.records());
    let (writes_a, writes_b) = (writes(&records_a), writes(&records_b));
    let held_a: Vec<&RequestRecord> =
        records_a.iter().filter(|r| r.faults.contains(&Fault::Hung) && r.verb != Verb::Watch).collect();
    let held_writes_a: Vec<&&RequestRecord> = held_a.iter().filter(|r| changes_state(r)).collect();
    let held_and_forwarded_a = held_a.iter().filter(|r| r.forwarded.is_some()).count();
    let first_b = writes_b.iter().filter_map(|r| r.forwarded).min().expect("b wrote");
    // A write that got no answer may have been applied at any moment until its connection died:
    // count it as going on until now.
    let now = Instant::now();
    let last_a = writes_a.iter().map(|r| r.answered.unwrap_or(now)).max().expect("a wrote");
    let secs_of = |t: Instant| (t - zero).as_secs_f64();
    println!(
        "{partition:?}: partitioned at {:.3}s, a ended (seen) at {}, b leads (seen) at {:.3}s, healed at {:.3}s, converged at {:.3}s",
        secs_of(partitioned_at),
        a_ended_at.map(|t| format!("{:.3}s", secs_of(t))).unwrap_or("-".into()),
        secs_of(b_leads_at),
        secs_of(healed_at),
        secs_of(converged_at)
    );
    println!(
        "a: {} writes reached the API server, the last answered at {:.3}s; {} requests held by the partition ({} writes), {} of them forwarded after all",
        writes_a.len(),
        secs_of(last_a),
        held_a.len(),
        held_writes_a.len(),
        held_and_forwarded_a
    );
    println!(
        "b: {} writes reached the API server, the first forwarded at {:.3}s; gap between a's last and b's first: {:.3}s",
        writes_b.len(),
        secs_of(first_b),
        first_b.saturating_duration_since(last_a).as_secs_f64()
    );
    let late: Vec<String> =
        writes_a.iter().filter(|r| r.answered.is_none_or(|t| t >= first_b)).map(|r| describe(r, zero)).collect();
    assert!(
        late.is_empty(),
        "a wrote while b did (b's first write forwarded at {:.3}s):\n{}\na's log:\n{}",
        secs_of(first_b),
        late.join("\n"),
        env.controllers[0].log_tail_lines(40)
    );
    assert!(last_a < first_b);
    if partition == Partition::Hang {
        // Its lease renewal at least fell in the partition: the hard case was exercised.
        assert!(!held_writes_a.is_empty(), "the partition held no write of a's: the test tested nothing");
        assert_eq!(held_and_forwarded_a, 0, "held requests of a reached the API server after the heal");
    }
    // The way it stops writing: it ends before its lease could be taken over, and with it every
    // connection that still held a write.
    assert!(
        a_ended_at.is_some_and(|t| t < first_b),
        "a ended (seen at {:?}) before b's first write\n{}",
        a_ended_at.map(secs_of),
        env.controllers[0].log_tail_lines(20)
    );
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_requests_are_held_stops_before_its_lease_expires_and_none_of_its_held_writes_lands_after_the_heal()
-> anyhow::Result<()> {
    the_leader_cut_off_stops_writing_before_the_standby_takes_over("lease-hold", Partition::Hang).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_connections_are_refused_stops_before_its_lease_expires_and_writes_nothing_once_healed()
-> anyhow::Result<()> {
    the_leader_cut_off_stops_writing_before_the_standby_takes_over("lease-refuse", Partition::Refuse).await
}
