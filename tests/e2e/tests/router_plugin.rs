//! Router plugins end to end: the example plugin (examples/plugins/file-router.py, a real Python
//! process serving stepwise.dev/plugins/v1 on 127.0.0.1) registered with a real controller
//! (`--router-plugin`), walking a canary on the local control plane; its errors and an absent
//! plugin shown on the Rollout; and `kubectl-stepwise plugin check` passing the example and
//! failing a broken one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use stepwise_api::{Rollout, RolloutPhase};
use stepwise_e2e::{Env, eventually, repo_root, secs};

const PLUGIN: &str = "example.com/file";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The example plugin, running; killed when dropped.
struct FileRouter {
    child: Child,
    port: u16,
}

impl FileRouter {
    /// Starts examples/plugins/file-router.py on `port` with `extra` arguments and waits until it
    /// answers. Its log is target/e2e-logs/<log>.log.
    async fn start(port: u16, log: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs)?;
        let file = std::fs::File::create(logs.join(format!("{log}.log")))?;
        let child = Command::new("python3")
            .arg(repo_root().join("examples/plugins/file-router.py"))
            .arg(port.to_string())
            .args(extra)
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()?;
        let plugin = FileRouter { child, port };
        eventually("the plugin listens", secs(20), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok())
        })
        .await?;
        Ok(plugin)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FileRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the plugin writes a test's split.
fn split_file(ns: &str) -> PathBuf {
    repo_root().join(format!("target/e2e-logs/{ns}-split.json"))
}

fn read_split(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Waits until the split file sends `canary` of 100 to app-canary and the rest to app-stable.
async fn then_split(path: &Path, canary: i64) -> anyhow::Result<Value> {
    let result = eventually(&format!("the split file at canary weight {canary}"), secs(60), || async {
        Ok(read_split(path).is_some_and(|split| {
            split["canaryWeight"] == canary
                && split["split"][0]["service"] == "app-stable"
                && split["split"][0]["weight"] == 100 - canary
                && split["split"][1]["service"] == "app-canary"
                && split["split"][1]["weight"] == canary
        }))
    })
    .await;
    if let Err(e) = result {
        anyhow::bail!("{e}: the file holds {:?}", std::fs::read_to_string(path).ok());
    }
    read_split(path).ok_or_else(|| anyhow::anyhow!("the split file vanished"))
}

/// A namespace with the two Services and a controller that knows the plugin at `url`.
async fn env_with_plugin(name: &str, url: &str) -> anyhow::Result<Env> {
    let mut env = Env::without_controller(name).await?;
    let registration = format!("--router-plugin={PLUGIN}={url}");
    env.start_controller(&["--leader-elect=false", &registration, "--router-plugin-timeout=5s"])?;
    env.given_services(&["app-stable", "app-canary"]).await?;
    Ok(env)
}

fn strategy(file: &Path, extra_routing: &str, steps: &str) -> String {
    format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      abortScaleDownDelaySeconds: 1\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        plugins:\n          {PLUGIN}: {{path: '{}'}}\n{extra_routing}{steps}",
        file.display()
    )
}

const STEPS: &str =
    "      steps:\n      - setWeight: 20\n      - pause: {}\n      - setWeight: 60\n      - pause: {}\n";

/// Waits for a ReconcileError condition and a Warning event that both contain `expected`.
async fn then_reconcile_error(env: &Env, expected: &str) -> anyhow::Result<()> {
    then_reconcile_error_condition(env, expected).await?;
    eventually("a ReconcileError event", secs(30), || async {
        Ok(env.events().await?.iter().any(|(r, m)| r == "ReconcileError" && m.contains(expected)))
    })
    .await
}

/// Waits for a ReconcileError condition that contains `expected`.
async fn then_reconcile_error_condition(env: &Env, expected: &str) -> anyhow::Result<()> {
    env.then(&format!("a ReconcileError condition saying {expected:?}"), secs(60), |ro| {
        ro.status.as_ref().is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.r#type == "ReconcileError"
                    && c.status == "True"
                    && c.message.as_deref().is_some_and(|m| m.contains(expected))
            })
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_plugin_carries_every_step_of_a_canary_and_an_abort_sends_all_traffic_back() -> anyhow::Result<()> {
    let plugin = FileRouter::start(free_port(), "router-plugin-walk", &[]).await?;
    let env = env_with_plugin("router-plugin", &plugin.url()).await?;
    let file = split_file(&env.ns);
    env.given_rollout(5, &strategy(&file, "", STEPS)).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let split = then_split(&file, 20).await?;
    let status = env.get().await?.status.unwrap_or_default();
    assert_eq!(split["rollout"], format!("{}/app", env.ns), "{split}");
    assert_eq!(split["split"][1]["hash"].as_str(), status.current_pod_hash.as_deref(), "{split}");
    assert_eq!(split["split"][0]["hash"].as_str(), status.stable_rs.as_deref(), "{split}");

    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    then_split(&file, 60).await?;

    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    then_split(&file, 0).await?;

    // A second update, aborted at its first step: all traffic goes back to stable.
    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    then_split(&file, 20).await?;
    env.when_abort().await?;
    then_split(&file, 0).await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_step_the_plugin_refuses_is_a_reconcile_error_naming_the_plugin_and_its_message() -> anyhow::Result<()>
{
    let plugin = FileRouter::start(free_port(), "router-plugin-mirror", &[]).await?;
    let env = env_with_plugin("router-plugin-mirror", &plugin.url()).await?;
    let file = split_file(&env.ns);
    let steps = "      steps:\n      - setWeight: 20\n      - pause: {}\n      - setMirrorRoute: {name: mirror-get, match: [{method: {exact: GET}}]}\n      - pause: {}\n";
    env.given_rollout(5, &strategy(&file, "        managedRoutes: [{name: mirror-get}]\n", steps)).await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    then_split(&file, 20).await?;
    env.when_promote().await?;
    let expected = format!(
        "router plugin {PLUGIN} at {}: v1/router/set-traffic answered 422 Unprocessable Entity: file-router makes no mirror routes: the setMirrorRoute step asks for route mirror-get",
        plugin.url()
    );
    then_reconcile_error(&env, &expected).await?;
    // Refused: the split stays where the last accepted call left it.
    then_split(&file, 20).await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_is_not_running_is_an_error_naming_its_url_until_it_starts() -> anyhow::Result<()> {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let env = env_with_plugin("router-plugin-absent", &url).await?;
    let file = split_file(&env.ns);
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/demo:1'}}]}}\n  strategy:\n{}",
        strategy(&file, "", STEPS)
    );
    let rollout: Rollout = serde_yaml::from_str(&yaml)?;
    Api::<Rollout>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &rollout).await?;
    // The first version is routed too (all of it to stable), so the error comes at once. A plugin
    // that does not answer passes by itself: the status says so, and it is retried with the
    // backoff of any passing error (not told as a Warning for a person).
    let expected =
        format!("router plugin {PLUGIN} at {url}: cannot connect (is the plugin running and listening there?)");
    then_reconcile_error_condition(&env, &expected).await?;

    // The plugin starts after the controller, as a sidecar may: the Rollout goes on by itself.
    let _plugin = FileRouter::start(port, "router-plugin-late", &[]).await?;
    then_split(&file, 0).await?;
    env.then_phase(RolloutPhase::Healthy, secs(90)).await?;
    env.cleanup().await
}

/// What one `kubectl-stepwise plugin check` printed and how it exited.
async fn plugin_check(url: &str, config: &str) -> anyhow::Result<(i32, String)> {
    let binary = repo_root().join("target/debug/kubectl-stepwise");
    anyhow::ensure!(binary.exists(), "target/debug/kubectl-stepwise not built: run `cargo build --bins` first");
    let out = tokio::process::Command::new(binary)
        .args(["plugin", "check", url, "--config", config, "--timeout", "5s"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("$ kubectl-stepwise plugin check {url}\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), stdout))
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_check_passes_the_example_plugin_and_fails_one_speaking_another_protocol() -> anyhow::Result<()> {
    let dir = repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir)?;
    let config = serde_json::json!({"path": dir.join("plugin-check-split.json")}).to_string();

    let good = FileRouter::start(free_port(), "router-plugin-check-good", &[]).await?;
    let (code, out) = plugin_check(&good.url(), &config).await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("PASS the same call again (idempotence)")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("PASS an invalid body")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("SKIP a mirror route")), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("9 passed, 0 failed, 1 skipped: the plugin conforms to stepwise.dev/plugins/v1"),
        "{out}"
    );

    let broken =
        FileRouter::start(free_port(), "router-plugin-check-broken", &["--protocol", "stepwise.dev/plugins/v0"])
            .await?;
    let (code, out) = plugin_check(&broken.url(), &config).await?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l == "FAIL info: speaks protocol stepwise.dev/plugins/v0, stepwise speaks stepwise.dev/plugins/v1"),
        "{out}"
    );
    assert!(out.lines().last().is_some_and(|l| l.ends_with("the plugin does not conform to stepwise.dev/plugins/v1")));

    // Nothing listening: every check fails naming the connection.
    let (code, out) = plugin_check(&format!("http://127.0.0.1:{}", free_port()), &config).await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL info: cannot connect (is the plugin running and listening there?)"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_with_a_malformed_router_plugin_flag_refuses_to_start_saying_why() -> anyhow::Result<()> {
    let binary = repo_root().join("target/debug/stepwise-controller");
    anyhow::ensure!(binary.exists(), "target/debug/stepwise-controller not built: run `cargo build --bins` first");
    let out = tokio::process::Command::new(binary)
        .args(["--router-plugin", "example.com/file=127.0.0.1:7070", "--leader-elect=false"])
        .env("KUBECONFIG", stepwise_e2e::kubeconfig_path())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "--router-plugin \"example.com/file=127.0.0.1:7070\": \"127.0.0.1:7070\" is not an http:// or https:// URL"
        ),
        "{stderr}"
    );
    Ok(())
}

/// The proxy behind the example plugin: while `live`, it reloads the split file every 100 ms and
/// writes what it loaded to `loaded` (the copy the plugin compares to answer `verified`).
fn given_proxy(file: PathBuf, loaded: PathBuf) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let live = std::sync::Arc::new(AtomicBool::new(true));
    let running = live.clone();
    tokio::spawn(async move {
        loop {
            if running.load(Ordering::SeqCst)
                && let Ok(split) = std::fs::read_to_string(&file)
                && std::fs::read_to_string(&loaded).ok().as_deref() != Some(split.as_str())
            {
                let _ = std::fs::write(&loaded, split);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    live
}

/// A strategy whose plugin answers `verified` from the proxy's copy at `loaded`.
fn verified_strategy(file: &Path, loaded: &Path, extra: &str, steps: &str) -> String {
    format!(
        "    canary:\n      canaryService: app-canary\n      stableService: app-stable\n      scaleDownDelaySeconds: 2\n      trafficRouting:\n        plugins:\n          {PLUGIN}: {{path: '{}', loadedPath: '{}'}}\n{extra}{steps}",
        file.display(),
        loaded.display()
    )
}

fn weights_verified(ro: &Rollout) -> Option<bool> {
    ro.status.as_ref()?.canary.as_ref()?.weights.as_ref()?.verified
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_waits_until_the_router_has_its_weight_in_effect_then_goes_on() -> anyhow::Result<()> {
    let plugin = FileRouter::start(free_port(), "router-plugin-verify", &[]).await?;
    let env = env_with_plugin("router-plugin-verify", &plugin.url()).await?;
    let file = split_file(&env.ns);
    let loaded = repo_root().join(format!("target/e2e-logs/{}-loaded.json", env.ns));
    let proxy = given_proxy(file.clone(), loaded.clone());
    let steps = "      steps:\n      - setWeight: 20\n      - setWeight: 60\n      - pause: {}\n";
    env.given_rollout(5, &verified_strategy(&file, &loaded, "", steps)).await?;

    // The proxy stops reloading: 20 % is written but not in effect.
    proxy.store(false, std::sync::atomic::Ordering::SeqCst);
    env.when_image("example.invalid/demo:2").await?;
    then_split(&file, 20).await?;
    let waiting =
        format!("waiting for the routers to send 20 % to the canary: router plugin {PLUGIN} has not verified it yet");
    env.then("waiting for 20 % to be in effect", secs(60), |ro| {
        weights_verified(ro) == Some(false)
            && ro.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains(&waiting))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = env.get().await?;
    assert_eq!(held.status.as_ref().and_then(|s| s.current_step_index), Some(0), "the step waits: {:?}", held.status);
    let reads = env.controllers[0].metric_values("stepwise_traffic_weight_reads_total").await?;
    assert!(reads.get("{result=\"not_in_effect\"}").is_some_and(|n| *n >= 2.0), "read again while it waits: {reads:?}");

    // The proxy reloads: the step goes on, and so does the next once 60 % is in effect.
    proxy.store(true, std::sync::atomic::Ordering::SeqCst);
    env.then_paused_at_step(2, secs(60)).await?;
    then_split(&file, 60).await?;
    assert_eq!(weights_verified(&env.get().await?), Some(true), "60 % verified");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weight_the_router_never_takes_ends_at_the_progress_deadline_with_an_event_and_no_promotion()
-> anyhow::Result<()> {
    let plugin = FileRouter::start(free_port(), "router-plugin-never", &[]).await?;
    let env = env_with_plugin("router-plugin-never", &plugin.url()).await?;
    let file = split_file(&env.ns);
    let loaded = repo_root().join(format!("target/e2e-logs/{}-loaded.json", env.ns));
    let proxy = given_proxy(file.clone(), loaded.clone());
    let steps = "      steps:\n      - setWeight: 50\n";
    env.given_rollout(3, &verified_strategy(&file, &loaded, "", steps)).await?;
    let api: Api<Rollout> = Api::namespaced(env.client.clone(), &env.ns);
    let deadline = serde_json::json!({"spec": {"progressDeadlineSeconds": 10}});
    api.patch("app", &Default::default(), &kube::api::Patch::Merge(deadline)).await?;
    let stable = env.get().await?.status.and_then(|s| s.stable_rs);

    proxy.store(false, std::sync::atomic::Ordering::SeqCst);
    env.when_image("example.invalid/demo:2").await?;
    then_split(&file, 50).await?;
    env.then_phase(RolloutPhase::Degraded, secs(90)).await?;
    let status = env.get().await?.status.unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    let why =
        format!("waiting for the routers to send 50 % to the canary: router plugin {PLUGIN} has not verified it yet");
    assert!(message.starts_with("ProgressDeadlineExceeded: ") && message.contains(&why), "{message}");
    assert_eq!(status.stable_rs, stable, "never promoted");
    eventually("a ProgressDeadlineExceeded event naming the router", secs(30), || async {
        Ok(env.events().await?.iter().any(|(r, m)| r == "ProgressDeadlineExceeded" && m.contains(&why)))
    })
    .await?;
    env.cleanup().await
}
