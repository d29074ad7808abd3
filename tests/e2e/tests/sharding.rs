//! Sharding: three controllers on one namespace, one without `--shard` and two with shards `a`
//! and `b`, each elected on a Lease of its own. Each acts only on its own Rollouts, and a Rollout
//! relabelled mid-rollout (paused at a step, its background analysis running) moves to the other
//! shard, which carries it on from its status: no step repeated, no second ReplicaSet, its
//! analysis still measured after the shard it left is stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{AnalysisRun, AnalysisTemplate, Rollout, RolloutPhase, SHARD_LABEL};
use stepwise_e2e::{Env, eventually, secs};

/// Steps with an indefinite pause, so the move happens at a known point, under a background
/// analysis measured every second for as long as the rollout runs.
const STRATEGY: &str = "    canary:\n      analysis: {templates: [{templateName: health}]}\n      steps:\n      - setWeight: 50\n      - pause: {}\n      - setWeight: 100\n";

/// An HTTP server on 127.0.0.1 answering `{"ok": true}`, counting the requests.
async fn given_health_endpoint() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/health", listener.local_addr()?);
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = stream.read(&mut buf).await;
            count.fetch_add(1, Ordering::Relaxed);
            let body = "{\"ok\": true}";
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok((url, served))
}

fn health_template(url: &str) -> anyhow::Result<AnalysisTemplate> {
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: health}}
spec:
  metrics:
  - name: health
    interval: 1s
    successCondition: result.ok == true
    provider:
      web: {{url: '{url}', jsonPath: '{{$}}'}}
"
    ))?)
}

fn rollout(name: &str, shard: Option<&str>) -> anyhow::Result<Rollout> {
    let labels = shard.map(|s| format!("\n  labels: {{{SHARD_LABEL}: {s}}}")).unwrap_or_default();
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}{labels}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/demo:1'}}]}}\n  strategy:\n{STRATEGY}"
    ))?)
}

/// The Events recorded on Rollout `name`: (reporting instance, message), oldest first.
async fn events_of(env: &Env, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let mut events = api.list(&ListParams::default()).await?.items;
    events.retain(|e| {
        e.involved_object.kind.as_deref() == Some("Rollout") && e.involved_object.name.as_deref() == Some(name)
    });
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0).or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    Ok(events.into_iter().map(|e| (e.reporting_instance.unwrap_or_default(), e.message.unwrap_or_default())).collect())
}

/// The messages of the steps completed on `name`, by the instance that recorded them.
async fn completed_steps(env: &Env, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut events = events_of(env, name).await?;
    events.retain(|(_, message)| message.contains(" completed ("));
    Ok(events)
}

/// The names of the ReplicaSets of Rollout `name`.
async fn replica_sets_of(env: &Env, name: &str) -> anyhow::Result<Vec<String>> {
    let names = env.replica_sets().await?.into_iter().filter_map(|rs| rs.metadata.name);
    Ok(names.filter(|n| n.starts_with(&format!("{name}-"))).collect())
}

/// The Rollouts controller `i` counts, in every phase.
async fn counted(env: &Env, i: usize) -> anyhow::Result<f64> {
    env.controllers[i].metric_sum("stepwise_rollouts").await
}

/// The measurements taken so far, over every run.
async fn measurements(env: &Env) -> anyhow::Result<usize> {
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let runs = runs.list(&ListParams::default()).await?.items;
    Ok(runs
        .iter()
        .flat_map(|r| r.status.iter().flat_map(|s| s.metric_results.iter()))
        .map(|m| m.measurements.len())
        .sum())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_shard_acts_on_its_own_rollouts_and_a_rollout_relabelled_mid_rollout_is_carried_on_by_the_other()
-> anyhow::Result<()> {
    let (url, served) = given_health_endpoint().await?;
    let mut env = Env::without_controller("sharding").await?;
    let ns = env.ns.clone();
    let flags = |identity: &str, shard: Option<&str>| {
        let mut flags = vec![
            "--leader-elect=true".to_string(),
            format!("--lease-namespace={ns}"),
            format!("--identity={identity}"),
        ];
        flags.extend(shard.map(|s| format!("--shard={s}")));
        flags
    };
    for (identity, shard) in [("main", None), ("shard-a", Some("a")), ("shard-b", Some("b"))] {
        let flags = flags(identity, shard);
        env.start_controller(&flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let (main, a, b) = (0, 1, 2);

    // One Lease per shard, each held by its own controller.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns);
    for (lease, holder) in
        [("stepwise-controller", "main"), ("stepwise-controller-a", "shard-a"), ("stepwise-controller-b", "shard-b")]
    {
        eventually(&format!("{holder} to hold the Lease {lease}"), secs(60), || async {
            let held = leases.get_opt(lease).await?.and_then(|l| l.spec).and_then(|s| s.holder_identity);
            Ok(held.as_deref() == Some(holder))
        })
        .await?;
    }

    let templates: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &ns);
    templates.create(&PostParams::default(), &health_template(&url)?).await?;
    let rollouts = env.rollouts();
    rollouts.create(&PostParams::default(), &rollout("moving", Some("a"))?).await?;
    rollouts.create(&PostParams::default(), &rollout("unlabelled", None)?).await?;
    for name in ["moving", "unlabelled"] {
        env.rollout = name.into();
        env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    }

    // Each controller counts only its own Rollouts.
    eventually("each controller to count its own Rollouts", secs(30), || async {
        Ok((counted(&env, main).await?, counted(&env, a).await?, counted(&env, b).await?) == (1.0, 1.0, 0.0))
    })
    .await?;

    // The unlabelled Rollout is released by the controller without a shard alone.
    env.rollout = "unlabelled".into();
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let unlabelled = events_of(&env, "unlabelled").await?;
    assert!(!unlabelled.is_empty());
    assert!(unlabelled.iter().all(|(instance, _)| instance == "main"), "{unlabelled:?}");

    // Shard a starts the release of its Rollout; it pauses at step 2 with its analysis running.
    env.rollout = "moving".into();
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    eventually("the background analysis to measure", secs(30), || async { Ok(measurements(&env).await? >= 2) }).await?;
    let before_move = completed_steps(&env, "moving").await?;
    assert_eq!(before_move.len(), 1, "{before_move:?}");
    assert_eq!(before_move[0].0, "shard-a", "{before_move:?}");
    assert_eq!(replica_sets_of(&env, "moving").await?.len(), 2);

    // Relabelled: shard a lets go of it and shard b takes it.
    let relabel = json!({"metadata": {"labels": {SHARD_LABEL: "b"}}});
    rollouts.patch("moving", &PatchParams::default(), &Patch::Merge(&relabel)).await?;
    eventually("shard a to let go and shard b to take it", secs(30), || async {
        Ok((counted(&env, a).await?, counted(&env, b).await?) == (0.0, 1.0))
    })
    .await?;
    let ro = env.get().await?;
    assert_eq!(ro.status.as_ref().and_then(|s| s.current_step_index), Some(1), "still paused at step 2 after the move");

    // The shard it left stops; its analysis goes on, measured by shard b.
    env.controllers[a].terminate()?;
    let (measured, requests) = (measurements(&env).await?, served.load(Ordering::Relaxed));
    // A request may be served before the measurement it gives is recorded, so both are waited on.
    eventually("shard b to go on measuring the run, asking the endpoint again", secs(30), || async {
        Ok(measurements(&env).await? >= measured + 3 && served.load(Ordering::Relaxed) >= requests + 3)
    })
    .await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let ro = env.get().await?;
    let status = ro.status.clone().unwrap_or_default();
    assert_eq!(status.stable_rs, status.current_pod_hash, "the new version is stable");

    let steps = completed_steps(&env, "moving").await?;
    let by: BTreeMap<&str, Vec<&str>> = steps.iter().fold(BTreeMap::new(), |mut by, (instance, message)| {
        by.entry(instance.as_str()).or_insert_with(Vec::new).push(message.as_str());
        by
    });
    println!("steps completed by instance: {by:#?}");
    assert_eq!(steps.len(), 3, "each step completed once: {steps:?}");
    assert_eq!(steps[0].0, "shard-a", "{steps:?}");
    assert!(steps[1..].iter().all(|(instance, _)| instance == "shard-b"), "{steps:?}");
    let names = replica_sets_of(&env, "moving").await?;
    assert_eq!(names.len(), 2, "no second ReplicaSet for the same version: {names:?}");
    assert_eq!(counted(&env, main).await?, 1.0, "the controller without a shard never took it");
    env.cleanup().await
}
