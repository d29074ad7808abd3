//! The job provider: a measurement runs a Kubernetes Job made from the metric's template, and the
//! Job's outcome is the verdict, as in Argo Rollouts: Complete ⇒ Successful, Failed ⇒ Failed.
//!
//! `run` creates the Job (owned by the AnalysisRun, so that deleting the run deletes its Jobs) and
//! answers [`Reading::InProgress`]; `resume` reads the Job until it finishes; `terminate` and
//! `garbage_collect` delete Jobs. Building the Job, naming it and reading its status are pure
//! functions ([`job_name`], [`label_value`], [`job_object`], [`reading_of`]); only
//! [`JobProvider`] talks to the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use stepwise_api::{AnalysisPhase, AnalysisRun, JobMetric, Measurement, Metric};
use tracing::debug;

use crate::{Error, MetricProvider, Reading, RunRef, Taken};

/// Measurement metadata key holding the name of the measurement's Job.
pub const JOB_NAME_KEY: &str = "job-name";
/// Measurement metadata key holding the namespace of the measurement's Job.
pub const JOB_NAMESPACE_KEY: &str = "job-namespace";
/// Label on every Job the provider creates: the name of its AnalysisRun (label-safe).
pub const ANALYSIS_RUN_LABEL: &str = "stepwise.dev/analysis-run";
/// Label on every Job the provider creates: the name of its metric (label-safe).
pub const METRIC_LABEL: &str = "stepwise.dev/metric";
/// How long after a look at an unfinished Job the next look is due. The controller also watches
/// the Jobs it owns, so a Job that finishes sooner is seen sooner; this is the fallback.
pub const RESUME_AFTER: SignedDuration = SignedDuration::from_secs(5);

/// Longest Job name: the job controller copies it into the `job-name` label of the Job's pods,
/// and a label value has at most 63 characters.
const MAX_NAME_LEN: usize = 63;

/// Measures by running Jobs in the AnalysisRun's namespace.
#[derive(Clone)]
pub struct JobProvider {
    client: Client,
}

impl std::fmt::Debug for JobProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobProvider").finish_non_exhaustive()
    }
}

impl JobProvider {
    /// A provider creating and reading Jobs through `client`.
    pub fn new(client: Client) -> Self {
        JobProvider { client }
    }

    /// [`MetricProvider::run`] at a given time: the time names the Job, so two calls at the same
    /// time are one measurement, and the second adopts the Job the first created.
    pub async fn run_at(&self, run: &RunRef, metric: &Metric, now: Timestamp) -> Result<Taken, Error> {
        let job = job_metric(metric)?;
        let name = job_name(&run.name, &metric.name, now);
        let object = job_object(run, &metric.name, job, &name)?;
        // The typed Job is not used for the create: fields the compiled k8s-openapi version does
        // not know would be dropped silently; sent as they are, the API server judges them.
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &run.namespace, &ApiResource::erase::<Job>(&()));
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => debug!(job = name, namespace = run.namespace, metric = metric.name, "created Job"),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                // The same measurement started again (same time, so same name): its Job is
                // adopted if this run owns it, rather than failing the measurement.
                let existing =
                    self.jobs(&run.namespace).get(&name).await.map_err(|e| kube_error(format!("get Job {name}"), e))?;
                if !owned_by(&existing.metadata, &run.uid) {
                    return Err(Error::Kubernetes {
                        action: format!("create Job {name}"),
                        message: format!("a Job named {name} exists and does not belong to AnalysisRun {}", run.name),
                    });
                }
                debug!(job = name, namespace = run.namespace, "adopted existing Job");
            }
            Err(e) => return Err(kube_error(format!("create Job {name}"), e)),
        }
        Ok(Taken {
            reading: Reading::InProgress { resume_at: now + RESUME_AFTER },
            metadata: job_metadata(&run.namespace, &name),
        })
    }

    fn jobs(&self, namespace: &str) -> Api<Job> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Deletes a Job; one already gone is fine. Background propagation: the pods go after the
    /// Job, without holding up the call.
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), Error> {
        match self.jobs(namespace).delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                debug!(job = name, namespace, "deleted Job");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(kube_error(format!("delete Job {name}"), e)),
        }
    }
}

impl MetricProvider for JobProvider {
    fn kind(&self) -> &'static str {
        "job"
    }

    async fn run(&self, run: &RunRef, metric: &Metric) -> Result<Taken, Error> {
        self.run_at(run, metric, Timestamp::now()).await
    }

    async fn resume(&self, run: &RunRef, metric: &Metric, measurement: &Measurement) -> Result<Taken, Error> {
        let Some((namespace, name)) = job_of(run, measurement) else {
            return Err(Error::Kubernetes {
                action: format!("resume metric {}", metric.name),
                message: format!("the measurement names no Job (metadata {JOB_NAME_KEY})"),
            });
        };
        let job = self.jobs(&namespace).get_opt(&name).await.map_err(|e| kube_error(format!("get Job {name}"), e))?;
        let Some(job) = job else {
            return Err(Error::Kubernetes {
                action: format!("get Job {name}"),
                message: format!("Job {name} was deleted"),
            });
        };
        let reading = reading_of(&job, Timestamp::now())?;
        Ok(Taken { reading, metadata: job_metadata(&namespace, &name) })
    }

    async fn terminate(&self, run: &RunRef, _metric: &Metric, measurement: &Measurement) -> Result<(), Error> {
        match job_of(run, measurement) {
            Some((namespace, name)) => self.delete(&namespace, &name).await,
            // A measurement that never got a Job (its create failed) has nothing to stop.
            None => Ok(()),
        }
    }

    async fn garbage_collect(&self, run: &RunRef, _metric: &Metric, dropped: &[Measurement]) -> Result<(), Error> {
        // Every Job is tried even when one delete fails; the first failure is reported.
        let mut first_error = None;
        for (namespace, name) in dropped.iter().filter_map(|m| job_of(run, m)) {
            if let Err(e) = self.delete(&namespace, &name).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The metric's Job template, or a configuration error when the metric has none.
fn job_metric(metric: &Metric) -> Result<&JobMetric, Error> {
    metric.provider.job.as_ref().ok_or_else(|| Error::Config {
        field: "provider.job",
        message: format!("metric {} has no job provider", metric.name),
    })
}

/// What a measurement keeps about its Job.
fn job_metadata(namespace: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (JOB_NAME_KEY.to_string(), name.to_string()),
        (JOB_NAMESPACE_KEY.to_string(), namespace.to_string()),
    ])
}

/// The namespace and name of a measurement's Job; the namespace defaults to the run's.
fn job_of(run: &RunRef, measurement: &Measurement) -> Option<(String, String)> {
    let metadata = measurement.metadata.as_ref()?;
    let name = metadata.get(JOB_NAME_KEY).filter(|n| !n.is_empty())?;
    let namespace = metadata.get(JOB_NAMESPACE_KEY).filter(|n| !n.is_empty()).unwrap_or(&run.namespace);
    Some((namespace.clone(), name.clone()))
}

/// Whether an object has an owner reference to the run with `uid`.
fn owned_by(metadata: &ObjectMeta, uid: &str) -> bool {
    metadata.owner_references.iter().flatten().any(|o| o.uid == uid)
}

/// A client error as a person reads it: the API server's message with its code and reason.
fn kube_error(action: String, e: kube::Error) -> Error {
    let message = match &e {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        _ => e.to_string(),
    };
    Error::Kubernetes { action, message }
}

/// The name of a measurement's Job: `<run>-<metric>-<time>`, a DNS label of at most 63
/// characters. `<time>` is `at` in milliseconds, base 36, which tells measurements of one metric
/// apart. When run and metric are too long, they are cut and a hash of both is added, so that
/// two long names sharing a beginning still give different Jobs.
pub fn job_name(run: &str, metric: &str, at: Timestamp) -> String {
    let suffix = base36(u64::try_from(at.as_millisecond()).unwrap_or_default());
    let mut stem = dns_label_chars(&format!("{run}-{metric}"));
    if stem.is_empty() {
        stem = "job".into();
    }
    let room = MAX_NAME_LEN - 1 - suffix.len();
    if stem.len() > room {
        let hash = format!("{:08x}", fnv1a(&format!("{run}/{metric}")));
        stem.truncate(room - 1 - hash.len());
        stem = format!("{}-{hash}", stem.trim_end_matches('-'));
    }
    format!("{stem}-{suffix}")
}

/// `value` as a valid label value: characters other than letters, digits, `-`, `_` and `.`
/// become `-`, it starts and ends with a letter or digit, and it has at most 63 characters (a
/// longer one is cut and ends with a hash of the whole).
pub fn label_value(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    let trimmed = replaced.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= MAX_NAME_LEN {
        return trimmed.to_string();
    }
    let hash = format!("{:08x}", fnv1a(value));
    let head = trimmed[..MAX_NAME_LEN - 1 - hash.len()].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash}")
}

/// The Job a measurement of `metric` creates: the template's labels, annotations and spec, our
/// labels (which win over the template's), in the run's namespace and owned by the run.
pub fn job_object(run: &RunRef, metric: &str, job: &JobMetric, name: &str) -> Result<DynamicObject, Error> {
    if !job.spec.is_object() {
        return Err(Error::Config {
            field: "provider.job.spec",
            message: format!("metric {metric}: the Job spec must be an object, not {}", job.spec),
        });
    }
    let template = job.metadata.clone().unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(ANALYSIS_RUN_LABEL.to_string(), label_value(&run.name));
    labels.insert(METRIC_LABEL.to_string(), label_value(metric));
    let owner = OwnerReference {
        api_version: AnalysisRun::api_version(&()).into_owned(),
        kind: AnalysisRun::kind(&()).into_owned(),
        name: run.name.clone(),
        uid: run.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut object = DynamicObject::new(name, &ApiResource::erase::<Job>(&())).within(&run.namespace);
    object.metadata.labels = Some(labels);
    object.metadata.annotations = template.annotations.filter(|a| !a.is_empty());
    object.metadata.owner_references = Some(vec![owner]);
    object.data = json!({ "spec": job.spec });
    Ok(object)
}

/// What a Job's status says: Complete ⇒ Successful, Failed ⇒ Failed with the Job's reason and
/// message, otherwise still running (look again at `now` + [`RESUME_AFTER`]). An unfinished Job
/// that is being deleted will never finish: an error.
pub fn reading_of(job: &Job, now: Timestamp) -> Result<Reading, Error> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let holds = |type_: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == "True");
    if let Some(failed) = holds("Failed") {
        let why = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let message = if why.is_empty() { format!("Job {name} failed") } else { format!("Job {name} failed: {why}") };
        return Ok(Reading::Verdict { phase: AnalysisPhase::Failed, message: Some(message) });
    }
    if holds("Complete").is_some() {
        return Ok(Reading::Verdict { phase: AnalysisPhase::Successful, message: None });
    }
    if job.metadata.deletion_timestamp.is_some() {
        return Err(Error::Kubernetes {
            action: format!("get Job {name}"),
            message: format!("Job {name} was deleted"),
        });
    }
    Ok(Reading::InProgress { resume_at: now + RESUME_AFTER })
}

/// Lower-case letters, digits and `-` only, without `-` at either end: the characters of a DNS
/// label (RFC 1123).
fn dns_label_chars(s: &str) -> String {
    let mapped: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    mapped.trim_matches('-').to_string()
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// 32-bit FNV-1a: a short, stable hash (the same in every build, unlike std's hasher).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use stepwise_api::PodMetadata;

    use super::*;

    fn at() -> Timestamp {
        "2026-11-30T07:00:00.123Z".parse().unwrap()
    }

    fn run() -> RunRef {
        RunRef { namespace: "shop".into(), name: "checkout-7f9c-2".into(), uid: "0b1c-uid".into() }
    }

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    fn job_with(conditions: &[(&str, &str, Option<&str>, Option<&str>)]) -> Job {
        Job {
            metadata: ObjectMeta { name: Some("run-m-1".into()), ..Default::default() },
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s, reason, message)| JobCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: reason.map(String::from),
                            message: message.map(String::from),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_name_joins_run_metric_and_time() {
        let name = job_name("checkout-7f9c-2", "smoke", at());
        assert!(name.starts_with("checkout-7f9c-2-smoke-"), "{name}");
        assert!(is_dns_label(&name), "{name}");
    }

    #[test]
    fn measurements_at_different_times_get_different_names() {
        let later = at() + SignedDuration::from_millis(1);
        assert_ne!(job_name("r", "m", at()), job_name("r", "m", later));
    }

    #[test]
    fn a_job_name_is_a_dns_label_for_long_and_odd_run_and_metric_names() {
        let long_run = "a".repeat(200);
        let cases = [
            (long_run.as_str(), "success-rate"),
            ("run", "Metric_With.Odd/Chars and Spaces-and-a-very-long-tail-that-goes-on-and-on-and-on"),
            ("-run-", "-"),
            ("", ""),
            ("r.u.n", "ÜNÏCODE"),
        ];
        for (run, metric) in cases {
            let name = job_name(run, metric, at());
            assert!(is_dns_label(&name), "{run:?} {metric:?} gave {name:?}");
        }
    }

    #[test]
    fn long_names_that_share_a_beginning_get_different_jobs() {
        let run = "r".repeat(80);
        let a = job_name(&run, "latency-p99", at());
        let b = job_name(&run, "latency-p95", at());
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
    }

    #[test]
    fn label_values_are_valid_and_short() {
        assert_eq!(label_value("checkout-7f9c-2"), "checkout-7f9c-2");
        assert_eq!(label_value("Success Rate!"), "Success-Rate");
        let long = label_value(&format!("{}_x", "m".repeat(100)));
        assert_eq!(long.len(), 63);
        assert!(long.chars().last().unwrap().is_ascii_alphanumeric());
        assert_ne!(long, label_value(&format!("{}_y", "m".repeat(100))));
    }

    #[test]
    fn the_job_is_owned_by_the_run_and_labelled_with_it_and_the_metric() {
        let template = JobMetric {
            metadata: Some(PodMetadata {
                labels: Some(BTreeMap::from([
                    ("team".to_string(), "shop".to_string()),
                    (METRIC_LABEL.to_string(), "spoofed".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("note".to_string(), "kept".to_string())])),
            }),
            spec: json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never"}}}),
        };
        let job = job_object(&run(), "smoke test", &template, "checkout-7f9c-2-smoke-1").unwrap();

        assert_eq!(job.metadata.name.as_deref(), Some("checkout-7f9c-2-smoke-1"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("shop"));
        let owners = job.metadata.owner_references.clone().unwrap();
        assert_eq!(
            owners,
            [OwnerReference {
                api_version: "stepwise.dev/v1alpha1".into(),
                kind: "AnalysisRun".into(),
                name: "checkout-7f9c-2".into(),
                uid: "0b1c-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        );
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("shop"), "the template's labels are kept");
        assert_eq!(labels.get(ANALYSIS_RUN_LABEL).map(String::as_str), Some("checkout-7f9c-2"));
        assert_eq!(labels.get(METRIC_LABEL).map(String::as_str), Some("smoke-test"), "ours win, label-safe");
        assert_eq!(job.metadata.annotations.as_ref().unwrap().get("note").map(String::as_str), Some("kept"));

        let sent = serde_json::to_value(&job).unwrap();
        assert_eq!(sent["apiVersion"], "batch/v1");
        assert_eq!(sent["kind"], "Job");
        assert_eq!(sent["spec"], template.spec, "the spec is sent as written");
    }

    #[test]
    fn a_spec_that_is_not_an_object_is_a_configuration_error() {
        let template = JobMetric { metadata: None, spec: json!("run me") };
        let err = job_object(&run(), "smoke", &template, "x").unwrap_err();
        assert!(matches!(err, Error::Config { field: "provider.job.spec", .. }), "{err}");
    }

    #[test]
    fn a_complete_job_is_successful() {
        let job = job_with(&[("SuccessCriteriaMet", "True", None, None), ("Complete", "True", None, None)]);
        assert_eq!(
            reading_of(&job, at()).unwrap(),
            Reading::Verdict { phase: AnalysisPhase::Successful, message: None }
        );
    }

    #[test]
    fn a_failed_job_fails_with_its_reason_and_message() {
        let job = job_with(&[
            (
                "FailureTarget",
                "True",
                Some("BackoffLimitExceeded"),
                Some("Job has reached the specified backoff limit"),
            ),
            ("Failed", "True", Some("BackoffLimitExceeded"), Some("Job has reached the specified backoff limit")),
        ]);
        assert_eq!(
            reading_of(&job, at()).unwrap(),
            Reading::Verdict {
                phase: AnalysisPhase::Failed,
                message: Some(
                    "Job run-m-1 failed: BackoffLimitExceeded: Job has reached the specified backoff limit".into()
                ),
            }
        );
    }

    #[test]
    fn a_running_job_is_looked_at_again_later() {
        for job in [job_with(&[]), job_with(&[("Complete", "False", None, None), ("Suspended", "True", None, None)])] {
            assert_eq!(reading_of(&job, at()).unwrap(), Reading::InProgress { resume_at: at() + RESUME_AFTER });
        }
        let no_status = Job::default();
        assert!(matches!(reading_of(&no_status, at()).unwrap(), Reading::InProgress { .. }));
    }

    #[test]
    fn an_unfinished_job_being_deleted_is_an_error_but_a_finished_one_keeps_its_verdict() {
        let mut job = job_with(&[]);
        job.metadata.deletion_timestamp = Some(Time(at()));
        assert_eq!(reading_of(&job, at()).unwrap_err().to_string(), "get Job run-m-1: Job run-m-1 was deleted");
        let mut done = job_with(&[("Complete", "True", None, None)]);
        done.metadata.deletion_timestamp = Some(Time(at()));
        assert!(matches!(reading_of(&done, at()).unwrap(), Reading::Verdict { phase: AnalysisPhase::Successful, .. }));
    }

    #[test]
    fn the_job_of_a_measurement_comes_from_its_metadata() {
        let mut m = Measurement::default();
        assert_eq!(job_of(&run(), &m), None);
        m.metadata = Some(BTreeMap::from([(JOB_NAME_KEY.to_string(), "j".to_string())]));
        assert_eq!(job_of(&run(), &m), Some(("shop".into(), "j".into())));
        m.metadata = Some(job_metadata("other", "j"));
        assert_eq!(job_of(&run(), &m), Some(("other".into(), "j".into())));
    }
}
