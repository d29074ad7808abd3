//! Analysis end to end: a real Prometheus scraping a test exporter whose error rate each test
//! sets, the controller measuring through it, and the rollout promoted or aborted on the verdict.

use std::time::Duration;

use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisTemplate, Rollout, RolloutPhase};
use stepwise_e2e::prometheus::{Prometheus, RATE_WINDOW, TestExporter, success_rate_query};
use stepwise_e2e::{Env, eventually, repo_root, secs};

/// A Prometheus scraping an exporter of `app`, with data to query.
async fn given_prometheus(app: &str) -> anyhow::Result<(TestExporter, Prometheus)> {
    let exporter = TestExporter::start(&[app])?;
    let prometheus = Prometheus::start(&exporter).await?;
    prometheus.wait_for_data(&success_rate_query(app), secs(60)).await?;
    Ok((exporter, prometheus))
}

/// Sets the app's error rate and waits until Prometheus' success rate shows it.
async fn when_error_rate(exporter: &TestExporter, prometheus: &Prometheus, app: &str, rate: f64) -> anyhow::Result<()> {
    exporter.set_app_error_rate(app, rate);
    eventually(&format!("a success rate of {}", 1.0 - rate), secs(30), || async {
        let result = prometheus.query(&success_rate_query(app)).await?;
        let value = result[0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        Ok(value.is_some_and(|v| (v - (1.0 - rate)).abs() < 0.02))
    })
    .await
}

/// The documents of `examples/canary-analysis.yaml`.
fn example() -> anyhow::Result<(AnalysisTemplate, Value)> {
    let text = std::fs::read_to_string(repo_root().join("examples/canary-analysis.yaml"))?;
    let mut docs = text.split("\n---\n");
    let template = serde_yaml::from_str(docs.next().unwrap_or_default())?;
    let rollout = serde_yaml::from_str(docs.next().unwrap_or_default())?;
    Ok((template, rollout))
}

/// The example's AnalysisTemplate, as a user applies it.
async fn given_template(env: &Env, template: &AnalysisTemplate) -> anyhow::Result<()> {
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), template).await?;
    Ok(())
}

/// What the Rollout's analyses pass to the example template on the test machine: the fixture's
/// Prometheus, measurements a second apart over the fixture's rate window.
fn local_args(app: &str, prometheus: &Prometheus) -> Value {
    json!([
        {"name": "app", "value": app},
        {"name": "prometheus", "value": prometheus.address()},
        {"name": "interval", "value": "1s"},
        {"name": "window", "value": RATE_WINDOW},
    ])
}

async fn runs(env: &Env) -> anyhow::Result<Vec<AnalysisRun>> {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let mut runs = api.list(&ListParams::default()).await?.items;
    runs.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(runs)
}

fn phase(run: &AnalysisRun) -> Option<AnalysisPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn aborted(ro: &Rollout) -> bool {
    ro.status.as_ref().is_some_and(|s| s.abort == Some(true) && s.phase == Some(RolloutPhase::Degraded))
}

/// The newest run that ended in `expected`. Not simply the newest run: a run started as the
/// rollout is aborted (a background run, or a step's run planned on a status the abort had not
/// reached yet) is stopped at once, and ends Successful ("Run Terminated") after the one that
/// decided.
async fn then_last_run(env: &Env, expected: AnalysisPhase) -> anyhow::Result<AnalysisRun> {
    let runs = runs(env).await?;
    let statuses: Vec<_> = runs.iter().map(|r| (r.metadata.name.clone(), r.status.clone())).collect();
    let found = runs.into_iter().rev().find(|r| phase(r) == Some(expected));
    found.ok_or_else(|| anyhow::anyhow!("no run ended {expected:?}: {statuses:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_canary_is_promoted_while_its_success_rate_holds_and_aborted_back_to_stable_when_it_drops()
-> anyhow::Result<()> {
    let (exporter, prometheus) = given_prometheus("api").await?;
    let mut env = Env::new("analysis-example").await?;
    env.rollout = "api".into();
    let (template, mut rollout) = example()?;
    given_template(&env, &template).await?;
    rollout["spec"]["strategy"]["canary"]["steps"][1]["analysis"]["args"] = local_args("api", &prometheus);
    rollout["spec"]["strategy"]["canary"]["steps"][3] = json!({"pause": {"duration": "1s"}});
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_json::from_value(rollout)?).await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;

    // A healthy version: three good measurements, then the rest of the steps.
    env.when_template(json!({"spec": {"containers": [{"name": "api", "image": "example.invalid/api:2"}]}})).await?;
    env.then("the new version promoted", secs(90), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs.is_some() && st.stable_rs == st.current_pod_hash
    })
    .await?;
    let good = then_last_run(&env, AnalysisPhase::Successful).await?;
    let metric = &good.status.as_ref().unwrap().metric_results[0];
    assert_eq!((metric.count, metric.successful), (3, 3), "{metric:?}");
    let value: Vec<f64> = serde_json::from_str(metric.measurements[0].value.as_deref().unwrap_or("[]"))?;
    assert!(value[0] > 0.99, "measured {value:?}");
    let stable = env.get().await?.status.unwrap().stable_rs.unwrap();

    // Half the requests fail: two failed measurements exceed failureLimit 1.
    when_error_rate(&exporter, &prometheus, "api", 0.5).await?;
    env.when_template(json!({"spec": {"containers": [{"name": "api", "image": "example.invalid/api:3"}]}})).await?;
    env.then("the rollout aborted", secs(90), aborted).await?;
    env.then_pods(0, 4, secs(60)).await?;
    let message = env.get().await?.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("success-rate") && message.contains("0.5"), "{message}");
    let bad = then_last_run(&env, AnalysisPhase::Failed).await?;
    let failed = &bad.status.as_ref().unwrap().metric_results[0];
    assert_eq!(failed.failed, 2, "{failed:?}");
    assert_eq!(env.get().await?.status.unwrap().stable_rs, Some(stable), "the stable version stays");
    let events = env.events().await?;
    assert!(events.iter().any(|(_, m)| m.contains("success-rate")), "{events:?}");
    drop(prometheus);
    env.cleanup().await
}

/// The example template as background analysis of a canary of `demo`.
fn background(prometheus: &Prometheus) -> String {
    format!(
        "    canary:\n      analysis:\n        templates: [{{templateName: success-rate}}]\n        args: {}\n      steps:\n      - setWeight: 50\n      - pause: {{duration: 8s}}\n",
        local_args("demo", prometheus)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn background_analysis_lets_a_good_canary_through_and_aborts_a_bad_one_before_its_steps_end() -> anyhow::Result<()>
{
    let (exporter, prometheus) = given_prometheus("demo").await?;
    let env = Env::new("analysis-background").await?;
    given_template(&env, &example()?.0).await?;
    env.given_rollout(2, &background(&prometheus)).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then("the new version promoted", secs(90), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs == st.current_pod_hash
    })
    .await?;
    then_last_run(&env, AnalysisPhase::Successful).await?;

    when_error_rate(&exporter, &prometheus, "demo", 0.5).await?;
    env.when_image("example.invalid/demo:3").await?;
    env.then("the rollout aborted", secs(60), aborted).await?;
    let st = env.get().await?.status.unwrap();
    assert_ne!(st.stable_rs, st.current_pod_hash, "the bad version never became stable");
    env.then_pods(0, 2, secs(60)).await?;
    then_last_run(&env, AnalysisPhase::Failed).await?;
    env.cleanup().await
}

fn blue_green(prometheus: &Prometheus, which: &str) -> String {
    format!(
        "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      {which}:\n        templates: [{{templateName: success-rate}}]\n        args: {}\n",
        local_args("demo", prometheus)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_pre_promotion_analysis_keeps_the_active_service_on_the_old_version() -> anyhow::Result<()> {
    let (exporter, prometheus) = given_prometheus("demo").await?;
    let env = Env::new("analysis-prepromotion").await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    given_template(&env, &example()?.0).await?;
    env.given_rollout(2, &blue_green(&prometheus, "prePromotionAnalysis")).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();

    when_error_rate(&exporter, &prometheus, "demo", 0.5).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then("the rollout aborted", secs(90), aborted).await?;
    assert_eq!(env.service_hash("app-active").await?.as_deref(), Some(blue.as_str()), "never switched");
    then_last_run(&env, AnalysisPhase::Failed).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_post_promotion_analysis_switches_the_active_service_back() -> anyhow::Result<()> {
    let (exporter, prometheus) = given_prometheus("demo").await?;
    let env = Env::new("analysis-postpromotion").await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    given_template(&env, &example()?.0).await?;
    env.given_rollout(2, &blue_green(&prometheus, "postPromotionAnalysis")).await?;
    let blue = env.get().await?.status.unwrap().stable_rs.unwrap();

    when_error_rate(&exporter, &prometheus, "demo", 0.5).await?;
    env.when_image("example.invalid/demo:2").await?;
    let green = wait_for_switch(&env, &blue).await?;
    env.then("the rollout aborted", secs(90), aborted).await?;
    eventually("the active Service back on the old version", secs(30), || async {
        Ok(env.service_hash("app-active").await?.as_deref() == Some(blue.as_str()))
    })
    .await?;
    assert_ne!(green, blue);
    then_last_run(&env, AnalysisPhase::Failed).await?;
    env.cleanup().await
}

/// Waits until the active Service selects a version other than `blue`, and returns it.
async fn wait_for_switch(env: &Env, blue: &str) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(hash) = env.service_hash("app-active").await?
            && hash != blue
        {
            return Ok(hash);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the active Service never switched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A smoke test as a Job; `outcome` becomes a label of its pod, by which the local cluster makes
/// the pod fail (`fail`) or complete.
const SMOKE_TEST: &str = "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke-test}
spec:
  args: [{name: outcome}]
  metrics:
  - name: smoke-test
    provider:
      job:
        spec:
          backoffLimit: 0
          template:
            metadata: {labels: {stepwise.dev/test-outcome: '{{args.outcome}}'}}
            spec:
              restartPolicy: Never
              containers: [{name: smoke, image: example.invalid/smoke:1}]
";

fn smoke_step(outcome: &str) -> String {
    format!(
        "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {{templates: [{{templateName: smoke-test}}], args: [{{name: outcome, value: {outcome}}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_analysis_promotes_when_its_job_completes_and_aborts_when_it_fails() -> anyhow::Result<()> {
    let env = Env::new("analysis-job").await?;
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_yaml::from_str(SMOKE_TEST)?).await?;
    env.given_rollout(2, &smoke_step("pass")).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then("the new version promoted", secs(90), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs == st.current_pod_hash
    })
    .await?;
    let run = then_last_run(&env, AnalysisPhase::Successful).await?;
    let job = run.status.as_ref().unwrap().metric_results[0].measurements[0].metadata.clone().unwrap_or_default();
    assert!(job.contains_key("job-name"), "{job:?}");

    let rollouts: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let mut ro = rollouts.get(&env.rollout).await?;
    let strategy: Value = serde_yaml::from_str(&format!("strategy:\n{}", smoke_step("fail")))?;
    ro.spec.strategy = serde_json::from_value(strategy["strategy"].clone())?;
    ro.spec.template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].image =
        Some("example.invalid/demo:3".into());
    rollouts.replace(&env.rollout, &PostParams::default(), &ro).await?;
    env.then("the rollout aborted", secs(90), aborted).await?;
    env.then_pods(0, 2, secs(60)).await?;
    let failed = then_last_run(&env, AnalysisPhase::Failed).await?;
    let message = failed.status.as_ref().unwrap().message.clone().unwrap_or_default();
    assert!(message.contains("smoke-test"), "{message}");
    // The run is over: the Job that failed it is cleaned up.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(env.client.clone(), &env.ns);
    let measured = failed.status.as_ref().unwrap().metric_results[0].measurements[0].metadata.clone();
    let job = measured.and_then(|m| m.get("job-name").cloned()).ok_or_else(|| anyhow::anyhow!("no job-name"))?;
    eventually(&format!("Job {job} deleted"), secs(30), || async {
        Ok(jobs.get_opt(&job).await?.is_none_or(|j| j.metadata.deletion_timestamp.is_some()))
    })
    .await?;
    env.cleanup().await
}

/// An HTTP server on 127.0.0.1 answering `{"ok": <ok>}` to requests that carry
/// `Authorization: Bearer <token>`, and 401 to others; returns its address and what it saw.
async fn given_health_endpoint(
    token: &'static str,
    ok: bool,
) -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}/health", listener.local_addr()?);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let authorized = request.lines().any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}")));
            log.lock().unwrap().push(if authorized { "authorized" } else { "refused" }.to_string());
            let (status, body) =
                if authorized { ("200 OK", format!("{{\"ok\": {ok}}}")) } else { ("401 Unauthorized", "{}".into()) };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok((address, seen))
}

/// A web check whose bearer token comes from a Secret through an argument.
fn web_check(url: &str) -> String {
    format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: health}}
spec:
  args:
  - name: token
    valueFrom: {{secretKeyRef: {{name: health-token, key: token}}}}
  metrics:
  - name: health
    successCondition: result.ok == true
    provider:
      web:
        url: {url}
        jsonPath: '{{$}}'
        headers: [{{key: Authorization, value: 'Bearer {{{{args.token}}}}'}}]
"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_analysis_authenticates_with_a_secret_that_never_shows_in_the_run() -> anyhow::Result<()> {
    const TOKEN: &str = "s3cr3t-t0ken-e2e";
    let (url, seen) = given_health_endpoint(TOKEN, false).await?;
    let env = Env::new("analysis-web").await?;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client.clone(), &env.ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "health-token"}, "stringData": {"token": TOKEN}}))?,
        )
        .await?;
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_yaml::from_str(&web_check(&url))?).await?;
    let strategy =
        "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: health}]}\n";
    env.given_rollout(2, strategy).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then("the rollout aborted", secs(60), aborted).await?;
    assert_eq!(seen.lock().unwrap().first().map(String::as_str), Some("authorized"), "the token was sent");
    let run = then_last_run(&env, AnalysisPhase::Failed).await?;
    let text = serde_json::to_string(&run)?;
    assert!(text.contains("result.ok == true was false"), "{text}");
    assert!(!text.contains(TOKEN), "the Secret's value shows in the run: {text}");
    env.cleanup().await
}

/// The example metric plugin reading its number from a file the test writes.
fn budget_check(file: &std::path::Path) -> String {
    format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: budget}}
spec:
  metrics:
  - name: error-budget
    successCondition: result >= 0.9
    provider:
      plugin:
        example.com/file: {{path: '{}'}}
",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_plugin_in_another_language_judges_a_canary() -> anyhow::Result<()> {
    let mut env = Env::without_controller("analysis-plugin").await?;
    let plugin = repo_root().join("examples/plugins/file-metric.py");
    env.start_controller(&["--leader-elect=false", &format!("--metric-plugin=example.com/file={}", plugin.display())])?;
    let file = std::env::temp_dir().join(format!("stepwise-budget-{}", env.ns));
    std::fs::write(&file, "0.97")?;
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_yaml::from_str(&budget_check(&file))?).await?;
    let strategy =
        "    canary:\n      steps:\n      - setWeight: 50\n      - analysis: {templates: [{templateName: budget}]}\n";
    env.given_rollout(2, strategy).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then("the new version promoted", secs(60), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs == st.current_pod_hash
    })
    .await?;
    let good = then_last_run(&env, AnalysisPhase::Successful).await?;
    let measured = &good.status.as_ref().unwrap().metric_results[0].measurements[0];
    assert_eq!(measured.value.as_deref(), Some("0.97"));

    std::fs::write(&file, "0.4")?;
    env.when_image("example.invalid/demo:3").await?;
    env.then("the rollout aborted", secs(60), aborted).await?;
    let bad = then_last_run(&env, AnalysisPhase::Failed).await?;
    let message = bad.status.as_ref().unwrap().message.clone().unwrap_or_default();
    assert!(message.contains("error-budget") && message.contains("0.4"), "{message}");
    let _ = std::fs::remove_file(&file);
    env.cleanup().await
}
