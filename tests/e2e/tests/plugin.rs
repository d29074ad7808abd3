//! `kubectl stepwise …` through the real kubectl, with the built plugin on PATH, against the local
//! control plane and a controller: what a person or a CI job typing the commands gets.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use stepwise_api::RolloutPhase;
use stepwise_e2e::plugin_cli::{Run, ok, stepwise};
use stepwise_e2e::{Env, kubeconfig_path, kubectl_path as kubectl, repo_root, secs};

const STEPS: &str = "    canary:\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n      - pause: {}\n      - setWeight: 75\n      - pause: {}\n";

async fn canary(name: &str) -> anyhow::Result<Env> {
    let env = Env::new(name).await?;
    env.given_rollout(4, STEPS).await?;
    Ok(env)
}

fn image(rollout: &stepwise_api::Rollout) -> String {
    let template = rollout.spec.template.clone().unwrap_or_default();
    template.spec.unwrap_or_default().containers[0].image.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_image_starts_an_update_promote_continues_it_and_promote_full_skips_the_rest() -> anyhow::Result<()> {
    let env = canary("plugin-promote").await?;
    let refused = stepwise(&env.ns, &["promote", "app"]).await?;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("is Healthy: there is no update in progress"), "{}", refused.stderr);

    let said = ok(&env.ns, &["set", "image", "app", "app=example.invalid/demo:2"]).await?;
    assert!(said.contains(r#"container "app" set to example.invalid/demo:2"#), "{said}");
    env.then_paused_at_step(1, secs(60)).await?;

    let said = ok(&env.ns, &["promote", "app"]).await?;
    assert!(said.contains("pause at step 2/6 ended"), "{said}");
    env.then_paused_at_step(3, secs(60)).await?;
    let tree = ok(&env.ns, &["get", "rollout", "app"]).await?;
    assert!(tree.contains("Step:      4/6"), "{tree}");
    assert!(tree.contains("revision 2 (canary)  example.invalid/demo:2"), "{tree}");

    ok(&env.ns, &["promote", "app", "--full"]).await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.then_pods(4, 0, secs(30)).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_returns_to_stable_and_retry_starts_the_update_again() -> anyhow::Result<()> {
    let env = canary("plugin-abort").await?;
    let refused = stepwise(&env.ns, &["retry", "app"]).await?;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("is not aborted (it is Healthy)"), "{}", refused.stderr);

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let said = ok(&env.ns, &["abort", "app"]).await?;
    assert!(said.contains("aborted: traffic and pods go back to the stable version"), "{said}");
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    env.then_pods(0, 4, secs(60)).await?;

    ok(&env.ns, &["retry", "app"]).await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.then_pods(1, 3, secs(60)).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn status_exits_0_when_healthy_2_at_the_timeout_and_1_when_aborted_with_the_reason_last() -> anyhow::Result<()> {
    let env = canary("plugin-status").await?;
    let healthy = stepwise(&env.ns, &["status", "app"]).await?;
    assert_eq!((healthy.code, healthy.last_line()), (0, "Healthy at revision 1"));

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let waiting = stepwise(&env.ns, &["status", "app", "--timeout", "2s"]).await?;
    assert_eq!(waiting.code, 2);
    assert_eq!(waiting.last_line(), "timed out after 2s: Paused at step 2/6: pause, waiting for promote");

    // A watching status sees the abort happen and exits with it.
    let ns = env.ns.clone();
    let watching = tokio::spawn(async move { stepwise(&ns, &["status", "app", "--watch", "--timeout", "60s"]).await });
    tokio::time::sleep(secs(1)).await;
    env.when_abort().await?;
    let aborted = watching.await??;
    assert_eq!(aborted.code, 1, "{}", aborted.stdout);
    assert!(aborted.last_line().starts_with("Aborted"), "{}", aborted.stdout);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_rolls_back_to_the_previous_revision_and_restart_replaces_the_pods() -> anyhow::Result<()> {
    let env = canary("plugin-undo").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;

    let said = ok(&env.ns, &["undo", "app"]).await?;
    assert!(said.contains("rolled back to the template of revision 1"), "{said}");
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    assert_eq!(image(&env.get().await?), "example.invalid/demo:1");
    env.then_pods(4, 0, secs(60)).await?;

    let before = epoch_seconds();
    // Creation times count whole seconds: a pod created after the restart is then strictly newer.
    tokio::time::sleep(secs(1)).await;
    ok(&env.ns, &["restart", "app"]).await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    stepwise_e2e::eventually("every pod replaced after the restart", secs(90), || async {
        let pods = pods.list(&ListParams::default()).await?.items;
        let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        Ok(live.len() == 4
            && live.iter().all(|p| p.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0.as_second() > before)))
    })
    .await?;
    env.cleanup().await
}

/// Seconds since the epoch, as the API server's creation timestamps count them.
fn epoch_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn get_watch_redraws_the_tree_when_the_step_changes() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let env = canary("plugin-watch").await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;

    let path = std::env::join_paths(
        std::iter::once(repo_root().join("target/debug"))
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let mut watch = tokio::process::Command::new(kubectl())
        .args(["stepwise", "get", "rollout", "app", "--watch", "-n", &env.ns])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let mut stdout = BufReader::new(watch.stdout.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            let _ = lines_tx.send(line);
        }
    });
    let step_2_drawn = tokio::time::timeout(secs(10), async {
        while let Some(line) = lines.recv().await {
            if line == "Step:      2/6" {
                return;
            }
        }
    });
    assert!(step_2_drawn.await.is_ok(), "the first tree shows step 2/6");

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    // How soon is a matter for a benchmark, not for a test that shares the machine with others.
    let step_4_drawn = tokio::time::timeout(secs(30), async {
        while let Some(line) = lines.recv().await {
            if line == "Step:      4/6" {
                return;
            }
        }
    });
    assert!(step_4_drawn.await.is_ok(), "the tree is redrawn at step 4/6");
    watch.kill().await?;
    env.cleanup().await
}

/// A file under target/ for one test, holding `text`.
fn scratch_file(name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("target/plugin-e2e");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

const BROKEN: &str = "apiVersion: stepwise.dev/v1alpha1
kind: Rollout
metadata:
  name: app
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec: {containers: [{name: app, image: 'example.invalid/demo:1'}]}
  strategy:
    canary:
      steps:
      - setWeight: 20
      - setWieght: 40
      - pause: {duration: 10x}
";

#[tokio::test(flavor = "multi_thread")]
async fn lint_names_the_broken_field_and_its_line_and_passes_a_good_manifest() -> anyhow::Result<()> {
    let broken = scratch_file("broken-rollout.yaml", BROKEN)?;
    let run = stepwise("default", &["lint", "-f", &broken.to_string_lossy()]).await?;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let file = broken.to_string_lossy();
    assert!(
        run.stdout.contains(&format!(
            "{file}:doc 1 (Rollout/app): spec.strategy.canary.steps[1].setWieght: unknown field \"setWieght\" (line 14)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("spec.strategy.canary.steps[2].pause.duration: must be a duration such as 30s"),
        "{}",
        run.stdout
    );

    let good = repo_root().join("examples/canary-analysis.yaml");
    let run = stepwise("default", &["lint", "-f", &good.to_string_lossy()]).await?;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.ends_with("(Rollout/api): ok\n"), "{}", run.stdout);
    Ok(())
}

/// An HTTP server on 127.0.0.1 answering `{"rates": [0.99, 0.97]}`; returns its address.
async fn given_rates_endpoint() -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}/rates", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = stream.read(&mut buf).await;
            let body = r#"{"rates": [0.99, 0.97]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    Ok(address)
}

/// Runs the real kubectl with the test's kubeconfig.
async fn run_kubectl(args: &[&str]) -> anyhow::Result<Run> {
    let out = tokio::process::Command::new(kubectl()).args(args).env("KUBECONFIG", kubeconfig_path()).output().await?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ kubectl {}\n{}{}[exit {}]", args.join(" "), run.stdout, run.stderr, run.code);
    Ok(run)
}

#[tokio::test(flavor = "multi_thread")]
async fn convert_turns_an_argo_canary_into_one_the_api_server_accepts_and_the_controller_rolls_out()
-> anyhow::Result<()> {
    let env = Env::new("plugin-convert").await?;
    let argo = repo_root().join("tests/e2e/fixtures/argo/canary-analysis.yaml");
    let converted = stepwise(&env.ns, &["convert", "-f", &argo.to_string_lossy()]).await?;
    assert_eq!(converted.code, 0, "{}", converted.stderr);
    assert!(converted.stdout.contains("successCondition: result.all(x, x >= 0.95) && size(result) > 0"));
    assert!(!converted.stdout.contains("argoproj.io"), "{}", converted.stdout);
    // Fields stepwise has, antiAffinity among them, are kept as written.
    assert!(converted.stdout.contains("antiAffinity"), "{}", converted.stdout);
    assert!(!converted.stderr.contains("antiAffinity: removed"), "{}", converted.stderr);
    // Fields stepwise has are kept as written.
    assert!(converted.stdout.contains("successfulRunHistoryLimit: 3"), "{}", converted.stdout);
    assert!(!converted.stderr.contains("spec.analysis: removed"), "{}", converted.stderr);
    assert!(converted.stderr.contains("(converted):doc 2 (Rollout/app): ok"), "{}", converted.stderr);

    let rates = given_rates_endpoint().await?;
    let yaml = converted.stdout.replace("http://metrics.example.invalid/rates", &rates);
    let file = scratch_file(&format!("{}-converted.yaml", env.ns), &yaml)?;
    let file = file.to_string_lossy();
    let dry = run_kubectl(&["apply", "--dry-run=server", "-n", &env.ns, "-f", &file]).await?;
    assert_eq!(dry.code, 0, "the API server refused the converted manifest: {}", dry.stderr);
    let applied = run_kubectl(&["apply", "-n", &env.ns, "-f", &file]).await?;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;

    // The converted analysis (a CEL condition over the web metric's list) passes, and the update
    // goes through every step.
    env.when_image("example.invalid/demo:2").await?;
    env.then("the new version fully promoted", secs(120), |ro| {
        let st = ro.status.clone().unwrap_or_default();
        st.phase == Some(RolloutPhase::Healthy) && st.stable_rs.is_some() && st.stable_rs == st.current_pod_hash
    })
    .await?;
    assert_eq!(image(&env.get().await?), "example.invalid/demo:2");
    let runs: Api<stepwise_api::AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let phases: Vec<_> =
        runs.list(&ListParams::default()).await?.items.into_iter().map(|r| r.status.and_then(|s| s.phase)).collect();
    assert_eq!(phases, vec![Some(stepwise_api::AnalysisPhase::Successful)]);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_completes_the_plugin_through_the_kubectl_complete_helper() -> anyhow::Result<()> {
    let dir = repo_root().join("target/plugin-e2e/complete-bin");
    std::fs::create_dir_all(&dir)?;
    let helper = dir.join("kubectl_complete-stepwise");
    let _ = std::fs::remove_file(&helper);
    std::os::unix::fs::symlink(repo_root().join("target/debug/kubectl-stepwise"), &helper)?;
    let path = std::env::join_paths(
        [repo_root().join("target/debug"), dir]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let complete = |words: &'static [&'static str]| {
        let path = path.clone();
        async move {
            let out = tokio::process::Command::new(kubectl())
                .args(["__complete", "stepwise"])
                .args(words)
                .env("PATH", path)
                .env("KUBECONFIG", kubeconfig_path())
                .output()
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let commands = complete(&["pro"]).await?;
    assert!(commands.starts_with("promote\t"), "{commands}");
    assert!(commands.ends_with(":4\n"), "{commands}");
    let shells = complete(&["completion", "z"]).await?;
    assert_eq!(shells, "zsh\n:4\n");
    let flags = complete(&["lint", "--fi"]).await?;
    assert!(flags.starts_with("--filename\t"), "{flags}");
    Ok(())
}
