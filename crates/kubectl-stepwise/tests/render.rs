//! What `get rollout` and `list rollouts` print, from fixture objects. The expected text is the
//! snapshot: a change of output shows here as a diff a reviewer reads.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kubectl_stepwise::{RolloutTree, render};
use stepwise_api::{AnalysisRun, Rollout};

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap()
}

/// A canary at its first pause, the image changed from demo:1 to demo:2.
fn paused_canary() -> Rollout {
    yaml(
        r#"
apiVersion: stepwise.dev/v1alpha1
kind: Rollout
metadata: {name: app, namespace: shop, uid: r1, generation: 2, creationTimestamp: "2026-01-01T11:00:00Z"}
spec:
  replicas: 4
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec: {containers: [{name: app, image: "example.invalid/demo:2"}]}
  strategy:
    canary:
      steps: [{setWeight: 25}, {pause: {}}, {analysis: {templates: [{templateName: ok}]}}, {setWeight: 50}]
status:
  phase: Paused
  message: "Paused at step 2/4: pause, waiting for promote"
  observedGeneration: 2
  currentStepIndex: 1
  pauseConditions: [{reason: CanaryPauseStep, startTime: "2026-01-01T11:58:00Z"}]
  stableRS: aaa
  currentPodHash: bbb
  replicas: 4
  updatedReplicas: 1
  readyReplicas: 4
  availableReplicas: 4
"#,
    )
}

fn replica_set(hash: &str, revision: i64, image: &str, replicas: i32, created: &str) -> ReplicaSet {
    yaml(&format!(
        r#"
metadata:
  name: app-{hash}
  uid: rs-{hash}
  creationTimestamp: "{created}"
  labels: {{app: demo, stepwise.dev/pod-template-hash: {hash}}}
  annotations: {{stepwise.dev/revision: "{revision}"}}
  ownerReferences: [{{apiVersion: stepwise.dev/v1alpha1, kind: Rollout, name: app, uid: r1, controller: true}}]
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo, stepwise.dev/pod-template-hash: {hash}}}}}
    spec: {{containers: [{{name: app, image: "{image}"}}]}}
status: {{replicas: {replicas}, readyReplicas: {replicas}, availableReplicas: {replicas}}}
"#
    ))
}

fn pod(name: &str, hash: &str, ready: bool) -> Pod {
    yaml(&format!(
        r#"
metadata:
  name: {name}
  creationTimestamp: "2026-01-01T11:59:15Z"
  labels: {{stepwise.dev/pod-template-hash: {hash}}}
status:
  phase: Running
  conditions: [{{type: Ready, status: "{}"}}]
"#,
        if ready { "True" } else { "False" }
    ))
}

#[test]
fn the_tree_shows_the_state_then_each_revision_newest_first_with_its_pods_and_analysis() {
    let run: AnalysisRun = yaml(
        r#"
metadata:
  name: app-bbb-2-1
  labels: {stepwise.dev/pod-template-hash: bbb, stepwise.dev/analysis-kind: Step}
spec: {metrics: [{name: success-rate, provider: {web: {url: "http://127.0.0.1:1/"}}}]}
status:
  phase: Running
  metricResults:
  - {name: success-rate, phase: Running, count: 2, failed: 0, measurements: [{phase: Successful, value: "0.97"}, {phase: Successful, value: "0.99"}]}
"#,
    );
    let tree = RolloutTree {
        rollout: paused_canary(),
        replica_sets: vec![
            replica_set("aaa", 1, "example.invalid/demo:1", 3, "2026-01-01T11:00:00Z"),
            replica_set("bbb", 2, "example.invalid/demo:2", 1, "2026-01-01T11:59:00Z"),
        ],
        pods: vec![
            pod("app-aaa-2", "aaa", true),
            pod("app-aaa-1", "aaa", true),
            pod("app-aaa-3", "aaa", false),
            pod("app-bbb-1", "bbb", true),
        ],
        analysis_runs: vec![run],
    };
    assert_eq!(
        render::tree(&tree, now()),
        "\
Name:      app
Namespace: shop
Phase:     Paused
Message:   Paused at step 2/4: pause, waiting for promote
Strategy:  Canary
Step:      2/4
Weight:    canary 25, stable 75 (by pod count)
Replicas:  desired 4, current 4, updated 1, ready 4, available 4

Rollout app
├── revision 2 (canary)  example.invalid/demo:2
│   ├── ReplicaSet app-bbb  1 desired, 1 ready, 1 available  60s
│   │   └── Pod app-bbb-1  Running, ready  45s
│   └── AnalysisRun app-bbb-2-1  Running  [success-rate Running (2 measured, 0 failed, last 0.99)]
└── revision 1 (stable)  example.invalid/demo:1
    └── ReplicaSet app-aaa  3 desired, 3 ready, 3 available  60m
        ├── Pod app-aaa-1  Running, ready  45s
        ├── Pod app-aaa-2  Running, ready  45s
        └── Pod app-aaa-3  Running, not ready  45s
"
    );
}

#[test]
fn a_router_s_weights_are_shown_as_set_and_whether_they_were_verified() {
    let mut ro = paused_canary();
    let status = ro.status.as_mut().unwrap();
    status.canary = Some(yaml("weights: {canary: {weight: 30}, stable: {weight: 70}, verified: true}"));
    let text = render::tree(&RolloutTree { rollout: ro, ..Default::default() }, now());
    assert!(text.contains("Weights:   canary 30, stable 70, verified\n"), "{text}");
    assert!(text.ends_with("Rollout app\n└── (no ReplicaSets yet)\n"), "{text}");
}

#[test]
fn the_last_notifications_and_those_still_due_follow_the_tree() {
    let mut ro = paused_canary();
    ro.status.as_mut().unwrap().notifications = Some(yaml(
        r#"
delivered:
- {key: "2/on-rollout-updated/0/ci/", trigger: on-rollout-updated, service: ci, time: "2026-01-01T11:58:00Z", sent: true, attempts: 1}
- {key: "2/on-rollout-step-completed/0/slack/ops", trigger: on-rollout-step-completed, service: slack, recipient: ops, time: "2026-01-01T11:59:00Z", sent: false, attempts: 8, error: "slack: channel_not_found"}
pending:
- {key: "2/on-rollout-paused/1/ci/", trigger: on-rollout-paused, service: ci, revision: 2, step: 1, message: paused, dueSince: "2026-01-01T11:59:30Z", attempts: 2, nextAttempt: "2026-01-01T12:00:08Z", lastError: "service.webhook.ci: HTTP 503"}
"#,
    ));
    let text = render::tree(&RolloutTree { rollout: ro, ..Default::default() }, now());
    let expected = "\
Notifications:
  sent      on-rollout-updated          ci          2m ago
  failed    on-rollout-step-completed   slack/ops   60s ago after 8 attempts   slack: channel_not_found
  pending   on-rollout-paused           ci          attempt 3 in 8s            service.webhook.ci: HTTP 503
";
    assert!(text.ends_with(expected), "{text}");
}

#[test]
fn a_healthy_canary_sends_everything_to_stable() {
    let mut ro = paused_canary();
    let status = ro.status.as_mut().unwrap();
    status.phase = Some(stepwise_api::RolloutPhase::Healthy);
    status.current_step_index = Some(4);
    status.pause_conditions.clear();
    let text = render::tree(&RolloutTree { rollout: ro, ..Default::default() }, now());
    assert!(text.contains("Step:      4/4\nWeight:    stable 100\n"), "{text}");
}

#[test]
fn list_shows_one_aligned_line_per_rollout_and_the_namespace_with_all_namespaces() {
    let paused = paused_canary();
    let blue_green: Rollout = yaml(
        r#"
metadata: {name: checkout-service, namespace: payments, creationTimestamp: "2025-12-29T12:00:00Z"}
spec:
  strategy: {blueGreen: {activeService: checkout-active}}
status: {phase: Healthy}
"#,
    );
    let never_seen: Rollout = yaml(
        r#"
metadata: {name: new, namespace: shop, creationTimestamp: "2026-01-01T11:59:30Z"}
spec:
  strategy: {canary: {}}
"#,
    );
    let rollouts = [paused, blue_green, never_seen];
    assert_eq!(
        render::list(&rollouts, false, now()),
        "\
NAME               STRATEGY    PHASE     STEP   WEIGHT   AGE
app                Canary      Paused    2/4    25       60m
checkout-service   BlueGreen   Healthy   -      -        3d
new                Canary      -         -      100      30s
"
    );
    assert_eq!(
        render::list(&rollouts[..1], true, now()),
        "\
NAMESPACE   NAME   STRATEGY   PHASE    STEP   WEIGHT   AGE
shop        app    Canary     Paused   2/4    25       60m
"
    );
}

#[test]
fn ages_use_the_largest_unit_as_kubectl_does() {
    let at = |s: &str| Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().unwrap()));
    assert_eq!(render::age(at("2026-01-01T11:59:59Z").as_ref(), now()), "1s");
    assert_eq!(render::age(at("2026-01-01T11:58:01Z").as_ref(), now()), "119s");
    assert_eq!(render::age(at("2026-01-01T10:00:01Z").as_ref(), now()), "119m");
    assert_eq!(render::age(at("2025-12-31T00:00:00Z").as_ref(), now()), "36h");
    assert_eq!(render::age(None, now()), "<unknown>");
}

#[test]
fn the_summary_for_scripts_holds_the_tree_s_facts_newest_revision_first() {
    let tree = RolloutTree {
        rollout: paused_canary(),
        replica_sets: vec![
            replica_set("aaa", 1, "example.invalid/demo:1", 3, "2026-01-01T11:00:00Z"),
            replica_set("bbb", 2, "example.invalid/demo:2", 1, "2026-01-01T11:59:00Z"),
        ],
        pods: vec![pod("app-bbb-1", "bbb", true)],
        analysis_runs: vec![],
    };
    let summary = render::summary(&tree);
    assert_eq!(summary["phase"], "Paused");
    assert_eq!(summary["step"], serde_json::json!({"current": 2, "total": 4}));
    assert_eq!(summary["canaryWeight"], 25);
    assert_eq!(summary["revisions"][0]["revision"], 2);
    assert_eq!(summary["revisions"][0]["roles"], serde_json::json!(["canary"]));
    assert_eq!(
        summary["revisions"][0]["pods"],
        serde_json::json!([{"name": "app-bbb-1", "phase": "Running", "ready": true, "terminating": false}])
    );
    assert_eq!(summary["revisions"][1]["replicaSet"]["desired"], 3);
}
