//! The controller dies mid-rollout; two controllers elect one leader.

use k8s_openapi::api::coordination::v1::Lease;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, eventually, secs};

const TIMED: &str = "    canary:\n      steps:\n      - setWeight: 25\n      - pause: {duration: 3s}\n      - setWeight: 50\n      - pause: {duration: 3s}\n      - setWeight: 75\n      - pause: {duration: 3s}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_mid_rollout_is_restarted_and_finishes_with_no_duplicate_replica_set_and_no_step_skipped()
-> anyhow::Result<()> {
    let mut env = Env::new("sigkill").await?;
    env.given_rollout(4, TIMED).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then("at step 2", secs(60), |ro| {
        ro.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0) >= 2
            && ro.status.as_ref().and_then(|s| s.stable_rs.clone())
                != ro.status.as_ref().and_then(|s| s.current_pod_hash.clone())
    })
    .await?;

    env.controllers[0].kill_hard();
    tokio::time::sleep(secs(4)).await;
    env.start_controller(&["--leader-elect=false"])?;

    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    env.then_pods(4, 0, secs(30)).await?;
    assert_eq!(env.replica_sets().await?.len(), 2, "one ReplicaSet per template, no duplicate");
    let completed: Vec<String> =
        env.events().await?.into_iter().filter(|(r, _)| r == "RolloutStepCompleted").map(|(_, m)| m).collect();
    for i in 1..=6 {
        assert!(
            completed.iter().any(|m| m.starts_with(&format!("Rollout step {i}/6 completed"))),
            "step {i} was not skipped: {completed:?}"
        );
    }
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_controllers_one_leads_and_the_other_takes_over_when_it_dies() -> anyhow::Result<()> {
    let mut env = Env::without_controller("failover").await?;
    let ns = env.ns.clone();
    let lease_flags = |id: &str| {
        vec![
            "--leader-elect=true".to_string(),
            "--lease-name=stepwise-e2e".into(),
            format!("--lease-namespace={ns}"),
            format!("--identity={id}"),
        ]
    };
    let a = lease_flags("a");
    env.start_controller(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
    let leases: kube::Api<Lease> = kube::Api::namespaced(env.client.clone(), &env.ns);
    eventually("a leads", secs(30), || async {
        Ok(leases.get_opt("stepwise-e2e").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity).as_deref()
            == Some("a"))
    })
    .await?;
    eventually("the leader tells its version on the Lease", secs(30), || async {
        let lease = leases.get("stepwise-e2e").await?;
        Ok(lease.metadata.annotations.unwrap_or_default().get("stepwise.dev/controller-version").map(String::as_str)
            == Some(env!("CARGO_PKG_VERSION")))
    })
    .await?;
    let b = lease_flags("b");
    env.start_controller(&b.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Up (its metrics served) before it is asked; under load a start can take seconds.
    eventually("b serves its metrics", secs(30), || async {
        Ok(env.controllers[1].metric("stepwise_leader").await.is_ok_and(|v| v.is_some()))
    })
    .await?;
    tokio::time::sleep(secs(2)).await;
    assert_eq!(env.controllers[1].metric("stepwise_leader").await?, Some(0.0), "b waits as a standby");
    // A standby is ready to take over, so a rolling update of two replicas can finish.
    assert_eq!(env.controllers[1].get("/readyz").await?.0, 200, "the standby is ready");

    env.given_rollout(2, TIMED).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then("at step 1", secs(60), |ro| {
        ro.status.as_ref().and_then(|s| s.current_step_index).unwrap_or(0) >= 1
            && ro.status.as_ref().and_then(|s| s.stable_rs.clone())
                != ro.status.as_ref().and_then(|s| s.current_pod_hash.clone())
    })
    .await?;

    env.controllers[0].kill_hard();
    eventually("b leads", secs(40), || async {
        Ok(leases.get_opt("stepwise-e2e").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity).as_deref()
            == Some("b"))
    })
    .await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    env.then_pods(2, 0, secs(30)).await?;
    assert_eq!(env.controllers[1].metric("stepwise_leader").await?, Some(1.0));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_and_releases_the_lease() -> anyhow::Result<()> {
    let mut env = Env::without_controller("sigterm").await?;
    let flags = ["--leader-elect=true", "--lease-name=stepwise-e2e"];
    let ns_flag = format!("--lease-namespace={}", env.ns);
    env.start_controller(&[flags[0], flags[1], &ns_flag, "--identity=only"])?;
    let leases: kube::Api<Lease> = kube::Api::namespaced(env.client.clone(), &env.ns);
    eventually("it leads", secs(30), || async {
        Ok(leases.get_opt("stepwise-e2e").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity).is_some())
    })
    .await?;
    // A standby is ready too: wait for the leader with its caches synced.
    eventually("leading", secs(30), || async { Ok(env.controllers[0].metric("stepwise_leader").await? == Some(1.0)) })
        .await?;
    eventually("ready", secs(30), || async { Ok(env.controllers[0].get("/readyz").await?.0 == 200) }).await?;
    assert_eq!(env.controllers[0].get("/healthz").await?.0, 200);
    let status = env.controllers[0].terminate()?;
    assert!(status.success(), "exit status {status:?}");
    let holder = leases.get_opt("stepwise-e2e").await?.and_then(|l| l.spec).and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the lease is released on shutdown");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_replica_set_of_a_healthy_rollout_is_created_again() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::ResourceExt;
    use kube::api::DeleteParams;

    let env = Env::new("rs-deleted").await?;
    env.given_rollout(3, TIMED).await?;
    let before = env.replica_sets().await?;
    assert_eq!(before.len(), 1);
    let (name, uid) = (before[0].name_any(), before[0].uid());

    // Nothing else changes: only the deletion itself can wake the controller.
    let api: kube::Api<ReplicaSet> = kube::Api::namespaced(env.client.clone(), &env.ns);
    api.delete(&name, &DeleteParams::background()).await?;

    eventually("the ReplicaSet is back with 3 ready pods", secs(60), || async {
        let now = env.replica_sets().await?;
        Ok(now.len() == 1
            && now[0].name_any() == name
            && now[0].uid() != uid
            && now[0].status.as_ref().and_then(|s| s.ready_replicas) == Some(3))
    })
    .await?;
    env.then_phase(RolloutPhase::Healthy, secs(30)).await?;
    env.cleanup().await
}
