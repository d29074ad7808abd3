//! Flux's view of a release: kstatus (`sigs.k8s.io/cli-utils`, the library behind a Flux
//! Kustomization's `wait: true` and its health checks) computing the status of live Rollouts at
//! each point of a canary, through `tests/gitops/kstatus`. A Kustomization waits while kstatus says
//! InProgress, succeeds on Current and fails on Failed, so a canary must be InProgress while it
//! moves and while it waits at a pause, Current once promoted, and Failed once aborted.

use std::process::Stdio;

use anyhow::Context as _;
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, repo_root, secs};
use tokio::io::AsyncWriteExt as _;

const STEPS: &str =
    "    canary:\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {}\n";

/// What kstatus computes for one object.
#[derive(Debug)]
struct Kstatus {
    status: String,
    message: String,
}

/// kstatus's reading of the Rollout as the API server has it now.
async fn kstatus(env: &Env) -> anyhow::Result<Kstatus> {
    let script = repo_root().join("tests/gitops/kstatus.sh");
    let built = tokio::process::Command::new(&script).output().await.context("run tests/gitops/kstatus.sh")?;
    anyhow::ensure!(built.status.success(), "kstatus.sh: {}", String::from_utf8_lossy(&built.stderr));
    let binary = String::from_utf8(built.stdout)?.trim().to_string();

    let rollout = serde_json::to_vec(&env.get().await?)?;
    let mut child = tokio::process::Command::new(&binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(&rollout).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "kstatus: {}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |name: &str| line[name].as_str().map(str::to_string).with_context(|| format!("no {name} in {line}"));
    Ok(Kstatus { status: field("status")?, message: field("message")? })
}

#[tokio::test(flavor = "multi_thread")]
async fn flux_reads_a_canary_as_in_progress_until_it_is_promoted_and_as_failed_once_it_is_aborted() -> anyhow::Result<()>
{
    let env = Env::new("kstatus").await?;
    env.given_rollout(4, STEPS).await?;
    let healthy = kstatus(&env).await?;
    assert_eq!(healthy.status, "Current", "a Healthy Rollout: {healthy:?}");

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let paused = kstatus(&env).await?;
    assert_eq!(paused.status, "InProgress", "paused at 25 % for a person: {paused:?}");

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    let next_pause = kstatus(&env).await?;
    assert_eq!(next_pause.status, "InProgress", "paused at 50 % for a person: {next_pause:?}");

    env.when_promote_full().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let promoted = kstatus(&env).await?;
    assert_eq!(promoted.status, "Current", "promoted: {promoted:?}");

    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_abort().await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    let aborted = kstatus(&env).await?;
    assert_eq!(aborted.status, "Failed", "aborted: {aborted:?}");
    let message = env.get().await?.status.unwrap_or_default().message.unwrap_or_default();
    assert!(aborted.message.contains(&message), "Flux tells why: {aborted:?}, the Rollout says {message:?}");
    env.cleanup().await
}
