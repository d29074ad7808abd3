//! The kubernetes provider through a real kube::Client against a local HTTP server on 127.0.0.1
//! that impersonates the API server's aggregated custom and external metrics APIs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Answer, read_request, reply};
use serde_json::{Value, json};
use stepwise_api::{KubernetesMetric, Metric, MetricProvider as ProviderSpec};
use stepwise_metrics::kubernetes::{KubernetesProvider, PATH_KEY};
use stepwise_metrics::{Error, MetricProvider, Reading, RunRef, Taken};
use tokio::net::TcpListener;

/// A fake API server answering every request with `answer`; the paths asked for are recorded.
struct FakeApiServer {
    url: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl FakeApiServer {
    async fn start(answer: Option<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let request = read_request(&mut conn).await;
                seen.lock().unwrap().push(request.map(|r| r.target).unwrap_or_default());
                let Some(answer) = &answer else {
                    // Keep the connection open without answering.
                    held.push(conn);
                    continue;
                };
                reply(&mut conn, answer).await;
            }
        });
        FakeApiServer { url, paths }
    }

    fn provider(&self) -> KubernetesProvider {
        KubernetesProvider::from_config(kube::Config::new(self.url.parse().unwrap())).unwrap()
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

fn ok(body: Value) -> Option<Answer> {
    Some(Answer::json(200, body))
}

fn custom_list(values: &[&str]) -> Value {
    let items: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "describedObject": {"kind": "Pod", "namespace": "shop", "name": format!("api-{i}"), "apiVersion": "v1"},
                "metric": {"name": "requests_per_second"},
                "timestamp": "2026-01-01T00:00:00Z",
                "value": v,
            })
        })
        .collect();
    json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2", "metadata": {}, "items": items})
}

fn external_list(values: &[&str]) -> Value {
    let items: Vec<Value> = values
        .iter()
        .map(|v| json!({"metricName": "success_rate", "metricLabels": {"version": "canary"}, "timestamp": "2026-01-01T00:00:00Z", "value": v}))
        .collect();
    json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

fn metric(spec: Value) -> Metric {
    let spec: KubernetesMetric = serde_json::from_value(spec).unwrap();
    Metric {
        name: "success".into(),
        provider: ProviderSpec { kubernetes: Some(spec), ..Default::default() },
        ..Default::default()
    }
}

fn run() -> RunRef {
    RunRef { namespace: "shop".into(), name: "api-1".into(), uid: "u".into() }
}

async fn measure(server: &FakeApiServer, spec: Value) -> Result<Taken, Error> {
    server.provider().run(&run(), &metric(spec)).await
}

fn value(taken: &Taken) -> &Value {
    match &taken.reading {
        Reading::Value(v) => v,
        other => panic!("not a value: {other:?}"),
    }
}

#[tokio::test]
async fn a_custom_metric_of_a_named_object_is_one_number_and_its_selector_narrows_the_series() {
    let server = FakeApiServer::start(ok(custom_list(&["950m"]))).await;
    let spec = json!({"api": "custom", "metricName": "success_rate", "objectKind": "Service", "objectName": "api", "selector": "code!=500"});
    let taken = measure(&server, spec).await.unwrap();
    assert_eq!(value(&taken), &json!(0.95));
    let path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/services/api/success_rate?metricLabelSelector=code%21%3D500";
    assert_eq!(server.paths(), [path]);
    assert_eq!(taken.metadata.get(PATH_KEY).map(String::as_str), Some(path));
}

#[tokio::test]
async fn every_pod_of_a_selector_gives_the_list_of_their_values() {
    let server = FakeApiServer::start(ok(custom_list(&["1500m", "2", "1.5k"]))).await;
    let spec = json!({"api": "custom", "metricName": "requests_per_second", "objectKind": "Pod", "objectName": "*", "selector": "app=api"});
    let taken = measure(&server, spec).await.unwrap();
    assert_eq!(value(&taken), &json!([1.5, 2.0, 1500.0]));
    assert_eq!(
        server.paths(),
        ["/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/pods/*/requests_per_second?labelSelector=app%3Dapi"]
    );
}

#[tokio::test]
async fn a_namespace_metric_is_read_at_the_root_scoped_path() {
    let server = FakeApiServer::start(ok(custom_list(&["12"]))).await;
    let spec =
        json!({"api": "custom", "metricName": "queue_depth", "objectKind": "Namespace", "objectName": "payments"});
    let taken = measure(&server, spec).await.unwrap();
    assert_eq!(value(&taken), &json!(12.0));
    assert_eq!(server.paths(), ["/apis/custom.metrics.k8s.io/v1beta2/namespaces/payments/metrics/queue_depth"]);
}

#[tokio::test]
async fn an_external_metric_is_an_array_read_with_its_label_selector_in_the_runs_namespace() {
    let server = FakeApiServer::start(ok(external_list(&["999500u"]))).await;
    let spec = json!({"api": "external", "metricName": "success_rate", "selector": "version=canary"});
    let taken = measure(&server, spec).await.unwrap();
    assert_eq!(value(&taken), &json!([0.9995]));
    assert_eq!(
        server.paths(),
        ["/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate?labelSelector=version%3Dcanary"]
    );

    let server = FakeApiServer::start(ok(external_list(&["1", "2e-1"]))).await;
    let taken = measure(&server, json!({"api": "external", "metricName": "success_rate"})).await.unwrap();
    assert_eq!(value(&taken), &json!([1.0, 0.2]));
    assert_eq!(server.paths(), ["/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate"]);
}

#[tokio::test]
async fn no_value_is_an_error_naming_the_metric_and_the_selector() {
    let server = FakeApiServer::start(ok(external_list(&[]))).await;
    let spec = json!({"api": "external", "metricName": "success_rate", "selector": "version=canary"});
    let err = measure(&server, spec).await.unwrap_err();
    assert!(matches!(err, Error::NoValue { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no value was returned for metric success_rate with selector version=canary \
         (GET /apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate?labelSelector=version%3Dcanary)"
    );
}

#[tokio::test]
async fn a_metric_the_adapter_does_not_serve_is_an_error_with_its_message_and_path() {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server could not find the metric missing for services", "reason": "NotFound", "code": 404,
    });
    let server = FakeApiServer::start(Some(Answer::json(404, status))).await;
    let spec = json!({"api": "custom", "metricName": "missing", "objectKind": "Service", "objectName": "api"});
    let err = measure(&server, spec).await.unwrap_err();
    assert!(matches!(err, Error::MetricsApi { code: 404, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/services/api/missing: HTTP 404: \
             the server could not find the metric missing for services"
        ),
        "{text}"
    );
    assert!(text.contains("kubectl get apiservice v1beta2.custom.metrics.k8s.io"), "{text}");
}

#[tokio::test]
async fn an_unavailable_metrics_api_is_an_error_with_the_api_servers_text() {
    let server = FakeApiServer::start(Some(Answer::new(503, "text/plain", "service unavailable\n"))).await;
    let err = measure(&server, json!({"api": "external", "metricName": "success_rate"})).await.unwrap_err();
    assert!(matches!(err, Error::MetricsApi { code: 503, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "GET /apis/external.metrics.k8s.io/v1beta1/namespaces/shop/success_rate: HTTP 503: service unavailable"
        ),
        "{text}"
    );
    assert!(text.contains("cannot reach the adapter") && text.contains("v1beta1.external.metrics.k8s.io"), "{text}");
    // Told at once: kube's retries of a 503 would outlast the measurement.
    assert_eq!(server.paths().len(), 1);
}

#[tokio::test]
async fn a_custom_metric_without_an_object_name_asks_nothing_and_names_the_field() {
    let server = FakeApiServer::start(ok(custom_list(&["1"]))).await;
    let err = measure(&server, json!({"api": "custom", "metricName": "m", "objectKind": "Service"})).await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "provider.kubernetes.objectName", .. }), "{err:?}");
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn an_answer_that_is_not_a_quantity_is_an_answer_error() {
    let server = FakeApiServer::start(ok(external_list(&["lots"]))).await;
    let err = measure(&server, json!({"api": "external", "metricName": "m"})).await.unwrap_err();
    assert!(
        matches!(&err, Error::Answer { message } if message.contains("\"lots\" is not a Kubernetes quantity")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = FakeApiServer::start(None).await;
    let provider = server.provider().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = provider.run(&run(), &metric(json!({"api": "external", "metricName": "m"}))).await.unwrap_err();
    assert!(matches!(&err, Error::Timeout { target, .. } if target.contains("/namespaces/shop/m")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_provider_is_named_as_the_metric_field() {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    assert_eq!(KubernetesProvider::new(kube::Client::try_from(config).unwrap()).kind(), "kubernetes");
}
