//! Leader election on a coordination.k8s.io Lease: several replicas, one active.

use kube::Client;
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
