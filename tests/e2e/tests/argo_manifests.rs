//! Argo Rollouts' own manifests, from the examples and end-to-end tests of the Argo version the
//! parity test compares with (fetched by `tests/cluster/argo-crds.sh`), applied to the local API
//! server as an Argo user moving to stepwise would: `apiVersion` changed, nothing else. Every
//! Rollout, AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun must be accepted (a
//! server-side dry run with strict field validation, as `kubectl` sends it), except the few listed
//! below with the reason; a listed one that starts to apply fails the test too, so the list
//! cannot go stale.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::serde::Deserialize;
use serde_json::Value;
use stepwise_e2e::{Env, kubeconfig_path, kubectl_path, repo_root};

/// The kinds stepwise serves under the same names as Argo.
const KINDS: [&str; 4] = ["Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"];

/// Documents refused on purpose, by file (relative to the manifests directory) and the start of
/// the API server's message, with why.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "test/e2e/functional/albmesh-pingpong-stablecanary-rollout.yaml",
        "pingPong cannot be combined with canaryService or stableService",
        "ALB pingPong beside a mesh's canary and stable Services: Argo's one use of both, for its ALB router, which stepwise does not have (it needs AWS)",
    ),
    (
        "test/e2e/expectedfailures/analysis-run-prometheus-bad-server.yaml",
        "spec.metrics[0].provider.prometheus.query: Required value",
        "Argo's own test of a run that must fail: a Prometheus metric without a query, which stepwise's schema refuses at apply time instead of failing the run",
    ),
];

fn manifests_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("tests/cluster/argo-crds.sh")).output()?;
    anyhow::ensure!(out.status.success(), "argo-crds.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("manifests"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// A name the API server takes, for the placeholders of Argo's test templates (`REPLACEME`,
/// `step-plugin-e2e-$$name$$`), which its tests fill in before applying.
fn dns_name(name: &str) -> String {
    let cleaned: String =
        name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() { "argo".into() } else { trimmed.to_string() }
}

struct Outcome {
    file: String,
    kind: String,
    name: String,
    refusal: Option<String>,
}

fn dry_run_create(ns: &str, doc: &Value) -> anyhow::Result<Option<String>> {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["create", "--dry-run=server", "--validate=strict", "-o", "name", "-n", ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(doc)?)?;
    let out = child.wait_with_output()?;
    Ok((!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rollout_and_analysis_manifest_argo_ships_applies_with_only_its_api_version_changed() -> anyhow::Result<()>
{
    let dir = manifests_dir()?;
    let env = Env::without_controller("argo-manifests").await?;
    let mut files = Vec::new();
    yaml_files(&dir, &mut files)?;
    files.sort();
    let mut outcomes = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for path in &files {
        let relative = path.strip_prefix(&dir)?.to_string_lossy().to_string();
        let text = std::fs::read_to_string(path)?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            // Helm chart templates among the examples, and one manifest with an unquoted template
            // argument, are not YAML until filled in.
            let Ok(mut doc) = Value::deserialize(document) else {
                *skipped.entry("not YAML as shipped: a template to fill in first".into()).or_default() += 1;
                break;
            };
            let argo = doc["apiVersion"].as_str().is_some_and(|v| v.starts_with("argoproj.io/"));
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if !argo {
                continue;
            }
            if !KINDS.contains(&kind.as_str()) {
                *skipped.entry(format!("kind {kind}: stepwise has no such resource")).or_default() += 1;
                continue;
            }
            doc["apiVersion"] = Value::from("stepwise.dev/v1alpha1");
            let meta = doc["metadata"].as_object_mut().expect("metadata");
            // Argo's manifests name their own namespaces; the test applies them in its own.
            meta.remove("namespace");
            let name = meta.get("name").and_then(Value::as_str).map(dns_name);
            if let Some(name) = &name {
                meta.insert("name".into(), Value::from(name.clone()));
            }
            let refusal = dry_run_create(&env.ns, &doc)?;
            outcomes.push(Outcome {
                file: relative.clone(),
                kind,
                name: name.or_else(|| meta_generate_name(&doc)).unwrap_or_default(),
                refusal,
            });
        }
    }
    let applied = outcomes.iter().filter(|o| o.refusal.is_none()).count();
    eprintln!("{applied} of {} Argo manifests apply; skipped: {skipped:?}", outcomes.len());
    let mut problems = Vec::new();
    for o in &outcomes {
        let expected = REFUSED.iter().find(|(file, _, _)| *file == o.file);
        match (&o.refusal, expected) {
            (None, None) => {}
            (Some(message), Some((_, start, _))) if message.contains(start) => {}
            (Some(message), _) => problems.push(format!("{} {} {}: {message}", o.file, o.kind, o.name)),
            (None, Some((_, _, why))) => {
                problems.push(format!("{} {} {} applies now: take it off REFUSED ({why})", o.file, o.kind, o.name))
            }
        }
    }
    assert!(outcomes.len() >= 90, "Argo's manifests were found: {} in {}", outcomes.len(), dir.display());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    env.cleanup().await
}

fn meta_generate_name(doc: &Value) -> Option<String> {
    doc.pointer("/metadata/generateName").and_then(Value::as_str).map(str::to_string)
}
