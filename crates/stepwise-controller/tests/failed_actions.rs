//! Execute and the status write against a mocked API server that fails one request: the actions
//! before it were made in the plan's order, none after it, and the status written tells what
//! happened.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};
use stepwise_api::{
    AnalysisPhase, AnalysisRun, BlueGreenStatus, Rollout, RolloutAnalysisRunStatus, RolloutCondition, RolloutPhase,
    RolloutStatus,
};
use stepwise_controller::context::{AnalysisStores, Context, Limiter};
use stepwise_controller::index::{Index, controller_uid};
use stepwise_controller::metrics::Metrics;
use stepwise_controller::observe::Stores;
use stepwise_controller::reconcile::{act, reconcile};
use stepwise_core::condition::RECONCILE_ERROR;
use stepwise_core::{Action, AnalysisKind, EventType, Observed, Plan};

/// One request the mocked API server received.
#[derive(Clone, Debug)]
struct Sent {
    method: String,
    path: String,
    /// The query, decoded.
    query: String,
    body: Value,
}

impl Sent {
    fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the mocked server answers request `index` (counting from 0): None for success.
type Failure = Box<dyn Fn(usize) -> Option<(u16, &'static str)> + Send + Sync>;

/// A client whose requests are recorded and answered by `fail` or, when it says nothing, with
/// success.
fn mocked_api(rollout: &Rollout, fail: Failure) -> (Client, Arc<Mutex<Vec<Sent>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let rollout = serde_json::to_value(rollout).unwrap();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_string();
            let query = decoded(parts.uri.query().unwrap_or_default().trim_start_matches('&'));
            let method = parts.method.to_string();
            let index = {
                let mut log = log.lock().unwrap();
                log.push(Sent { method: method.clone(), path: path.clone(), query, body: body.clone() });
                log.len() - 1
            };
            let (code, answer) = match fail(index) {
                Some((code, reason)) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                           "reason": reason, "message": format!("the server says {reason}")}),
                ),
                None => (200, success(&method, &path, &body, &rollout)),
            };
            let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&answer).unwrap()));
            respond.send_response(response.unwrap());
        }
    });
    (Client::new(service, "default"), sent)
}

/// A URL query with its percent-escapes and pluses decoded.
fn decoded(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&query[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A well-formed answer to a request that succeeded.
fn success(method: &str, path: &str, body: &Value, rollout: &Value) -> Value {
    let name = path.rsplit('/').next().unwrap_or_default();
    match method {
        "POST" => body.clone(),
        "GET" if path.ends_with("/pods") => json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        _ if path.ends_with("/status") => rollout.clone(),
        _ if path.contains("/replicasets/") => {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name}})
        }
        _ if path.contains("/services/") => json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}),
        _ => json!({"apiVersion": "stepwise.dev/v1alpha1", "kind": "AnalysisRun", "metadata": {"name": name},
                    "spec": {"metrics": []}}),
    }
}

fn context(client: Client) -> Context {
    context_with(client, Vec::new())
}

/// A context whose Deployment cache holds `deployments` (the other caches are empty).
fn context_with(client: Client, cached: Vec<Deployment>) -> Context {
    let (replica_sets, _) = reflector::store::<ReplicaSet>();
    let (services, _) = reflector::store();
    let (analysis_runs, _) = reflector::store::<AnalysisRun>();
    let (deployments, mut writer) = reflector::store();
    for d in cached {
        writer.apply_watcher_event(&watcher::Event::Apply(d));
    }
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

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn blue_green_rollout() -> Rollout {
    let mut ro: Rollout = serde_yaml::from_str(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app, namespace: ns, uid: u-1, resourceVersion: '41', generation: 2}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:2'}]}\n  strategy:\n    blueGreen: {activeService: active, previewService: preview}\n",
    )
    .unwrap();
    ro.status = Some(RolloutStatus {
        phase: Some(RolloutPhase::Healthy),
        message: Some("Healthy at revision 1".into()),
        observed_generation: Some(1),
        current_pod_hash: Some("old".into()),
        stable_rs: Some("old".into()),
        current_revision: Some(1),
        selector: Some("app=demo,stepwise.dev/pod-template-hash=old".into()),
        hpa_replicas: Some(2),
        blue_green: Some(BlueGreenStatus {
            active_selector: Some("old".into()),
            preview_selector: Some("old".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    ro
}

fn analysis_run(name: &str) -> AnalysisRun {
    AnalysisRun {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
        spec: Default::default(),
        status: None,
    }
}

/// A plan of every kind of write, in the order core lists them, and the status it decided.
fn blue_green_plan(rollout: &Rollout) -> Plan {
    let prev = rollout.status.clone().unwrap();
    let actions = vec![
        Action::CreateReplicaSet {
            name: "app-new".into(),
            hash: "new".into(),
            revision: 2,
            replicas: 2,
            template: rollout.spec.template.clone().unwrap(),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "demo".to_string())].into()),
                match_expressions: None,
            },
            min_ready_seconds: 0,
        },
        Action::ScaleReplicaSet { name: "app-old".into(), replicas: 1 },
        Action::SetServiceSelector { service: "preview".into(), hash: "new".into() },
        Action::CreateAnalysisRun { kind: AnalysisKind::PrePromotion, run: Box::new(analysis_run("app-new-2-pre")) },
        Action::SetServiceSelector { service: "active".into(), hash: "new".into() },
        Action::DeleteReplicaSet { name: "app-older".into() },
        Action::Event { type_: EventType::Normal, reason: "RolloutUpdated".into(), message: "updated to new".into() },
    ];
    let status = RolloutStatus {
        phase: Some(RolloutPhase::Progressing),
        message: Some("Active Service switched; 0 of 2 pods available".into()),
        observed_generation: Some(2),
        current_pod_hash: Some("new".into()),
        current_revision: Some(2),
        selector: Some("app=demo,stepwise.dev/pod-template-hash=new".into()),
        hpa_replicas: Some(0),
        blue_green: Some(BlueGreenStatus {
            active_selector: Some("new".into()),
            preview_selector: Some("new".into()),
            pre_promotion_analysis_run_status: Some(RolloutAnalysisRunStatus {
                name: "app-new-2-pre".into(),
                status: AnalysisPhase::Pending,
                message: None,
                accepted: None,
            }),
            ..Default::default()
        }),
        ..prev
    };
    Plan { actions, status, requeue_after: None }
}

/// The requests the plan's actions make, in order.
const ACTION_REQUESTS: [&str; 7] = [
    "POST /apis/apps/v1/namespaces/ns/replicasets",
    "PATCH /apis/apps/v1/namespaces/ns/replicasets/app-old",
    "PATCH /api/v1/namespaces/ns/services/preview",
    "POST /apis/stepwise.dev/v1alpha1/namespaces/ns/analysisruns",
    "PATCH /api/v1/namespaces/ns/services/active",
    "DELETE /apis/apps/v1/namespaces/ns/replicasets/app-older",
    "POST /apis/events.k8s.io/v1/namespaces/ns/events",
];

/// What each action says when it fails.
const ACTION_NAMES: [&str; 6] = [
    "create ReplicaSet app-new",
    "scale ReplicaSet app-old to 1",
    "point Service preview at new",
    "create AnalysisRun app-new-2-pre",
    "point Service active at new",
    "delete ReplicaSet app-older",
];

const STATUS_REQUEST: &str = "PATCH /apis/stepwise.dev/v1alpha1/namespaces/ns/rollouts/app/status";

/// The plan's decision (a new version) is recorded by the status written after a failure, so it
/// is told then: the next plan starts from that status and will not tell it again.
const DECISION_EVENT_REQUEST: &str = "POST /apis/events.k8s.io/v1/namespaces/ns/events";

/// Applies a JSON merge patch (RFC 7386).
fn merged(mut target: Value, patch: &Value) -> Value {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    let old = t.remove(k).unwrap_or(Value::Null);
                    t.insert(k.clone(), merged(old, v));
                }
            }
            target
        }
        _ => patch.clone(),
    }
}

/// The status the patch leaves on the Rollout, checking the patch's precondition.
fn written_status(rollout: &Rollout, patch: &Sent) -> RolloutStatus {
    assert_eq!(patch.line(), STATUS_REQUEST);
    assert_eq!(patch.body["metadata"]["resourceVersion"], json!("41"), "the write is conditional on what was planned");
    let before = serde_json::to_value(rollout.status.clone().unwrap()).unwrap();
    serde_json::from_value(merged(before, &patch.body["status"])).unwrap()
}

fn reconcile_error(status: &RolloutStatus) -> Option<&RolloutCondition> {
    status.conditions.iter().find(|c| c.r#type == RECONCILE_ERROR)
}

#[tokio::test]
async fn each_failed_action_stops_the_plan_there_and_the_status_tells_what_was_done() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    for failed in 0..ACTION_NAMES.len() {
        let (client, sent) = mocked_api(&rollout, Box::new(move |i| (i == failed).then_some((500, "InternalError"))));
        let ctx = context(client);
        let error = act(&ctx, &rollout, &plan, &now()).await.expect_err("the action fails");
        let sent = sent.lock().unwrap().clone();
        let lines: Vec<String> = sent.iter().map(Sent::line).collect();
        let mut expected: Vec<String> = ACTION_REQUESTS[..=failed].iter().map(|s| s.to_string()).collect();
        expected.push(STATUS_REQUEST.into());
        expected.push(DECISION_EVENT_REQUEST.into());
        assert_eq!(lines, expected, "requests when action {failed} fails");
        assert_eq!(sent[failed + 2].body["reason"], json!("RolloutUpdated"), "only the decision is told");

        let cause = format!("{}: the server says InternalError (500 InternalError)", ACTION_NAMES[failed]);
        assert_eq!(error.to_string(), cause);
        let st = written_status(&rollout, &sent[failed + 1]);
        let condition = reconcile_error(&st).expect("a ReconcileError condition");
        assert_eq!((condition.status.as_str(), condition.message.as_deref()), ("True", Some(cause.as_str())));
        assert_eq!(st.message, Some(format!("ReconcileError: {cause} ({failed} of 7 actions done)")));
        assert_eq!(st.phase, Some(RolloutPhase::Progressing), "a server error passes: not Degraded");
        assert_eq!(st.current_pod_hash.as_deref(), Some("new"), "the new version is recognised");
        assert_eq!(st.observed_generation, Some(2));

        let bg = st.blue_green.unwrap();
        let preview = if failed <= 2 { "old" } else { "new" };
        assert_eq!(bg.preview_selector.as_deref(), Some(preview), "preview when action {failed} fails");
        let run = bg.pre_promotion_analysis_run_status.map(|r| r.name);
        assert_eq!(run.as_deref(), (failed > 3).then_some("app-new-2-pre"), "run when action {failed} fails");
        let active = if failed <= 4 { "old" } else { "new" };
        assert_eq!(bg.active_selector.as_deref(), Some(active), "active when action {failed} fails");
        assert_eq!(st.selector, Some(format!("app=demo,stepwise.dev/pod-template-hash={active}")));
    }
}

#[tokio::test]
async fn the_requests_carry_the_plans_objects() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    act(&context(client), &rollout, &plan, &now()).await.expect("every action succeeds");
    let sent = sent.lock().unwrap().clone();
    let rs = &sent[0].body;
    assert_eq!(rs["metadata"]["name"], json!("app-new"));
    assert_eq!(rs["metadata"]["labels"]["stepwise.dev/pod-template-hash"], json!("new"));
    assert_eq!(rs["metadata"]["annotations"]["stepwise.dev/revision"], json!("2"));
    assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], json!("u-1"));
    assert_eq!(rs["spec"]["replicas"], json!(2));
    assert_eq!(sent[1].body, json!({"spec": {"replicas": 1}}));
    assert_eq!(sent[2].body["spec"]["selector"], json!({"stepwise.dev/pod-template-hash": "new"}));
    assert_eq!(sent[3].body["metadata"]["name"], json!("app-new-2-pre"));
    assert_eq!(sent[6].body["reason"], json!("RolloutUpdated"));
    let st = written_status(&rollout, &sent[7]);
    assert_eq!(st, plan.status, "every action done: the plan's status as it is");
}

#[tokio::test]
async fn an_event_that_cannot_be_recorded_does_not_stop_the_rollout() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    let (client, sent) = mocked_api(&rollout, Box::new(|i| (i == 6).then_some((500, "InternalError"))));
    act(&context(client), &rollout, &plan, &now()).await.expect("an event is not an action that fails");
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 8);
    assert_eq!(written_status(&rollout, &sent[7]), plan.status);
}

#[tokio::test]
async fn a_replica_set_the_api_server_refuses_degrades_the_rollout_with_a_reconcile_error() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    let (client, sent) = mocked_api(&rollout, Box::new(|i| (i == 0).then_some((422, "Invalid"))));
    let error = act(&context(client), &rollout, &plan, &now()).await.expect_err("the create is refused");
    assert!(error.needs_a_person(), "retrying the same ReplicaSet cannot help");
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2].line(), DECISION_EVENT_REQUEST);
    let st = written_status(&rollout, &sent[1]);
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    assert_eq!(
        st.message.as_deref(),
        Some("ReconcileError: create ReplicaSet app-new: the server says Invalid (422 Invalid) (0 of 7 actions done)")
    );
}

#[tokio::test]
async fn a_name_taken_by_another_owners_replica_set_is_a_collision_on_the_status() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    // The create conflicts; the GET that follows finds a ReplicaSet without our owner.
    let (client, sent) = mocked_api(&rollout, Box::new(|i| (i == 0).then_some((409, "AlreadyExists"))));
    let error = act(&context(client), &rollout, &plan, &now()).await.expect_err("a collision");
    let sent = sent.lock().unwrap().clone();
    let lines: Vec<String> = sent.iter().map(Sent::line).collect();
    let get = "GET /apis/apps/v1/namespaces/ns/replicasets/app-new";
    assert_eq!(lines, [ACTION_REQUESTS[0], get, STATUS_REQUEST, DECISION_EVENT_REQUEST]);
    assert_eq!(error.to_string(), "ReplicaSet app-new exists and is not owned by this Rollout");
    let st = written_status(&rollout, &sent[2]);
    assert_eq!(st.phase, Some(RolloutPhase::Degraded));
    assert_eq!(reconcile_error(&st).and_then(|c| c.message.as_deref()), Some(error.to_string().as_str()));
}

#[tokio::test]
async fn a_lost_status_write_still_returns_the_actions_error() {
    let rollout = blue_green_rollout();
    let plan = blue_green_plan(&rollout);
    let (client, sent) = mocked_api(
        &rollout,
        Box::new(|i| {
            [(1, (500, "InternalError")), (2, (409, "Conflict"))]
                .into_iter()
                .find_map(|(at, answer)| (at == i).then_some(answer))
        }),
    );
    let error = act(&context(client), &rollout, &plan, &now()).await.expect_err("the scale fails");
    assert!(error.to_string().starts_with("scale ReplicaSet app-old to 1"), "{error}");
    assert_eq!(sent.lock().unwrap().len(), 3);
}

/// A canary at rest on its first version, as the controller left it after the plans of its
/// first deploy, with the pods all available.
fn steady_canary() -> (Rollout, Observed) {
    let mut rollout: Rollout = serde_yaml::from_str(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {name: app, namespace: ns, uid: u-1, resourceVersion: '41', generation: 1}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: demo}}\n  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n  strategy:\n    canary: {steps: [{setWeight: 50}]}\n",
    )
    .unwrap();
    let mut observed = Observed::default();
    for _ in 0..5 {
        let plan = stepwise_core::plan(&rollout, &observed, &now());
        for action in &plan.actions {
            if let Some(mut rs) = stepwise_core::objects::replica_set(&rollout, action) {
                rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                    replicas: 2,
                    ready_replicas: Some(2),
                    available_replicas: Some(2),
                    ..Default::default()
                });
                rs.spec.as_mut().unwrap().replicas = Some(2);
                observed.replica_sets = vec![stepwise_core::objects::observe_replica_set(&rs)];
            }
        }
        rollout.status = Some(plan.status);
    }
    assert_eq!(rollout.status.as_ref().unwrap().phase, Some(RolloutPhase::Healthy), "{:?}", rollout.status);
    (rollout, observed)
}

#[tokio::test]
async fn a_successful_reconcile_clears_the_reconcile_error_that_core_does_not_know_about() {
    let (mut rollout, observed) = steady_canary();
    let mut failed = rollout.status.clone().unwrap();
    failed.phase = Some(RolloutPhase::Degraded);
    failed.message = Some("ReconcileError: create ReplicaSet app-x: refused (0 of 2 actions done)".into());
    failed.conditions.push(RolloutCondition {
        r#type: RECONCILE_ERROR.into(),
        status: "True".into(),
        reason: Some(RECONCILE_ERROR.into()),
        message: Some("create ReplicaSet app-x: refused".into()),
        ..Default::default()
    });
    rollout.status = Some(failed);
    let plan = stepwise_core::plan(&rollout, &observed, &now());
    assert!(reconcile_error(&plan.status).is_some(), "core carries the condition over");
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    act(&context(client), &rollout, &plan, &now()).await.expect("nothing fails");
    let sent = sent.lock().unwrap().clone();
    let st = written_status(&rollout, sent.last().unwrap());
    assert_eq!(reconcile_error(&st), None);
    assert_eq!(st.phase, Some(RolloutPhase::Healthy));
    assert_eq!(st.message.as_deref(), Some("Healthy at revision 1"));
    assert!(st.conditions.iter().any(|c| c.r#type == "Available"), "the other conditions stay");
}

#[tokio::test]
async fn a_steady_rollout_whose_status_is_right_makes_no_request() {
    let (rollout, observed) = steady_canary();
    let plan = stepwise_core::plan(&rollout, &observed, &now());
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    let writes = act(&context(client), &rollout, &plan, &now()).await.expect("nothing fails");
    assert_eq!((writes, sent.lock().unwrap().len()), (0, 0));
}

/// A Rollout due a restart (spec.restartAt has passed and was not carried out).
fn restarting(selector: &str, workload: &str) -> Rollout {
    serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app, namespace: ns, uid: u-1, resourceVersion: '41', generation: 1}}\nspec:\n  replicas: 2\n  restartAt: '2020-01-01T00:00:00Z'\n{selector}{workload}  strategy: {{canary: {{}}}}\n"
    ))
    .unwrap()
}

async fn reconciled(ctx: Context, rollout: Rollout) {
    let guard = Arc::new(kube::core::DeserializeGuard(Ok(rollout)));
    let _ = reconcile(guard, Arc::new(ctx)).await;
}

fn pod_lists(sent: &Mutex<Vec<Sent>>) -> Vec<String> {
    sent.lock().unwrap().iter().filter(|s| s.path.ends_with("/pods")).map(|s| s.query.clone()).collect()
}

#[tokio::test]
async fn a_workload_ref_rollout_without_a_selector_lists_no_pods_until_its_deployment_is_seen() {
    let rollout = restarting("", "  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n");
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    reconciled(context(client), rollout).await;
    assert_eq!(pod_lists(&sent), Vec::<String>::new(), "an empty selector would list every pod of the namespace");
    assert!(!sent.lock().unwrap().is_empty(), "the reconcile ran (it reports the missing Deployment)");
}

#[tokio::test]
async fn a_restart_lists_the_pods_of_the_deployments_selector_with_its_expressions() {
    let rollout = restarting("", "  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n");
    let deployment: Deployment = serde_yaml::from_str(
        "metadata: {name: web, namespace: ns}\nspec:\n  selector:\n    matchLabels: {app: web}\n    matchExpressions: [{key: tier, operator: In, values: [a, b]}]\n  template:\n    metadata: {labels: {app: web, tier: a}}\n    spec: {containers: [{name: app, image: 'example.invalid/web:1'}]}\n",
    )
    .unwrap();
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    reconciled(context_with(client, vec![deployment]), rollout).await;
    assert_eq!(pod_lists(&sent), ["labelSelector=app=web,tier in (a,b),stepwise.dev/pod-template-hash"]);
}

#[tokio::test]
async fn a_restart_lists_the_pods_of_the_rollouts_own_selector() {
    let template = "  template:\n    metadata: {labels: {app: demo}}\n    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}\n";
    let rollout = restarting(
        "  selector: {matchLabels: {app: demo}, matchExpressions: [{key: legacy, operator: DoesNotExist}]}\n",
        template,
    );
    let (client, sent) = mocked_api(&rollout, Box::new(|_| None));
    reconciled(context(client), rollout).await;
    assert_eq!(pod_lists(&sent), ["labelSelector=app=demo,!legacy,stepwise.dev/pod-template-hash"]);
}
