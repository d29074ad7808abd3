//! Notifications: who subscribes to what (annotations on the Rollout), and the durable outbox in
//! the Rollout's status from which the leading controller sends each notification once.
//!
//! A transition core records (a step completed, an abort, a degraded phase) and a Rollout
//! subscribes to becomes a [`PendingNotification`] per destination, written in the same status
//! write as the transition itself: it is due exactly when the transition is recorded. The leader
//! sends it outside the reconcile and moves it to [`NotificationsStatus::delivered`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The prefix of a subscription annotation: `notifications.stepwise.dev/subscribe.<trigger>.<service>:
/// <recipient>;<recipient>`.
pub const SUBSCRIBE_PREFIX: &str = "notifications.stepwise.dev/subscribe.";
/// Argo Rollouts' prefix, read too, so that an Argo Rollout's subscriptions apply unchanged.
pub const ARGO_SUBSCRIBE_PREFIX: &str = "notifications.argoproj.io/subscribe.";
/// How many deliveries the status keeps, newest last.
pub const DELIVERIES_KEPT: usize = 10;

/// One destination of a trigger: a service (as the configuration names it) and a recipient of
/// it (a Slack channel; empty for a webhook).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    /// The trigger (`on-rollout-aborted`).
    pub trigger: String,
    /// The service (`slack`, or a webhook's name).
    pub service: String,
    /// The recipient; empty when the service has none.
    pub recipient: String,
}

/// The subscriptions of a Rollout's annotations, both prefixes, in order. A trigger name holds no
/// dot, so the first dot after the prefix ends it; the rest is the service.
pub fn subscriptions(annotations: &BTreeMap<String, String>) -> Vec<Subscription> {
    let mut out: Vec<Subscription> = annotations
        .iter()
        .filter_map(|(key, recipients)| {
            let rest = key.strip_prefix(SUBSCRIBE_PREFIX).or_else(|| key.strip_prefix(ARGO_SUBSCRIBE_PREFIX))?;
            let (trigger, service) = rest.split_once('.')?;
            (!trigger.is_empty() && !service.is_empty()).then_some((trigger, service, recipients))
        })
        .flat_map(|(trigger, service, recipients)| {
            let mut list: Vec<&str> = recipients.split([';', ',']).map(str::trim).filter(|r| !r.is_empty()).collect();
            if list.is_empty() {
                list.push("");
            }
            list.into_iter().map(move |recipient| Subscription {
                trigger: trigger.to_string(),
                service: service.to_string(),
                recipient: recipient.to_string(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The outbox of a Rollout's notifications.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsStatus {
    /// Notifications due and not yet delivered, oldest first: one per destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingNotification>,
    /// The last deliveries (at most 10), newest last: sent, or given up on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<NotificationDelivery>,
    /// Thread ids a service returned for this release (a Slack message's `ts`), by
    /// `<service>/<recipient>`, so that later messages of the release go to the same thread.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub threads: BTreeMap<String, String>,
}

/// A notification due to one destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// `<revision>/<trigger>/<step>/<service>/<recipient>`: queued once per Rollout. With the
    /// Rollout's namespace and name before it, the `Idempotency-Key` a receiver can drop a repeat
    /// by.
    pub key: String,
    /// The trigger (`on-rollout-step-completed`).
    pub trigger: String,
    /// The service, as the configuration names it.
    pub service: String,
    /// The recipient (a Slack channel); empty when the service has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recipient: String,
    /// The revision the transition belongs to.
    pub revision: i64,
    /// The step index at the transition (the step completed, for on-rollout-step-completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// What happened, in words: the event's message.
    pub message: String,
    /// When it became due.
    pub due_since: Time,
    /// Sending attempts that failed so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: i32,
    /// Not to be tried again before this (backoff after a failed attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A notification sent, skipped because its trigger's conditions did not hold, or given up on
/// after its attempts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDelivery {
    /// The pending notification's key.
    pub key: String,
    /// The trigger.
    pub trigger: String,
    /// The service.
    pub service: String,
    /// The recipient; empty when the service has none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recipient: String,
    /// When it was sent, skipped or given up on.
    pub time: Time,
    /// Whether it was sent.
    pub sent: bool,
    /// Why it was not sent although nothing failed: no `when` of its trigger held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Attempts made, this one included.
    pub attempts: i32,
    /// Why it was given up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_read_from_both_prefixes_one_per_recipient() {
        let annotations = BTreeMap::from([
            ("notifications.stepwise.dev/subscribe.on-rollout-aborted.slack".to_string(), "ops; dev".to_string()),
            ("notifications.argoproj.io/subscribe.on-rollout-completed.ci".to_string(), String::new()),
            ("notifications.stepwise.dev/subscribe.no-service".to_string(), "x".to_string()),
            ("other.dev/subscribe.on-rollout-aborted.slack".to_string(), "x".to_string()),
        ]);
        let found: Vec<(String, String, String)> =
            subscriptions(&annotations).into_iter().map(|s| (s.trigger, s.service, s.recipient)).collect();
        let expected = [
            ("on-rollout-aborted", "slack", "dev"),
            ("on-rollout-aborted", "slack", "ops"),
            ("on-rollout-completed", "ci", ""),
        ];
        assert_eq!(found, expected.map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string())));
    }
}
