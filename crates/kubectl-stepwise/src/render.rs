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
    let secs = now.as_second().saturating_sub(created.0.as_second()).max(0);
    match secs {
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
    out
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
    })
}
