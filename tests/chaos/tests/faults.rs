//! The controller behind a proxy that throttles it (429 with `Retry-After`), fails its requests
//! (500), answers its writes with conflicts (409), slows its requests and cuts its watches, while
//! a fleet of Rollouts is updated twice. It must back off (a bounded request rate: a hot loop would
//! show as hundreds of requests a second), leave alone a Rollout that needs nothing, count its
//! errors by kind, and bring every Rollout to the new version once the faults stop.
//!
//! Runs on the local control plane (`tests/cluster/up.sh`) with the debug build of the controller
//! (`cargo build --bins`). The figures it measures are printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutPhase};
use stepwise_chaos::fleet::image;
use stepwise_chaos::proxy::{Fault, FaultPlan, FaultProxy, RequestRecord, Upstream, Verb, start_controller};
use stepwise_e2e::{ControllerProcess, Env, eventually, kubeconfig_path, secs};

/// The Rollouts updated while the faults last.
const FLEET: usize = 8;
/// The Rollout nobody touches.
const IDLE: &str = "idle";
/// How long the faults last; the fleet is updated at the start and again half-way, when they
/// grow into a storm.
const FAULTS_FOR: Duration = Duration::from_secs(50);
/// Short steps, so that a version gets through them while the faults last.
const STEPS: &str = "[{setWeight: 50}, {pause: {duration: 2s}}]";

fn rollout(name: &str, image: &str) -> anyhow::Result<Rollout> {
    stepwise_chaos::fleet::plain_canary(name, image, STEPS)
}

fn image_of(rollout: &Rollout) -> Option<String> {
    rollout.spec.template.as_ref()?.spec.as_ref()?.containers.first()?.image.clone()
}

/// Healthy on `image`: the controller saw the latest spec and the stable version is the new one.
fn converged(rollout: &Rollout, image: &str) -> bool {
    let status = rollout.status.clone().unwrap_or_default();
    image_of(rollout).as_deref() == Some(image)
        && status.phase == Some(RolloutPhase::Healthy)
        && status.observed_generation >= rollout.metadata.generation
        && status.stable_rs.is_some()
        && status.stable_rs == status.current_pod_hash
}

/// The Rollouts not yet converged on `image`, with their phase, message and pods (by pod template
/// hash: ready of all, and how many are terminating), so that a wait can be told apart from a
/// controller that does nothing.
async fn lagging(api: &Api<Rollout>, pods: &Api<Pod>, names: &[String], image: &str) -> anyhow::Result<Vec<String>> {
    let rollouts = api.list(&ListParams::default()).await?.items;
    let mut out = Vec::new();
    for name in names {
        let Some(rollout) = rollouts.iter().find(|r| r.name_any() == *name) else {
            out.push(format!("{name}: missing"));
            continue;
        };
        if converged(rollout, image) {
            continue;
        }
        let status = rollout.status.clone().unwrap_or_default();
        let mut by_hash: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for pod in pods.list(&ListParams::default().labels(&format!("app={name}"))).await?.items {
            let hash = pod.labels().get(POD_TEMPLATE_HASH_LABEL).cloned().unwrap_or_default();
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let counts = by_hash.entry(hash).or_default();
            counts.0 += usize::from(ready);
            counts.1 += 1;
            counts.2 += usize::from(pod.metadata.deletion_timestamp.is_some());
        }
        let pods: Vec<String> =
            by_hash.iter().map(|(h, (r, n, t))| format!("{h}: {r}/{n} ready, {t} terminating")).collect();
        out.push(format!("{name}: {:?} {:?}; pods {pods:?}", status.phase, status.message.unwrap_or_default()));
    }
    Ok(out)
}

/// Waits until every Rollout of `names` is Healthy on `image`, telling every 10 s which are not.
async fn wait_converged(
    api: &Api<Rollout>,
    pods: &Api<Pod>,
    names: &[String],
    image: &str,
    timeout: Duration,
    controller: &ControllerProcess,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let told = std::cell::Cell::new(Instant::now());
    let result = eventually(&format!("every Rollout Healthy on {image}"), timeout, || async {
        let lagging = lagging(api, pods, names, image).await?;
        if told.get().elapsed() >= secs(10) && !lagging.is_empty() {
            println!("after {:.0?}, not yet on {image}: {lagging:#?}", started.elapsed());
            told.set(Instant::now());
        }
        Ok(lagging.is_empty())
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!(
            "{e}\nlagging: {:#?}\ncontroller log:\n{}",
            lagging(api, pods, names, image).await.unwrap_or_default(),
            controller.log_tail_lines(60)
        );
    }
    Ok(started.elapsed())
}

async fn set_images(api: &Api<Rollout>, names: &[String], image: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    for name in names {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Whether a request wrote to the idle Rollout or to one of its ReplicaSets.
fn writes_to_idle(record: &RequestRecord) -> bool {
    let name = record.name.as_deref().unwrap_or_default();
    (record.verb.is_write() || record.verb == Verb::Delete)
        && ((record.resource == "rollouts" && name == IDLE)
            || (record.resource == "replicasets" && name.starts_with(&format!("{IDLE}-"))))
}

#[tokio::test(flavor = "multi_thread")]
async fn under_throttling_conflicts_server_errors_latency_and_cut_watches_the_controller_backs_off_leaves_a_healthy_rollout_alone_and_converges_when_the_faults_stop()
-> anyhow::Result<()> {
    let env = Env::without_controller("chaos-faults").await?;
    let proxy = FaultProxy::start(Upstream::from_kubeconfig(&kubeconfig_path()).await?).await?;
    let mut controller = start_controller(&proxy, &env.ns, &[])?;
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let fleet: Vec<String> = (0..FLEET).map(|i| format!("app-{i}")).collect();
    let everyone: Vec<String> = fleet.iter().cloned().chain([IDLE.to_string()]).collect();

    // Given the fleet and the idle Rollout Healthy on version 1, with no fault yet.
    for name in &everyone {
        api.create(&PostParams::default(), &rollout(name, &image(1))?).await?;
    }
    let took = wait_converged(&api, &pods, &everyone, &image(1), secs(180), &controller).await?;
    println!("fleet of {} Healthy on version 1 in {:.0?} through the proxy: {}", everyone.len(), took, proxy.stats());
    let idle_before = api.get(IDLE).await?;

    // When the faults begin and the fleet is updated; then, half-way, the faults grow into a storm
    // (most writes fail) and the fleet is updated again.
    let moderate = FaultPlan {
        throttle: 0.10,
        server_error: 0.08,
        conflict: 0.15,
        slow: 0.20,
        delay: (Duration::from_millis(200), Duration::from_millis(1500)),
        cut_watches: Some((secs(3), secs(10))),
        ..FaultPlan::default()
    };
    let storm = FaultPlan {
        throttle: 0.30,
        server_error: 0.30,
        conflict: 0.50,
        slow: 0.30,
        cut_watches: Some((secs(2), secs(6))),
        ..moderate.clone()
    };
    println!("faults for {FAULTS_FOR:?}: {moderate:?}, then {storm:?}");
    let faults_from = Instant::now();
    let before = proxy.stats();
    proxy.set_plan(moderate);
    set_images(&api, &fleet, &image(2)).await?;
    let mut stormy = false;
    let mut idle_phases = Vec::new();
    while faults_from.elapsed() < FAULTS_FOR {
        if !stormy && faults_from.elapsed() >= FAULTS_FOR / 2 {
            proxy.set_plan(storm.clone());
            set_images(&api, &fleet, &image(3)).await?;
            stormy = true;
        }
        let idle = api.get(IDLE).await?;
        idle_phases.push(idle.status.and_then(|s| s.phase));
        assert!(controller.is_running(), "the controller died under faults:\n{}", controller.log_tail_lines(60));
        tokio::time::sleep(secs(1)).await;
    }
    let faults_to = Instant::now();
    let during = proxy.stats();
    let unfinished = lagging(&api, &pods, &fleet, &image(3)).await?;
    proxy.set_plan(FaultPlan::default());
    println!(
        "when the faults stopped, {} of {FLEET} Rollouts were not on version 3 yet: {unfinished:#?}",
        unfinished.len()
    );

    // Then every Rollout converges on version 3 once the faults stop.
    let took = wait_converged(&api, &pods, &fleet, &image(3), secs(240), &controller).await?;
    println!("converged on version 3 {took:.0?} after the faults stopped");

    // The request rate stayed bounded while the faults lasted: a hot loop would make hundreds of
    // requests a second; 9 Rollouts going through 2 updates make a few, retries included (about
    // 11/s measured, 20/s at the peak over 5 s; events are 40% of it).
    let rate = proxy.rate(faults_from, faults_to);
    println!(
        "during the faults: {} requests in {} s: mean {:.1}/s, peak {:.1}/s over 5 s, {}/s in the busiest second; per second: {:?}",
        rate.total(),
        rate.per_second.len(),
        rate.mean(),
        rate.peak(5),
        rate.per_second.iter().max().copied().unwrap_or(0),
        rate.per_second
    );
    let injected: Vec<String> = Fault::ALL
        .iter()
        .map(|f| format!("{f}={}", during.fault(*f) - before.fault(*f)))
        .filter(|s| !s.ends_with("=0"))
        .collect();
    println!("faults injected: {}", injected.join(" "));
    println!("proxy overall: {}", proxy.stats());
    let errors = controller.metric_values("stepwise_errors_total").await?;
    let answers = controller.metric_values("stepwise_api_errors_total").await?;
    println!("controller: reconcile errors by kind {errors:?}; error answers of the API server by kind {answers:?}");
    assert!(rate.mean() < 20.0, "mean request rate {:.1}/s under faults: {:?}", rate.mean(), rate.per_second);
    assert!(
        rate.peak(5) < 50.0,
        "peak request rate {:.1}/s over 5 s under faults: {:?}",
        rate.peak(5),
        rate.per_second
    );
    for fault in [Fault::Throttled, Fault::ServerError, Fault::Conflict, Fault::Slowed, Fault::WatchCut] {
        assert!(during.fault(fault) > before.fault(fault), "the proxy injected no {fault}: the test tested nothing");
    }

    // The idle Rollout stayed Healthy, and nothing was written to it or to its ReplicaSets.
    assert!(
        idle_phases.iter().all(|p| *p == Some(RolloutPhase::Healthy)),
        "the idle Rollout left Healthy: {idle_phases:?}"
    );
    let idle_after = api.get(IDLE).await?;
    let idle_writes: Vec<String> = proxy
        .records()
        .iter()
        .filter(|r| r.at >= faults_from && writes_to_idle(r))
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.status))
        .collect();
    assert_eq!(idle_writes, Vec::<String>::new(), "writes to the idle Rollout");
    assert_eq!(
        idle_after.resource_version(),
        idle_before.resource_version(),
        "the idle Rollout was rewritten: {:?} -> {:?}",
        idle_before.status,
        idle_after.status
    );

    // The controller counted its errors by kind: the reconciles that failed, and every error
    // answer, the 429s its client's retries absorbed included (no reconcile fails on those).
    let count =
        |of: &BTreeMap<String, f64>, kind: &str| of.get(&format!("{{kind=\"{kind}\"}}")).copied().unwrap_or(0.0);
    assert!(count(&errors, "conflict") > 0.0, "409s injected into writes fail reconciles as conflicts: {errors:?}");
    assert!(count(&errors, "server_error") > 0.0, "500s fail reconciles as server errors: {errors:?}");
    for kind in ["throttled", "conflict", "server_error"] {
        assert!(
            count(&answers, kind) > 0.0,
            "stepwise_api_errors_total counts {kind} answers: {answers:?} (reconcile errors: {errors:?})"
        );
    }
    assert!(controller.is_running());

    drop(controller);
    env.cleanup().await
}
