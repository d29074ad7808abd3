//! The controller's command line: its flags, and the process around the reconcile loops (logs and
//! traces, the metrics server, leader election, shutdown). The `stepwise-controller` binary is
//! [`main`] with the built-in routers; a controller binary of another crate is [`main`] with
//! routers of its own registered (docs/extending.md).
//!
//! It is a binary's code, kept in the library so that other binaries can be this one: its errors
//! are `anyhow`'s, for the person who started it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;
use crate::run::{Settings, run};
use crate::shard::Shard;
use crate::telemetry::{self, Exporter};
use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use stepwise_traffic::Routers;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The stepwise Rollout controller.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Kubeconfig to use; in a pod, the service account is used when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "STEPWISE_NAMESPACE")]
    namespace: Option<String>,
    /// API writes per second.
    #[arg(long, env = "STEPWISE_QPS", default_value_t = 50.0)]
    qps: f64,
    /// API writes in a burst.
    #[arg(long, env = "STEPWISE_BURST", default_value_t = 100)]
    burst: u32,
    /// Rollouts reconciled at once.
    #[arg(long, env = "STEPWISE_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "STEPWISE_METRICS_ADDR", default_value = "127.0.0.1:8090")]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so that several replicas can run with one active.
    #[arg(long, env = "STEPWISE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease (default: stepwise-controller, or stepwise-controller-<shard> with
    /// --shard).
    #[arg(long = "lease-name", env = "STEPWISE_LEASE_NAME")]
    lease_name_flag: Option<String>,
    /// The Lease this instance elects its leader on: `--lease-name`, or the shard's own.
    #[arg(skip)]
    lease_name: String,
    /// Act only on the Rollouts (and standalone AnalysisRuns) labelled stepwise.dev/shard=<SHARD>,
    /// with a Lease of this shard's own. Without it, on those with no stepwise.dev/shard label.
    #[arg(long, env = "STEPWISE_SHARD")]
    shard: Option<String>,
    /// Namespace of the Lease.
    #[arg(long, env = "STEPWISE_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// The ConfigMap of the notifications' triggers, templates and services, in the Lease's
    /// namespace (docs/notifications.md).
    #[arg(long, env = "STEPWISE_NOTIFICATIONS_CONFIGMAP", default_value = "stepwise-notification-configmap")]
    notifications_configmap: String,
    /// The Secret whose keys the notifications' configuration names as `$key`, in the Lease's
    /// namespace.
    #[arg(long, env = "STEPWISE_NOTIFICATIONS_SECRET", default_value = "stepwise-notification-secret")]
    notifications_secret: String,
    /// Let the teams of each namespace configure their own notification services, in a ConfigMap
    /// and a Secret of the same names in their namespace (with the controller's triggers and
    /// templates unless theirs replace them).
    #[arg(long, env = "STEPWISE_SELF_SERVICE_NOTIFICATIONS")]
    self_service_notifications: bool,
    /// Identity of this instance (default: host name and process id).
    #[arg(long, env = "STEPWISE_IDENTITY")]
    identity: Option<String>,
    /// The Prometheus server of analysis metrics that name no address.
    #[arg(long, env = "STEPWISE_PROMETHEUS_ADDRESS")]
    prometheus_address: Option<String>,
    /// A metric plugin, as NAME=PATH: metrics naming NAME under provider.plugin are measured by
    /// the executable at PATH (docs/plugins.md). Repeat for several.
    #[arg(long = "metric-plugin", env = "STEPWISE_METRIC_PLUGINS", value_delimiter = ',')]
    metric_plugins: Vec<String>,
    /// A traffic router plugin, as NAME=URL: Rollouts naming NAME under
    /// trafficRouting.plugins are routed by the plugin serving stepwise.dev/plugins/v1 over HTTP
    /// at URL (a sidecar on 127.0.0.1, or a cluster Service; docs/plugins.md). Repeat for
    /// several.
    #[arg(long = "router-plugin", env = "STEPWISE_ROUTER_PLUGINS", value_delimiter = ',')]
    router_plugins: Vec<String>,
    /// How long a call to a router plugin may take (e.g. 10s, 500ms), answer included.
    #[arg(long, env = "STEPWISE_ROUTER_PLUGIN_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    router_plugin_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, env = "STEPWISE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    stepwise_api::duration::parse_go_duration(text).map_err(|e| e.to_string())
}

async fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    config.read_timeout = Some(std::time::Duration::from_secs(330));
    Ok(config)
}

/// A client that counts every error answer of the API server by kind, retries included: the
/// retry layer (kube's own, which honours Retry-After) goes outside the counting, so throttling
/// that its retries absorb still shows in `stepwise_api_errors`.
fn counted_client(mut config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    config.default_retry = false;
    let count = tower::util::MapResponseLayer::new(move |response: http::Response<_>| {
        metrics.api_answer(response.status().as_u16());
        response
    });
    // Retrying needs a service it can clone; the buffer makes one.
    let buffer = tower::buffer::BufferLayer::new(1024);
    let retry = tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry());
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&count).with_layer(&buffer).with_layer(&retry).build())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

/// Logs in the chosen format, filtered by RUST_LOG, and exports spans when the OTEL_* variables
/// name an OTLP endpoint (docs/install.md, "Traces"); returns the exporter to flush at the end.
fn init_telemetry(format: LogFormat) -> anyhow::Result<Option<Exporter>> {
    // Built before logging starts: a malformed endpoint is a mistake to fix, not to run with.
    let exporter = Exporter::from_env().context("OpenTelemetry export (the OTEL_* variables)")?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(logs).with(exporter.as_ref().map(Exporter::layer)).init();
    if exporter.is_some() {
        tracing::info!(protocol = telemetry::PROTOCOL, "exporting the spans of reconciles over OTLP");
        if let Some(asked) = telemetry::unsupported_protocol(|name| std::env::var(name).ok()) {
            tracing::warn!(asked, used = telemetry::PROTOCOL, "OTLP protocol not supported; using the supported one");
        }
    }
    Ok(exporter)
}

/// Sends the spans not yet exported, if spans are exported.
async fn flush(exporter: Option<Exporter>) {
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
}

/// Runs the controller with `routers` (the built-in ones, and any a controller binary of another
/// crate registers), as the `stepwise-controller` binary does: reads its flags, serves metrics,
/// elects a leader and reconciles until SIGTERM, then exits the process.
pub fn main(routers: Routers) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run_until_stopped(routers))
}

async fn run_until_stopped(mut routers: Routers) -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let heap_profile = dhat::Profiler::new_heap();
    let mut args = Args::parse();
    let exporter = init_telemetry(args.log_format)?;
    // Before anything connects: a malformed flag is a mistake to fix, not to run with.
    let router_plugins = crate::router_plugin::RouterPlugins::new(&args.router_plugins, args.router_plugin_timeout)
        .map_err(anyhow::Error::msg)?;
    for name in router_plugins.names() {
        tracing::info!(plugin = %name, "router plugin registered");
    }
    routers.register_out_of_process(router_plugins.names())?;
    let shard = Shard::new(args.shard.as_deref()).map_err(anyhow::Error::msg)?;
    args.lease_name = shard.lease_name(args.lease_name_flag.as_deref());
    tracing::info!(selector = %shard.selector(), lease = %args.lease_name, "acting on the Rollouts of this shard");
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "stepwise".into());
        format!("{host}-{}", std::process::id())
    });
    let config = config(&args).await?;
    let kubernetes_metrics = stepwise_metrics::kubernetes::KubernetesProvider::from_config(config.clone())?;
    let metrics = Arc::new(Metrics::default());
    let client = counted_client(config, metrics.clone())?;
    let ready = Arc::new(AtomicBool::new(false));
    let http = tokio::spawn(crate::http::serve(args.metrics_addr, metrics.clone(), ready.clone()));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
    });
    let wait_shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
    };

    let mut lease = None;
    if args.leader_elect {
        // A standby is ready: ready to take over. Were it not, a rolling update of the
        // Deployment would wait for ever on a new pod that cannot lead while the old one does.
        ready.store(true, Ordering::Relaxed);
        let acquire = crate::leader::acquire(client.clone(), &args.lease_namespace, &args.lease_name, &identity);
        tokio::select! {
            got = acquire => lease = Some(got.context("leader election")?),
            _ = wait_shutdown(shutdown_rx.clone()) => {
                http.abort();
                flush(exporter).await;
                return Ok(());
            }
        }
        // Leading: not ready again until the caches are synced (told before the leader metric,
        // so that whoever sees both sees a leader whose readiness means its caches).
        ready.store(false, Ordering::Relaxed);
        metrics.set_leader(true);
    }
    // Losing the lease, or no longer being sure of it, ends the process at once: a supervisor
    // restarts it as a standby. At once, not after the in-flight reconciles: a standby may lead
    // already, and a write still held in a cut-off network must die with its connection rather
    // than land after the new leader's. Spawned: watched from the moment it leads, caches synced
    // or not.
    let lost = tokio::spawn({
        let lease_rx = lease.as_ref().map(|(rx, _)| rx.clone());
        let unsure = crate::leader::until_unsure(client.clone(), &args.lease_namespace, &args.lease_name, &identity);
        async move {
            match lease_rx {
                Some(mut rx) => {
                    let reason = tokio::select! {
                        _ = async {
                            while *rx.borrow_and_update() {
                                if rx.changed().await.is_err() {
                                    break;
                                }
                            }
                        } => "the lease manager reports it lost".to_string(),
                        reason = unsure => reason,
                    };
                    tracing::error!(reason, "lost the leader lease; exiting");
                    std::process::exit(1);
                }
                None => std::future::pending::<()>().await,
            }
        }
    });
    // After the watch on the lease begins: this write too could be held by a cut-off network.
    if lease.is_some() {
        crate::leader::announce_version(client.clone(), &args.lease_namespace, &args.lease_name).await;
    }
    let stop = wait_shutdown(shutdown_rx.clone());
    let settings = Settings {
        namespace: args.namespace.clone(),
        qps: args.qps,
        burst: args.burst,
        concurrency: args.concurrency,
        identity,
        prometheus_address: args.prometheus_address.clone(),
        metric_plugins: args
            .metric_plugins
            .iter()
            .map(|flag| stepwise_metrics::plugin::PluginProvider::parse_flag(flag))
            .collect::<Result<_, _>>()?,
        kubernetes_metrics,
        routers: std::sync::Arc::new(routers),
        router_plugins: std::sync::Arc::new(router_plugins),
        shard,
        home_namespace: args.lease_namespace.clone(),
        notifications: crate::notify::NotifierSettings {
            namespace: args.lease_namespace.clone(),
            config_map: args.notifications_configmap.clone(),
            secret: args.notifications_secret.clone(),
            self_service: args.self_service_notifications,
        },
    };
    // In-flight reconciles get a grace period after SIGTERM; then the process ends regardless.
    let grace = {
        let rx = shutdown_rx.clone();
        async move {
            wait_shutdown(rx).await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    };
    tokio::select! {
        result = run(client, settings, metrics.clone(), ready, stop) => result?,
        _ = grace => tracing::warn!("reconciles did not finish within 10s of the shutdown signal"),
    }
    if let Some((rx, handle)) = lease {
        // Its receiver too must go for the release, and its end must not be told as a loss.
        lost.abort();
        drop(rx);
        // Dropping the receiver makes the lease manager release the Lease, so a standby takes
        // over at once instead of after the lease duration.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), handle).await;
    }
    http.abort();
    flush(exporter).await;
    tracing::info!("stopped");
    // Watch tasks still hold the runtime; nothing is left to finish, so leave now.
    #[cfg(feature = "dhat-heap")]
    drop(heap_profile);
    std::process::exit(0)
}
