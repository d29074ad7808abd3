//! What the kill loop checks of notifications: a webhook receiver on 127.0.0.1 that records the
//! Idempotency-Key and the Rollout of every request, the configuration that sends to it, and
//! subscriptions on the fleet's Rollouts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use stepwise_api::Rollout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The triggers the fleet subscribes to: each fires exactly once per Rollout and release.
pub const TRIGGERS: [&str; 2] = ["on-rollout-updated", "on-rollout-completed"];

/// One request received: the Rollout it is about and its Idempotency-Key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delivery {
    /// The Rollout's name, from the body.
    pub rollout: String,
    /// The trigger, from the body.
    pub trigger: String,
    /// The Idempotency-Key header.
    pub key: String,
}

/// A webhook receiver on 127.0.0.1 answering 200 to everything.
#[derive(Clone, Default)]
pub struct Receiver {
    received: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    /// Starts it; returns it and its URL.
    pub async fn start() -> anyhow::Result<(Self, String)> {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let record = receiver.received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, record.clone()));
            }
        });
        Ok((receiver, url))
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Delivery> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Reads one request (headers, then the body its Content-Length says), records it, answers 200.
async fn answer(mut stream: tokio::net::TcpStream, record: Arc<Mutex<Vec<Delivery>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let body = loop {
        let Ok(n) = stream.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        if body.len() >= length {
            let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let key = header(head, "idempotency-key").unwrap_or_default();
            break (body, key);
        }
    };
    let (body, key) = body;
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    let delivery = Delivery { rollout: field("rollout"), trigger: field("trigger"), key };
    record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(delivery);
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
    })
}

/// The notifications ConfigMap and Secret of `namespace`: the webhook `ci` at `url`, sent by
/// [`TRIGGERS`].
pub async fn configure(client: &Client, namespace: &str, url: &str) -> anyhow::Result<()> {
    let mut data = BTreeMap::new();
    for trigger in TRIGGERS {
        data.insert(format!("trigger.{trigger}"), "- send: [release]".to_string());
    }
    data.insert("service.webhook.ci".into(), format!("url: {url}\ntimeout: 2s\n"));
    let body = r#"{"rollout": "{{.rollout.metadata.name}}", "trigger": "{{.notification.trigger}}"}"#;
    data.insert("template.release".into(), format!("webhook:\n  ci:\n    path: /hooks\n    body: '{body}'\n"));
    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "stepwise-notification-configmap"}, "data": data}))?;
    Api::<ConfigMap>::namespaced(client.clone(), namespace).create(&PostParams::default(), &config_map).await?;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "stepwise-notification-secret"}}))?;
    Api::<Secret>::namespaced(client.clone(), namespace).create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// Subscribes every Rollout of `names` to [`TRIGGERS`] through `ci`.
pub async fn subscribe(client: &Client, namespace: &str, names: &[String]) -> anyhow::Result<()> {
    let annotations: BTreeMap<String, String> =
        TRIGGERS.iter().map(|t| (format!("notifications.stepwise.dev/subscribe.{t}.ci"), String::new())).collect();
    let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
    for name in names {
        let patch = json!({"metadata": {"annotations": annotations}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// What the receiver got, against what was due: every Rollout of `names` told each trigger of
/// [`TRIGGERS`] under exactly one key. A repeat under the same key (the one window: a
/// controller killed between the receiver's answer and the write that records it) is counted,
/// not a problem: a receiver drops it by its key.
pub fn check(received: &[Delivery], names: &[String]) -> (Vec<String>, usize) {
    let mut keys: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for d in received {
        keys.entry((d.rollout.as_str(), d.trigger.as_str())).or_default().insert(d.key.as_str());
    }
    let mut problems = Vec::new();
    for name in names {
        for trigger in TRIGGERS {
            match keys.get(&(name.as_str(), trigger)).map(BTreeSet::len).unwrap_or(0) {
                1 => {}
                0 => problems.push(format!("{name}: {trigger} never arrived")),
                n => problems
                    .push(format!("{name}: {trigger} arrived under {n} keys: {:?}", keys[&(name.as_str(), trigger)])),
            }
        }
    }
    let distinct: usize = keys.values().map(BTreeSet::len).sum();
    (problems, received.len() - distinct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(rollout: &str, trigger: &str, key: &str) -> Delivery {
        Delivery { rollout: rollout.into(), trigger: trigger.into(), key: key.into() }
    }

    #[test]
    fn a_repeat_under_one_key_is_counted_and_a_second_key_or_a_missing_trigger_is_a_problem() {
        let names = vec!["a".to_string(), "b".to_string()];
        let received = [
            delivery("a", "on-rollout-updated", "2/on-rollout-updated/0/ci/"),
            delivery("a", "on-rollout-updated", "2/on-rollout-updated/0/ci/"),
            delivery("a", "on-rollout-completed", "2/on-rollout-completed/3/ci/"),
            delivery("b", "on-rollout-updated", "2/on-rollout-updated/0/ci/"),
            delivery("b", "on-rollout-updated", "2/on-rollout-updated/1/ci/"),
        ];
        let (problems, repeats) = check(&received, &names);
        assert_eq!(repeats, 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("b: on-rollout-updated arrived under 2 keys"), "{problems:?}");
        assert_eq!(problems[1], "b: on-rollout-completed never arrived");
    }
}
