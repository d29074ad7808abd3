//! The AnalysisRun controller: what is due (pure) → measure through the providers, all metrics at
//! once → record (pure) → status, events and clean-up → requeue at the next measurement. One
//! controller for every run: no task or timer per run, and a run with nothing due writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{AnalysisRun, AnalysisRunStatus, Measurement, Rollout};
use stepwise_core::EventType;
use stepwise_core::measure::{self, Expiry, Outcome, Reading, SecretValues, Step, Task};
use stepwise_metrics::{DynMetricProvider, Providers, RunRef, Taken};
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, KubeContext};
use crate::metrics::Loop;
use crate::shard::Shard;

/// What every reconcile of a run shares.
pub struct AnalysisContext {
    /// The client, recorder, metrics and write limiter the Rollout controller uses too.
    pub shared: Arc<Context>,
    /// The metric providers.
    pub providers: Providers,
    /// The last status written per run (by UID), with the resourceVersion it replaced: until the
    /// cache shows a newer object, a reconcile starts from what was written, so that a
    /// measurement is never taken twice because the cache lags.
    written: Mutex<HashMap<String, (String, AnalysisRunStatus)>>,
    /// The shard, and its Rollouts: a run is measured by one shard only.
    shard: Shard,
    rollouts: Store<DeserializeGuard<Rollout>>,
}

impl AnalysisContext {
    /// A context for the AnalysisRun controller.
    pub fn new(
        shared: Arc<Context>,
        providers: Providers,
        shard: Shard,
        rollouts: Store<DeserializeGuard<Rollout>>,
    ) -> Self {
        AnalysisContext { shared, providers, written: Mutex::default(), shard, rollouts }
    }

    /// The run as this controller last left it.
    fn latest(&self, run: &AnalysisRun) -> AnalysisRun {
        let uid = run.uid().unwrap_or_default();
        let rv = run.resource_version().unwrap_or_default();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&uid) {
            Some((replaced, status)) if *replaced == rv => {
                let mut newer = run.clone();
                newer.status = Some(status.clone());
                newer
            }
            Some(_) => {
                written.remove(&uid);
                run.clone()
            }
            None => run.clone(),
        }
    }

    fn remember(&self, run: &AnalysisRun, status: &AnalysisRunStatus) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert(run.uid().unwrap_or_default(), (run.resource_version().unwrap_or_default(), status.clone()));
    }
}

/// Reconciles one AnalysisRun.
pub async fn reconcile_run(obj: Arc<AnalysisRun>, ctx: Arc<AnalysisContext>) -> Result<Requeue, Error> {
    if !ctx.shard.measures(&obj, &ctx.rollouts) {
        // Another shard's run; if its Rollout moves here, the Rollout's arrival wakes it.
        return Ok(Requeue::await_change());
    }
    let started = Instant::now();
    // Every line logged while measuring names the run and carries the trace id of the reconcile.
    let span = crate::telemetry::with_trace_id(tracing::info_span!(
        "reconcile",
        controller = "analysisrun",
        namespace = obj.metadata.namespace.as_deref().unwrap_or_default(),
        run = obj.metadata.name.as_deref().unwrap_or_default(),
        trace_id = tracing::field::Empty,
    ));
    let result = measure_run(&ctx, &ctx.latest(&obj)).instrument(span).await;
    let (writes, kind) = match &result {
        Ok((_, w)) => (*w, None),
        Err(e) => (0, Some(e.kind())),
    };
    ctx.shared.metrics.reconciled(Loop::AnalysisRun, started.elapsed().as_secs_f64(), kind, writes);
    result.map(|(requeue, _)| requeue)
}

/// Backs off after a failed reconcile of a run.
pub fn run_error_policy(run: Arc<AnalysisRun>, error: &Error, _ctx: Arc<AnalysisContext>) -> Requeue {
    tracing::warn!(run = %run.name_any(), error = %error, "reconcile of AnalysisRun failed");
    Requeue::requeue(std::time::Duration::from_secs(5))
}

async fn measure_run(ctx: &AnalysisContext, run: &AnalysisRun) -> Result<(Requeue, usize), Error> {
    if run.metadata.deletion_timestamp.is_some() {
        return Ok((Requeue::await_change(), 0));
    }
    if run.status.as_ref().and_then(|s| s.completed_at.as_ref()).is_some() {
        return expire(ctx, run).await;
    }
    let ns = run.namespace().unwrap_or_default();
    let secrets = read_secrets(ctx, &ns, measure::secrets_needed(&run.spec)).await?;
    let due = measure::due(run, &secrets, &now());
    let run_ref = RunRef { namespace: ns.clone(), name: run.name_any(), uid: run.uid().unwrap_or_default() };
    let outcomes =
        futures::future::join_all(due.tasks.iter().map(|task| perform(&ctx.providers, &run_ref, task))).await;
    let mut update = measure::record(run, &due, outcomes, &now());
    let (counted, dry_run) = measure::summaries(&update.status);
    update.status.run_summary = Some(counted);
    update.status.dry_run_summary = dry_run;
    for (metric, dropped) in &update.collect {
        if let Err(e) = collect(&ctx.providers, &run_ref, metric, dropped).await {
            tracing::warn!(run = %run_ref.name, metric = %metric.name, error = %e, "could not clean up after measurements");
        }
    }
    let mut writes = 0;
    if run.status.as_ref() != Some(&update.status) {
        write_status(ctx, run, &update.status).await?;
        writes += 1;
    }
    for event in &update.events {
        publish(ctx, run, event.type_, &event.reason, &event.message).await;
    }
    let requeue = match update.requeue_after {
        Some(after) => Requeue::requeue(after),
        // Just completed: the status written wakes this run again, and its TTL is looked at then.
        None => Requeue::await_change(),
    };
    Ok((requeue, writes))
}

/// `spec.ttlStrategy` of a completed run: deleted once it has passed, else looked at again then.
async fn expire(ctx: &AnalysisContext, run: &AnalysisRun) -> Result<(Requeue, usize), Error> {
    match measure::expiry(run, &now()) {
        Expiry::Keep => Ok((Requeue::await_change(), 0)),
        Expiry::After(wait) => Ok((Requeue::requeue(wait), 0)),
        Expiry::Delete => {
            let name = run.name_any();
            let api: Api<AnalysisRun> =
                Api::namespaced(ctx.shared.client.clone(), &run.namespace().unwrap_or_default());
            ctx.shared.limiter.acquire().await;
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    tracing::info!(run = %name, ttl_seconds = ?measure::ttl_seconds(run), "deleted AnalysisRun: its ttlStrategy has passed")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).during(|| format!("delete AnalysisRun {name} (ttlStrategy)")),
            }
            Ok((Requeue::await_change(), 1))
        }
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The values of the Secrets the run's arguments read. A Secret or key that does not exist is
/// left out: `measure::due` then names the argument it leaves unresolved.
async fn read_secrets(ctx: &AnalysisContext, ns: &str, needed: Vec<(String, String)>) -> Result<SecretValues, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), ns);
    let mut values = SecretValues::new();
    for (name, key) in needed {
        let secret = api.get_opt(&name).await.during(|| format!("read Secret {ns}/{name}"))?;
        let value = secret.and_then(|s| s.data).and_then(|mut data| data.remove(&key));
        if let Some(bytes) = value {
            values.insert((name, key), String::from_utf8_lossy(&bytes.0).into_owned());
        }
    }
    Ok(values)
}

/// Takes one measurement (or resumes or stops one) through the metric's provider.
async fn perform(providers: &Providers, run: &RunRef, task: &Task) -> Outcome {
    let started_at = now();
    let (reading, metadata) = match providers.of(&task.metric) {
        Ok(provider) => take(provider, run, task).await,
        // The schema asks for exactly one provider; a run written around it still says why.
        Err(message) => (Reading::Error(message), BTreeMap::new()),
    };
    Outcome { metric: task.metric.name.clone(), reading, metadata, started_at, finished_at: now() }
}

async fn take(provider: &dyn DynMetricProvider, run: &RunRef, task: &Task) -> (Reading, BTreeMap<String, String>) {
    match &task.step {
        Step::Run => reading_of(provider.run(run, &task.metric).await, BTreeMap::new()),
        Step::Resume(m) => reading_of(provider.resume(run, &task.metric, m).await, kept_metadata(m)),
        Step::Terminate(m) => match provider.terminate(run, &task.metric, m).await {
            Ok(()) => (Reading::Terminated, kept_metadata(m)),
            Err(e) => (Reading::Error(e.to_string()), kept_metadata(m)),
        },
    }
}

fn kept_metadata(m: &Measurement) -> BTreeMap<String, String> {
    m.metadata.clone().unwrap_or_default()
}

/// A provider's answer as core reads it; what the provider kept before (a Job's name) stays.
fn reading_of(
    taken: Result<Taken, stepwise_metrics::Error>,
    mut metadata: BTreeMap<String, String>,
) -> (Reading, BTreeMap<String, String>) {
    match taken {
        Ok(taken) => {
            metadata.extend(taken.metadata);
            let reading = match taken.reading {
                stepwise_metrics::Reading::Value(v) => Reading::Value(v),
                stepwise_metrics::Reading::Verdict { phase, message } => Reading::Verdict { phase, message },
                stepwise_metrics::Reading::InProgress { resume_at } => {
                    Reading::InProgress { resume_at: Time(resume_at) }
                }
            };
            (reading, metadata)
        }
        Err(e) => (Reading::Error(e.to_string()), metadata),
    }
}

async fn collect(
    providers: &Providers,
    run: &RunRef,
    metric: &stepwise_api::Metric,
    dropped: &[Measurement],
) -> Result<(), stepwise_metrics::Error> {
    match providers.of(metric) {
        Ok(provider) => provider.garbage_collect(run, metric, dropped).await,
        Err(_) => Ok(()),
    }
}

/// Writes the whole status. Fields the new status no longer has are removed (a merge patch
/// leaves absent fields as they were).
async fn write_status(ctx: &AnalysisContext, run: &AnalysisRun, status: &AnalysisRunStatus) -> Result<(), Error> {
    let mut patch = serde_json::to_value(status).unwrap_or(Value::Null);
    if let (Some(old), Value::Object(new)) = (run.status.as_ref().map(serde_json::to_value), &mut patch)
        && let Some(Value::Object(old)) = old.ok()
    {
        for key in old.keys().filter(|k| !new.contains_key(*k)).cloned().collect::<Vec<_>>() {
            new.insert(key, Value::Null);
        }
    }
    let api: Api<AnalysisRun> = Api::namespaced(ctx.shared.client.clone(), &run.namespace().unwrap_or_default());
    ctx.shared.limiter.acquire().await;
    api.patch_status(&run.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": patch })))
        .await
        .during(|| format!("write status of AnalysisRun {}", run.name_any()))?;
    ctx.remember(run, status);
    Ok(())
}

async fn publish(ctx: &AnalysisContext, run: &AnalysisRun, type_: EventType, reason: &str, message: &str) {
    let event = Event {
        type_: match type_ {
            EventType::Normal => KubeEventType::Normal,
            EventType::Warning => KubeEventType::Warning,
        },
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.shared.recorder.publish(&event, &run.object_ref(&())).await {
        tracing::warn!(run = %run.name_any(), error = %e, "could not record event");
    }
}
