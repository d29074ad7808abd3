//! Notifications end to end: a real controller, the configuration in a real ConfigMap and Secret,
//! and a webhook receiver on 127.0.0.1 that records every request. Each subscribed transition
//! arrives exactly once, with its fields; a receiver that fails twice gets it once, on the third
//! attempt; a controller killed while a send hangs and started again sends it once more with the
//! same Idempotency-Key, and it is recorded once; a receiver that hangs does not hold the release;
//! a template error is a Warning naming the template and the field; a team's own service, in its
//! namespace's ConfigMap, sends with its own Secret, and a trigger whose `when` is false is
//! recorded as skipped with the reason.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use stepwise_api::RolloutPhase;
use stepwise_e2e::{Env, eventually, secs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    idempotency_key: String,
    authorization: String,
    body: Value,
    /// The status it was answered with; None while (or when) it was held.
    answered: Option<u16>,
}

/// How the receiver answers: the statuses of the next requests (then 200), and whether it holds
/// every request without answering.
#[derive(Default)]
struct Behaviour {
    statuses: VecDeque<u16>,
    hold: bool,
}

/// A webhook receiver on 127.0.0.1.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    async fn start() -> anyhow::Result<(Self, String)> {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().answer(stream));
            }
        });
        Ok((receiver, url))
    }

    async fn answer(self, mut stream: tokio::net::TcpStream) {
        let Some((head, body)) = read_request(&mut stream).await else { return };
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
                .unwrap_or_default()
                .to_string()
        };
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
        let (status, hold) = {
            let mut behaviour = self.behaviour.lock().unwrap();
            (behaviour.statuses.pop_front().unwrap_or(200), behaviour.hold)
        };
        let index = {
            let mut received = self.received.lock().unwrap();
            received.push(Received {
                path,
                idempotency_key: header("idempotency-key"),
                authorization: header("authorization"),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                answered: None,
            });
            received.len() - 1
        };
        if hold {
            // Held until the controller gives up on it (its timeout) or dies.
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        if stream.write_all(answer.as_bytes()).await.is_ok() {
            self.received.lock().unwrap()[index].answered = Some(status);
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    fn delivered(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s))).collect()
    }
}

/// The request head and body (by content-length).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Some((head, buf[end + 4..end + 4 + length].to_vec()));
    }
}

/// The configuration: one webhook `ci` at `url` with a token from the Secret, one template whose
/// body carries the fields a receiver needs, and the triggers the tests subscribe to.
async fn given_config(env: &Env, url: &str, body: &str) -> anyhow::Result<()> {
    let triggers = [
        "on-rollout-updated",
        "on-rollout-step-completed",
        "on-rollout-paused",
        "on-rollout-completed",
        "on-rollout-aborted",
    ];
    let mut data = serde_json::Map::new();
    for trigger in triggers {
        data.insert(format!("trigger.{trigger}"), json!("- send: [release]"));
    }
    data.insert(
        "service.webhook.ci".into(),
        json!(format!("url: {url}\nheaders:\n- name: Authorization\n  value: Bearer $ci-token\ntimeout: 2s\n")),
    );
    data.insert(
        "template.release".into(),
        json!(format!("message: Rollout {{{{.rollout.metadata.name}}}} {{{{.notification.trigger}}}}\nwebhook:\n  ci:\n    method: POST\n    path: /hooks\n    body: '{body}'\n")),
    );
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "stepwise-notification-configmap"},
        "data": data,
    }))?;
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &config_map).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "stepwise-notification-secret"},
        "stringData": {"ci-token": "s3cr3t-token"},
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.ns).create(&PostParams::default(), &secret).await?;
    Ok(())
}

const BODY: &str = r#"{"trigger": "{{.notification.trigger}}", "rollout": "{{.rollout.metadata.name}}", "revision": {{.notification.revision}}, "step": "{{.notification.step}}", "message": "{{.notification.message}}"}"#;

const STEPS: &str = "    canary:\n      steps:\n      - setWeight: 50\n      - pause: {}\n";

/// A namespace with the configuration, a controller that reads it, and a Rollout subscribed to
/// `triggers` through the webhook `ci`.
async fn env_subscribed(name: &str, url: &str, body: &str, triggers: &[&str]) -> anyhow::Result<Env> {
    let mut env = Env::without_controller(name).await?;
    given_config(&env, url, body).await?;
    start_controller(&mut env, None)?;
    given_subscribed_rollout(&env, triggers).await?;
    Ok(env)
}

/// A controller whose notifications' configuration is the test namespace's: alone, or with
/// `identity` electing a leader on the namespace's Lease.
fn start_controller(env: &mut Env, identity: Option<&str>) -> anyhow::Result<usize> {
    let mut flags = vec![format!("--lease-namespace={}", env.ns)];
    match identity {
        Some(id) => flags.extend([format!("--identity={id}"), "--lease-name=notify".into()]),
        None => flags.push("--leader-elect=false".into()),
    }
    env.start_controller(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The Rollout `app`, subscribed to `triggers` through `ci`, created and Healthy.
async fn given_subscribed_rollout(env: &Env, triggers: &[&str]) -> anyhow::Result<()> {
    let annotations: String =
        triggers.iter().map(|t| format!("    notifications.stepwise.dev/subscribe.{t}.ci: ''\n")).collect();
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: app\n  annotations:\n{annotations}spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'demo:1'}}]}}\n  strategy:\n{STEPS}"
    );
    env.rollouts().create(&PostParams::default(), &serde_yaml::from_str(&yaml)?).await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await
}

/// Waits until the Rollout's outbox has recorded `n` deliveries and holds nothing pending.
async fn then_delivered(env: &Env, n: usize) -> anyhow::Result<()> {
    env.then(&format!("{n} notifications delivered and none pending"), secs(60), |ro| {
        ro.status
            .as_ref()
            .and_then(|s| s.notifications.as_ref())
            .is_some_and(|o| o.pending.is_empty() && o.delivered.len() >= n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_subscribed_transition_arrives_exactly_once_with_its_fields() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let triggers = ["on-rollout-updated", "on-rollout-step-completed", "on-rollout-paused", "on-rollout-completed"];
    let env = env_subscribed("notify-once", &url, BODY, &triggers).await?;
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    then_delivered(&env, 6).await?;
    // A reconcile or two more: nothing may arrive again.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let all = receiver.received();
    let first: Vec<&str> =
        all.iter().filter(|r| r.body["revision"] == 1).map(|r| r.body["trigger"].as_str().unwrap_or("?")).collect();
    assert_eq!(first, ["on-rollout-completed"], "the first version's deploy, once");
    let received: Vec<Received> = all.into_iter().filter(|r| r.body["revision"] == 2).collect();
    let seen: Vec<(String, String)> = received
        .iter()
        .map(|r| {
            (r.body["trigger"].as_str().unwrap_or("?").to_string(), r.body["step"].as_str().unwrap_or("?").to_string())
        })
        .collect();
    let expected = [
        ("on-rollout-updated", "0"),
        ("on-rollout-step-completed", "0"),
        ("on-rollout-paused", "1"),
        ("on-rollout-step-completed", "1"),
        ("on-rollout-completed", "2"),
    ];
    let mut sorted = seen.clone();
    sorted.sort();
    let mut wanted: Vec<(String, String)> = expected.iter().map(|(t, s)| (t.to_string(), s.to_string())).collect();
    wanted.sort();
    assert_eq!(sorted, wanted, "each transition once: {received:#?}");
    for r in &received {
        assert_eq!(r.path, "/hooks");
        assert_eq!(r.authorization, "Bearer s3cr3t-token", "the header from the Secret");
        assert_eq!((r.body["rollout"].as_str(), r.body["revision"].as_i64()), (Some("app"), Some(2)));
        let prefix = format!("{}/app/2/on-rollout-", env.ns);
        assert!(r.idempotency_key.starts_with(&prefix), "the Rollout's and the transition's: {}", r.idempotency_key);
    }
    let step_message =
        received.iter().find(|r| r.body["trigger"] == "on-rollout-step-completed" && r.body["step"] == "0").unwrap();
    // What docs/notifications.md shows: the request as the receiver got it (no header of the Secret).
    eprintln!(
        "POST {}\nIdempotency-Key: {}\n\n{}",
        step_message.path,
        step_message.idempotency_key,
        serde_json::to_string_pretty(&step_message.body)?
    );
    assert!(step_message.body["message"].as_str().unwrap_or_default().starts_with("Rollout step 1/2 completed"));
    let delivered = env.get().await?.status.unwrap().notifications.unwrap().delivered;
    assert_eq!(delivered.len(), 6, "the first deploy's and the release's five");
    assert!(delivered.iter().all(|d| d.sent && d.attempts == 1), "{delivered:?}");
    // What a person sees of it.
    let get = tokio::process::Command::new(stepwise_e2e::repo_root().join("target/debug/kubectl-stepwise"))
        .args(["get", "rollout", "app", "-n", &env.ns, "--kubeconfig"])
        .arg(stepwise_e2e::kubeconfig_path())
        .output()
        .await?;
    let shown = String::from_utf8_lossy(&get.stdout);
    eprintln!("$ kubectl stepwise get rollout app\n{shown}");
    let section = shown.split("\nNotifications:\n").nth(1).unwrap_or_default();
    assert_eq!(section.lines().filter(|l| l.trim_start().starts_with("sent")).count(), 6, "{shown}");
    // The Secret's value is in no message of the controller and no status.
    let log = env.controllers[0].log_text();
    assert!(!log.contains("s3cr3t-token"));
    assert!(!serde_json::to_string(&env.get().await?.status)?.contains("s3cr3t-token"));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_fails_twice_gets_the_notification_once_on_the_third_attempt() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let env = env_subscribed("notify-retry", &url, BODY, &["on-rollout-aborted"]).await?;
    receiver.behaviour.lock().unwrap().statuses = VecDeque::from([503, 503]);
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_abort().await?;
    then_delivered(&env, 1).await?;

    let received = receiver.received();
    let answers: Vec<Option<u16>> = received.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [Some(503), Some(503), Some(200)], "{received:#?}");
    let keys: Vec<&str> = received.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "one key for every attempt: {keys:?}");
    let delivered = env.get().await?.status.unwrap().notifications.unwrap().delivered;
    assert_eq!(delivered.len(), 1);
    assert_eq!((delivered[0].sent, delivered[0].attempts), (true, 3));
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_while_sending_and_started_again_delivers_the_notification_once() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let mut env = env_subscribed("notify-kill", &url, BODY, &["on-rollout-aborted"]).await?;
    receiver.behaviour.lock().unwrap().hold = true;
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_abort().await?;
    eventually("the send to be under way", secs(30), || async { Ok(!receiver.received().is_empty()) }).await?;
    env.controllers[0].kill_hard();
    receiver.behaviour.lock().unwrap().hold = false;

    start_controller(&mut env, None)?;
    then_delivered(&env, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "{:#?}", receiver.received());
    let keys: Vec<String> = receiver.received().iter().map(|r| r.idempotency_key.clone()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "the repeat carries the same key: {keys:?}");
    let recorded = env.get().await?.status.unwrap().notifications.unwrap().delivered;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn across_a_leader_change_mid_send_the_notification_is_delivered_once_by_the_new_leader() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let mut env = Env::without_controller("notify-leader").await?;
    given_config(&env, &url, BODY).await?;
    start_controller(&mut env, Some("a"))?;
    eventually("a leads", secs(30), || async { Ok(env.controllers[0].metric("stepwise_leader").await? == Some(1.0)) })
        .await?;
    start_controller(&mut env, Some("b"))?;
    given_subscribed_rollout(&env, &["on-rollout-aborted"]).await?;
    receiver.behaviour.lock().unwrap().hold = true;
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_abort().await?;
    eventually("the leader's send to be under way", secs(30), || async { Ok(!receiver.received().is_empty()) }).await?;
    assert_eq!(env.controllers[1].metric("stepwise_notifications").await?, None, "the standby sends nothing");
    env.controllers[0].kill_hard();
    receiver.behaviour.lock().unwrap().hold = false;

    eventually("b leads", secs(60), || async { Ok(env.controllers[1].metric("stepwise_leader").await? == Some(1.0)) })
        .await?;
    then_delivered(&env, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.delivered().len(), 1, "{:#?}", receiver.received());
    let keys: Vec<String> = receiver.received().iter().map(|r| r.idempotency_key.clone()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "the repeat carries the same key: {keys:?}");
    let sent = env.controllers[1].metric_sum("stepwise_notifications_total").await?;
    assert_eq!(sent, 1.0, "the new leader sent it");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_hangs_does_not_hold_the_release() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let env = env_subscribed("notify-hang", &url, BODY, &["on-rollout-updated", "on-rollout-step-completed"]).await?;
    receiver.behaviour.lock().unwrap().hold = true;
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    env.when_promote().await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    let pending = env.get().await?.status.unwrap().notifications.map(|n| n.pending.len()).unwrap_or(0);
    assert!(pending > 0, "released while the notifications wait for the receiver");
    assert!(receiver.delivered().is_empty());
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_error_is_a_warning_naming_the_template_and_the_field() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let broken = r#"{"step": "{{.notification.nothing.here}}"}"#;
    let env = env_subscribed("notify-template", &url, broken, &["on-rollout-updated"]).await?;
    env.when_image("demo:2").await?;
    eventually("a NotificationFailed event", secs(60), || async {
        Ok(env.events().await?.iter().any(|(reason, message)| {
            reason == "NotificationFailed"
                && message.contains("template.release")
                && message.contains("webhook.ci.body")
        }))
    })
    .await?;
    assert!(receiver.received().is_empty(), "nothing sent");
    let delivered = env.get().await?.status.unwrap().notifications.unwrap().delivered;
    assert_eq!((delivered[0].sent, delivered[0].attempts), (false, 1), "given up on at once");
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_test_renders_a_trigger_for_a_rollout_and_sends_it_once() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    let env = env_subscribed("notify-cli", &url, BODY, &[]).await?;
    let binary = stepwise_e2e::repo_root().join("target/debug/kubectl-stepwise");
    let config = format!("{}/stepwise-notification-configmap", env.ns);
    let kubeconfig = stepwise_e2e::kubeconfig_path();
    let out = tokio::process::Command::new(&binary)
        .args(["notify", "test", "ci", "--rollout", "app", "--trigger", "on-rollout-aborted", "--config", &config])
        .args(["-n", &env.ns, "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("$ kubectl stepwise notify test ci …\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(stdout.contains("template release: Rollout app on-rollout-aborted"), "{stdout}");
    assert!(stdout.ends_with("sent 1 message(s) of on-rollout-aborted to ci\n"), "{stdout}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].body["trigger"], "on-rollout-aborted");
    assert!(received[0].idempotency_key.starts_with("test/"), "{}", received[0].idempotency_key);
    assert!(!stdout.contains("s3cr3t-token"), "no secret printed");

    let wrong = tokio::process::Command::new(&binary)
        .args(["notify", "test", "pager", "--rollout", "app", "--config", &config, "-n", &env.ns, "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .await?;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("pager"), "an unknown service is named: {stderr}");
    env.cleanup().await
}

/// A ConfigMap and a Secret of notifications in `ns`.
async fn given_notification_config(
    env: &Env,
    ns: &str,
    data: serde_json::Value,
    secret: serde_json::Value,
) -> anyhow::Result<()> {
    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "stepwise-notification-configmap"}, "data": data}))?;
    Api::<ConfigMap>::namespaced(env.client.clone(), ns).create(&PostParams::default(), &config_map).await?;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "stepwise-notification-secret"}, "stringData": secret}))?;
    Api::<Secret>::namespaced(env.client.clone(), ns).create(&PostParams::default(), &secret).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_s_own_service_uses_its_own_secret_and_a_false_when_skips_with_the_reason() -> anyhow::Result<()> {
    let (receiver, url) = Receiver::start().await?;
    // The platform's configuration, in the controller's namespace: the triggers, the template and
    // the webhook `ci`; on-rollout-paused only for Rollouts of more than 5 replicas.
    let home = Env::without_controller("notify-home").await?;
    let template = |service: &str| {
        format!(
            "message: m\nwebhook:\n  {service}:\n    path: /hooks\n    body: '{{\"trigger\": \"{{{{.notification.trigger}}}}\", \"service\": \"{{{{.notification.service}}}}\"}}'\n"
        )
    };
    let platform = json!({
        "trigger.on-rollout-updated": "- send: [release]",
        "trigger.on-rollout-paused": "- send: [release]\n  when: rollout.spec.replicas > 5",
        "template.release": template("ci"),
        "service.webhook.ci": format!("url: {url}\nheaders:\n- name: Authorization\n  value: Bearer $ci-token\n"),
    });
    given_notification_config(&home, &home.ns, platform, json!({"ci-token": "platform-s3cr3t"})).await?;
    // The team's own webhook, in the Rollout's namespace, with a token of its own Secret, and its
    // own version of the template (the platform's triggers stay).
    let mut env = Env::without_controller("notify-team").await?;
    let team = json!({
        "service.webhook.team": format!("url: {url}\nheaders:\n- name: Authorization\n  value: Bearer $team-token\n"),
        "template.release": template("team"),
    });
    given_notification_config(&env, &env.ns.clone(), team, json!({"team-token": "team-s3cr3t"})).await?;
    let lease_namespace = format!("--lease-namespace={}", home.ns);
    env.start_controller(&[&lease_namespace, "--leader-elect=false", "--self-service-notifications"])?;
    let yaml = format!(
        "apiVersion: stepwise.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: app\n  annotations:\n    notifications.stepwise.dev/subscribe.on-rollout-updated.team: ''\n    notifications.stepwise.dev/subscribe.on-rollout-updated.ci: ''\n    notifications.stepwise.dev/subscribe.on-rollout-paused.team: ''\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec: {{containers: [{{name: app, image: 'demo:1'}}]}}\n  strategy:\n{STEPS}"
    );
    env.rollouts().create(&PostParams::default(), &serde_yaml::from_str(&yaml)?).await?;
    env.then_phase(RolloutPhase::Healthy, secs(60)).await?;
    env.when_image("demo:2").await?;
    env.then_paused_at_step(1, secs(60)).await?;
    then_delivered(&env, 3).await?;

    let mut got: Vec<(String, String, String)> = receiver
        .received()
        .iter()
        .map(|r| {
            (
                r.body["trigger"].as_str().unwrap_or("?").into(),
                r.body["service"].as_str().unwrap_or("?").into(),
                r.authorization.clone(),
            )
        })
        .collect();
    got.sort();
    let bearer = |token: &str| format!("Bearer {token}");
    assert_eq!(
        got,
        [
            ("on-rollout-updated".into(), "ci".into(), bearer("platform-s3cr3t")),
            ("on-rollout-updated".into(), "team".into(), bearer("team-s3cr3t")),
        ],
        "the team's webhook with the team's token, the platform's with the platform's; nothing of the paused trigger"
    );
    let delivered = env.get().await?.status.unwrap().notifications.unwrap().delivered;
    let skipped =
        delivered.iter().find(|d| d.trigger == "on-rollout-paused").expect("the paused notification recorded");
    assert!(!skipped.sent && skipped.error.is_none(), "{skipped:?}");
    let why = skipped.skipped.as_deref().unwrap_or_default();
    assert!(why.contains("rollout.spec.replicas > 5") && why.contains("false"), "{why}");
    let get = tokio::process::Command::new(stepwise_e2e::repo_root().join("target/debug/kubectl-stepwise"))
        .args(["get", "rollout", "app", "-n", &env.ns, "--kubeconfig"])
        .arg(stepwise_e2e::kubeconfig_path())
        .output()
        .await?;
    let shown = String::from_utf8_lossy(&get.stdout);
    eprintln!("$ kubectl stepwise get rollout app\n{shown}");
    assert!(shown.lines().any(|l| l.trim_start().starts_with("skipped") && l.contains("on-rollout-paused")), "{shown}");
    home.cleanup().await?;
    env.cleanup().await
}
