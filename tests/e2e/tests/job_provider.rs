//! The Job metric provider on the local control plane, without the controller: a measurement
//! creates a Job owned by its AnalysisRun, and the Job's outcome (kwok completes its pod, or fails
//! it when the pod is labelled `stepwise.dev/test-outcome: fail`) is the verdict. Terminating and
//! garbage collection delete the Jobs; a Job the API server refuses is an error naming it.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisRunSpec, JobMetric, Measurement, Metric, PodMetadata};
use stepwise_e2e::{Env, eventually, secs};
use stepwise_metrics::job::{ANALYSIS_RUN_LABEL, JOB_NAME_KEY, JOB_NAMESPACE_KEY, JobProvider, METRIC_LABEL};
use stepwise_metrics::{MetricProvider, Reading, RunRef, Taken};

/// A Job spec kwok runs to completion (or to failure, with `outcome` "fail").
fn job_spec(outcome: Option<&str>) -> JobMetric {
    let labels = outcome.map(|o| json!({"stepwise.dev/test-outcome": o})).unwrap_or(json!({}));
    JobMetric {
        metadata: Some(PodMetadata {
            labels: Some([("team".to_string(), "checkout".to_string())].into()),
            annotations: None,
        }),
        spec: json!({
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "check", "image": "example.invalid/check:1"}]},
            },
        }),
    }
}

fn metric(name: &str, job: JobMetric) -> Metric {
    Metric {
        name: name.into(),
        provider: stepwise_api::MetricProvider { job: Some(job), ..Default::default() },
        ..Default::default()
    }
}

/// Given an AnalysisRun `run` with `metric` in a fresh namespace: the run the Jobs belong to.
async fn given_run(test: &str, metric: &Metric) -> anyhow::Result<(Env, RunRef, JobProvider)> {
    let env = Env::without_controller(test).await?;
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let run = AnalysisRun::new("run", AnalysisRunSpec { metrics: vec![metric.clone()], ..Default::default() });
    let run = runs.create(&PostParams::default(), &run).await?;
    let run = RunRef { namespace: env.ns.clone(), name: run.name_any(), uid: run.uid().unwrap_or_default() };
    let provider = JobProvider::new(env.client.clone());
    Ok((env, run, provider))
}

fn jobs(env: &Env) -> Api<Job> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// The measurement a controller would keep after `taken`.
fn measurement(taken: &Taken) -> Measurement {
    Measurement { phase: AnalysisPhase::Running, metadata: Some(taken.metadata.clone()), ..Default::default() }
}

fn job_name(taken: &Taken) -> String {
    taken.metadata.get(JOB_NAME_KEY).cloned().unwrap_or_default()
}

/// Resumes the measurement until the provider gives a verdict.
async fn until_verdict(
    provider: &JobProvider,
    run: &RunRef,
    metric: &Metric,
    m: &Measurement,
    timeout: Duration,
) -> anyhow::Result<(AnalysisPhase, Option<String>)> {
    let start = Instant::now();
    loop {
        let taken = provider.resume(run, metric, m).await?;
        assert_eq!(taken.metadata, m.metadata.clone().unwrap_or_default(), "resume keeps the Job's name");
        match taken.reading {
            Reading::Verdict { phase, message } => return Ok((phase, message)),
            Reading::InProgress { resume_at } => assert!(resume_at > Timestamp::now(), "resume_at is ahead"),
            other => anyhow::bail!("a Job gave {other:?}"),
        }
        if start.elapsed() > timeout {
            anyhow::bail!("no verdict within {timeout:?} for Job {:?}", m.metadata);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn then_gone(env: &Env, name: &str) -> anyhow::Result<()> {
    let api = jobs(env);
    eventually(&format!("Job {name} to be deleted"), secs(30), || async { Ok(api.get_opt(name).await?.is_none()) })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_completes_is_a_successful_measurement() -> anyhow::Result<()> {
    let m = metric("smoke", job_spec(None));
    let (env, run, provider) = given_run("job-ok", &m).await?;

    let before = Timestamp::now();
    let taken = provider.run(&run, &m).await?;
    let Reading::InProgress { resume_at } = taken.reading else { anyhow::bail!("run gave {:?}", taken.reading) };
    assert!(resume_at > before, "resume_at {resume_at} is ahead of {before}");
    let name = job_name(&taken);
    assert!(name.starts_with("run-smoke-"), "{name}");
    assert_eq!(taken.metadata.get(JOB_NAMESPACE_KEY), Some(&env.ns));

    let job = jobs(&env).get(&name).await?;
    let owner = job.owner_references().first().cloned().expect("an owner");
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("stepwise.dev/v1alpha1", "AnalysisRun", "run", run.uid.as_str())
    );
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(job.labels().get(ANALYSIS_RUN_LABEL).map(String::as_str), Some("run"));
    assert_eq!(job.labels().get(METRIC_LABEL).map(String::as_str), Some("smoke"));
    assert_eq!(job.labels().get("team").map(String::as_str), Some("checkout"), "the template's labels are kept");

    let (phase, _) = until_verdict(&provider, &run, &m, &measurement(&taken), secs(60)).await?;
    assert_eq!(phase, AnalysisPhase::Successful);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_pod_fails_is_a_failed_measurement() -> anyhow::Result<()> {
    let m = metric("smoke", job_spec(Some("fail")));
    let (env, run, provider) = given_run("job-fail", &m).await?;

    let taken = provider.run(&run, &m).await?;
    let (phase, message) = until_verdict(&provider, &run, &m, &measurement(&taken), secs(60)).await?;
    assert_eq!(phase, AnalysisPhase::Failed);
    let message = message.unwrap_or_default();
    assert!(message.starts_with(&format!("Job {} failed: ", job_name(&taken))), "{message}");
    assert!(message.contains("BackoffLimitExceeded"), "the Job's reason is told: {message}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_measurement_started_twice_adopts_its_job() -> anyhow::Result<()> {
    let m = metric("smoke", job_spec(None));
    let (env, run, provider) = given_run("job-adopt", &m).await?;

    let at = Timestamp::now();
    let first = provider.run_at(&run, &m, at).await?;
    let second = provider.run_at(&run, &m, at).await?;
    assert_eq!(first.metadata, second.metadata, "one Job");
    assert!(matches!(second.reading, Reading::InProgress { .. }));
    assert_eq!(jobs(&env).list(&Default::default()).await?.items.len(), 1);

    // A Job of that name that another run owns is not taken over.
    let other = RunRef { uid: "not-this-run".into(), ..run.clone() };
    let err = provider.run_at(&other, &m, at).await.unwrap_err().to_string();
    assert!(err.contains(&format!("create Job {}", job_name(&first))) && err.contains("does not belong"), "{err}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn terminating_a_measurement_deletes_its_job() -> anyhow::Result<()> {
    // A pod that never leaves Pending (no node matches) keeps the Job running until it is stopped.
    let mut job = job_spec(None);
    job.spec["template"]["spec"]["nodeSelector"] = json!({"stepwise.dev/no-such-node": "true"});
    let m = metric("smoke", job);
    let (env, run, provider) = given_run("job-terminate", &m).await?;

    let taken = provider.run(&run, &m).await?;
    let name = job_name(&taken);
    let kept = measurement(&taken);
    assert!(matches!(provider.resume(&run, &m, &kept).await?.reading, Reading::InProgress { .. }));

    provider.terminate(&run, &m, &kept).await?;
    then_gone(&env, &name).await?;
    provider.terminate(&run, &m, &kept).await?; // a Job already gone is fine

    let err = provider.resume(&run, &m, &kept).await.unwrap_err().to_string();
    assert_eq!(err, format!("get Job {name}: Job {name} was deleted"));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_deletes_the_jobs_of_dropped_measurements() -> anyhow::Result<()> {
    let m = metric("smoke", job_spec(None));
    let (env, run, provider) = given_run("job-gc", &m).await?;

    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(provider.run(&run, &m).await?);
        // Job names carry the time in milliseconds: keep the measurements apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let names: Vec<String> = taken.iter().map(job_name).collect();
    let dropped: Vec<Measurement> = taken[..2].iter().map(measurement).collect();

    provider.garbage_collect(&run, &m, &dropped).await?;
    for name in &names[..2] {
        then_gone(&env, name).await?;
    }
    assert!(jobs(&env).get_opt(&names[2]).await?.is_some(), "the kept measurement's Job stays");
    provider.garbage_collect(&run, &m, &dropped).await?; // Jobs already gone are fine
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_spec_the_api_server_refuses_is_an_error_naming_the_job() -> anyhow::Result<()> {
    // A Job's pods may not restart Always: the API server refuses it (422).
    let mut job = job_spec(None);
    job.spec["template"]["spec"]["restartPolicy"] = Value::from("Always");
    let m = metric("smoke", job);
    let (env, run, provider) = given_run("job-refused", &m).await?;

    let err = provider.run(&run, &m).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, stepwise_metrics::Error::Kubernetes { .. }), "{err:?}");
    assert!(text.starts_with("create Job run-smoke-"), "names the Job: {text}");
    assert!(
        text.contains("spec.template.spec.restartPolicy") && text.contains("422 Invalid"),
        "quotes the API: {text}"
    );
    assert!(jobs(&env).list(&Default::default()).await?.items.is_empty());
    env.cleanup().await
}
