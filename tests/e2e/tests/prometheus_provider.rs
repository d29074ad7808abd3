//! The Prometheus provider against a real Prometheus server (tests/cluster/prometheus.sh) scraping
//! an in-process exporter. No cluster needed.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use stepwise_api::{Metric, MetricProvider as ProviderSpec, PrometheusMetric};
use stepwise_e2e::prometheus::{Prometheus, TestExporter, success_rate_query};
use stepwise_e2e::{eventually, secs};
use stepwise_metrics::prometheus::{PrometheusProvider, QUERY_KEY};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};

fn metric(address: &str, query: &str) -> Metric {
    let prometheus = PrometheusMetric { address: address.into(), query: query.into(), ..Default::default() };
    Metric {
        name: "success-rate".into(),
        provider: ProviderSpec { prometheus: Some(prometheus), ..Default::default() },
        ..Default::default()
    }
}

async fn measure(address: &str, query: &str) -> Result<Taken, Error> {
    PrometheusProvider::new(None).run(&RunRef::default(), &metric(address, query)).await
}

async fn value(address: &str, query: &str) -> Value {
    match measure(address, query).await {
        Ok(Taken { reading: Reading::Value(v), .. }) => v,
        other => panic!("{query}: {other:?}"),
    }
}

/// Polls the success rate of `app` until it is within 0.02 of `expected`.
async fn success_rate_reaches(prometheus: &Prometheus, app: &str, expected: f64) {
    let query = success_rate_query(app);
    let last = Mutex::new(Value::Null);
    let result = eventually(&format!("success rate of {app} near {expected}"), secs(30), || {
        let (address, query, last) = (prometheus.address(), query.clone(), &last);
        async move {
            let v = value(&address, &query).await;
            let near = v.get(0).and_then(Value::as_f64).is_some_and(|v| (v - expected).abs() < 0.02);
            *last.lock().unwrap() = v;
            Ok(near)
        }
    })
    .await;
    if let Err(e) = result {
        panic!("{e}; last value {}", last.lock().unwrap());
    }
}

#[tokio::test]
async fn a_vector_success_rate_follows_the_error_rate_of_the_app() {
    let exporter = TestExporter::start(&["checkout", "cart"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    prometheus.wait_for_data(&success_rate_query("checkout"), secs(30)).await.unwrap();

    success_rate_reaches(&prometheus, "checkout", 1.0).await;
    exporter.set_app_error_rate("checkout", 0.3);
    success_rate_reaches(&prometheus, "checkout", 0.7).await;
    // The other app sharing the exporter is untouched.
    success_rate_reaches(&prometheus, "cart", 1.0).await;

    let taken = measure(&prometheus.address(), &success_rate_query("checkout")).await.unwrap();
    assert_eq!(taken.metadata.get(QUERY_KEY), Some(&success_rate_query("checkout")));
    assert!(matches!(&taken.reading, Reading::Value(Value::Array(v)) if v.len() == 1), "{taken:?}");
}

#[tokio::test]
async fn a_scalar_is_a_number_and_nan_and_infinities_are_strings() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let address = prometheus.address();

    assert_eq!(value(&address, "1").await, json!(1.0));
    assert_eq!(value(&address, "scalar(vector(0.25))").await, json!(0.25));
    assert_eq!(value(&address, "0/0").await, json!("NaN"));
    assert_eq!(value(&address, "1/0").await, json!("+Inf"));
    assert_eq!(value(&address, "-1/0").await, json!("-Inf"));
    let total = value(&address, r#"scalar(sum(http_requests_total{app="checkout"}))"#).await;
    assert!(total.as_f64().is_some_and(|v| v >= 100.0), "{total}");
}

#[tokio::test]
async fn a_range_selector_is_flattened_into_all_values() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let address = prometheus.address();
    prometheus.wait_for_data(&success_rate_query("checkout"), secs(30)).await.unwrap();

    let one = value(&address, r#"http_requests_total{app="checkout",code="200"}[5s]"#).await;
    let one: Vec<f64> = one.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(one.len() >= 2, "{one:?}");
    assert!(one.windows(2).all(|w| w[0] < w[1]), "a counter's samples in order: {one:?}");

    // Two series (codes 200 and 500): their samples one after the other.
    let both = value(&address, r#"http_requests_total{app="checkout"}[5s]"#).await;
    let both = both.as_array().unwrap();
    assert!(both.len() >= 4 && both.iter().all(Value::is_number), "{both:?}");
    assert!(both.contains(&json!(0.0)), "the error counter stays at 0: {both:?}");
}

#[tokio::test]
async fn an_empty_result_is_an_empty_array() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    assert_eq!(value(&prometheus.address(), r#"http_requests_total{app="nobody"}"#).await, json!([]));
    assert_eq!(value(&prometheus.address(), &success_rate_query("nobody")).await, json!([]));
}

#[tokio::test]
async fn bad_promql_is_a_source_error_with_prometheus_message() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let err = measure(&prometheus.address(), "sum(rate(http_requests_total[5s])").await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("bad_data") && text.contains("parse error"), "{text}");
    assert!(text.contains(&prometheus.address()), "{text}");
}

#[tokio::test]
async fn the_default_address_is_used_when_the_metric_has_none() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let provider = PrometheusProvider::new(Some(prometheus.address()));
    let taken = provider.run(&RunRef::default(), &metric("", "vector(1)")).await.unwrap();
    assert_eq!(taken.reading, Reading::Value(json!([1.0])));
}

#[tokio::test]
async fn an_unreachable_server_is_a_source_error() {
    // Bound then dropped: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let err = measure(&address, "up").await.unwrap_err();
    assert!(matches!(err, Error::Source { .. }), "{err:?}");
    assert!(err.to_string().contains(&address) && err.to_string().contains("cannot connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
