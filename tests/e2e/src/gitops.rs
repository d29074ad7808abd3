//! What GitOps tools read from live objects, computed by their own code: kstatus (the library
//! behind Flux's `wait` and health checks, `tests/gitops/kstatus`) and Argo CD's Lua health checks
//! and actions (`tests/gitops/argocd`, gopher-lua as Argo CD runs it), on objects taken from the
//! local control plane.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::repo_root;

/// A status with its message, as kstatus or Argo CD computes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// kstatus: InProgress, Current, Failed…; Argo CD: Progressing, Suspended, Healthy, Degraded…
    pub status: String,
    /// Why, in words.
    pub message: String,
}

impl Verdict {
    fn from_json(line: &Value) -> anyhow::Result<Self> {
        let field =
            |name: &str| line[name].as_str().map(str::to_string).with_context(|| format!("no {name} in {line}"));
        Ok(Verdict { status: field("status")?, message: line["message"].as_str().unwrap_or_default().to_string() })
    }
}

/// Builds a tool with its script under tests/gitops (once; cached) and returns its path.
async fn built(script: &str) -> anyhow::Result<PathBuf> {
    let out = tokio::process::Command::new(repo_root().join("tests/gitops").join(script))
        .output()
        .await
        .with_context(|| format!("run tests/gitops/{script}"))?;
    anyhow::ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Runs `binary args` with `object` as JSON on stdin and parses its stdout as JSON.
async fn run_on(binary: &PathBuf, args: &[&str], object: &impl Serialize) -> anyhow::Result<Value> {
    let mut child = tokio::process::Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(&serde_json::to_vec(object)?).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "{} {args:?}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).with_context(|| format!("{} {args:?} printed no JSON", binary.display()))
}

/// kstatus's reading of `object`.
pub async fn kstatus(object: &impl Serialize) -> anyhow::Result<Verdict> {
    let binary = built("kstatus.sh").await?;
    Verdict::from_json(&run_on(&binary, &[], object).await?)
}

/// The argocd-cm keys (`format` argocd-cm) or Argo CD Helm chart values (helm-values) that carry
/// the resource customizations under `scripts`.
pub async fn argocd_config(scripts: &std::path::Path, format: &str) -> anyhow::Result<String> {
    let binary = built("argocd.sh").await?;
    let out = tokio::process::Command::new(&binary)
        .args(["config", "--scripts", &scripts.display().to_string(), "--format", format])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "argocd-lua config: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Whose Lua scripts Argo CD runs.
#[derive(Clone, Copy, Debug)]
pub enum Scripts {
    /// stepwise's resource customizations for `stepwise.dev`, as the argocd-cm keys of
    /// `charts/stepwise/argocd/argocd-cm.yaml` that a user merges into Argo CD's config.
    Stepwise,
    /// Argo CD's built-in health check and actions for Argo's `argoproj.io` kind of the same name.
    ArgoBuiltIn,
}

/// Argo CD's Lua runtime with the scripts of one kind.
pub struct ArgoCd {
    binary: PathBuf,
    source: Vec<String>,
}

impl ArgoCd {
    /// The scripts of `scripts` for `kind` (Rollout, AnalysisRun).
    pub async fn new(scripts: Scripts, kind: &str) -> anyhow::Result<Self> {
        let binary = built("argocd.sh").await?;
        let source = match scripts {
            Scripts::Stepwise => vec![
                "--config".into(),
                repo_root().join("charts/stepwise/argocd/argocd-cm.yaml").display().to_string(),
                "--kind".into(),
                format!("stepwise.dev/{kind}"),
            ],
            Scripts::ArgoBuiltIn => {
                let dir =
                    binary.parent().context("argocd-lua has a directory")?.join("argo-cd-resource-customizations");
                vec!["--builtin".into(), dir.display().to_string(), "--kind".into(), format!("argoproj.io/{kind}")]
            }
        };
        Ok(ArgoCd { binary, source })
    }

    async fn call(&self, command: &[&str], object: &impl Serialize) -> anyhow::Result<Value> {
        let args: Vec<&str> = command.iter().copied().chain(self.source.iter().map(String::as_str)).collect();
        run_on(&self.binary, &args, object).await
    }

    /// The health Argo CD shows for `object`.
    pub async fn health(&self, object: &impl Serialize) -> anyhow::Result<Verdict> {
        Verdict::from_json(&self.call(&["health"], object).await?)
    }

    /// The actions Argo CD offers on `object`: each name and whether its button is enabled.
    pub async fn actions(&self, object: &impl Serialize) -> anyhow::Result<BTreeMap<String, bool>> {
        let listed = self.call(&["actions"], object).await?;
        let listed = listed.as_array().with_context(|| format!("actions: {listed}"))?;
        Ok(listed
            .iter()
            .filter_map(|a| Some((a["name"].as_str()?.to_string(), !a["disabled"].as_bool().unwrap_or(false))))
            .collect())
    }

    /// Presses `action` on the object `name` as Argo CD's server does: runs the action's script on
    /// the live object, then sends the difference as merge patches, to the status subresource
    /// when the status changed and to the object for the rest. Returns the patches sent.
    pub async fn press<K>(&self, api: &Api<K>, name: &str, action: &str) -> anyhow::Result<Value>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let live = api.get(name).await?;
        let requests = self.call(&["run", action], &live).await?;
        if !requests["statusSubresource"].is_null() {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&requests["statusSubresource"])).await?;
        }
        if !requests["resource"].is_null() {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&requests["resource"])).await?;
        }
        Ok(requests)
    }
}
