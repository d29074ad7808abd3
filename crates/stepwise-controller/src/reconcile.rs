//! One reconcile of one Rollout: observe (caches) → plan (pure) → execute (client) → status.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::{POD_TEMPLATE_HASH_LABEL, Rollout, RolloutStatus};
use stepwise_core::failure::{clear_reconcile_error, decision_events, status_after_failure};
use stepwise_core::objects::{label_selector_string, pod_selector};
use stepwise_core::{Action, Observed, Plan};
use tracing::{Instrument, info, warn};

use crate::context::Context;
use crate::error::{Error, KubeContext};
use crate::execute::{ExecuteError, execute, publish_event};
use crate::metrics::{Loop, Metrics};
use crate::observe::observe;

/// Reconciles one Rollout and records the metrics of the attempt.
pub async fn reconcile(obj: Arc<DeserializeGuard<Rollout>>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    // Every line logged while reconciling names the Rollout, whichever function logs it.
    let meta = obj.0.as_ref().map(|r| &r.metadata).ok();
    // ... and carries the trace id of the reconcile (crate::telemetry).
    let span = crate::telemetry::with_trace_id(tracing::info_span!(
        "reconcile",
        controller = "rollout",
        namespace = meta.and_then(|m| m.namespace.as_deref()).unwrap_or_default(),
        rollout = meta.and_then(|m| m.name.as_deref()).unwrap_or_default(),
        trace_id = tracing::field::Empty,
    ));
    let result = reconcile_rollout(&obj, &ctx).instrument(span).await;
    if let (Err(e), Ok(rollout)) = (&result, &obj.0)
        && e.needs_a_person()
    {
        // Told where the people who watch the Rollout look; repeats merge into one series.
        publish_event(&ctx, rollout, EventType::Warning, "ReconcileError", &e.to_string()).await;
    }
    let (writes, kind) = match &result {
        Ok((_, w)) => (*w, None),
        Err(e) => (0, Some(e.kind())),
    };
    ctx.metrics.reconciled(Loop::Rollout, started.elapsed().as_secs_f64(), kind, writes);
    result.map(|(requeue, _)| requeue)
}

async fn reconcile_rollout(obj: &DeserializeGuard<Rollout>, ctx: &Context) -> Result<(Requeue, usize), Error> {
    let rollout = match &obj.0 {
        Ok(r) => r,
        Err(invalid) => return Err(Error::InvalidObject(invalid.error.clone())),
    };
    let key = Metrics::rollout_key(&rollout.metadata);
    if rollout.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the ReplicaSets and AnalysisRuns.
        ctx.metrics.set_phase(&key, None);
        crate::finalizer::finalize(ctx, rollout).await?;
        return Ok((Requeue::await_change(), 0));
    }

    // observe (no client required)
    let now = Time(Timestamp::now());
    let mut observed = observe(rollout, &ctx.stores, &ctx.stores_analysis, &ctx.routers);
    if let Some(pods) = list_pods_if_needed(ctx, rollout, &observed, &now).await? {
        observed.pods_to_restart = pods_created_before_restart(rollout, &pods);
        if rollout.spec.strategy.recreate.is_some() {
            count_pods_still_running(&pods, &mut observed);
        }
    }
    if observed.weight_checkable {
        read_weight_back(ctx, rollout, &mut observed).await?;
    }

    // plan (pure)
    let plan = stepwise_core::plan(rollout, &observed, &now);

    // execute and status (client)
    let writes = act(ctx, rollout, &plan, &now).await?;
    let requeue = match plan.requeue_after {
        Some(after) => Requeue::requeue(after.max(Duration::from_millis(200))),
        None => Requeue::await_change(),
    };
    Ok((requeue, writes))
}

/// The weight last set, read back from the routers until it is found in effect; then the status
/// says so and nothing is read again until the next weight.
async fn read_weight_back(ctx: &Context, rollout: &Rollout, observed: &mut Observed) -> Result<(), Error> {
    let weights = rollout.status.as_ref().and_then(|s| s.canary.as_ref()).and_then(|c| c.weights.as_ref());
    match weights.map(|w| w.verified) {
        None => {}
        Some(Some(true)) => observed.weight_verified = Some(true),
        Some(_) => {
            let reading = crate::route::read_weight(ctx, rollout).await?;
            // Nothing could tell (a plugin that answers `verified: null`): a step goes on once
            // the weight is written, as for routers that are never read back.
            observed.weight_checkable = reading.verified.is_some();
            observed.weight_verified = reading.verified;
            observed.weight_not_in_effect = reading.not_in_effect;
        }
    }
    Ok(())
}

/// Carries out the plan and writes the status; returns the number of writes. When an action
/// fails, the status written says so (and takes back what was not done) before the error is
/// returned, so that the Rollout tells what the log tells.
pub async fn act(ctx: &Context, rollout: &Rollout, plan: &Plan, now: &Time) -> Result<usize, Error> {
    let key = Metrics::rollout_key(&rollout.metadata);
    let (rollout, executed) = execute_plan(ctx, rollout, &plan.actions).await;
    let rollout = rollout.as_ref();
    match executed {
        Ok(writes) => {
            let mut status = plan.status.clone();
            clear_reconcile_error(&mut status);
            let written = write_status(ctx, rollout, &status).await?;
            ctx.metrics.set_phase(&key, status.phase);
            Ok(writes + written)
        }
        Err(ExecuteError { done, error }) => {
            let prev = rollout.status.clone().unwrap_or_default();
            let status =
                status_after_failure(rollout, &prev, plan, done, &error.to_string(), error.needs_a_person(), now);
            match write_status(ctx, rollout, &status).await {
                Ok(_) => {
                    ctx.metrics.set_phase(&key, status.phase);
                    // Events only: publishing cannot fail.
                    let decisions: Vec<Action> = decision_events(plan).into_iter().cloned().collect();
                    let _ = execute(ctx, rollout, &decisions).await;
                }
                // The action's error is the one to retry on; a lost status write is planned again.
                Err(e) => warn!(rollout = %key, error = %e, "could not record the reconcile error in the status"),
            }
            Err(error)
        }
    }
}

/// Carries out `actions`. Adding the finalizer, always first, changes the Rollout's
/// resourceVersion, on which the other actions and the status are written: the Rollout returned
/// is the one to go on with.
async fn execute_plan<'r>(
    ctx: &Context,
    rollout: &'r Rollout,
    actions: &[Action],
) -> (Cow<'r, Rollout>, Result<usize, ExecuteError>) {
    let Some((Action::AddTrafficFinalizer, rest)) = actions.split_first() else {
        return (Cow::Borrowed(rollout), execute(ctx, rollout, actions).await);
    };
    ctx.limiter.acquire().await;
    let updated = match crate::finalizer::add(ctx, rollout).await {
        Ok(updated) => updated,
        Err(error) => return (Cow::Borrowed(rollout), Err(ExecuteError { done: 0, error })),
    };
    let executed = execute(ctx, &updated, rest).await;
    (Cow::Owned(updated), executed.map(|writes| writes + 1).map_err(|e| ExecuteError { done: e.done + 1, ..e }))
}

/// Writes `status` through the status subresource when it differs from the Rollout's; returns
/// the number of writes made.
async fn write_status(ctx: &Context, rollout: &Rollout, status: &RolloutStatus) -> Result<usize, Error> {
    let key = Metrics::rollout_key(&rollout.metadata);
    let old = serde_json::to_value(rollout.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
    let new = serde_json::to_value(status).unwrap_or(Value::Null);
    let Some(diff) = merge_patch(&old, &new) else { return Ok(0) };
    ctx.limiter.acquire().await;
    // The resourceVersion makes the write fail if a user changed the Rollout meanwhile (for
    // example an abort): the next reconcile plans again with their change.
    let patch = json!({"metadata": {"resourceVersion": rollout.resource_version()}, "status": diff});
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    match api.patch_status(&rollout.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Conflict(key)),
        Err(e) => return Err(e).during(|| format!("write status of {key}")),
    }
    let before = rollout.status.as_ref();
    if before.and_then(|s| s.phase) != status.phase
        || before.and_then(|s| s.message.as_ref()) != status.message.as_ref()
    {
        info!(rollout = %key, phase = ?status.phase, message = status.message.as_deref().unwrap_or(""), "status");
    }
    Ok(1)
}

/// What to do after a failed reconcile.
pub fn error_policy(obj: Arc<DeserializeGuard<Rollout>>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    let name = match &obj.0 {
        Ok(r) => format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
        Err(e) => format!(
            "{}/{}",
            e.metadata.namespace.clone().unwrap_or_default(),
            e.metadata.name.clone().unwrap_or_default()
        ),
    };
    match error {
        // The change that caused the conflict reaches the cache through the watch, which
        // triggers the next reconcile; replanning earlier from the stale cache would only repeat
        // this plan's events. The requeue is the fallback.
        Error::Conflict(_) => Requeue::requeue(Duration::from_secs(2)),
        // A person has been told (a ReconcileError event); retry now and then in case they fixed it
        // in a place that does not wake the Rollout (an AnalysisTemplate).
        e if e.needs_a_person() => {
            warn!(rollout = %name, error = %e, kind = e.kind(), "reconcile failed; waiting for a fix");
            Requeue::requeue(Duration::from_secs(30))
        }
        e if e.is_transient() => {
            warn!(rollout = %name, error = %e, kind = e.kind(), "reconcile failed; retrying");
            Requeue::requeue(Duration::from_secs(5))
        }
        e => {
            warn!(rollout = %name, error = %e, "the Rollout cannot be reconciled until it changes");
            Requeue::await_change()
        }
    }
}

fn restart_pending(rollout: &Rollout, now: &Time) -> bool {
    match &rollout.spec.restart_at {
        Some(at) => at.0 <= now.0 && rollout.status.as_ref().and_then(|s| s.restarted_at.as_ref()) != Some(at),
        None => false,
    }
}

/// The Rollout's pods, listed once for the plan when it needs them: while a restart is pending
/// (which pods are older than spec.restartAt), and for a Recreate Rollout with more than one
/// version (which are still stopping). Otherwise None, so that a steady-state reconcile makes no
/// request. Without a selector no pod is the Rollout's: an empty one would list every pod of the
/// namespace.
async fn list_pods_if_needed(
    ctx: &Context,
    rollout: &Rollout,
    observed: &Observed,
    now: &Time,
) -> Result<Option<Vec<Pod>>, Error> {
    let recreating = rollout.spec.strategy.recreate.is_some() && observed.replica_sets.len() > 1;
    if !restart_pending(rollout, now) && !recreating {
        return Ok(None);
    }
    let Some(selector) = pod_selector(rollout, observed) else { return Ok(None) };
    let selector = label_selector_string(&selector).map_err(Error::Selector)?;
    if selector.is_empty() {
        return Ok(None);
    }
    // Only pods of a ReplicaSet stepwise made carry the hash the plan keys them by.
    let selector = format!("{selector},{POD_TEMPLATE_HASH_LABEL}");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    let list = pods.list(&ListParams::default().labels(&selector)).await.during(|| "list the Rollout's pods".into())?;
    Ok(Some(list.items))
}

/// The names of the pods created before spec.restartAt, by pod template hash, the stable
/// version's first, as they carry the traffic the longest.
fn pods_created_before_restart(rollout: &Rollout, pods: &[Pod]) -> Vec<(String, Vec<String>)> {
    let Some(at) = &rollout.spec.restart_at else { return Vec::new() };
    let stable = rollout.status.as_ref().and_then(|s| s.stable_rs.clone());
    let mut by_hash: Vec<(String, Vec<String>)> = Vec::new();
    let stale = pods.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none() && p.metadata.creation_timestamp.as_ref().is_some_and(|c| c.0 < at.0)
    });
    for pod in stale {
        let Some(hash) = pod.labels().get(POD_TEMPLATE_HASH_LABEL) else { continue };
        match by_hash.iter_mut().find(|(h, _)| h == hash) {
            Some((_, names)) => names.push(pod.name_any()),
            None => by_hash.push((hash.clone(), vec![pod.name_any()])),
        }
    }
    by_hash.sort_by_key(|(h, _)| Some(h) != stable.as_ref());
    by_hash
}

/// Recreate starts the new version only once no pod of another is left. A ReplicaSet's status
/// counts terminating pods only where the cluster enables an alpha feature, and lags behind its
/// pods, so the pods themselves are counted: every pod of a version that has not finished, beyond
/// those its ReplicaSet reports, counts as still stopping.
fn count_pods_still_running(pods: &[Pod], observed: &mut Observed) {
    for rs in &mut observed.replica_sets {
        let running = pods
            .iter()
            .filter(|p| p.labels().get(POD_TEMPLATE_HASH_LABEL) == Some(&rs.hash))
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded") | Some("Failed"))
            })
            .count();
        let running = i32::try_from(running).unwrap_or(i32::MAX);
        rs.terminating = rs.terminating.max(running.saturating_sub(rs.replicas));
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`, or None when they are equal.
pub fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = merge_patch(ov, v) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Some(Value::Object(patch))
        }
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_sets_changed_fields_and_nulls_removed_ones() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let new = json!({"a": 1, "b": {"c": 5}, "e": [1, 2], "f": true});
        assert_eq!(merge_patch(&old, &new), Some(json!({"b": {"c": 5, "d": null}, "e": [1, 2], "f": true})));
        assert_eq!(merge_patch(&old, &old), None);
    }
}
