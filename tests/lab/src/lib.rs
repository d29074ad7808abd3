//! The lab: the local control plane inside a network namespace that has only its loopback
//! interface, where pod and Service addresses are local. This crate holds the programs that give
//! that cluster a data path (pod responders, a load generator, a metrics adapter) and, in
//! `tests/`, the tests that send real traffic through it. See tests/lab/README.md.

pub mod adapter;
pub mod load;
pub mod responder;

use std::path::Path;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client from `kubeconfig`, or else from `$KUBECONFIG` or `~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await.context("no kubeconfig: set KUBECONFIG or pass --kubeconfig")?,
    };
    Client::try_from(config).context("cannot build a client from the kubeconfig")
}

/// Logs to stderr at the level `RUST_LOG` sets (info by default): the lab's programs all log so.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}
