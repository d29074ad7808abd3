//! Setting a traffic weight against a mocked API server: every routing object is read before any
//! is written, each write is a JSON patch of weights guarded by the resourceVersion read, and an
//! object that is missing is an error a person must fix, with nothing written.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use serde_json::{Value, json};
use stepwise_api::{AnalysisRun, Rollout};
use stepwise_controller::context::{AnalysisStores, Context, Limiter};
use stepwise_controller::error::Error;
use stepwise_controller::index::{Index, controller_uid};
use stepwise_controller::metrics::Metrics;
use stepwise_controller::observe::Stores;
use stepwise_controller::route::set_traffic;
use stepwise_traffic::Desired;

/// One request the mocked API server received: method, path, content type and body.
type Sent = (String, String, String, Value);

/// A client whose requests are recorded; a GET is answered from `objects` by the last segment of
/// its path (404 when absent), a PATCH with the object it names.
fn mocked_api(objects: Vec<Value>) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let content_type =
                parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            log.lock().unwrap().push((parts.method.to_string(), path.clone(), content_type, body));
            let name = path.rsplit('/').next().unwrap_or_default();
            let (code, answer) = match objects.iter().find(|o| o["metadata"]["name"] == name) {
                Some(object) => (200, object.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                           "reason": "NotFound", "message": format!("{name} not found")}),
                ),
            };
            let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap()));
            respond.send_response(response.unwrap());
        }
    });
    (Client::new(service, "default"), sent)
}

fn context(client: Client) -> Context {
    let (replica_sets, _) = reflector::store();
    let (services, _) = reflector::store();
    let (analysis_runs, _) = reflector::store::<AnalysisRun>();
    let (deployments, _) = reflector::store();
    let (templates, _) = reflector::store();
    let (cluster_templates, _) = reflector::store();
    Context {
        client: client.clone(),
        stores: Stores {
            replica_sets,
            replica_sets_by_owner: Arc::new(Index::new(controller_uid)),
            services,
            analysis_runs,
            analysis_runs_by_owner: Arc::new(Index::new(controller_uid)),
            deployments,
            rollouts_by_reference: Arc::new(Index::new(|_| Vec::new())),
        },
        stores_analysis: AnalysisStores { templates, cluster_templates },
        recorder: Recorder::new(client, Reporter { controller: "stepwise-test".into(), instance: None }),
        metrics: Arc::new(Metrics::default()),
        limiter: Limiter::new(10_000.0, 10_000),
        router_plugins: Default::default(),
        routers: Default::default(),
    }
}

/// A Rollout in `ns` splitting two VirtualServices, `a` and `b`.
fn rollout() -> Rollout {
    serde_yaml::from_str(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app, namespace: ns}\nspec:\n  strategy:\n    canary:\n      canaryService: web-canary\n      stableService: web-stable\n      trafficRouting:\n        istio:\n          virtualServices: [{name: a}, {name: b}]\n",
    )
    .unwrap()
}

fn virtual_service(name: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": resource_version},
        "spec": {"http": [{"route": [
            {"destination": {"host": "web-stable"}, "weight": 100},
            {"destination": {"host": "web-canary"}, "weight": 0}
        ]}]}
    })
}

const A: &str = "/apis/networking.istio.io/v1/namespaces/ns/virtualservices/a";
const B: &str = "/apis/networking.istio.io/v1/namespaces/ns/virtualservices/b";

#[tokio::test]
async fn every_object_is_read_before_any_is_patched_and_only_weights_are_written() {
    let (client, sent) = mocked_api(vec![virtual_service("a", "5"), virtual_service("b", "9")]);
    set_traffic(&context(client), &rollout(), &weight(30)).await.unwrap();
    let sent = sent.lock().unwrap().clone();
    let lines: Vec<(&str, &str)> = sent.iter().map(|(m, p, _, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(lines, [("GET", A), ("GET", B), ("PATCH", A), ("PATCH", B)]);
    let (_, _, content_type, body) = &sent[3];
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        body,
        &json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "9"},
            {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 30},
            {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 70}
        ])
    );
}

#[tokio::test]
async fn a_missing_object_is_a_traffic_error_for_a_person_and_nothing_is_written() {
    let (client, sent) = mocked_api(vec![virtual_service("a", "5")]);
    let err = set_traffic(&context(client), &rollout(), &weight(30)).await.unwrap_err();
    assert!(matches!(&err, Error::Router(stepwise_traffic::Error::NotFound(m)) if m == "VirtualService ns/b"), "{err}");
    assert!(err.needs_a_person());
    let methods: Vec<String> = sent.lock().unwrap().iter().map(|(m, ..)| m.clone()).collect();
    assert_eq!(methods, ["GET", "GET"], "no PATCH after a failed read");
}

#[tokio::test]
async fn a_weight_already_in_place_writes_nothing() {
    let (client, sent) = mocked_api(vec![virtual_service("a", "5"), virtual_service("b", "9")]);
    set_traffic(&context(client), &rollout(), &weight(0)).await.unwrap();
    assert!(sent.lock().unwrap().iter().all(|(m, ..)| m == "GET"));
}

/// The canary at `canary_weight` out of 100, with no header or mirror routes.
fn weight(canary_weight: i32) -> Desired {
    Desired::split("web-canary", "web-stable", canary_weight, 100)
}
