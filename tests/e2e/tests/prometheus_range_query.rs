//! Prometheus `rangeQuery` against a real Prometheus server (tests/cluster/prometheus.sh)
//! scraping an in-process exporter: the provider asks `/api/v1/query_range` for the range its
//! expressions name, ending at the moment of the measurement, and the condition sees every value
//! of every series, flattened. No cluster needed.

use serde_json::Value;
use stepwise_api::{Metric, MetricProvider as ProviderSpec, PrometheusMetric, PrometheusRangeQuery};
use stepwise_e2e::prometheus::{Prometheus, SCRAPE_INTERVAL_SECONDS, TestExporter, success_rate_query};
use stepwise_e2e::secs;
use stepwise_metrics::prometheus::{PrometheusProvider, RANGE_KEY};
use stepwise_metrics::{MetricProvider, Reading, RunRef, Taken};

fn range_metric(address: &str, query: &str, start: &str, end: &str, step: &str) -> Metric {
    let prometheus = PrometheusMetric {
        address: address.into(),
        query: query.into(),
        range_query: Some(PrometheusRangeQuery { start: start.into(), end: end.into(), step: step.into() }),
        ..Default::default()
    };
    Metric {
        name: "range".into(),
        provider: ProviderSpec { prometheus: Some(prometheus), ..Default::default() },
        ..Default::default()
    }
}

async fn values(metric: &Metric) -> (Vec<f64>, Taken) {
    let taken = PrometheusProvider::new(None).run(&RunRef::default(), metric).await.unwrap();
    let Reading::Value(Value::Array(items)) = &taken.reading else { panic!("not a list: {taken:?}") };
    (items.iter().map(|v| v.as_f64().unwrap()).collect(), taken)
}

#[tokio::test]
async fn a_range_query_returns_one_value_per_step_of_the_range_for_each_series() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let counter = r#"http_requests_total{app="checkout",code="200"}"#;
    prometheus.wait_for_data(&success_rate_query("checkout"), secs(30)).await.unwrap();
    // Enough scrapes that a 4-second range is covered from its start.
    tokio::time::sleep(secs(5 * SCRAPE_INTERVAL_SECONDS)).await;

    let metric = range_metric(&prometheus.address(), counter, "now() - duration('4s')", "now()", "1s");
    let (one, taken) = values(&metric).await;
    // A 4 s range at a 1 s step has 5 points (both ends included).
    assert_eq!(one.len(), 5, "{one:?}");
    assert!(one.windows(2).all(|w| w[0] <= w[1]), "a counter's points in time order: {one:?}");
    assert!(one[4] > one[0], "the counter grew over the range: {one:?}");
    assert!(taken.metadata[RANGE_KEY].ends_with(" step 1s"), "{:?}", taken.metadata);

    // Two series (codes 200 and 500): each series' points, one series after the other.
    let both = range_metric(
        &prometheus.address(),
        r#"http_requests_total{app="checkout"}"#,
        "now() - duration('4s')",
        "now()",
        "2s",
    );
    let (both, _) = values(&both).await;
    assert_eq!(both.len(), 6, "3 points for each of 2 series: {both:?}");
    assert!(both.contains(&0.0), "the error counter stays at 0: {both:?}");
}

#[tokio::test]
async fn a_range_that_ends_before_now_reads_older_values() {
    let exporter = TestExporter::start(&["checkout"]).unwrap();
    let prometheus = Prometheus::start(&exporter).await.unwrap();
    let counter = r#"http_requests_total{app="checkout",code="200"}"#;
    prometheus.wait_for_data(&success_rate_query("checkout"), secs(30)).await.unwrap();
    tokio::time::sleep(secs(6 * SCRAPE_INTERVAL_SECONDS)).await;

    let recent = range_metric(&prometheus.address(), counter, "now() - duration('1s')", "now()", "1s");
    let older = range_metric(&prometheus.address(), counter, "now() - duration('5s')", "now() - duration('4s')", "1s");
    let (older, _) = values(&older).await;
    let (recent, _) = values(&recent).await;
    assert_eq!((older.len(), recent.len()), (2, 2), "{older:?} {recent:?}");
    assert!(older[1] < recent[0], "a counter read 4 s earlier is lower: {older:?} {recent:?}");
}
