//! `lab-load`: sends HTTP load to one URL and reports which versions answered and what failed,
//! second by second. See `stepwise_lab::load`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stepwise_lab::load::{LoadConfig, parse_duration, run_with_progress};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// Sends HTTP load to a URL and reports the versions that answered and the errors.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The URL to request (http only).
    #[arg(long)]
    url: String,
    /// Host header to send instead of the URL's host.
    #[arg(long)]
    host: Option<String>,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Stop after this long, e.g. 10s, 500ms, 2m (default 10s when --requests is not given).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Requests per second, paced evenly; 0 sends as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Timeout of one request, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print each second's line as it ends (on stderr with --json, so stdout stays JSON).
    #[arg(long)]
    watch: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = LoadConfig::new(args.url);
    config.host = args.host;
    config.requests = args.requests;
    config.duration = args.duration.or(if args.requests.is_none() { Some(Duration::from_secs(10)) } else { None });
    config.rate = args.rate;
    config.concurrency = args.concurrency;
    config.timeout = args.timeout;

    // Interrupting still prints what was seen so far.
    let (stop, stopped) = watch::channel(false);
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        let _ = stop.send(true);
    });

    let (progress, printer) = if args.watch {
        let (sender, mut seconds) = mpsc::unbounded_channel();
        let to_stderr = args.json;
        let printer = tokio::spawn(async move {
            while let Some(second) = seconds.recv().await {
                if to_stderr {
                    eprintln!("{second}");
                } else {
                    println!("{second}");
                }
            }
        });
        (Some(sender), Some(printer))
    } else {
        (None, None)
    };

    let report = run_with_progress(config, Some(stopped), progress).await?;
    if let Some(printer) = printer {
        printer.await.context("the live printer failed")?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.watch {
        println!("{}", report.summary());
    } else {
        println!("{report}");
    }
    Ok(())
}
