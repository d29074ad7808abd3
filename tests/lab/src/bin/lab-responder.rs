//! `lab-responder`: serves HTTP on the address of every running pod of the lab cluster, so that
//! Services, routers and Prometheus have something real to talk to. See `stepwise_lab::responder`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use stepwise_lab::responder::{Responder, ResponderConfig, serve_status, watch};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Serves HTTP for the pods of the lab cluster on their pod IPs.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kubeconfig of the cluster (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve only the pods of this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Port of pods that declare no TCP container port.
    #[arg(long, default_value_t = 8080)]
    default_port: u16,
    /// Address of the status server (GET /pods, GET /healthz), e.g. 127.0.0.1:9900.
    #[arg(long)]
    status_address: Option<SocketAddr>,
    /// Seconds a removed pod keeps serving before it stops accepting connections.
    #[arg(long, default_value_t = 3.0)]
    drain_seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stepwise_lab::init_logging();
    let args = Args::parse();
    // kube's TLS takes the process-wide rustls provider, which is ambiguous when several are built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let drain = Duration::try_from_secs_f64(args.drain_seconds).context("--drain-seconds must be 0 or more")?;

    let client = stepwise_lab::kube_client(args.kubeconfig.as_deref()).await?;
    let api: Api<Pod> = match &args.namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    let responder = Responder::new(ResponderConfig { default_port: args.default_port, drain });

    let status = match args.status_address {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot bind the status address {address}"))?;
            info!(%address, "status server listening");
            Some(tokio::spawn(serve_status(listener, responder.clone())))
        }
        None => None,
    };

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        () = watch(api, &responder) => anyhow::bail!("the pod watch ended"),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!("stopping: draining every pod");
    responder.shutdown().await;
    if let Some(status) = status {
        status.abort();
    }
    Ok(())
}
