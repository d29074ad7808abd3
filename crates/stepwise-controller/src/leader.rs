//! Leader election on a coordination.k8s.io Lease: several replicas, one active.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, Result as LeaseResult};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a Lease stays ours after a renewal: a standby takes it over once that has passed.
pub const DURATION: Duration = Duration::from_secs(15);
/// How long before the Lease would expire the leader renews it: 5 s after each renewal, so that
/// a renewal slowed by a busy API server still has 8 s to land before [`MARGIN`] runs out.
pub const GRACE: Duration = Duration::from_secs(10);
/// How long before a standby may take the Lease over the leader gives up: room for the skew
/// between the two clocks and for the process to end. Less than [`GRACE`], so that a renewal
/// that lands on time is seen before it.
pub const MARGIN: Duration = Duration::from_secs(2);
/// How often the leader reads its Lease back.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Waits until this instance holds the Lease. The receiver reports later losses; dropping it
/// releases the Lease.
pub async fn acquire(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> LeaseResult<(watch::Receiver<bool>, JoinHandle<LeaseResult<kube_lease_manager::LeaseManager>>)> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(DURATION.as_secs())
        .with_grace(GRACE.as_secs())
        .build()
        .await?;
    let (mut rx, handle) = manager.watch().await;
    while !*rx.borrow_and_update() {
        tracing::info!(lease = name, identity, "waiting to become the leader");
        if rx.changed().await.is_err() {
            break;
        }
    }
    tracing::info!(lease = name, identity, "became the leader");
    Ok((rx, handle))
}

/// Annotation on the leader's Lease: the version of the controller that holds it, which
/// `kubectl stepwise version` shows.
pub const VERSION_ANNOTATION: &str = "stepwise.dev/controller-version";

/// Tells on the Lease which version leads. Best effort: a leader that cannot write it still leads.
pub async fn announce_version(client: Client, namespace: &str, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {VERSION_ANNOTATION: env!("CARGO_PKG_VERSION")}}});
    if let Err(e) = leases.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        tracing::warn!(lease = %name, error = %e, "could not write the controller version on the Lease");
    }
}

/// Resolves once this instance, leading, can no longer be sure that it still does: the Lease
/// names another holder (or none), or the last renewal it could read back on the Lease is older
/// than [`DURATION`] less [`MARGIN`]. The lease manager alone learns neither while the API server
/// is unreachable: its renewal hangs, or fails and is retried, and all the while it still reports
/// the lease held, long after a standby may have taken it over.
pub fn until_unsure(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> impl Future<Output = String> + Send + 'static {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let (name, identity) = (name.to_string(), identity.to_string());
    // Just acquired: the renewal that acquired it was written a moment ago, on this clock.
    let mut valid_until = SystemTime::now() + DURATION - MARGIN;
    async move {
        loop {
            let left = match valid_until.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => left,
                _ => return format!("no renewal of the lease could be read back for {:?}", DURATION - MARGIN),
            };
            // The read must not outlive the deadline: under a partition it hangs.
            if let Ok(read) = tokio::time::timeout(left.min(CHECK_EVERY), leases.get_opt(&name)).await {
                match read.map(|lease| lease.and_then(|l| l.spec)) {
                    Ok(Some(spec)) if spec.holder_identity.as_deref() == Some(identity.as_str()) => {
                        // Its renewTime is this process's clock when it renewed, before the write:
                        // a standby counts the duration from there too.
                        if let Some(renewed) = spec.renew_time {
                            valid_until = SystemTime::from(renewed.0) + DURATION - MARGIN;
                        }
                    }
                    Ok(Some(spec)) => {
                        return format!("the lease is held by {}", spec.holder_identity.as_deref().unwrap_or("nobody"));
                    }
                    Ok(None) => return "the lease is gone".into(),
                    // Unreachable or refused: the deadline decides.
                    Err(e) => tracing::warn!(lease = %name, error = %e, "could not read the lease back"),
                }
            }
            let left = valid_until.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left.min(CHECK_EVERY)).await;
        }
    }
}
