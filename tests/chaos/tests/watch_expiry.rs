//! The controller cut off from the API server while objects it must notice are deleted and
//! created, directly on the API server. When the partition heals, the versions its watches held
//! have expired (the proxy answers them `410 Expired`, as the API server does once they left its
//! watch cache), so no event tells it what happened: it must relist, and find the differences.
//!
//! Runs on the local control plane (`tests/cluster/up.sh`) with the debug build of the controller
//! (`cargo build --bins`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use stepwise_chaos::proxy::{Fault, FaultPlan, FaultProxy, Partition, Upstream, Verb, start_controller};
use stepwise_e2e::{ControllerProcess, Env, eventually, kubeconfig_path, secs};

fn image(version: u32) -> String {
    format!("example.invalid/demo:{version}")
}

/// A canary Rollout without a router, 2 replicas, its own selector, with `steps`.
fn rollout(name: &str, image: &str, steps: &str) -> anyhow::Result<Rollout> {
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: '{image}'}}]}}\n  strategy:\n    canary:\n      steps: {steps}\n"
    ))?)
}

/// Waits until `check` holds for the Rollout `name`; the error shows its status and the log.
async fn then(
    api: &Api<Rollout>,
    controller: &ControllerProcess,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Rollout) -> bool,
) -> anyhow::Result<()> {
    let result = eventually(&format!("{name}: {what}"), timeout, || async { Ok(check(&api.get(name).await?)) }).await;
    if let Err(e) = result {
        let status = api.get_opt(name).await.ok().flatten().and_then(|r| r.status);
        anyhow::bail!("{e}\nstatus: {status:#?}\ncontroller log:\n{}", controller.log_tail_lines(60));
    }
    Ok(())
}

fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

fn paused_at_step_1(rollout: &Rollout) -> bool {
    let status = rollout.status.clone().unwrap_or_default();
    status.phase == Some(RolloutPhase::Paused)
        && status.current_step_index == Some(1)
        && status.stable_rs.is_some()
        && status.stable_rs != status.current_pod_hash
}

/// The ReplicaSets of `rollout` by pod template hash, with their uid.
async fn replica_sets(api: &Api<ReplicaSet>, rollout: &str) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("app={rollout}")))
        .await?
        .items
        .into_iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .filter_map(|rs| Some((rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone(), rs.uid()?)))
        .collect())
}

/// The controller's `stepwise_rollouts` gauge by phase.
async fn rollouts_by_phase(controller: &ControllerProcess) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(controller
        .metric_values("stepwise_rollouts")
        .await?
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(labels, v)| (labels.trim_start_matches("{phase=\"").trim_end_matches("\"}").to_string(), v))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_partition_in_which_its_watches_expired_the_controller_relists_and_notices_what_was_deleted_and_created_meanwhile()
-> anyhow::Result<()> {
    let env = Env::without_controller("chaos-expiry").await?;
    let proxy = FaultProxy::start(Upstream::from_kubeconfig(&kubeconfig_path()).await?).await?;
    let mut controller = start_controller(&proxy, &env.ns, &[])?;
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);

    // Given a Healthy Rollout that will be deleted, and one paused at a step with a canary.
    api.create(&PostParams::default(), &rollout("doomed", &image(1), "[{setWeight: 50}, {pause: {duration: 2s}}]")?)
        .await?;
    api.create(&PostParams::default(), &rollout("paused", &image(1), "[{setWeight: 50}, {pause: {}}]")?).await?;
    for name in ["doomed", "paused"] {
        then(&api, &controller, name, "Healthy", secs(120), |r| phase(r) == Some(RolloutPhase::Healthy)).await?;
    }
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image(2)}]}}}});
    api.patch("paused", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    then(&api, &controller, "paused", "paused at step 1 with a canary", secs(120), paused_at_step_1).await?;
    let canary_hash = api.get("paused").await?.status.and_then(|s| s.current_pod_hash).unwrap_or_default();
    let canary_before = replica_sets(&rs_api, "paused").await?;
    let canary_uid = canary_before.get(&canary_hash).cloned().unwrap_or_default();
    assert!(!canary_uid.is_empty(), "the canary ReplicaSet {canary_hash} exists: {canary_before:?}");
    eventually("the controller counts one Healthy and one Paused Rollout", secs(30), || async {
        let phases = rollouts_by_phase(&controller).await?;
        Ok(phases.get("Healthy") == Some(&1.0) && phases.get("Paused") == Some(&1.0))
    })
    .await?;

    // When the controller is cut off (its watches cut, every request held)...
    let partitioned_at = Instant::now();
    proxy.set_plan(FaultPlan { partition: Some(Partition::Hang), ..FaultPlan::default() });
    tokio::time::sleep(secs(2)).await;
    // ...while, directly on the API server, a Rollout is deleted, the canary ReplicaSet of the
    // paused one is deleted, and a Rollout is created...
    api.delete("doomed", &DeleteParams::background()).await?;
    let canary_name = rs_api
        .list(&ListParams::default().labels(&format!("app=paused,{POD_TEMPLATE_HASH_LABEL}={canary_hash}")))
        .await?
        .items
        .first()
        .map(|rs| rs.name_any())
        .unwrap_or_default();
    rs_api.delete(&canary_name, &DeleteParams::background()).await?;
    api.create(&PostParams::default(), &rollout("newcomer", &image(1), "[{setWeight: 50}, {pause: {duration: 2s}}]")?)
        .await?;
    eventually("doomed is gone from the API server", secs(30), || async { Ok(api.get_opt("doomed").await?.is_none()) })
        .await?;
    // ...and every version its watches held expires meanwhile.
    let now: u64 =
        rs_api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default().parse()?;
    proxy.update_plan(|plan| plan.expire_older_than = Some(now));
    tokio::time::sleep(secs(8)).await;
    let held = proxy.stats().fault(Fault::Hung);
    let healed_at = Instant::now();
    proxy.update_plan(|plan| plan.partition = None);
    println!("partitioned for {:.0?}; {held} requests held", healed_at - partitioned_at);

    // Then, once it heals, the controller relists and notices all three.
    eventually("the canary ReplicaSet of paused is recreated", secs(90), || async {
        Ok(replica_sets(&rs_api, "paused").await?.get(&canary_hash).is_some_and(|uid| *uid != canary_uid))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\ncontroller log:\n{}", controller.log_tail_lines(60)))?;
    then(&api, &controller, "paused", "still paused at step 1", secs(30), paused_at_step_1).await?;
    then(&api, &controller, "newcomer", "Healthy", secs(90), |r| phase(r) == Some(RolloutPhase::Healthy)).await?;
    let counted = eventually("the controller counts newcomer and paused, and no longer doomed", secs(30), || async {
        let phases = rollouts_by_phase(&controller).await?;
        Ok(phases.get("Healthy") == Some(&1.0) && phases.get("Paused") == Some(&1.0))
    })
    .await;
    let phases = rollouts_by_phase(&controller).await?;
    let records = proxy.records();
    let expired: Vec<_> = records.iter().filter(|r| r.faults.contains(&Fault::Expired)).collect();
    let first_expiry = expired.first().map(|r| r.at);
    let relisted: BTreeMap<String, usize> = records
        .iter()
        .filter(|r| r.verb == Verb::List && Some(r.at) >= first_expiry)
        .fold(BTreeMap::new(), |mut by, r| {
            *by.entry(r.resource.clone()).or_default() += 1;
            by
        });
    let doomed_after: Vec<String> = records
        .iter()
        .filter(|r| r.at >= healed_at + secs(5) && r.resource == "rollouts" && r.name.as_deref() == Some("doomed"))
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.status))
        .collect();
    println!(
        "after the heal: {} watches answered 410 Expired ({:?}); lists since: {relisted:?}; controller phases: {:?}",
        expired.len(),
        expired.iter().map(|r| r.resource.as_str()).collect::<Vec<_>>(),
        phases
    );
    assert!(!expired.is_empty(), "no watch came back from an expired version: the test tested nothing");
    for resource in ["rollouts", "replicasets"] {
        assert!(
            relisted.contains_key(resource),
            "the controller did not relist {resource} after the 410s: {relisted:?}"
        );
    }
    assert_eq!(doomed_after, Vec::<String>::new(), "requests about the deleted Rollout after the heal");
    assert!(controller.is_running());
    counted.map_err(|e| {
        anyhow::anyhow!("{e}: stepwise_rollouts still counts the deleted Rollout: Rollouts by phase: {phases:?}")
    })?;

    drop(controller);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_off_by_refused_connections_mid_rollout_the_controller_retries_at_a_bounded_rate_counts_the_api_server_unreachable_and_finishes_once_it_is_back()
-> anyhow::Result<()> {
    let env = Env::without_controller("chaos-refused").await?;
    let proxy = FaultProxy::start(Upstream::from_kubeconfig(&kubeconfig_path()).await?).await?;
    let mut controller = start_controller(&proxy, &env.ns, &[])?;
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);

    // Given a Rollout paused at a timed step of an update, so that the controller has writes to
    // make while it is cut off.
    api.create(&PostParams::default(), &rollout("moving", &image(1), "[{setWeight: 50}, {pause: {duration: 5s}}]")?)
        .await?;
    then(&api, &controller, "moving", "Healthy", secs(120), |r| phase(r) == Some(RolloutPhase::Healthy)).await?;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image(2)}]}}}});
    api.patch("moving", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    then(&api, &controller, "moving", "paused at step 1", secs(120), paused_at_step_1).await?;

    // When every connection to the API server is refused for 20 s, past the end of the pause.
    let before = proxy.stats().fault(Fault::Refused);
    let cut_at = Instant::now();
    proxy.set_plan(FaultPlan { partition: Some(Partition::Refuse), ..FaultPlan::default() });
    tokio::time::sleep(secs(20)).await;
    let refused = proxy.stats().fault(Fault::Refused) - before;
    let cut_for = cut_at.elapsed();
    proxy.set_plan(FaultPlan::default());
    let attempts = refused as f64 / cut_for.as_secs_f64();
    println!("cut off for {cut_for:.0?}: {refused} requests and connections refused, {attempts:.1}/s");

    // Then it tried again, but not in a hot loop: every watch backs off, and so do reconciles.
    assert!(refused > 0, "the controller never tried to reach the API server: the test tested nothing");
    assert!(attempts < 20.0, "{attempts:.1} attempts a second while cut off");
    // It counted the failed writes as the API server being unreachable...
    let errors = controller.metric_values("stepwise_errors_total").await?;
    println!("controller errors by kind: {errors:?}");
    assert!(
        errors.get("{kind=\"unreachable\"}").is_some_and(|n| *n > 0.0),
        "writes that found no API server are counted as unreachable: {errors:?}\n{}",
        controller.log_tail_lines(30)
    );
    // ...and finishes the update once it is back.
    let healed_at = Instant::now();
    then(&api, &controller, "moving", "Healthy on version 2", secs(120), |r| {
        let status = r.status.clone().unwrap_or_default();
        status.phase == Some(RolloutPhase::Healthy)
            && status.stable_rs.is_some()
            && status.stable_rs == status.current_pod_hash
    })
    .await?;
    println!("Healthy on version 2 {:.0?} after the connections came back", healed_at.elapsed());
    assert!(controller.is_running());

    drop(controller);
    env.cleanup().await
}
