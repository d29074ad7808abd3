//! `fault-proxy`: the chaos suite's fault-injecting proxy on its own, for trying a controller
//! against a throttled, failing or partitioned API server by hand. It writes a kubeconfig that
//! points at itself, prints its counters every few seconds, and runs until Ctrl-C.
//!
//! The proxy speaks plain HTTP and passes the client's credentials through. kube-rs clients (the
//! controller) send their bearer token to an `http://` server; kubectl does not (client-go keeps
//! it for TLS), so kubectl through the proxy is answered 403.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stepwise_chaos::proxy::{FaultPlan, FaultProxy, Partition, Upstream};

/// A proxy between a Kubernetes client and the API server of a kubeconfig that injects faults.
#[derive(Parser, Debug)]
struct Args {
    /// The kubeconfig of the real API server (its current context).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where to write the kubeconfig that points at the proxy.
    #[arg(long, default_value = "target/chaos/fault-proxy.kubeconfig")]
    out: PathBuf,
    /// Share of requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0)]
    throttle: f64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    server_error: f64,
    /// Share of writes answered 409 Conflict.
    #[arg(long, default_value_t = 0.0)]
    conflict: f64,
    /// Share of requests delayed by --delay-ms.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// The delay of a slow request, as MIN-MAX milliseconds.
    #[arg(long, default_value = "200-2000", value_parser = range)]
    delay_ms: (Duration, Duration),
    /// Cut every watch after MIN-MAX milliseconds.
    #[arg(long, value_parser = range)]
    cut_watches_ms: Option<(Duration, Duration)>,
    /// Answer watches from resourceVersions below this one with 410 Expired.
    #[arg(long)]
    expire_older_than: Option<u64>,
    /// Partition at once: hang or refuse.
    #[arg(long)]
    partition: Option<String>,
    /// Seed of the random draws (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

fn range(text: &str) -> Result<(Duration, Duration), String> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let ms = |s: &str| s.trim().parse::<u64>().map(Duration::from_millis).map_err(|e| format!("{s}: {e}"));
    Ok((ms(low)?, ms(high)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let partition = match args.partition.as_deref() {
        None => None,
        Some("hang") => Some(Partition::Hang),
        Some("refuse") => Some(Partition::Refuse),
        Some(other) => anyhow::bail!("--partition: hang or refuse, not {other}"),
    };
    let upstream = Upstream::from_kubeconfig(&args.kubeconfig).await?;
    let proxy = match args.seed {
        Some(seed) => FaultProxy::start_seeded(upstream, seed).await?,
        None => FaultProxy::start(upstream).await?,
    };
    proxy.write_kubeconfig(&args.kubeconfig, &args.out)?;
    proxy.set_plan(FaultPlan {
        throttle: args.throttle,
        server_error: args.server_error,
        conflict: args.conflict,
        slow: args.slow,
        delay: args.delay_ms,
        cut_watches: args.cut_watches_ms,
        expire_older_than: args.expire_older_than,
        partition,
    });
    println!("fault proxy on {}; kubeconfig: {}", proxy.url(), args.out.display());
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => println!("{}", proxy.stats()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("{}", proxy.stats());
    Ok(())
}
