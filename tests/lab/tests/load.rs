//! The load generator against tiny in-process HTTP servers on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use stepwise_lab::load::{ErrorKind, LoadConfig, run, run_with_progress};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Serves HTTP on a fresh loopback port, answering request number n (from 0) with `respond(n)`
/// after `delay`.
async fn serve(respond: fn(u64) -> Response<Full<Bytes>>, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = Arc::clone(&counter);
            let service = service_fn(move |_request| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(respond(n))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    address
}

/// Three of four answers are v1, named by header; the fourth is v2, named only in the body.
fn three_to_one(n: u64) -> Response<Full<Bytes>> {
    if n % 4 == 3 {
        Response::new(Full::new(Bytes::from_static(br#"{"version":"v2"}"#)))
    } else {
        Response::builder().header("x-version", "v1").body(Full::new(Bytes::from_static(b"{}"))).unwrap()
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("x-version", "v1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn ok(_: u64) -> Response<Full<Bytes>> {
    status(200)
}

fn config(address: SocketAddr) -> LoadConfig {
    LoadConfig::new(format!("http://{address}/"))
}

#[tokio::test]
async fn two_thousand_requests_are_counted_and_shared_by_the_version_that_answered() {
    let address = serve(three_to_one, Duration::ZERO).await;
    let started = Instant::now();
    let report = run(LoadConfig { requests: Some(2_000), ..config(address) }, None).await.unwrap();

    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!((report.total(), report.succeeded, report.failed()), (2_000, 2_000, 0));
    assert_eq!((report.versions["v1"], report.versions["v2"]), (1_500, 500));
    assert_eq!((report.share("v1"), report.share("v2")), (0.75, 0.25));
    assert_eq!(report.codes[&200], 2_000);
    assert_eq!(report.seconds.iter().map(|s| s.requests).sum::<u64>(), 2_000);
}

#[tokio::test]
async fn server_errors_count_as_http_5xx_and_client_errors_as_http_4xx() {
    let address = serve(|n| status(if n % 2 == 0 { 500 } else { 404 }), Duration::ZERO).await;
    let report = run(LoadConfig { requests: Some(100), concurrency: 1, ..config(address) }, None).await.unwrap();

    assert_eq!((report.total(), report.succeeded, report.failed()), (100, 0, 100));
    assert_eq!((report.errors_of(ErrorKind::Http5xx), report.errors_of(ErrorKind::Http4xx)), (50, 50));
    assert_eq!(report.failed_versions["v1"], 100);
    assert_eq!(report.share("v1"), 0.0, "failed answers take no share");
}

#[tokio::test]
async fn a_closed_port_counts_as_connect_errors() {
    let address = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let report = run(LoadConfig { requests: Some(20), ..config(address) }, None).await.unwrap();

    assert_eq!((report.total(), report.errors_of(ErrorKind::Connect)), (20, 20));
}

#[tokio::test]
async fn a_connection_closed_before_any_response_counts_as_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        }
    });
    let report = run(LoadConfig { requests: Some(20), ..config(address) }, None).await.unwrap();

    assert_eq!((report.total(), report.errors_of(ErrorKind::Connect)), (20, 20), "{report:?}");
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_counts_as_timeouts() {
    let address = serve(ok, Duration::from_secs(2)).await;
    let started = Instant::now();
    let report = run(
        LoadConfig { requests: Some(4), concurrency: 4, timeout: Duration::from_millis(100), ..config(address) },
        None,
    )
    .await
    .unwrap();

    assert_eq!((report.total(), report.errors_of(ErrorKind::Timeout)), (4, 4));
    assert!(started.elapsed() < Duration::from_millis(1_500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_request_bound_stops_the_run_after_exactly_that_many_requests() {
    let address = serve(ok, Duration::ZERO).await;
    let report = run(LoadConfig { requests: Some(137), concurrency: 8, ..config(address) }, None).await.unwrap();

    assert_eq!(report.total(), 137);
    assert_eq!(report.versions["v1"], 137);
}

#[tokio::test]
async fn the_time_bound_stops_a_paced_run_on_time() {
    let address = serve(ok, Duration::ZERO).await;
    let started = Instant::now();
    let report = run(LoadConfig { duration: Some(Duration::from_millis(500)), rate: 100.0, ..config(address) }, None)
        .await
        .unwrap();

    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1_200), "took {elapsed:?}");
    assert!((45..=51).contains(&report.total()), "{} requests at 100/s in 0.5 s", report.total());
    assert_eq!(report.seconds.len(), 1);
}

#[tokio::test]
async fn a_rate_spreads_requests_evenly_over_time() {
    let address = serve(ok, Duration::ZERO).await;
    let started = Instant::now();
    let report = run(LoadConfig { requests: Some(10), rate: 20.0, ..config(address) }, None).await.unwrap();

    assert_eq!(report.total(), 10);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "the tenth request is due at 0.45 s, done at {elapsed:?}");
}

#[tokio::test]
async fn turning_stop_true_ends_an_unbounded_run() {
    let address = serve(ok, Duration::ZERO).await;
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let load = tokio::spawn(run(LoadConfig { rate: 200.0, ..config(address) }, Some(stopped)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let report = load.await.unwrap().unwrap();

    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(report.total() > 0);
}

#[tokio::test]
async fn each_second_is_reported_as_soon_as_it_is_over() {
    let address = serve(ok, Duration::ZERO).await;
    let (progress, mut seconds) = mpsc::unbounded_channel();
    let started = Instant::now();
    let load = tokio::spawn(run_with_progress(
        LoadConfig { duration: Some(Duration::from_millis(1_500)), rate: 40.0, ..config(address) },
        None,
        Some(progress),
    ));

    let first = seconds.recv().await.unwrap();
    assert!(!load.is_finished(), "the first second is reported while the load still runs");
    assert!(started.elapsed() >= Duration::from_secs(1), "reported at {:?}, before it was over", started.elapsed());
    assert_eq!(first.second, 0);
    assert!((30..=41).contains(&first.requests), "{} requests in the first second at 40/s", first.requests);
    let report = load.await.unwrap().unwrap();
    let rest: Vec<_> = std::iter::from_fn(|| seconds.try_recv().ok()).collect();

    assert_eq!(report.seconds.len(), 2, "one full second and a half one");
    assert_eq!([vec![first], rest].concat(), report.seconds);
}
