//! The AnalysisRun lifecycle against the real API server: a metric ended early by its
//! `consecutiveSuccessLimit` (and `dryRunSummary` beside `runSummary`), a completed run deleted once its `ttlStrategy` has passed, a
//! Rollout that keeps only its newest completed runs (`spec.analysis`), and the schema refusing
//! `failureLimit: -1` without a `consecutiveSuccessLimit`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisTemplate, RunSummary};
use stepwise_e2e::{Env, eventually, secs};

/// An HTTP server on 127.0.0.1 answering `{"ok": <answer>}` with the answers in turn, the last
/// one again once they run out. Returns its URL and how many requests it answered.
async fn given_check(answers: &'static [bool]) -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ready", listener.local_addr()?);
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = stream.read(&mut buf).await;
            let n = count.fetch_add(1, Ordering::SeqCst);
            let ok = answers.get(n).or(answers.last()).copied().unwrap_or(true);
            let body = format!("{{\"ok\": {ok}}}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok((url, served))
}

fn runs(env: &Env) -> Api<AnalysisRun> {
    Api::namespaced(env.client.clone(), &env.ns)
}

async fn given_run(env: &Env, yaml: &str) -> anyhow::Result<AnalysisRun> {
    let run: AnalysisRun = serde_yaml::from_str(yaml)?;
    Ok(runs(env).create(&PostParams::default(), &run).await?)
}

async fn then_run_phase(env: &Env, name: &str, phase: AnalysisPhase) -> anyhow::Result<AnalysisRun> {
    let api = runs(env);
    eventually(&format!("run {name} {phase}"), secs(60), || async {
        Ok(api.get_opt(name).await?.and_then(|r| r.status).and_then(|s| s.phase) == Some(phase))
    })
    .await?;
    Ok(api.get(name).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_ends_successful_once_it_has_consecutive_success_limit_successes_in_a_row_and_dry_run_metrics_are_summed_apart()
-> anyhow::Result<()> {
    let env = Env::new("consecutive-success").await?;
    // Failures never end the metric (failureLimit -1): only two successes in a row do.
    let (url, served) = given_check(&[false, true, false, true, true, true, true]).await?;
    let (shadow, _) = given_check(&[false]).await?;
    given_run(
        &env,
        &format!(
            "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisRun
metadata: {{name: streak}}
spec:
  dryRun: [{{metricName: shadow}}]
  metrics:
  - name: shadow
    successCondition: result.ok == true
    provider: {{web: {{url: '{shadow}', jsonPath: '{{$}}'}}}}
  - name: ready
    interval: 1s
    count: 10
    failureLimit: -1
    consecutiveSuccessLimit: 2
    successCondition: result.ok == true
    provider: {{web: {{url: '{url}', jsonPath: '{{$}}'}}}}
"
        ),
    )
    .await?;
    let run = then_run_phase(&env, "streak", AnalysisPhase::Successful).await?;
    let status = run.status.unwrap();
    let m = status.metric_results.iter().find(|m| m.name == "ready").expect("the result of ready");
    assert_eq!(
        (m.count, m.successful, m.failed, m.consecutive_success),
        (5, 3, 2, 2),
        "ended at the second success in a row: {m:?}"
    );
    assert_eq!(status.run_summary, Some(RunSummary { count: 1, successful: 1, ..Default::default() }));
    assert_eq!(status.dry_run_summary, Some(RunSummary { count: 1, failed: 1, ..Default::default() }));
    tokio::time::sleep(secs(3)).await;
    assert_eq!(served.load(Ordering::SeqCst), 5, "no measurement once the metric ended");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_run_is_deleted_once_its_ttl_has_passed_and_a_run_without_one_for_its_phase_stays()
-> anyhow::Result<()> {
    let env = Env::new("ttl").await?;
    let (url, _) = given_check(&[true]).await?;
    let run = |name: &str, ttl: &str| {
        format!(
            "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}}}
spec:
  ttlStrategy: {ttl}
  metrics:
  - name: ready
    successCondition: result.ok == true
    provider: {{web: {{url: '{url}', jsonPath: '{{$}}'}}}}
"
        )
    };
    given_run(&env, &run("short", "{secondsAfterSuccess: 4, secondsAfterCompletion: 600}")).await?;
    given_run(&env, &run("kept", "{secondsAfterFailure: 1}")).await?;
    let done = then_run_phase(&env, "short", AnalysisPhase::Successful).await?;
    then_run_phase(&env, "kept", AnalysisPhase::Successful).await?;
    let completed = done.status.and_then(|s| s.completed_at).expect("completedAt").0;

    let api = runs(&env);
    eventually("run short deleted", secs(30), || async { Ok(api.get_opt("short").await?.is_none()) }).await?;
    let after = Timestamp::now().duration_since(completed).as_secs_f64();
    assert!(after >= 4.0, "deleted {after:.1} s after completion, before its 4 s TTL");
    tokio::time::sleep(secs(2)).await;
    assert!(api.get_opt("kept").await?.is_some(), "a Successful run with only secondsAfterFailure stays");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_deletes_its_oldest_completed_runs_beyond_its_run_history_limits() -> anyhow::Result<()> {
    let env = Env::new("run-history").await?;
    let rollout = env.given_rollout(1, "    canary: {steps: [{setWeight: 50}]}\n").await?;
    // Completed runs owned by the Rollout that its status does not name, oldest first.
    let owner = rollout.controller_owner_ref(&()).expect("owner reference");
    let (pass, _) = given_check(&[true]).await?;
    let (fail, _) = given_check(&[false]).await?;
    let finished = [
        ("ok-1", &pass, AnalysisPhase::Successful),
        ("bad-1", &fail, AnalysisPhase::Failed),
        ("ok-2", &pass, AnalysisPhase::Successful),
        ("bad-2", &fail, AnalysisPhase::Failed),
        ("ok-3", &pass, AnalysisPhase::Successful),
    ];
    let api = runs(&env);
    for (name, url, phase) in finished {
        let mut run: AnalysisRun = serde_yaml::from_str(&format!(
            "metadata: {{name: {name}}}
spec:
  metrics:
  - {{name: ready, successCondition: result.ok == true, provider: {{web: {{url: '{url}', jsonPath: '{{$}}'}}}}}}"
        ))?;
        run.metadata.owner_references = Some(vec![owner.clone()]);
        api.create(&PostParams::default(), &run).await?;
        then_run_phase(&env, name, phase).await?;
        // Creation times have a one-second resolution.
        tokio::time::sleep(secs(1) + std::time::Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    // Every run is kept under the default limits (5 each).
    tokio::time::sleep(secs(3)).await;
    let names = |list: Vec<AnalysisRun>| {
        let mut names: Vec<String> = list.into_iter().filter_map(|r| r.metadata.name).collect();
        names.sort();
        names
    };
    assert_eq!(names(api.list(&Default::default()).await?.items).len(), 5, "the default limits keep all five");

    env.rollouts()
        .patch(
            &env.rollout,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"analysis": {"successfulRunHistoryLimit": 1, "unsuccessfulRunHistoryLimit": 1}}}),
            ),
        )
        .await?;
    let left = Arc::new(Mutex::new(Vec::new()));
    eventually("runs beyond the limits deleted", secs(30), || {
        let (api, left) = (api.clone(), left.clone());
        async move {
            let now = names(api.list(&Default::default()).await?.items);
            *left.lock().unwrap() = now.clone();
            Ok(now == ["bad-2", "ok-3"])
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; runs left: {:?}", left.lock().unwrap()))?;
    assert!(started.elapsed() < secs(60));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_refuses_failure_limit_minus_one_without_a_consecutive_success_limit_naming_the_field()
-> anyhow::Result<()> {
    let env = Env::without_controller("consecutive-success-schema").await?;
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    let template = |name: &str, limits: &str| -> anyhow::Result<AnalysisTemplate> {
        Ok(serde_yaml::from_str(&format!(
            "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: {name}}}
spec:
  metrics:
  - name: ready
    interval: 10s
    {limits}
    provider: {{web: {{url: 'http://checks/ready'}}}}
"
        ))?)
    };
    let refused = |e: anyhow::Result<AnalysisTemplate>| match e {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    };
    let no_limit = api.create(&PostParams::default(), &template("no-limit", "failureLimit: -1")?).await;
    let message = refused(no_limit.map_err(Into::into));
    assert!(
        message.contains("spec.metrics[0].failureLimit")
            && message.contains("failureLimit -1 (no limit) needs a consecutiveSuccessLimit greater than 0"),
        "{message}"
    );
    let fine = template("fine", "count: 5\n    failureLimit: 2\n    consecutiveSuccessLimit: 3")?;
    api.create(&PostParams::default(), &fine).await?;
    let templated = template("templated", "count: 4\n    failureLimit: -1\n    consecutiveSuccessLimit: '{{args.n}}'")?;
    api.create(&PostParams::default(), &templated).await?;
    env.cleanup().await
}
