//! What `history` prints, from fixture objects: each revision with its images, its change-cause
//! and when it was the stable version, as the controller recorded it on the ReplicaSets.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kubectl_stepwise::{RolloutTree, render};
use stepwise_api::Rollout;

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap()
}

/// A canary whose stable version is `stable` and whose newest is `current`; aborted or not.
fn canary(stable: &str, current: &str, aborted: bool) -> Rollout {
    yaml(&format!(
        r#"
metadata: {{name: app, namespace: shop, uid: r1}}
spec:
  selector: {{matchLabels: {{app: demo}}}}
  strategy: {{canary: {{steps: [{{setWeight: 25}}, {{pause: {{}}}}]}}}}
status: {{stableRS: {stable}, currentPodHash: {current}, abort: {aborted}}}
"#
    ))
}

/// A ReplicaSet of revision `revision` running `image` in container `app`, with the
/// annotations given as `key: value` YAML (empty for none besides the revision).
fn replica_set(hash: &str, revision: i64, image: &str, annotations: &str) -> ReplicaSet {
    let extra = if annotations.is_empty() { String::new() } else { format!(", {annotations}") };
    yaml(&format!(
        r#"
metadata:
  name: app-{hash}
  labels: {{app: demo, stepwise.dev/pod-template-hash: {hash}}}
  annotations: {{stepwise.dev/revision: "{revision}"{extra}}}
spec:
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo, stepwise.dev/pod-template-hash: {hash}}}}}
    spec: {{containers: [{{name: app, image: "{image}"}}]}}
"#
    ))
}

fn tree(rollout: Rollout, replica_sets: Vec<ReplicaSet>) -> RolloutTree {
    RolloutTree { rollout, replica_sets, ..Default::default() }
}

/// demo:1 stable from 11:00 to 11:30, demo:2 stable since, demo:3 the canary being rolled out.
fn three_revisions() -> RolloutTree {
    tree(
        canary("bbb", "ccc", false),
        vec![
            replica_set(
                "ccc",
                3,
                "example.invalid/demo:3",
                r#"kubernetes.io/change-cause: "deploy demo:3 (commit 3f2a)""#,
            ),
            replica_set(
                "aaa",
                1,
                "example.invalid/demo:1",
                r#"kubernetes.io/change-cause: first release, stepwise.dev/stable-since: "2026-01-01T11:00:04.123456Z", stepwise.dev/stable-until: "2026-01-01T11:30:00Z""#,
            ),
            replica_set("bbb", 2, "example.invalid/demo:2", r#"stepwise.dev/stable-since: "2026-01-01T11:30:00Z""#),
        ],
    )
}

#[test]
fn history_lists_each_revision_oldest_first_with_its_images_change_cause_and_when_it_was_stable() {
    assert_eq!(
        render::history(&three_revisions()),
        "\
REVISION   STATUS   STABLE-FROM            STABLE-UNTIL           IMAGES                       CHANGE-CAUSE
1          -        2026-01-01T11:00:04Z   2026-01-01T11:30:00Z   app=example.invalid/demo:1   first release
2          stable   2026-01-01T11:30:00Z   -                      app=example.invalid/demo:2   <none>
3          canary   -                      -                      app=example.invalid/demo:3   deploy demo:3 (commit 3f2a)
"
    );
}

#[test]
fn a_version_stable_again_after_an_undo_is_its_newest_revision_and_ended_the_time_of_the_one_before() {
    // demo:1 went back to after demo:2: its ReplicaSet is revision 3 and recorded anew.
    let undone = tree(
        canary("aaa", "aaa", false),
        vec![
            replica_set("aaa", 3, "example.invalid/demo:1", r#"stepwise.dev/stable-since: "2026-01-01T12:00:00Z""#),
            replica_set(
                "bbb",
                2,
                "example.invalid/demo:2",
                r#"stepwise.dev/stable-since: "2026-01-01T11:30:00Z", stepwise.dev/stable-until: "2026-01-01T12:00:00Z""#,
            ),
        ],
    );
    let text = render::history(&undone);
    assert!(text.contains("\n2          -        2026-01-01T11:30:00Z   2026-01-01T12:00:00Z   "), "{text}");
    assert!(text.contains("\n3          stable   2026-01-01T12:00:00Z   -                      "), "{text}");
}

#[test]
fn an_aborted_update_is_marked_and_a_revision_never_stable_shows_no_times() {
    let aborted = tree(
        canary("aaa", "bbb", true),
        vec![
            replica_set("aaa", 1, "example.invalid/demo:1", r#"stepwise.dev/stable-since: "2026-01-01T11:00:00Z""#),
            replica_set("bbb", 2, "example.invalid/demo:2", ""),
        ],
    );
    let revisions = render::revisions(&aborted);
    assert_eq!(revisions[1].status, vec!["canary", "aborted"]);
    assert_eq!((revisions[1].stable_from, revisions[1].stable_until), (None, None));
    assert!(render::history(&aborted).contains("\n2          canary,aborted   -   "), "{}", render::history(&aborted));
}

#[test]
fn a_time_that_was_not_recorded_is_unknown_not_left_out() {
    // Revision 1's end was not recorded (the write failed); revision 2 was stable before the
    // controller recorded these times; revision 3, stable again, has only its earlier time on
    // record.
    let mut unrecorded = tree(
        canary("bbb", "bbb", false),
        vec![
            replica_set("aaa", 1, "example.invalid/demo:1", r#"stepwise.dev/stable-since: "2026-01-01T11:00:00Z""#),
            replica_set("bbb", 2, "example.invalid/demo:2", ""),
        ],
    );
    let text = render::history(&unrecorded);
    assert!(text.contains("\n1          -        2026-01-01T11:00:00Z   <unknown>      "), "{text}");
    assert!(text.contains("\n2          stable   <unknown>              -              "), "{text}");
    unrecorded.rollout = canary("ccc", "ccc", false);
    unrecorded.replica_sets.push(replica_set(
        "ccc",
        3,
        "example.invalid/demo:3",
        r#"stepwise.dev/stable-since: "2026-01-01T10:00:00Z", stepwise.dev/stable-until: "2026-01-01T10:30:00Z""#,
    ));
    let text = render::history(&unrecorded);
    assert!(text.contains("\n3          stable   <unknown>              -              "), "{text}");
}

#[test]
fn a_blue_green_revision_shows_whether_the_active_or_the_preview_service_selects_it() {
    let mut ro: Rollout = yaml(
        r#"
metadata: {name: app, namespace: shop}
spec:
  strategy: {blueGreen: {activeService: app-active, previewService: app-preview}}
status:
  stableRS: aaa
  currentPodHash: bbb
  blueGreen: {activeSelector: aaa, previewSelector: bbb}
"#,
    );
    let replica_sets = vec![
        replica_set("aaa", 1, "example.invalid/demo:1", r#"stepwise.dev/stable-since: "2026-01-01T11:00:00Z""#),
        replica_set("bbb", 2, "example.invalid/demo:2", ""),
    ];
    let statuses = |ro: &Rollout| -> Vec<Vec<&'static str>> {
        render::revisions(&tree(ro.clone(), replica_sets.clone())).into_iter().map(|r| r.status).collect()
    };
    assert_eq!(statuses(&ro), vec![vec!["active", "stable"], vec!["preview"]]);
    ro.status.as_mut().unwrap().stable_rs = Some("bbb".into());
    ro.status.as_mut().unwrap().blue_green = Some(yaml("{activeSelector: bbb, previewSelector: bbb}"));
    assert_eq!(statuses(&ro), vec![vec![], vec!["active", "stable"]], "promoted");
}

#[test]
fn a_rollout_without_replica_sets_says_it_has_no_revisions_yet() {
    assert_eq!(
        render::history(&tree(canary("aaa", "aaa", false), vec![])),
        "rollout \"app\" has no revisions yet (the controller has made no ReplicaSet)\n"
    );
}

#[test]
fn a_revision_in_detail_is_what_the_table_says_of_it_then_its_pod_template_without_role_metadata() {
    let mut t = three_revisions();
    // The canary's pods carry canaryMetadata, which stepwise put there for the role, not the
    // version: the template shown is the one the Rollout had.
    let canary = t.replica_sets.iter_mut().find(|rs| rs.metadata.name.as_deref() == Some("app-ccc")).unwrap();
    canary.annotations_mut().insert("stepwise.dev/role-metadata".into(), r#"{"labels":{"role":"canary"}}"#.into());
    let template = canary.spec.as_mut().unwrap().template.as_mut().unwrap();
    template.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert("role".into(), "canary".into());
    assert_eq!(
        render::revision_detail(&t, 3).unwrap(),
        "\
Rollout app with revision #3
ReplicaSet:   app-ccc
Status:       canary
Stable from:  -
Stable until: -
Change-cause: deploy demo:3 (commit 3f2a)
Pod Template:
  metadata:
    labels:
      app: demo
      stepwise.dev/pod-template-hash: ccc
  spec:
    containers:
    - image: example.invalid/demo:3
      name: app
"
    );
}

#[test]
fn an_unknown_revision_is_refused_naming_the_revisions_there_are() {
    assert_eq!(
        render::revision_detail(&three_revisions(), 7),
        Err("rollout \"app\" has no revision 7 (its revisions: 1, 2, 3)".into())
    );
    assert_eq!(
        render::revision_summary(&tree(canary("aaa", "aaa", false), vec![]), 1),
        Err("rollout \"app\" has no revision 1 (its revisions: none yet)".into())
    );
}

#[test]
fn the_history_for_scripts_holds_the_tables_facts_oldest_revision_first() {
    let summary = render::history_summary(&three_revisions());
    assert_eq!(summary["name"], "app");
    assert_eq!(
        summary["revisions"][0],
        serde_json::json!({
            "revision": 1,
            "podTemplateHash": "aaa",
            "replicaSet": "app-aaa",
            "status": [],
            "images": [{"container": "app", "image": "example.invalid/demo:1"}],
            "changeCause": "first release",
            "stableFrom": "2026-01-01T11:00:04Z",
            "stableUntil": "2026-01-01T11:30:00Z",
        })
    );
    assert_eq!(summary["revisions"][2]["status"], serde_json::json!(["canary"]));
    assert_eq!(summary["revisions"][2]["stableFrom"], serde_json::Value::Null);
    let detail = render::revision_summary(&three_revisions(), 2).unwrap();
    assert_eq!(detail["status"], serde_json::json!(["stable"]));
    assert_eq!(detail["template"]["spec"]["containers"][0]["image"], "example.invalid/demo:2");
}
