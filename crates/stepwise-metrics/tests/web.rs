//! The web provider against a local HTTP server (raw HTTP/1.1 on 127.0.0.1).

mod common;

use std::time::{Duration, Instant};

use common::{read_request, respond, serve_silence};
use serde_json::json;
use stepwise_api::{Metric, MetricProvider as ProviderSpec, WebMetric, WebMetricHeader};
use stepwise_metrics::web::WebProvider;
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server that answers one request with `status` and `body`, and hands back the request it got,
/// as it came (head and body).
async fn serve_once(status: u16, body: &'static str) -> (String, oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let request = read_request(&mut conn).await.map(|r| format!("{}\r\n\r\n{}", r.head, r.text()));
        respond(&mut conn, status, "application/json", body).await;
        let _ = tx.send(request.unwrap_or_default());
    });
    (url, rx)
}

fn metric(web: WebMetric) -> Metric {
    Metric {
        name: "web-check".into(),
        provider: ProviderSpec { web: Some(web), ..Default::default() },
        ..Default::default()
    }
}

async fn measure(web: WebMetric) -> Result<Reading, Error> {
    WebProvider::new().run(&RunRef::default(), &metric(web)).await.map(|taken| taken.reading)
}

#[tokio::test]
async fn the_value_is_the_json_its_path_selects() {
    let (url, _) = serve_once(200, r#"{"data":{"ok":true,"checks":[{"rate":0.97}]}}"#).await;
    let web = WebMetric {
        url: format!("{url}/health"),
        json_path: Some("{$.data.checks[0].rate}".into()),
        ..Default::default()
    };
    assert_eq!(measure(web).await.unwrap(), Reading::Value(json!(0.97)));
}

#[tokio::test]
async fn without_a_path_the_value_is_the_whole_document() {
    let (url, _) = serve_once(200, r#"{"ok":true}"#).await;
    let web = WebMetric { url, ..Default::default() };
    assert_eq!(measure(web).await.unwrap(), Reading::Value(json!({"ok": true})));
}

#[tokio::test]
async fn a_post_sends_its_body_and_headers() {
    let (url, request) = serve_once(200, r#"{"accepted":1}"#).await;
    let web = WebMetric {
        url: format!("{url}/check"),
        method: Some("POST".into()),
        headers: Some(vec![
            WebMetricHeader { key: "Authorization".into(), value: "Bearer t0ken".into() },
            WebMetricHeader { key: "Content-Type".into(), value: "application/json".into() },
        ]),
        body: Some(r#"{"service":"checkout"}"#.into()),
        json_path: Some("$.accepted".into()),
        ..Default::default()
    };
    assert_eq!(measure(web).await.unwrap(), Reading::Value(json!(1)));
    let request = request.await.unwrap();
    let lower = request.to_ascii_lowercase();
    assert!(request.starts_with("POST /check HTTP/1.1\r\n"), "{request}");
    assert!(lower.contains("\r\nauthorization: bearer t0ken\r\n"), "{request}");
    assert!(lower.contains("\r\ncontent-type: application/json\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n{\"service\":\"checkout\"}"), "{request}");
}

#[tokio::test]
async fn a_json_body_is_sent_as_json_with_its_content_type() {
    let (url, request) = serve_once(200, r#"{"ok":true}"#).await;
    let web = WebMetric {
        url: format!("{url}/check"),
        method: Some("POST".into()),
        json_body: Some(json!({"service": "checkout", "window": {"minutes": 5}})),
        json_path: Some("$.ok".into()),
        ..Default::default()
    };
    assert_eq!(measure(web).await.unwrap(), Reading::Value(json!(true)));
    let request = request.await.unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /check HTTP/1.1\r\n"), "{request}");
    assert!(head.to_ascii_lowercase().contains("\r\ncontent-type: application/json"), "{request}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body).unwrap(),
        json!({"service": "checkout", "window": {"minutes": 5}})
    );
}

#[tokio::test]
async fn a_json_body_keeps_the_content_type_a_header_of_the_metric_sets() {
    let (url, request) = serve_once(200, "{}").await;
    let web = WebMetric {
        url,
        method: Some("PUT".into()),
        headers: Some(vec![WebMetricHeader { key: "content-type".into(), value: "application/vnd.api+json".into() }]),
        json_body: Some(json!({"a": 1})),
        ..Default::default()
    };
    measure(web).await.unwrap();
    let lower = request.await.unwrap().to_ascii_lowercase();
    assert_eq!(lower.matches("content-type:").count(), 1, "{lower}");
    assert!(lower.contains("\r\ncontent-type: application/vnd.api+json\r\n"), "{lower}");
}

#[tokio::test]
async fn body_and_json_body_together_are_a_config_error_naming_both() {
    let web = WebMetric {
        url: "http://127.0.0.1:1/x".into(),
        body: Some("{}".into()),
        json_body: Some(json!({})),
        ..Default::default()
    };
    let err = measure(web).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.web", .. }), "{err:?}");
    assert_eq!(err.to_string(), "provider.web: set body or jsonBody, not both");
}

#[tokio::test]
async fn a_put_is_sent_as_a_put() {
    let (url, request) = serve_once(200, "{}").await;
    let web = WebMetric { url, method: Some("put".into()), body: Some("x".into()), ..Default::default() };
    measure(web).await.unwrap();
    assert!(request.await.unwrap().starts_with("PUT / HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_the_metrics_timeout() {
    let url = serve_silence().await;
    let started = Instant::now();
    let err = measure(WebMetric { url: format!("{url}/slow"), timeout_seconds: Some(1), ..Default::default() })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout { seconds: 1, .. }), "{err:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "took {took:?}");
    assert!(err.to_string().contains("/slow"), "{err}");
}

#[tokio::test]
async fn a_500_is_a_source_error_naming_the_status() {
    let (url, _) = serve_once(500, r#"{"error":"db down"}"#).await;
    let err = measure(WebMetric { url, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("HTTP 500") && text.contains("db down"), "{text}");
}

#[tokio::test]
async fn a_non_json_answer_is_an_error_quoting_it() {
    let (url, _) = serve_once(200, "<html>all good</html>").await;
    let err = measure(WebMetric { url, ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, Error::Answer { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("is not JSON") && text.contains("<html>all good</html>"), "{text}");
}

#[tokio::test]
async fn a_path_that_selects_nothing_is_an_error_naming_the_path() {
    let (url, _) = serve_once(200, r#"{"data":{"ok":true}}"#).await;
    let web = WebMetric { url, json_path: Some("{$.data.missing}".into()), ..Default::default() };
    let err = measure(web).await.unwrap_err();
    assert!(matches!(err, Error::Answer { .. }), "{err:?}");
    assert!(err.to_string().contains("{$.data.missing}"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_source_error_that_hides_the_query() {
    // Bound then dropped: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = measure(WebMetric { url: format!("http://127.0.0.1:{port}/check?token=s3cret"), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("cannot connect") && text.contains(&format!("127.0.0.1:{port}/check")), "{text}");
    assert!(!text.contains("s3cret"), "arguments may be Secrets: {text}");
}

#[tokio::test]
async fn an_unsupported_method_is_a_config_error() {
    let err =
        measure(WebMetric { url: "http://127.0.0.1:1/".into(), method: Some("DELETE".into()), ..Default::default() })
            .await
            .unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.web.method", .. }), "{err:?}");
}
