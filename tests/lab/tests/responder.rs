//! The pod responder serving fake pods on 127.0.0.x addresses, driven by pod lists without a
//! cluster. Each test uses its own addresses, so tests can run at once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use stepwise_lab::responder::{Responder, ResponderConfig, ServeState, ServedPod, serve_status};
use tokio::net::{TcpListener, TcpStream};

/// A running pod named `name` at `ip`, with image `app:v1` and the given environment.
fn pod(name: &str, ip: &str, env: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.local:5000/shop/app:v1".into()),
                env: Some(
                    env.iter()
                        .map(|(name, value)| EnvVar {
                            name: (*name).into(),
                            value: Some((*value).into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus { phase: Some("Running".into()), pod_ip: Some(ip.into()), ..Default::default() }),
    }
}

/// A port free on loopback now, to serve pods on; pods get it on their own 127.0.0.x addresses.
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

fn responder(port: u16, drain: Duration) -> Responder {
    Responder::new(ResponderConfig { default_port: port, drain })
}

fn address(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Waits until `address` is served by `pod` in `state`.
async fn wait_for(responder: &Responder, address: SocketAddr, pod: &str, state: ServeState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !responder.served().iter().any(|s| s.address == address && s.pod == pod && s.state == state) {
        assert!(Instant::now() < deadline, "{pod} not {state:?} at {address}: {:?}", responder.served());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until nothing is served at `address` any more.
async fn wait_freed(responder: &Responder, address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while responder.served().iter().any(|s| s.address == address) {
        assert!(Instant::now() < deadline, "{address} still served: {:?}", responder.served());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn get(client: &Client<HttpConnector, Empty<Bytes>>, address: SocketAddr, path: &str) -> Answer {
    let uri = format!("http://{address}{path}");
    let response = client.request(Request::get(uri).body(Empty::new()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body }
}

/// A GET on a connection of its own, so that it shows whether the server still accepts.
async fn get_on_new_connection(address: SocketAddr, path: &str) -> std::io::Result<Answer> {
    let stream = TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = Request::get(path).header("host", address.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.map_err(std::io::Error::other)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
    Ok(Answer { status, headers, body })
}

async fn refuses_connections(address: SocketAddr) -> bool {
    matches!(TcpStream::connect(address).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// The value of the sample whose line starts with `series` (name and labels as exposed).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn each_served_pod_answers_every_path_with_its_version_name_and_namespace() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let pods = [pod("app-v1", "127.0.0.2", &[]), pod("app-v2", "127.0.0.3", &[("VERSION", "v2")])];
    responder.apply(&pods);
    let (first, second) = (address("127.0.0.2", port), address("127.0.0.3", port));
    wait_for(&responder, first, "app-v1", ServeState::Serving).await;
    wait_for(&responder, second, "app-v2", ServeState::Serving).await;

    let client = client();
    for (address, pod, version) in [(first, "app-v1", "v1"), (second, "app-v2", "v2")] {
        for path in ["/", "/api/cart?id=3", "/healthz"] {
            let answer = get(&client, address, path).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.headers["x-version"], version);
            assert_eq!(answer.json(), serde_json::json!({"version": version, "pod": pod, "namespace": "shop"}));
        }
    }
    assert_eq!(
        responder.served(),
        [
            ServedPod {
                namespace: "shop".into(),
                pod: "app-v1".into(),
                address: first,
                version: "v1".into(),
                state: ServeState::Serving,
                labels: Default::default(),
            },
            ServedPod {
                namespace: "shop".into(),
                pod: "app-v2".into(),
                address: second,
                version: "v2".into(),
                state: ServeState::Serving,
                labels: Default::default(),
            },
        ]
    );

    responder.shutdown().await;
    assert!(responder.served().is_empty());
    assert!(refuses_connections(first).await && refuses_connections(second).await);
}

#[tokio::test]
async fn an_error_rate_fails_that_fraction_of_requests_and_metrics_count_every_answer() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let served = address("127.0.0.4", port);
    responder.apply(&[pod("flaky", "127.0.0.4", &[("ERROR_RATE", "0.3")])]);
    wait_for(&responder, served, "flaky", ServeState::Serving).await;

    let client = client();
    let answers: Vec<Answer> =
        futures::stream::iter(0..5_000).map(|_| get(&client, served, "/")).buffer_unordered(16).collect().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::INTERNAL_SERVER_ERROR).collect();
    let succeeded = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    assert_eq!(failed.len() + succeeded, 5_000);
    let fraction = failed.len() as f64 / 5_000.0;
    assert!((0.28..=0.32).contains(&fraction), "failed fraction {fraction}");
    assert_eq!(failed[0].headers["x-version"], "v1");
    assert_eq!(
        failed[0].json(),
        serde_json::json!({"version": "v1", "pod": "flaky", "namespace": "shop", "error": true})
    );

    let metrics = get(&client, served, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert_eq!(sample(&text, r#"lab_http_requests_total{code="200",version="v1"}"#), succeeded as f64);
    assert_eq!(sample(&text, r#"lab_http_requests_total{code="500",version="v1"}"#), failed.len() as f64);
    assert_eq!(sample(&text, r#"lab_http_request_duration_seconds_count{version="v1"}"#), 5_000.0);
    assert_eq!(
        sample(&text, r#"lab_http_request_duration_seconds_bucket{le="5.0",version="v1"}"#),
        5_000.0,
        "every answer was faster than 5 s"
    );
    assert!(!text.contains("namespace=") && !text.contains("pod="), "Prometheus adds pod labels itself");

    responder.shutdown().await;
}

#[tokio::test]
async fn a_pod_with_latency_answers_no_sooner_than_its_latency_but_metrics_at_once() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let served = address("127.0.0.5", port);
    responder.apply(&[pod("slow", "127.0.0.5", &[("LATENCY_MS", "300")])]);
    wait_for(&responder, served, "slow", ServeState::Serving).await;

    let client = client();
    let started = Instant::now();
    let answer = get(&client, served, "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());

    let started = Instant::now();
    let metrics = get(&client, served, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300), "metrics took {:?}", started.elapsed());
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert_eq!(sample(&text, r#"lab_http_request_duration_seconds_bucket{le="0.25",version="v1"}"#), 0.0);
    assert_eq!(sample(&text, r#"lab_http_request_duration_seconds_count{version="v1"}"#), 1.0);

    responder.shutdown().await;
}

#[tokio::test]
async fn a_removed_pod_keeps_answering_during_the_drain_and_then_refuses_connections() {
    let port = free_port().await;
    let drain = Duration::from_millis(600);
    let responder = responder(port, drain);
    let served = address("127.0.0.6", port);
    responder.apply(&[pod("leaving", "127.0.0.6", &[])]);
    wait_for(&responder, served, "leaving", ServeState::Serving).await;

    let removed = Instant::now();
    responder.apply(&[]);
    wait_for(&responder, served, "leaving", ServeState::Draining).await;
    while removed.elapsed() < drain - Duration::from_millis(200) {
        let answer = get_on_new_connection(served, "/").await.expect("still accepting during the drain");
        assert_eq!(answer.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = removed + Duration::from_secs(5);
    while !refuses_connections(served).await {
        assert!(Instant::now() < deadline, "still accepting connections after the drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(removed.elapsed() >= drain, "refused after {:?}, before the drain ended", removed.elapsed());
    wait_freed(&responder, served).await;
}

#[tokio::test]
async fn a_deleted_pod_finishes_in_flight_requests_before_its_address_is_freed() {
    let port = free_port().await;
    let responder = responder(port, Duration::from_millis(100));
    let served = address("127.0.0.7", port);
    let mut slow = pod("slow", "127.0.0.7", &[("LATENCY_MS", "500")]);
    responder.apply([&slow]);
    wait_for(&responder, served, "slow", ServeState::Serving).await;

    let in_flight = tokio::spawn(get_on_new_connection(served, "/"));
    // Gives the request time to reach the server before the pod is deleted.
    tokio::time::sleep(Duration::from_millis(50)).await;
    slow.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    responder.apply([&slow]);

    let deadline = Instant::now() + Duration::from_secs(5);
    while !refuses_connections(served).await {
        assert!(Instant::now() < deadline, "still accepting connections after the drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!in_flight.is_finished(), "the slow request should still be in flight when accepting stops");
    assert!(responder.served().iter().any(|s| s.address == served), "the address is held until the request ends");

    let answer = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["pod"], "slow");
    wait_freed(&responder, served).await;
}

#[tokio::test]
async fn a_new_pod_on_a_draining_address_is_served_once_the_old_pod_has_stopped() {
    let port = free_port().await;
    let drain = Duration::from_millis(400);
    let responder = responder(port, drain);
    let served = address("127.0.0.8", port);
    responder.apply(&[pod("old", "127.0.0.8", &[])]);
    wait_for(&responder, served, "old", ServeState::Serving).await;

    let replaced = Instant::now();
    responder.apply(&[pod("new", "127.0.0.8", &[("VERSION", "v2")])]);
    let answer = get_on_new_connection(served, "/").await.unwrap();
    assert_eq!(answer.json()["pod"], "old", "the old pod keeps the address while it drains");

    wait_for(&responder, served, "new", ServeState::Serving).await;
    assert!(replaced.elapsed() >= drain);
    let answer = get_on_new_connection(served, "/").await.unwrap();
    assert_eq!((answer.headers["x-version"].to_str().unwrap(), &answer.json()["pod"]), ("v2", &"new".into()));

    responder.shutdown().await;
}

#[tokio::test]
async fn a_pod_whose_ip_changes_moves_to_its_new_address() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let (before, after) = (address("127.0.0.9", port), address("127.0.0.10", port));
    responder.apply(&[pod("moving", "127.0.0.9", &[])]);
    wait_for(&responder, before, "moving", ServeState::Serving).await;

    responder.apply(&[pod("moving", "127.0.0.10", &[])]);
    wait_for(&responder, after, "moving", ServeState::Serving).await;
    wait_freed(&responder, before).await;
    assert!(refuses_connections(before).await);
    assert_eq!(get_on_new_connection(after, "/").await.unwrap().status, StatusCode::OK);

    responder.shutdown().await;
}

#[tokio::test]
async fn applying_the_same_pods_again_keeps_their_servers_and_counts() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let served = address("127.0.0.11", port);
    let pods = [pod("steady", "127.0.0.11", &[])];
    responder.apply(&pods);
    wait_for(&responder, served, "steady", ServeState::Serving).await;
    let client = client();
    get(&client, served, "/").await;

    responder.apply(&pods);
    assert!(responder.served().iter().all(|s| s.state == ServeState::Serving));
    let text = String::from_utf8(get(&client, served, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(sample(&text, r#"lab_http_requests_total{code="200",version="v1"}"#), 1.0);

    responder.shutdown().await;
}

#[tokio::test]
async fn the_status_server_lists_served_pods_their_scrape_targets_and_answers_healthz() {
    let port = free_port().await;
    let responder = responder(port, Duration::ZERO);
    let served = address("127.0.0.12", port);
    responder.apply(&[pod("listed", "127.0.0.12", &[("VERSION", "blue")])]);
    wait_for(&responder, served, "listed", ServeState::Serving).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status_address = listener.local_addr().unwrap();
    let status = tokio::spawn(serve_status(listener, responder.clone()));
    let client = client();

    assert_eq!(get(&client, status_address, "/healthz").await.status, StatusCode::OK);
    let pods = get(&client, status_address, "/pods").await;
    assert_eq!(pods.status, StatusCode::OK);
    assert_eq!(
        pods.json(),
        serde_json::json!([{
            "namespace": "shop",
            "pod": "listed",
            "address": served.to_string(),
            "version": "blue",
            "state": "serving",
            "labels": {},
        }])
    );
    let targets = get(&client, status_address, "/targets").await;
    assert_eq!(targets.status, StatusCode::OK);
    assert_eq!(
        targets.json(),
        serde_json::json!([{"targets": [served.to_string()], "labels": {"namespace": "shop", "pod": "listed"}}])
    );
    assert_eq!(get(&client, status_address, "/other").await.status, StatusCode::NOT_FOUND);

    status.abort();
    responder.shutdown().await;
}
