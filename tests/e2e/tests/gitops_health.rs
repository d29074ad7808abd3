//! What Argo CD and Flux show at each point of a release, computed by their own code on live
//! Rollouts of the local control plane: Argo CD's health with stepwise's resource customizations
//! (`charts/stepwise/argocd/argocd-cm.yaml`) and with Argo CD's built-in check for Argo's
//! Rollouts (which must keep working on stepwise's, whose status means the same), and kstatus,
//! which decides a Flux Kustomization's `wait`. And Argo CD's action buttons, pressed as Argo CD
//! presses them (the script's result sent as merge patches of the status subresource and of the
//! object), with the controller then doing what the button says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{AnalysisPhase, AnalysisRun, AnalysisTemplate, Rollout, RolloutPhase};
use stepwise_e2e::gitops::{ArgoCd, Scripts, Verdict, kstatus};
use stepwise_e2e::{Env, secs};

/// What each tool shows for a Rollout.
#[derive(Debug)]
struct Shown {
    /// Argo CD with stepwise's health check.
    argocd: Verdict,
    /// Argo CD with its built-in check for Argo's Rollouts.
    argocd_builtin: Verdict,
    /// kstatus, as a Flux Kustomization waits on it.
    kstatus: Verdict,
}

/// The three readers of a Rollout's health.
struct Readers {
    stepwise: ArgoCd,
    builtin: ArgoCd,
}

impl Readers {
    async fn new() -> anyhow::Result<Self> {
        Ok(Readers {
            stepwise: ArgoCd::new(Scripts::Stepwise, "Rollout").await?,
            builtin: ArgoCd::new(Scripts::ArgoBuiltIn, "Rollout").await?,
        })
    }

    async fn shown(&self, rollout: &Rollout) -> anyhow::Result<Shown> {
        Ok(Shown {
            argocd: self.stepwise.health(rollout).await?,
            argocd_builtin: self.builtin.health(rollout).await?,
            kstatus: kstatus(rollout).await?,
        })
    }

    /// At `point` of the release, Argo CD shows `argocd` (with either script) and kstatus says
    /// `flux`. Returns what each showed, for checks of the messages.
    async fn expect(&self, env: &Env, point: &str, argocd: &str, flux: &str) -> anyhow::Result<Shown> {
        let rollout = env.get().await?;
        let shown = self.shown(&rollout).await?;
        println!(
            "{point}: Argo CD {} \"{}\" | built-in {} \"{}\" | kstatus {} \"{}\"",
            shown.argocd.status,
            shown.argocd.message,
            shown.argocd_builtin.status,
            shown.argocd_builtin.message,
            shown.kstatus.status,
            shown.kstatus.message
        );
        let status = serde_json::to_string(&rollout.status)?;
        assert_eq!(shown.argocd.status, argocd, "{point}: stepwise's check: {shown:?}\nstatus: {status}");
        assert_eq!(
            shown.argocd_builtin.status, argocd,
            "{point}: Argo CD's built-in check: {shown:?}\nstatus: {status}"
        );
        assert_eq!(shown.kstatus.status, flux, "{point}: kstatus: {shown:?}\nstatus: {status}");
        Ok(shown)
    }
}

/// The buttons of `argocd` enabled on the Rollout now.
async fn enabled(env: &Env, argocd: &ArgoCd) -> anyhow::Result<Vec<String>> {
    let actions = argocd.actions(&env.get().await?).await?;
    Ok(actions.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect())
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A health endpoint on 127.0.0.1 answering `{"ok": <ok>}`, `ok` switchable by the test.
async fn given_health_endpoint() -> anyhow::Result<(String, Arc<AtomicBool>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/health", listener.local_addr()?);
    let ok = Arc::new(AtomicBool::new(true));
    let answer = ok.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = stream.read(&mut buf).await;
            let body = format!("{{\"ok\": {}}}", answer.load(Ordering::SeqCst));
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    Ok((url, ok))
}

/// An AnalysisTemplate `health` measuring the endpoint every second until it fails once.
async fn given_health_template(env: &Env, url: &str) -> anyhow::Result<()> {
    let template = format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: health}}
spec:
  metrics:
  - name: health
    interval: 1s
    count: 600
    successCondition: result.ok == true
    provider:
      web: {{url: '{url}', jsonPath: '{{$}}'}}
"
    );
    let api: Api<AnalysisTemplate> = Api::namespaced(env.client.clone(), &env.ns);
    api.create(&PostParams::default(), &serde_yaml::from_str(&template)?).await?;
    Ok(())
}

/// The AnalysisRun the Rollout's current step runs.
async fn step_run(env: &Env) -> anyhow::Result<String> {
    env.then("an analysis step running", secs(60), |ro| {
        ro.status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .and_then(|c| c.current_step_analysis_run_status.as_ref())
            .is_some_and(|run| run.status == AnalysisPhase::Running)
    })
    .await?;
    let status = env.get().await?.status.unwrap_or_default();
    Ok(status.canary.and_then(|c| c.current_step_analysis_run_status).map(|r| r.name).unwrap_or_default())
}

/// Paused by hand, and the status written since.
fn paused_by_hand(ro: &Rollout) -> bool {
    ro.spec.paused == Some(true) && ro.status.as_ref().and_then(|s| s.observed_generation) == ro.metadata.generation
}

fn promoted(ro: &Rollout) -> bool {
    let st = ro.status.clone().unwrap_or_default();
    st.phase == Some(RolloutPhase::Healthy) && st.stable_rs == st.current_pod_hash
}

const CANARY: &str = "    canary:
      steps:
      - setWeight: 25
      - pause: {}
      - setWeight: 50
      - analysis: {templates: [{templateName: health}]}
      - setWeight: 75
      - pause: {}
";

#[tokio::test(flavor = "multi_thread")]
async fn argo_cd_and_flux_show_each_point_of_a_canary_and_argo_cds_buttons_drive_it() -> anyhow::Result<()> {
    let env = Env::new("argocd-canary").await?;
    let readers = Readers::new().await?;
    let argocd = &readers.stepwise;
    let (url, endpoint_ok) = given_health_endpoint().await?;
    given_health_template(&env, &url).await?;
    env.given_rollout(4, CANARY).await?;
    readers.expect(&env, "released", "Healthy", "Current").await?;
    assert_eq!(enabled(&env, argocd).await?, names(&["restart"]), "nothing to promote or abort when released");

    // Paused at a step: Suspended, with where the release stands.
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    let paused = readers.expect(&env, "paused at a step", "Suspended", "InProgress").await?;
    assert!(paused.argocd.message.ends_with("(canary at 25 %)"), "the weight: {paused:?}");
    assert_eq!(
        enabled(&env, argocd).await?,
        names(&["abort", "pause", "promote", "promote-full", "restart", "resume", "skip-current-step"])
    );

    // Promote: on to the analysis, which runs.
    argocd.press(&env.rollouts(), &env.rollout, "promote").await?;
    let run = step_run(&env).await?;
    let analysing = readers.expect(&env, "analysis running", "Progressing", "InProgress").await?;
    assert!(analysing.argocd.message.contains(&run), "the run: {analysing:?}");
    assert!(analysing.argocd.message.contains("canary at 50 %"), "the weight: {analysing:?}");
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    let run_health = ArgoCd::new(Scripts::Stepwise, "AnalysisRun").await?;
    let run_builtin = ArgoCd::new(Scripts::ArgoBuiltIn, "AnalysisRun").await?;
    let measuring = run_health.health(&runs.get(&run).await?).await?;
    println!("analysis running: Argo CD shows the AnalysisRun {measuring:?}");
    assert_eq!(measuring.status, "Progressing", "{measuring:?}");
    assert!(measuring.message.starts_with("Analysis Running: health: "), "{measuring:?}");
    assert_eq!(run_builtin.health(&runs.get(&run).await?).await?.status, "Progressing");

    // Terminate the run: it ends with what it measured, and the canary goes on to the next pause.
    run_health.press(&runs, &run, "terminate").await?;
    env.then_paused_at_step(5, secs(60)).await?;
    let terminated = runs.get(&run).await?;
    assert_eq!(terminated.status.as_ref().and_then(|s| s.phase), Some(AnalysisPhase::Successful));
    assert_eq!(run_health.health(&terminated).await?.status, "Healthy");
    assert!(!run_health.actions(&terminated).await?["terminate"], "a finished run cannot be terminated");

    // Paused by hand on top: still Suspended; resume ends both pauses and the canary is promoted.
    argocd.press(&env.rollouts(), &env.rollout, "pause").await?;
    env.then("paused by hand, as the controller saw", secs(30), paused_by_hand).await?;
    readers.expect(&env, "paused by hand", "Suspended", "InProgress").await?;
    argocd.press(&env.rollouts(), &env.rollout, "resume").await?;
    env.then("promoted", secs(60), promoted).await?;
    readers.expect(&env, "promoted", "Healthy", "Current").await?;

    // Abort: Degraded in Argo CD, Failed for Flux; retry starts the steps again.
    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    argocd.press(&env.rollouts(), &env.rollout, "abort").await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    let aborted = readers.expect(&env, "aborted", "Degraded", "Failed").await?;
    let message = env.get().await?.status.unwrap_or_default().message.unwrap_or_default();
    assert!(aborted.argocd.message.contains(&message), "Argo CD tells why: {aborted:?}, the Rollout says {message:?}");
    assert_eq!(enabled(&env, argocd).await?, names(&["restart", "retry"]), "an aborted update can only be retried");
    argocd.press(&env.rollouts(), &env.rollout, "retry").await?;
    env.then_paused_at_step(1, secs(60)).await?;

    // Skip the pause into an analysis that fails: aborted by the analysis, which Argo CD names.
    argocd.press(&env.rollouts(), &env.rollout, "skip-current-step").await?;
    let failing = step_run(&env).await?;
    endpoint_ok.store(false, Ordering::SeqCst);
    env.then("aborted by its analysis", secs(60), |ro| ro.status.as_ref().is_some_and(|s| s.abort == Some(true)))
        .await?;
    env.then_phase(RolloutPhase::Degraded, secs(30)).await?;
    let failed = readers.expect(&env, "aborted by an analysis", "Degraded", "Failed").await?;
    assert!(failed.argocd.message.contains("health"), "the metric that failed: {failed:?}");
    let failed_run = run_health.health(&runs.get(&failing).await?).await?;
    println!("analysis failed: Argo CD shows the AnalysisRun {failed_run:?}");
    assert_eq!(failed_run.status, "Degraded", "{failed_run:?}");
    assert!(failed_run.message.contains("result.ok == true"), "the condition that failed: {failed_run:?}");
    assert_eq!(run_builtin.health(&runs.get(&failing).await?).await?.status, "Degraded");

    // Retry, then promote full past the analysis; then restart the pods.
    endpoint_ok.store(true, Ordering::SeqCst);
    argocd.press(&env.rollouts(), &env.rollout, "retry").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    argocd.press(&env.rollouts(), &env.rollout, "promote-full").await?;
    env.then("promoted in full", secs(60), promoted).await?;
    readers.expect(&env, "promoted in full", "Healthy", "Current").await?;
    let requests = argocd.press(&env.rollouts(), &env.rollout, "restart").await?;
    let restart_at = requests["resource"]["spec"]["restartAt"].as_str().unwrap_or_default().to_string();
    assert!(!restart_at.is_empty(), "restart patches spec.restartAt: {requests}");
    env.then("the restart carried out", secs(60), |ro| {
        ro.status.as_ref().and_then(|s| s.restarted_at.as_ref()).is_some_and(|t| t.0.to_string() == restart_at)
    })
    .await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn argo_cds_own_rollout_health_check_and_actions_read_and_drive_a_stepwise_rollout() -> anyhow::Result<()> {
    let env = Env::new("argocd-builtin").await?;
    let readers = Readers::new().await?;
    let argocd = &readers.builtin;
    env.given_rollout(2, "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n").await?;
    readers.expect(&env, "released", "Healthy", "Current").await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    readers.expect(&env, "paused at a step", "Suspended", "InProgress").await?;
    assert!(enabled(&env, argocd).await?.contains(&"resume".to_string()));
    argocd.press(&env.rollouts(), &env.rollout, "pause").await?;
    env.then("paused by hand, as the controller saw", secs(30), paused_by_hand).await?;
    argocd.press(&env.rollouts(), &env.rollout, "resume").await?;
    env.then("promoted", secs(60), promoted).await?;
    readers.expect(&env, "promoted", "Healthy", "Current").await?;

    // Argo CD's retry removes status.abort rather than setting it false: stepwise retries all the same.
    env.when_image("example.invalid/demo:3").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    argocd.press(&env.rollouts(), &env.rollout, "abort").await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    readers.expect(&env, "aborted", "Degraded", "Failed").await?;
    let retry = argocd.press(&env.rollouts(), &env.rollout, "retry").await?;
    assert_eq!(retry["statusSubresource"], json!({"status": {"abort": null}}), "Argo CD's retry");
    env.then_paused_at_step(1, secs(60)).await?;
    argocd.press(&env.rollouts(), &env.rollout, "skip-current-step").await?;
    env.then("promoted past the last step", secs(60), promoted).await?;
    readers.expect(&env, "promoted", "Healthy", "Current").await?;

    env.when_image("example.invalid/demo:4").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    argocd.press(&env.rollouts(), &env.rollout, "promote-full").await?;
    env.then("promoted in full", secs(60), promoted).await?;
    argocd.press(&env.rollouts(), &env.rollout, "restart").await?;
    env.then("the restart carried out", secs(60), |ro| ro.status.as_ref().is_some_and(|s| s.restarted_at.is_some()))
        .await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn argo_cd_and_flux_show_a_blue_green_release_suspended_until_promoted() -> anyhow::Result<()> {
    let env = Env::new("argocd-bluegreen").await?;
    let readers = Readers::new().await?;
    env.given_services(&["app-active", "app-preview"]).await?;
    let strategy = "    blueGreen:\n      activeService: app-active\n      previewService: app-preview\n      autoPromotionEnabled: false\n";
    env.given_rollout(2, strategy).await?;
    readers.expect(&env, "released", "Healthy", "Current").await?;

    env.when_image("example.invalid/demo:2").await?;
    env.then_phase(RolloutPhase::Paused, secs(60)).await?;
    readers.expect(&env, "waiting to switch", "Suspended", "InProgress").await?;
    readers.stepwise.press(&env.rollouts(), &env.rollout, "promote").await?;
    env.then("switched", secs(60), promoted).await?;
    readers.expect(&env, "switched", "Healthy", "Current").await?;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn argo_cd_and_flux_show_a_new_rollout_progressing_and_an_invalid_spec_or_a_missed_deadline_as_failed()
-> anyhow::Result<()> {
    let mut env = Env::without_controller("argocd-failures").await?;
    let readers = Readers::new().await?;
    let strategy = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";
    let rollout: Rollout = serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: app}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'example.invalid/demo:1'}}]}}\n  strategy:\n{strategy}"
    ))?;
    env.rollouts().create(&PostParams::default(), &rollout).await?;
    let new = readers.shown(&env.get().await?).await?;
    println!("new: {new:?}");
    assert_eq!(new.argocd.status, "Progressing", "not yet seen by the controller: {new:?}");
    assert_eq!(new.argocd_builtin.status, "Progressing", "not yet seen by the controller: {new:?}");

    env.start_controller(&["--leader-elect=false"])?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    readers.expect(&env, "released", "Healthy", "Current").await?;

    // Pods that never become available: Progressing until the deadline, then Degraded.
    env.when_template(json!({"spec": {"nodeSelector": {"stepwise.dev/no-such-node": "true"}}})).await?;
    env.then_phase(RolloutPhase::Progressing, secs(30)).await?;
    readers.expect(&env, "progressing", "Progressing", "InProgress").await?;
    let deadline = json!({"spec": {"progressDeadlineSeconds": 5}});
    env.rollouts().patch(&env.rollout, &PatchParams::default(), &Patch::Merge(deadline)).await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;
    let missed = readers.expect(&env, "progress deadline exceeded", "Degraded", "Failed").await?;
    assert!(missed.argocd.message.contains("ProgressDeadlineExceeded"), "{missed:?}");

    // An analysis step naming a template that does not exist: the spec is invalid.
    let invalid = json!({"spec": {"strategy": {"canary": {"steps": [
        {"setWeight": 50}, {"analysis": {"templates": [{"templateName": "nowhere"}]}}
    ]}}}});
    env.rollouts().patch(&env.rollout, &PatchParams::default(), &Patch::Merge(invalid)).await?;
    env.then("the spec invalid", secs(60), |ro| {
        ro.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "InvalidSpec" && c.status == "True"))
    })
    .await?;
    let refused = readers.expect(&env, "invalid spec", "Degraded", "Failed").await?;
    assert!(refused.argocd.message.contains("AnalysisTemplate nowhere not found"), "{refused:?}");
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(runs.list(&ListParams::default()).await?.items.is_empty(), "no analysis ran");
    env.cleanup().await
}

/// `charts/stepwise/argocd/argocd-cm.yaml` and `argo-cd-values.yaml` are what
/// `argocd-lua config` makes of the .lua files beside them (`UPDATE_ARGOCD=1` writes them anew).
#[tokio::test(flavor = "multi_thread")]
async fn the_argo_cd_config_in_the_chart_is_generated_from_its_lua_files() -> anyhow::Result<()> {
    let dir = stepwise_e2e::repo_root().join("charts/stepwise/argocd");
    for (format, file) in [("argocd-cm", "argocd-cm.yaml"), ("helm-values", "argo-cd-values.yaml")] {
        let generated = stepwise_e2e::gitops::argocd_config(&dir.join("resource_customizations"), format).await?;
        let path = dir.join(file);
        if std::env::var_os("UPDATE_ARGOCD").is_some() {
            std::fs::write(&path, &generated)?;
        }
        let committed = std::fs::read_to_string(&path)?;
        assert!(committed == generated, "{} is stale: run UPDATE_ARGOCD=1 on this test", path.display());
    }
    Ok(())
}
