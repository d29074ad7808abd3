//! `kubectl stepwise …` through the real kubectl, with the debug build of the plugin on PATH:
//! what a person or a CI job typing the commands gets.

use crate::{kubeconfig_path, kubectl_path, repo_root};

/// What one `kubectl stepwise` run printed and how it exited.
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// The last line of stdout.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

/// Runs `kubectl stepwise <args> -n <namespace>`; prints the command and its output.
pub async fn stepwise(ns: &str, args: &[&str]) -> anyhow::Result<Run> {
    let plugin_dir = repo_root().join("target/debug");
    anyhow::ensure!(
        plugin_dir.join("kubectl-stepwise").exists(),
        "target/debug/kubectl-stepwise not built: run `cargo build --bins` first"
    );
    let path = std::env::join_paths(
        std::iter::once(plugin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let out = tokio::process::Command::new(kubectl_path())
        .arg("stepwise")
        .args(args)
        .args(["-n", ns])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .await?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ kubectl stepwise {} -n {}\n{}{}[exit {}]", args.join(" "), ns, run.stdout, run.stderr, run.code);
    Ok(run)
}

/// Runs a command that must succeed and returns what it printed.
pub async fn ok(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let run = stepwise(ns, args).await?;
    anyhow::ensure!(run.code == 0, "`kubectl stepwise {}` exited {}: {}", args.join(" "), run.code, run.stderr);
    Ok(run.stdout)
}
