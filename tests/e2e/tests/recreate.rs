//! Recreate on the local control plane: a watcher lists the pods every 200 ms and fails the test
//! if it ever sees pods of two versions at once (terminating pods included), through an update,
//! an abort and an undo.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, RolloutPhase};
use stepwise_e2e::{Env, eventually, secs};
use tokio::task::JoinHandle;

const RECREATE: &str = "    recreate: {}\n";

/// What the watcher saw.
struct Seen {
    samples: usize,
    /// Every version seen running alone, in order of first sight.
    versions: Vec<String>,
    /// The samples with more than one version: the pods seen together (hash, name, phase and
    /// whether terminating).
    overlaps: Vec<Vec<String>>,
}

/// Lists the namespace's pods every 200 ms until stopped: the versions (pod template hashes) of
/// the pods that exist and have not ended (Succeeded or Failed), terminating ones included.
struct Watcher {
    stop: Arc<AtomicBool>,
    /// Samples taken so far.
    taken: Arc<AtomicUsize>,
    task: JoinHandle<anyhow::Result<Seen>>,
}

impl Watcher {
    /// Starts it and returns once it has seen the pods as they are now: on a busy machine the
    /// first list could otherwise come after the change the test then makes.
    async fn start(env: &Env) -> anyhow::Result<Self> {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        let (first_sample, first_sample_taken) = tokio::sync::oneshot::channel();
        let mut first_sample = Some(first_sample);
        let task = tokio::spawn(async move {
            let mut seen = Seen { samples: 0, versions: Vec::new(), overlaps: Vec::new() };
            while !stopped.load(Ordering::Relaxed) {
                let list = pods.list(&ListParams::default().labels(POD_TEMPLATE_HASH_LABEL)).await?;
                let live: Vec<&Pod> = list
                    .items
                    .iter()
                    .filter(|p| {
                        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                        !matches!(phase, Some("Succeeded" | "Failed"))
                    })
                    .collect();
                let hash = |p: &Pod| {
                    p.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL).cloned()).unwrap_or_default()
                };
                let versions: BTreeSet<String> = live.iter().map(|p| hash(p)).collect();
                seen.samples += 1;
                counted.fetch_add(1, Ordering::SeqCst);
                if versions.len() > 1 {
                    seen.overlaps.push(
                        live.iter()
                            .map(|p| {
                                let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                                let terminating = p.metadata.deletion_timestamp.is_some();
                                format!(
                                    "{} {} {phase} terminating={terminating}",
                                    hash(p),
                                    p.metadata.name.clone().unwrap_or_default()
                                )
                            })
                            .collect(),
                    );
                } else if let Some(v) = versions.into_iter().next()
                    && !seen.versions.contains(&v)
                {
                    seen.versions.push(v);
                }
                if let Some(taken) = first_sample.take() {
                    let _ = taken.send(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(seen)
        });
        if first_sample_taken.await.is_err() {
            // The task ended before its first sample: its error says why.
            task.await??;
            anyhow::bail!("the pod watcher stopped before its first sample");
        }
        Ok(Watcher { stop, taken, task })
    }

    /// Returns once it has taken a whole sample after the call: a state the test has waited for
    /// is in its record, however briefly it lasts after the test's next change.
    async fn sampled(&self) -> anyhow::Result<()> {
        let before = self.taken.load(Ordering::SeqCst);
        eventually("a sample of the pod watcher", secs(30), || async {
            Ok(self.taken.load(Ordering::SeqCst) >= before + 2)
        })
        .await
    }

    /// Stops it; fails if it ever saw two versions at once.
    async fn finish(self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await??;
        anyhow::ensure!(seen.overlaps.is_empty(), "pods of two versions at once: {:?}", seen.overlaps);
        anyhow::ensure!(seen.samples >= 2, "only {} samples", seen.samples);
        Ok(seen)
    }
}

fn hashes(env_status: &stepwise_api::RolloutStatus) -> (String, String) {
    (env_status.current_pod_hash.clone().unwrap_or_default(), env_status.stable_rs.clone().unwrap_or_default())
}

async fn unschedulable_update(env: &Env) -> anyhow::Result<()> {
    env.when_template(json!({"spec": {"nodeSelector": {"stepwise.dev/no-such-node": "true"}}})).await
}

/// Waits until the new version has `n` pods (running or not) and no other version has any.
async fn only_new_pods(env: &Env, new: &str, n: i32) -> anyhow::Result<()> {
    eventually(&format!("{n} pods of {new} and no other"), secs(60), || async {
        let mut others = 0;
        for rs in env.replica_sets().await? {
            let h = rs.metadata.labels.unwrap_or_default().get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
            if h != new {
                others += env.pods(&h).await?;
            }
        }
        Ok(env.pods(new).await? == n && others == 0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_stops_every_old_pod_before_a_new_one_starts_and_completes() -> anyhow::Result<()> {
    let env = Env::new("recreate").await?;
    env.given_rollout(3, RECREATE).await?;
    let v1 = env.get().await?.status.unwrap().stable_rs.unwrap();
    let watcher = Watcher::start(&env).await?;

    env.when_image("example.invalid/demo:2").await?;
    let v2 = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    assert_ne!(v1, v2);
    env.then("the new version stable and Healthy", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.stable_rs.as_deref() == Some(v2.as_str()) && st.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    env.then_pods(3, 0, secs(30)).await?;
    let seen = watcher.finish().await?;
    assert_eq!(seen.versions, [v1.clone(), v2.clone()], "the old version alone, then the new one alone");

    let st = env.get().await?.status.unwrap();
    assert_eq!(st.message.as_deref(), Some("Healthy at revision 2"));
    assert!(st.conditions.iter().any(|c| c.r#type == "Completed" && c.status == "True"));
    let events = env.events().await?;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    for reason in ["RecreateScaledDown", "RecreateScaledUp", "RolloutCompleted"] {
        assert!(reasons.contains(&reason), "no {reason} event: {events:?}");
    }
    let down = reasons.iter().position(|r| *r == "RecreateScaledDown").unwrap();
    let up = reasons.iter().position(|r| *r == "RecreateScaledUp").unwrap();
    assert!(down < up, "scaled down before scaled up: {events:?}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_of_a_recreate_stops_the_new_pods_before_the_stable_version_comes_back() -> anyhow::Result<()> {
    let env = Env::new("recreate-abort").await?;
    env.given_rollout(2, RECREATE).await?;
    let watcher = Watcher::start(&env).await?;

    // The new version's pods never get a node: the old ones are gone, the new ones pending.
    unschedulable_update(&env).await?;
    let (new, stable) = hashes(&env.get().await?.status.unwrap());
    only_new_pods(&env, &new, 2).await?;
    watcher.sampled().await?;
    env.then("the new version's pods reported", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.message.as_deref())
            == Some("Recreating: 0 of 2 pods of the new version available")
    })
    .await?;

    env.when_abort().await?;
    env.then("aborted and Degraded", secs(30), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.abort == Some(true) && st.phase == Some(RolloutPhase::Degraded)
    })
    .await?;
    env.then_pods(0, 2, secs(60)).await?;
    env.then("the abort message without the way back", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.message.as_deref()) == Some("Aborted: Rollout aborted by request")
    })
    .await?;
    assert_eq!(env.pods(&new).await?, 0);
    let seen = watcher.finish().await?;
    assert_eq!(seen.versions, [stable.clone(), new.clone()], "{:?}", seen.versions);
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.stable_rs.as_deref(), Some(stable.as_str()));
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_of_a_recreate_mid_update_returns_to_the_previous_version_the_same_way() -> anyhow::Result<()> {
    let env = Env::new("recreate-undo").await?;
    env.given_rollout(2, RECREATE).await?;
    let watcher = Watcher::start(&env).await?;

    unschedulable_update(&env).await?;
    let (new, stable) = hashes(&env.get().await?.status.unwrap());
    only_new_pods(&env, &new, 2).await?;
    watcher.sampled().await?;

    env.when_undo().await?;
    env.then("back on the previous version and Healthy", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.current_pod_hash.as_deref() == Some(stable.as_str()) && st.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    env.then_pods(2, 0, secs(30)).await?;
    assert_eq!(env.pods(&new).await?, 0);
    let seen = watcher.finish().await?;
    assert_eq!(seen.versions, [stable.clone(), new.clone()], "{:?}", seen.versions);
    let st = env.get().await?.status.unwrap();
    assert_eq!(st.current_revision, Some(3), "the previous version comes back with a new revision");
    env.cleanup().await
}

/// Pods that take their time to stop (a finalizer here; a long grace period in a real cluster)
/// hold the new version back: a ReplicaSet no longer counts a pod once it is deleting, so the
/// controller counts the pods themselves.
#[tokio::test(flavor = "multi_thread")]
async fn recreate_waits_for_old_pods_that_are_still_stopping() -> anyhow::Result<()> {
    const HOLD: &str = "stepwise.dev/e2e-hold";
    let env = Env::new("recreate-hold").await?;
    env.given_rollout(2, RECREATE).await?;
    let old = env.get().await?.status.unwrap().stable_rs.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let selector = format!("{POD_TEMPLATE_HASH_LABEL}={old}");
    let hold = |on: bool| json!({"metadata": {"finalizers": if on { json!([HOLD]) } else { json!(null) }}});
    for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
        let name = pod.metadata.name.unwrap_or_default();
        pods.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(hold(true))).await?;
    }
    let watcher = Watcher::start(&env).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then("waiting for the old pods to stop", secs(30), |ro| {
        ro.status.as_ref().and_then(|s| s.message.as_deref())
            == Some("Recreating: waiting for 2 pods of the old version to stop")
    })
    .await?;
    tokio::time::sleep(secs(3)).await;
    let new = env.get().await?.status.unwrap().current_pod_hash.unwrap();
    assert_eq!(env.pods(&new).await?, 0, "no new pod while old ones are stopping");

    for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
        let name = pod.metadata.name.unwrap_or_default();
        pods.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(hold(false))).await?;
    }
    env.then("the new version stable and Healthy", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.stable_rs.as_deref() == Some(new.as_str()) && st.phase == Some(RolloutPhase::Healthy)
    })
    .await?;
    watcher.finish().await?;
    env.cleanup().await
}
