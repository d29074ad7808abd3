//! The traffic finalizer: a Rollout that splits traffic carries it, so that deleting the Rollout
//! mid-rollout first sends all traffic back to the stable version. Without it the routing
//! objects, which outlive the Rollout, would keep sending the canary's share to pods about to go.
//!
//! Only Rollouts with `trafficRouting` get it: the others leave nothing behind that routes. Core
//! plans adding it (`Action::AddTrafficFinalizer`), before anything routes; this module adds it,
//! and carries out what the finalizer promises when the Rollout is deleted.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use stepwise_api::Rollout;
use tracing::{info, warn};

use crate::context::Context;
use crate::error::{Error, KubeContext};
use crate::execute::{FIELD_MANAGER, publish_event};
use crate::route::set_traffic;

pub use stepwise_core::traffic::TRAFFIC_FINALIZER;

fn has_finalizer(rollout: &Rollout) -> bool {
    rollout.finalizers().iter().any(|f| f == TRAFFIC_FINALIZER)
}

/// Adds the finalizer to the Rollout, keeping those it has; returns the Rollout as written.
pub async fn add(ctx: &Context, rollout: &Rollout) -> Result<Rollout, Error> {
    let mut finalizers = rollout.finalizers().to_vec();
    finalizers.push(TRAFFIC_FINALIZER.to_string());
    patch_finalizers(ctx, rollout, finalizers).await
}

/// For a Rollout being deleted: sends all traffic to stable, removes every managed route, then
/// lets the deletion go on. A routing object a person must fix (missing, malformed) cannot be
/// restored by waiting, so the deletion goes on with a Warning saying what was left; an API
/// error is retried, as the deletion can wait for it.
pub async fn finalize(ctx: &Context, rollout: &Rollout) -> Result<(), Error> {
    if !has_finalizer(rollout) {
        return Ok(());
    }
    let name = rollout.name_any();
    if let Some(all_to_stable) = stepwise_core::traffic::all_to_stable(rollout) {
        match set_traffic(ctx, rollout, &all_to_stable).await {
            Ok(()) => {
                info!(rollout = %name, "all traffic back to stable before deletion");
                let message = "All traffic sent back to the stable version before deletion";
                publish_event(ctx, rollout, EventType::Normal, "TrafficRestored", message).await;
            }
            Err(e) if e.needs_a_person() && !matches!(e, Error::Kube { .. }) => {
                warn!(rollout = %name, error = %e, "could not restore traffic before deletion");
                let message = format!("Deleted without restoring traffic to stable: {e}");
                publish_event(ctx, rollout, EventType::Warning, "TrafficNotRestored", &message).await;
            }
            Err(e) => return Err(e),
        }
    }
    let rest = rollout.finalizers().iter().filter(|f| *f != TRAFFIC_FINALIZER).cloned().collect();
    patch_finalizers(ctx, rollout, rest).await.map(drop)
}

/// Writes the finalizer list as the Rollout was read plus or minus ours. The patch carries the
/// resourceVersion read, so a finalizer another controller added meanwhile is never dropped: the
/// patch is refused with a Conflict and the next reconcile reads again.
async fn patch_finalizers(ctx: &Context, rollout: &Rollout, finalizers: Vec<String>) -> Result<Rollout, Error> {
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rollout.resource_version()}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(&rollout.name_any(), &params, &Patch::Merge(patch))
        .await
        .during(|| format!("set the finalizers of Rollout {}", rollout.name_any()))
}
