//! `lab-metrics-adapter`: the lab's custom and external metrics API server, answered from
//! Prometheus by the rules of a YAML file. See `stepwise_lab::adapter`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use stepwise_lab::adapter::{Adapter, Rules, serve, tls_config};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Serves custom.metrics.k8s.io/v1beta2 and external.metrics.k8s.io/v1beta1 over HTTPS, for the
/// API server's aggregator to proxy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on, e.g. 10.250.0.2:6443.
    #[arg(long)]
    listen: SocketAddr,
    /// PEM certificate chain served.
    #[arg(long)]
    tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long)]
    tls_key: PathBuf,
    /// The rules file: which metrics are served, and their PromQL (tests/lab/adapter-rules.yaml).
    #[arg(long)]
    rules: PathBuf,
    /// Base URL of the Prometheus server that answers the queries, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    prometheus: String,
    /// Kubeconfig of the cluster, to list pods (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stepwise_lab::init_logging();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("cannot read the rules file {}", args.rules.display()))?;
    let rules = Rules::from_yaml(&text).with_context(|| format!("in {}", args.rules.display()))?;
    info!(rules = rules.all().len(), prometheus = args.prometheus, "rules loaded");
    let tls = tls_config(&args.tls_cert, &args.tls_key)?;
    let adapter =
        Arc::new(Adapter::new(rules, &args.prometheus, stepwise_lab::kube_client(args.kubeconfig.as_deref()).await?)?);
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = serve(listener, tls, adapter) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    }
}
