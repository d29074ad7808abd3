//! Leader election on a coordination.k8s.io Lease: several replicas, one active.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, Result as LeaseResult};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        .with_duration(15)
        .with_grace(5)
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
        tracing::warn!(lease = name, error = %e, "could not write the controller version on the Lease");
    }
}
