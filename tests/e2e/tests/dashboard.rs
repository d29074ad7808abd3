//! The dashboard in a real browser: Debian's chromium, headless, driven over WebDriver, against
//! `kubectl stepwise dashboard` on the local control plane with the controller running. Each
//! test has its namespace, its controller, its dashboard (watching that namespace) and its
//! browser. Screenshots go to target/e2e-artifacts/dashboard/.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use stepwise_api::{AnalysisTemplate, RolloutPhase};
use stepwise_e2e::browser::{Browser, wait_for};
use stepwise_e2e::dashboard::DashboardProcess;
use stepwise_e2e::{Env, repo_root, secs, serve_json};

/// Steps that stop at a pause a person must end, then at a pause of an hour.
const PAUSED_CANARY: &str =
    "    canary:\n      steps: [{setWeight: 25}, {pause: {}}, {setWeight: 50}, {pause: {duration: 1h}}]\n";

fn screenshot(name: &str) -> std::path::PathBuf {
    repo_root().join("target/e2e-artifacts/dashboard").join(format!("{name}.png"))
}

/// A canary updated to a new image and paused at its second step, waiting for promote.
async fn given_paused_canary(env: &Env) -> anyhow::Result<()> {
    env.given_rollout(2, PAUSED_CANARY).await?;
    env.when_image("example.invalid/demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await
}

fn row(env: &Env) -> String {
    format!("tr[data-rollout=\"{}/{}\"]", env.ns, env.rollout)
}

fn page(dashboard: &DashboardProcess, env: &Env) -> String {
    format!("{}#/rollouts/{}/{}", dashboard.url(), env.ns, env.rollout)
}

/// The button of an action, once the page has drawn the Rollout's actions (a drawn button says
/// what it does, or why it is disabled, in its title).
async fn button(browser: &Browser, action: &str) -> anyhow::Result<stepwise_e2e::browser::Element> {
    let css = format!("#actions button[data-action=\"{action}\"]");
    wait_for(&format!("the {action} button, drawn"), secs(10), || async {
        let Ok(button) = browser.find(&css).await else { return Ok(None) };
        Ok(button.attr("title").await?.filter(|t| !t.is_empty()).map(|_| button))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_canary_needs_attention_and_promote_moves_it_on() -> anyhow::Result<()> {
    let env = Env::new("dash-promote").await?;
    given_paused_canary(&env).await?;
    let dashboard = DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns, "--actions"]).await?;
    let browser = Browser::start().await?;

    browser.goto(&dashboard.url()).await?;
    let reason = browser.wait_text(&format!("#attention {} .reason", row(&env)), |t| !t.is_empty(), secs(10)).await?;
    assert!(reason.contains("promote"), "the attention row says what to do: {reason:?}");
    browser.wait_text("#counts [data-phase=\"Paused\"]", |t| t.contains('1'), secs(10)).await?;
    browser.screenshot(screenshot("list")).await?;

    browser.goto(&page(&dashboard, &env)).await?;
    browser.wait_text("#step", |t| t.trim() == "2/4", secs(10)).await?;
    assert_eq!(browser.find("#weight").await?.text().await?.trim(), "25");
    browser.wait_text("#steps li[data-state=\"current\"]", |t| t.contains("pause"), secs(10)).await?;
    let waiting = browser.find("#waiting li[data-kind=\"promotion\"]").await?.text().await?;
    assert!(waiting.contains("promote"), "why it waits: {waiting:?}");
    browser.screenshot(screenshot("rollout-paused")).await?;

    let promote = button(&browser, "promote").await?;
    assert!(promote.is_enabled().await?, "promote is enabled on a paused canary with --actions");
    promote.click().await?;
    browser.find("#confirm-yes").await?.click().await?;
    let clicked = Instant::now();
    // The next steps: setWeight 50, then the pause of an hour, counting down on the page.
    browser.wait_text("#step", |t| t.trim() == "4/4", secs(15)).await?;
    println!("promote to step 4/4 on the page: {:?}", clicked.elapsed());
    browser.wait_text("#weight", |t| t.trim() == "50", secs(10)).await?;
    let first =
        browser.wait_text("#waiting li[data-kind=\"pause\"] [data-countdown]", |t| !t.is_empty(), secs(10)).await?;
    let later = browser.wait_text("#waiting li[data-kind=\"pause\"] [data-countdown]", |t| t != first, secs(5)).await?;
    println!("the countdown went from {first:?} to {later:?}");
    let notice = browser.wait_text("#notice", |t| !t.is_empty(), secs(5)).await?;
    assert!(notice.contains("promoted"), "the page says what the action did: {notice:?}");
    let user = dashboard.get("/api/whoami").await?.body["user"].as_str().unwrap_or_default().to_string();
    let history = browser.wait_text("#history", |t| t.contains("promote"), secs(10)).await?;
    assert!(!user.is_empty() && history.contains(&user), "the history names who promoted ({user:?}): {history:?}");
    browser.screenshot(screenshot("rollout-promoted")).await?;

    // Undo shows what it would put back before the person confirms; cancelled, nothing changes.
    button(&browser, "undo").await?.click().await?;
    let preview = browser.wait_text("#undo-diff", |t| t.contains("demo:1"), secs(10)).await?;
    assert!(preview.contains("- image: example.invalid/demo:2"), "the undo preview: {preview:?}");
    browser.screenshot(screenshot("undo-preview")).await?;
    browser.find("#confirm-no").await?.click().await?;

    // The record names the person and the action.
    let events = env.events().await?;
    assert!(
        events.iter().any(|(reason, message)| reason == "Promote" && message.contains("via the dashboard")),
        "an Event records the promote: {events:?}"
    );
    // An action decided on a version of the Rollout the page no longer shows is refused.
    let stale = dashboard
        .post(
            &format!("/api/rollouts/{}/{}/actions/abort", env.ns, env.rollout),
            &[("X-Stepwise-Action", "1")],
            &json!({"resourceVersion": "1"}),
        )
        .await?;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(
        stale.body["error"].as_str().unwrap_or_default().contains("changed since the page showed it"),
        "{}",
        stale.body
    );
    assert!(browser.console_errors().await?.is_empty(), "no script error: {:?}", browser.console_errors().await?);
    drop(browser);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_rollout_shows_the_failing_metric_its_values_and_its_threshold() -> anyhow::Result<()> {
    let env = Env::new("dash-abort").await?;
    let errors = Arc::new(Mutex::new(json!({"errorRate": 0.01})));
    let url = serve_json(errors.clone()).await?;
    let template: AnalysisTemplate = serde_yaml::from_str(&format!(
        "apiVersion: stepwise.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: error-rate}}
spec:
  metrics:
  - name: error-rate
    interval: 1s
    count: 5
    failureLimit: 1
    successCondition: result < 0.05
    provider: {{web: {{url: '{url}', jsonPath: '{{$.errorRate}}'}}}}
"
    ))?;
    Api::<AnalysisTemplate>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &template).await?;
    env.given_rollout(
        2,
        "    canary:\n      steps: [{setWeight: 25}, {analysis: {templates: [{templateName: error-rate}]}}, {setWeight: 50}]\n",
    )
    .await?;
    *errors.lock().unwrap_or_else(|e| e.into_inner()) = json!({"errorRate": 0.2});
    env.when_image("example.invalid/demo:2").await?;
    env.then("aborted", secs(60), |ro| ro.status.as_ref().and_then(|s| s.abort) == Some(true)).await?;
    env.then_phase(RolloutPhase::Degraded, secs(60)).await?;

    let dashboard = DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns]).await?;
    let browser = Browser::start().await?;
    browser.goto(&dashboard.url()).await?;
    let reason = browser.wait_text(&format!("#attention {} .reason", row(&env)), |t| !t.is_empty(), secs(10)).await?;
    assert!(reason.to_lowercase().contains("abort") || reason.contains("error-rate"), "{reason:?}");

    browser.goto(&page(&dashboard, &env)).await?;
    browser.wait_text("#phase", |t| t.contains("Degraded"), secs(10)).await?;
    let metric = "#analysis div[data-metric=\"error-rate\"]";
    let values = browser.wait_text(&format!("{metric} .values"), |t| t.contains("0.2"), secs(10)).await?;
    println!("the metric's values on the page: {values:?}");
    let threshold = browser.find(&format!("{metric} svg [data-threshold]")).await?;
    assert_eq!(threshold.attr("data-threshold").await?.as_deref().map(str::parse::<f64>).transpose()?, Some(0.05));
    let text = browser.find(metric).await?.text().await?;
    assert!(text.contains("result < 0.05"), "the condition is shown: {text:?}");
    assert!(text.contains("Failed"), "the metric's phase is shown: {text:?}");
    browser.screenshot(screenshot("rollout-aborted")).await?;
    browser.execute("document.querySelector('#analysis').scrollIntoView()", &[]).await?;
    browser.screenshot(screenshot("rollout-analysis")).await?;
    drop(browser);
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_shows_no_enabled_action() -> anyhow::Result<()> {
    let env = Env::new("dash-readonly").await?;
    given_paused_canary(&env).await?;
    let dashboard = DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns]).await?;
    let browser = Browser::start().await?;
    browser.goto(&page(&dashboard, &env)).await?;
    button(&browser, "promote").await?;
    for element in browser.find_all("#actions button[data-action]").await? {
        let action = element.attr("data-action").await?.unwrap_or_default();
        assert!(!element.is_enabled().await?, "{action} is disabled in read-only mode");
    }
    let reason = browser.find("[data-reason-for=\"promote\"]").await?.text().await?;
    assert!(reason.contains("read-only"), "the reason is shown: {reason:?}");
    let refused = dashboard
        .post(
            &format!("/api/rollouts/{}/{}/actions/promote", env.ns, env.rollout),
            &[("X-Stepwise-Action", "1")],
            &json!({"resourceVersion": "0"}),
        )
        .await?;
    assert_eq!(refused.status, 403, "the server refuses actions too, not only the page: {}", refused.body);
    browser.screenshot(screenshot("read-only")).await?;
    drop(browser);
    env.cleanup().await
}

/// A ServiceAccount that may read Rollouts in the namespace but not change them, and a token of it.
async fn given_viewer_token(env: &Env) -> anyhow::Result<String> {
    let ns = &env.ns;
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), ns);
    accounts.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "viewer"}}))?).await?;
    let role = json!({"metadata": {"name": "rollout-viewer"}, "rules": [
        {"apiGroups": ["stepwise.dev"], "resources": ["rollouts", "analysisruns"], "verbs": ["get", "list", "watch"]}]});
    Api::<Role>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(role)?)
        .await?;
    let binding = json!({"metadata": {"name": "rollout-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollout-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]});
    Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(binding)?)
        .await?;
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let answer = accounts.create_token_request("viewer", &PostParams::default(), &request).await?;
    answer.status.map(|s| s.token).ok_or_else(|| anyhow::anyhow!("the TokenRequest gave no token"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_patch_sees_promote_disabled_with_the_reason() -> anyhow::Result<()> {
    let env = Env::new("dash-token").await?;
    given_paused_canary(&env).await?;
    let token = given_viewer_token(&env).await?;
    let dashboard =
        DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns, "--actions", "--auth=token"])
            .await?;
    let unauthenticated = dashboard.get("/api/rollouts").await?;
    assert_eq!(unauthenticated.status, 401, "nothing is served without a token: {}", unauthenticated.body);

    let browser = Browser::start().await?;
    browser.goto(&dashboard.url()).await?;
    browser.find("#login-token").await?.send_keys("not-a-token").await?;
    browser.find("#login-submit").await?.click().await?;
    let error = browser.wait_text("#login-error", |t| !t.is_empty(), secs(10)).await?;
    assert!(error.contains("did not accept"), "a refused token says so: {error:?}");
    browser.screenshot(screenshot("sign-in-refused")).await?;
    browser.find("#login-token").await?.clear().await?;
    browser.find("#login-token").await?.send_keys(&token).await?;
    browser.find("#login-submit").await?.click().await?;
    browser.wait_text("#who", |t| t.contains("viewer"), secs(10)).await?;

    browser.goto(&page(&dashboard, &env)).await?;
    let promote = button(&browser, "promote").await?;
    assert!(!promote.is_enabled().await?, "promote is disabled for a viewer");
    let reason = browser.find("[data-reason-for=\"promote\"]").await?.text().await?;
    assert!(reason.contains("may not patch rollouts/status"), "the reason names what RBAC refuses: {reason:?}");
    assert!(!browser.find("body").await?.text().await?.contains(&token), "the token is never on the page");
    browser.screenshot(screenshot("viewer")).await?;
    let anonymous = dashboard.get(&format!("/api/rollouts/{}/{}", env.ns, env.rollout)).await?;
    assert_eq!(anonymous.status, 401, "an API client without the cookie or a bearer token is refused");
    drop(browser);
    let log = std::fs::read_to_string(&dashboard.log)?;
    assert!(!log.contains(&token), "the token is never in the log");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_resumes_after_the_server_restarts() -> anyhow::Result<()> {
    let env = Env::new("dash-resume").await?;
    given_paused_canary(&env).await?;
    let mut dashboard = DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns]).await?;
    let browser = Browser::start().await?;
    browser.goto(&dashboard.url()).await?;
    browser.wait_text(&format!("#all {} .step", row(&env)), |t| t.contains("2/4"), secs(10)).await?;
    browser.wait_text("#live", |t| t.contains("live"), secs(10)).await?;

    dashboard.kill();
    browser.wait_text("#live", |t| t.contains("reconnecting"), secs(10)).await?;
    // A change while the server is down: the page must show it once the stream is back.
    env.rollouts()
        .patch(
            &env.rollout,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"resumed": "yes"}}})),
        )
        .await?;
    env.when_promote().await?;
    env.then_paused_at_step(3, secs(60)).await?;
    dashboard.restart().await?;
    browser.wait_text("#live", |t| t.contains("live"), secs(20)).await?;
    browser.wait_text(&format!("#all {} .step", row(&env)), |t| t.contains("4/4"), secs(10)).await?;
    assert!(browser.url().await?.ends_with('/') || browser.url().await?.contains("#/"), "no reload to another page");
    drop(browser);
    env.cleanup().await
}

/// An unknown Rollout, an action without the page's header, an unknown action: each a sentence
/// with the reason, on the page as in the API.
#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_a_sentence_and_never_a_blank_page() -> anyhow::Result<()> {
    let env = Env::new("dash-errors").await?;
    let dashboard = DashboardProcess::start(&format!("{}-dashboard", env.ns), &["-n", &env.ns, "--actions"]).await?;
    let unknown = dashboard.get(&format!("/api/rollouts/{}/nothing", env.ns)).await?;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["error"].as_str().unwrap_or_default().contains("no Rollout \"nothing\""), "{}", unknown.body);
    let no_header =
        dashboard.post(&format!("/api/rollouts/{}/nothing/actions/promote", env.ns), &[], &json!({})).await?;
    assert_eq!(no_header.status, 403, "an action without the page's header is refused: {}", no_header.body);
    let no_such_action = dashboard
        .post(&format!("/api/rollouts/{}/x/actions/explode", env.ns), &[("X-Stepwise-Action", "1")], &json!({}))
        .await?;
    assert_eq!(no_such_action.status, 404);
    assert!(no_such_action.body["error"].as_str().unwrap_or_default().contains("promote"), "{}", no_such_action.body);

    let browser = Browser::start().await?;
    browser.goto(&format!("{}#/rollouts/{}/nothing", dashboard.url(), env.ns)).await?;
    let notice = browser.wait_text("#notice", |t| !t.is_empty(), secs(10)).await?;
    assert!(notice.contains("no Rollout \"nothing\""), "the page shows the server's reason: {notice:?}");
    assert_eq!(browser.find("#notice").await?.attr("class").await?.as_deref().map(|c| c.contains("error")), Some(true));
    drop(browser);
    env.cleanup().await
}
