//! What `get rollout` and `list rollouts` print. Times are rendered relative to a `now` passed in,
//! so that the output of a fixture is the same on every run.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use stepwise_api::operations::revision_of;
use stepwise_api::{AnalysisRun, POD_TEMPLATE_HASH_LABEL, Rollout};

use crate::RolloutTree;
use crate::decide::step;

/// Age as kubectl shows it: the largest unit only, `45s`, `12m`, `5h`, `3d`.
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(created) = created else { return "<unknown>".into() };
    seconds_text(now.as_second().saturating_sub(created.0.as_second()))
}

/// A span of seconds as kubectl writes ages: in the largest unit that keeps two of it.
fn seconds_text(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The canary's traffic weight: as the router last set it, or, for a basic canary, the weight of
/// the last setWeight step reached (100 once every step is done). None for blue-green.
pub fn weight(ro: &Rollout) -> Option<i32> {
    let status = ro.status.clone().unwrap_or_default();
    if let Some(weights) = status.canary.as_ref().and_then(|c| c.weights.as_ref()) {
        return Some(weights.canary.weight);
    }
    let canary = ro.spec.strategy.canary.as_ref()?;
    let steps = canary.steps.clone().unwrap_or_default();
    let index = status.current_step_index.unwrap_or(0) as usize;
    if status.abort == Some(true) {
        return Some(0);
    }
    if index >= steps.len() {
        return Some(100);
    }
    Some(steps[..=index].iter().rev().find_map(|s| s.set_weight).unwrap_or(0))
}

fn strategy(ro: &Rollout) -> &'static str {
    if ro.spec.strategy.blue_green.is_some() { "BlueGreen" } else { "Canary" }
}

fn phase(ro: &Rollout) -> String {
    ro.status.as_ref().and_then(|s| s.phase).map(|p| p.to_string()).unwrap_or_else(|| "-".into())
}

fn step_text(ro: &Rollout) -> String {
    step(ro).map(|(s, n)| format!("{s}/{n}")).unwrap_or_else(|| "-".into())
}

/// `list rollouts`: one line each, columns aligned; with `all_namespaces` the namespace first.
pub fn list(rollouts: &[Rollout], all_namespaces: bool, now: Timestamp) -> String {
    let mut rows = vec![];
    let mut header = vec!["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for ro in rollouts {
        let mut row = vec![
            ro.name_any(),
            strategy(ro).to_string(),
            phase(ro),
            step_text(ro),
            weight(ro).map(|w| w.to_string()).unwrap_or_else(|| "-".into()),
            age(ro.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, ro.namespace().unwrap_or_default());
        }
        rows.push(row);
    }
    table(&rows)
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn hash_of(labels: &BTreeMap<String, String>) -> &str {
    labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str).unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The roles a pod template hash plays in the rollout: stable, canary, active, preview.
fn roles(ro: &Rollout, hash: &str) -> Vec<&'static str> {
    let status = ro.status.clone().unwrap_or_default();
    let is = |h: &Option<String>| h.as_deref() == Some(hash);
    let mut roles = vec![];
    if let Some(bg) = &status.blue_green {
        if is(&bg.active_selector) {
            roles.push("active");
        }
        if is(&bg.preview_selector) && !is(&bg.active_selector) {
            roles.push("preview");
        }
    }
    if is(&status.stable_rs) {
        roles.push("stable");
    } else if is(&status.current_pod_hash) && ro.spec.strategy.canary.is_some() {
        roles.push("canary");
    }
    roles
}

fn images(rs: &ReplicaSet) -> Vec<String> {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.iter().filter_map(|c| c.image.clone()).collect())
        .unwrap_or_default()
}

fn analysis_line(run: &AnalysisRun) -> String {
    let status = run.status.clone().unwrap_or_default();
    let mut line = format!("AnalysisRun {}  {}", run.name_any(), status.phase.unwrap_or_default());
    let metrics: Vec<String> = status
        .metric_results
        .iter()
        .map(|m| {
            let last = m.measurements.last().and_then(|x| x.value.clone());
            let last = last.map(|v| format!(", last {v}")).unwrap_or_default();
            format!("{} {} ({} measured, {} failed{last})", m.name, m.phase, m.count, m.failed)
        })
        .collect();
    if !metrics.is_empty() {
        line.push_str(&format!("  [{}]", metrics.join("; ")));
    }
    line
}

/// `get rollout`: a summary of the Rollout, then a tree of its revisions, each with its
/// ReplicaSet, that ReplicaSet's pods, and the AnalysisRuns of that revision.
pub fn tree(t: &RolloutTree, now: Timestamp) -> String {
    let ro = &t.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<11}{v}\n", format!("{k}:")));
    field("Name", ro.name_any());
    field("Namespace", ro.namespace().unwrap_or_default());
    field("Phase", phase(ro));
    field("Message", status.message.clone().unwrap_or_else(|| "-".into()));
    field("Strategy", strategy(ro).to_string());
    if let Some((s, n)) = step(ro) {
        field("Step", format!("{s}/{n}"));
    }
    if let Some(weights) = status.canary.as_ref().and_then(|c| c.weights.as_ref()) {
        let verified = match weights.verified {
            Some(true) => ", verified",
            Some(false) => ", not verified",
            None => "",
        };
        field("Weights", format!("canary {}, stable {}{verified}", weights.canary.weight, weights.stable.weight));
    } else if status.phase == Some(stepwise_api::RolloutPhase::Healthy) && ro.spec.strategy.canary.is_some() {
        field("Weight", "stable 100".into());
    } else if let Some(w) = weight(ro) {
        field("Weight", format!("canary {w}, stable {} (by pod count)", 100 - w));
    }
    let n = |x: Option<i32>| x.unwrap_or(0);
    field(
        "Replicas",
        format!(
            "desired {}, current {}, updated {}, ready {}, available {}",
            ro.spec.replicas.unwrap_or(stepwise_api::DEFAULT_REPLICAS),
            n(status.replicas),
            n(status.updated_replicas),
            n(status.ready_replicas),
            n(status.available_replicas)
        ),
    );
    out.push('\n');

    let mut replica_sets: Vec<&ReplicaSet> = t.replica_sets.iter().collect();
    replica_sets.sort_by_key(|rs| std::cmp::Reverse(revision_of(rs.annotations())));
    out.push_str(&format!("Rollout {}\n", ro.name_any()));
    for (i, rs) in replica_sets.iter().enumerate() {
        let last_rs = i + 1 == replica_sets.len();
        let (branch, indent) = if last_rs { ("└── ", "    ") } else { ("├── ", "│   ") };
        let hash = hash_of(rs.labels());
        let roles = roles(ro, hash);
        let roles = if roles.is_empty() { String::new() } else { format!(" ({})", roles.join(", ")) };
        out.push_str(&format!(
            "{branch}revision {}{roles}  {}\n",
            revision_of(rs.annotations()),
            images(rs).join(", ")
        ));

        let mut pods: Vec<&Pod> = t.pods.iter().filter(|p| hash_of(p.labels()) == hash).collect();
        pods.sort_by_key(|p| p.name_any());
        let mut runs: Vec<&AnalysisRun> = t.analysis_runs.iter().filter(|r| hash_of(r.labels()) == hash).collect();
        runs.sort_by_key(|r| r.name_any());

        let rs_status = rs.status.clone().unwrap_or_default();
        let children = 1 + runs.len();
        let rs_branch = if children == 1 { "└── " } else { "├── " };
        let rs_indent = if children == 1 { "    " } else { "│   " };
        out.push_str(&format!(
            "{indent}{rs_branch}ReplicaSet {}  {} desired, {} ready, {} available  {}\n",
            rs.name_any(),
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            n(rs_status.ready_replicas),
            n(rs_status.available_replicas),
            age(rs.metadata.creation_timestamp.as_ref(), now)
        ));
        for (j, pod) in pods.iter().enumerate() {
            let pod_branch = if j + 1 == pods.len() { "└── " } else { "├── " };
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
            let state = if pod.metadata.deletion_timestamp.is_some() {
                "Terminating".to_string()
            } else if pod_ready(pod) {
                format!("{phase}, ready")
            } else {
                format!("{phase}, not ready")
            };
            out.push_str(&format!(
                "{indent}{rs_indent}{pod_branch}Pod {}  {state}  {}\n",
                pod.name_any(),
                age(pod.metadata.creation_timestamp.as_ref(), now)
            ));
        }
        for (j, run) in runs.iter().enumerate() {
            let run_branch = if j + 1 == runs.len() { "└── " } else { "├── " };
            out.push_str(&format!("{indent}{run_branch}{}\n", analysis_line(run)));
        }
    }
    if replica_sets.is_empty() {
        out.push_str("└── (no ReplicaSets yet)\n");
    }
    if let Some(outbox) = &status.notifications {
        out.push_str(&notifications(outbox, now));
    }
    out
}

/// The notifications of the outbox: the last deliveries, oldest first, then those still due.
fn notifications(outbox: &stepwise_api::notifications::NotificationsStatus, now: Timestamp) -> String {
    let destination = |service: &str, recipient: &str| {
        if recipient.is_empty() { service.to_string() } else { format!("{service}/{recipient}") }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in &outbox.delivered {
        let (state, why) = match (d.sent, &d.skipped) {
            (true, _) => ("sent", String::new()),
            (false, Some(why)) => ("skipped", why.clone()),
            (false, None) => ("failed", d.error.clone().unwrap_or_default()),
        };
        let tries = if d.attempts > 1 { format!(" after {} attempts", d.attempts) } else { String::new() };
        let when = format!("{} ago{tries}", age(Some(&d.time), now));
        rows.push(vec![state.into(), d.trigger.clone(), destination(&d.service, &d.recipient), when, why]);
    }
    for p in &outbox.pending {
        let when = match &p.next_attempt {
            Some(next) => format!("attempt {} in {}", p.attempts + 1, until(next, now)),
            None => format!("due {} ago", age(Some(&p.due_since), now)),
        };
        let why = p.last_error.clone().unwrap_or_default();
        rows.push(vec!["pending".into(), p.trigger.clone(), destination(&p.service, &p.recipient), when, why]);
    }
    if rows.is_empty() {
        return String::new();
    }
    let lines: String = table(&rows).lines().map(|l| format!("  {}\n", l.trim_end())).collect();
    format!("\nNotifications:\n{lines}")
}

/// How long until `t`, as `age` says it; `0s` when it has passed.
fn until(t: &Time, now: Timestamp) -> String {
    seconds_text(t.0.as_second().saturating_sub(now.as_second()))
}

/// `get rollout -o json|yaml`: the tree's facts as data for scripts, without the objects' noise
/// (managed fields, full specs); `kubectl get -o yaml` has the objects themselves.
pub fn summary(t: &RolloutTree) -> serde_json::Value {
    let ro = &t.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let mut replica_sets: Vec<&ReplicaSet> = t.replica_sets.iter().collect();
    replica_sets.sort_by_key(|rs| std::cmp::Reverse(revision_of(rs.annotations())));
    let revisions: Vec<serde_json::Value> = replica_sets
        .iter()
        .map(|rs| {
            let hash = hash_of(rs.labels());
            let rs_status = rs.status.clone().unwrap_or_default();
            let mut pods: Vec<&Pod> = t.pods.iter().filter(|p| hash_of(p.labels()) == hash).collect();
            pods.sort_by_key(|p| p.name_any());
            let mut runs: Vec<&AnalysisRun> = t.analysis_runs.iter().filter(|r| hash_of(r.labels()) == hash).collect();
            runs.sort_by_key(|r| r.name_any());
            serde_json::json!({
                "revision": revision_of(rs.annotations()),
                "podTemplateHash": hash,
                "roles": roles(ro, hash),
                "images": images(rs),
                "replicaSet": {
                    "name": rs.name_any(),
                    "desired": rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                    "ready": rs_status.ready_replicas.unwrap_or(0),
                    "available": rs_status.available_replicas.unwrap_or(0),
                },
                "pods": pods.iter().map(|p| serde_json::json!({
                    "name": p.name_any(),
                    "phase": p.status.as_ref().and_then(|s| s.phase.clone()),
                    "ready": pod_ready(p),
                    "terminating": p.metadata.deletion_timestamp.is_some(),
                })).collect::<Vec<_>>(),
                "analysisRuns": runs.iter().map(|r| {
                    let s = r.status.clone().unwrap_or_default();
                    serde_json::json!({"name": r.name_any(), "phase": s.phase.unwrap_or_default(), "message": s.message})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "name": ro.name_any(),
        "namespace": ro.namespace(),
        "phase": status.phase,
        "message": status.message,
        "strategy": strategy(ro),
        "step": step(ro).map(|(current, total)| serde_json::json!({"current": current, "total": total})),
        "canaryWeight": weight(ro),
        "weights": status.canary.as_ref().and_then(|c| c.weights.clone()),
        "aborted": status.abort == Some(true),
        "replicas": {
            "desired": ro.spec.replicas.unwrap_or(stepwise_api::DEFAULT_REPLICAS),
            "current": status.replicas.unwrap_or(0),
            "updated": status.updated_replicas.unwrap_or(0),
            "ready": status.ready_replicas.unwrap_or(0),
            "available": status.available_replicas.unwrap_or(0),
        },
        "revisions": revisions,
        "notifications": status.notifications,
    })
}

/// One revision as `history` shows it: what it ran, why, and when it was the stable version.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// The revision number.
    pub revision: i64,
    /// The pod template hash of its version.
    pub hash: String,
    /// Its ReplicaSet.
    pub replica_set: String,
    /// (container, image) of each container, in the template's order.
    pub images: Vec<(String, String)>,
    /// The `kubernetes.io/change-cause` the Rollout had when the revision's ReplicaSet was made.
    pub change_cause: Option<String>,
    /// Its roles now: stable, canary, active, preview, and aborted for an aborted update.
    pub status: Vec<&'static str>,
    /// When it last became the stable version, as the controller recorded on its ReplicaSet; None
    /// when it never was, or no record of it is left.
    pub stable_from: Option<Timestamp>,
    /// When it then stopped being the stable version, as recorded; None while it is.
    pub stable_until: Option<Timestamp>,
}

fn recorded_time(rs: &ReplicaSet, annotation: &str) -> Option<Timestamp> {
    rs.annotations().get(annotation).and_then(|t| t.parse().ok())
}

/// The revisions of a Rollout, oldest first, as `kubectl rollout history` lists a Deployment's.
pub fn revisions(t: &RolloutTree) -> Vec<Revision> {
    let ro = &t.rollout;
    let status = ro.status.clone().unwrap_or_default();
    let mut replica_sets: Vec<&ReplicaSet> = t.replica_sets.iter().collect();
    replica_sets.sort_by_key(|rs| revision_of(rs.annotations()));
    replica_sets
        .iter()
        .map(|rs| {
            let hash = hash_of(rs.labels()).to_string();
            let revision = revision_of(rs.annotations());
            let mut roles = roles(ro, &hash);
            if status.abort == Some(true) && status.current_pod_hash.as_deref() == Some(hash.as_str()) {
                roles.push("aborted");
            }
            let mut stable_from = recorded_time(rs, stepwise_core::objects::STABLE_SINCE_ANNOTATION);
            let mut stable_until = recorded_time(rs, stepwise_core::objects::STABLE_UNTIL_ANNOTATION);
            if status.stable_rs.as_deref() == Some(hash.as_str()) && stable_until.is_some() {
                // Stable again, and the start of this time was not recorded: what is recorded is
                // an earlier time, over.
                (stable_from, stable_until) = (None, None);
            }
            let containers = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers.clone())
                .unwrap_or_default();
            Revision {
                revision,
                hash,
                replica_set: rs.name_any(),
                images: containers.into_iter().map(|c| (c.name, c.image.unwrap_or_default())).collect(),
                change_cause: rs.annotations().get(stepwise_core::objects::CHANGE_CAUSE_ANNOTATION).cloned(),
                status: roles,
                stable_from,
                stable_until,
            }
        })
        .collect()
}

/// A time as `history` shows it: UTC, to the second.
fn instant(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| Timestamp::from_second(t.as_second()).unwrap_or(t).to_string())
}

/// The STABLE-FROM and STABLE-UNTIL cells: `-` where there is no such time (never stable, or
/// stable now), `<unknown>` where there is one that was not recorded (a version stable before the
/// controller recorded these times, or whose record failed).
fn stable_cells(r: &Revision) -> (String, String) {
    let stable_now = r.status.contains(&"stable");
    let unknown = || "<unknown>".to_string();
    let none = || "-".to_string();
    match (instant(r.stable_from), instant(r.stable_until)) {
        (Some(from), Some(until)) => (from, until),
        (Some(from), None) => (from, if stable_now { none() } else { unknown() }),
        (None, Some(until)) => (unknown(), until),
        (None, None) if stable_now => (unknown(), none()),
        (None, None) => (none(), none()),
    }
}

fn status_cell(r: &Revision) -> String {
    if r.status.is_empty() { "-".into() } else { r.status.join(",") }
}

fn images_cell(r: &Revision) -> String {
    r.images.iter().map(|(c, i)| format!("{c}={i}")).collect::<Vec<_>>().join(",")
}

/// `history`: one line per revision, oldest first: its roles now, when it was stable, its images
/// and its change-cause (`<none>` without one, as kubectl prints it).
pub fn history(t: &RolloutTree) -> String {
    let revisions = revisions(t);
    if revisions.is_empty() {
        return format!(
            "rollout {:?} has no revisions yet (the controller has made no ReplicaSet)\n",
            t.rollout.name_any()
        );
    }
    let mut rows = vec![
        ["REVISION", "STATUS", "STABLE-FROM", "STABLE-UNTIL", "IMAGES", "CHANGE-CAUSE"].map(String::from).to_vec(),
    ];
    for r in &revisions {
        let (from, until) = stable_cells(r);
        rows.push(vec![
            r.revision.to_string(),
            status_cell(r),
            from,
            until,
            images_cell(r),
            r.change_cause.clone().unwrap_or_else(|| "<none>".into()),
        ]);
    }
    table(&rows)
}

fn revision_json(r: &Revision) -> serde_json::Value {
    serde_json::json!({
        "revision": r.revision,
        "podTemplateHash": r.hash,
        "replicaSet": r.replica_set,
        "status": r.status,
        "images": r.images.iter().map(|(c, i)| serde_json::json!({"container": c, "image": i})).collect::<Vec<_>>(),
        "changeCause": r.change_cause,
        "stableFrom": instant(r.stable_from),
        "stableUntil": instant(r.stable_until),
    })
}

/// `history -o json|yaml`: the revisions as data, oldest first.
pub fn history_summary(t: &RolloutTree) -> serde_json::Value {
    serde_json::json!({
        "name": t.rollout.name_any(),
        "namespace": t.rollout.namespace(),
        "revisions": revisions(t).iter().map(revision_json).collect::<Vec<_>>(),
    })
}

/// The revision `revision` and its ReplicaSet, or why there is none.
fn find_revision(t: &RolloutTree, revision: i64) -> Result<(Revision, &ReplicaSet), String> {
    let all = revisions(t);
    let rs = t.replica_sets.iter().find(|rs| revision_of(rs.annotations()) == revision);
    match (all.iter().find(|r| r.revision == revision), rs) {
        (Some(r), Some(rs)) => Ok((r.clone(), rs)),
        _ => {
            let known: Vec<String> = all.iter().map(|r| r.revision.to_string()).collect();
            let known = if known.is_empty() { "none yet".to_string() } else { known.join(", ") };
            Err(format!("rollout {:?} has no revision {revision} (its revisions: {known})", t.rollout.name_any()))
        }
    }
}

/// The version's own pod template: its ReplicaSet's, without the role metadata stepwise put on
/// it (the hash label stays: it names the version).
fn version_template(rs: &ReplicaSet) -> k8s_openapi::api::core::v1::PodTemplateSpec {
    stepwise_core::objects::observe_replica_set(rs).template
}

/// `history --revision N`: what the table says of it, then its pod template, as
/// `kubectl rollout history --revision` prints a Deployment's.
pub fn revision_detail(t: &RolloutTree, revision: i64) -> Result<String, String> {
    let (r, rs) = find_revision(t, revision)?;
    let (from, until) = stable_cells(&r);
    let template = serde_yaml::to_string(&version_template(rs)).map_err(|e| e.to_string())?;
    let mut out = format!("Rollout {} with revision #{}\n", t.rollout.name_any(), r.revision);
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<14}{v}\n", format!("{k}:")));
    field("ReplicaSet", r.replica_set.clone());
    field("Status", status_cell(&r));
    field("Stable from", from);
    field("Stable until", until);
    field("Change-cause", r.change_cause.clone().unwrap_or_else(|| "<none>".into()));
    out.push_str("Pod Template:\n");
    for line in template.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(out)
}

/// `history --revision N -o json|yaml`: the revision as data, with its pod template.
pub fn revision_summary(t: &RolloutTree, revision: i64) -> Result<serde_json::Value, String> {
    let (r, rs) = find_revision(t, revision)?;
    let mut value = revision_json(&r);
    value["template"] = serde_json::to_value(version_template(rs)).map_err(|e| e.to_string())?;
    Ok(value)
}
