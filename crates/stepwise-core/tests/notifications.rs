//! Notifications due: each subscribed transition is queued once per destination, in the status
//! written with the transition, and never again once queued or delivered.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use stepwise_api::notifications::{NotificationDelivery, NotificationsStatus};
use support::{World, rollout_with};

const STEPS: &str = "    canary:\n      steps:\n      - setWeight: 25\n      - pause: {}\n      - setWeight: 50\n";

fn subscribed(annotations: &[(&str, &str)]) -> World {
    let mut rollout = rollout_with(4, STEPS);
    rollout.metadata.annotations =
        Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    let mut w = World::new(rollout);
    w.settle(20);
    w
}

fn outbox(w: &World) -> NotificationsStatus {
    w.status().notifications.unwrap_or_default()
}

fn keys(w: &World) -> Vec<String> {
    outbox(w).pending.into_iter().map(|p| p.key).collect()
}

/// What the leader does: every pending notification delivered.
fn deliver_all(w: &mut World) {
    let mut status = w.status();
    let outbox = status.notifications.get_or_insert_with(Default::default);
    for p in std::mem::take(&mut outbox.pending) {
        outbox.delivered.push(NotificationDelivery {
            key: p.key,
            trigger: p.trigger,
            service: p.service,
            recipient: p.recipient,
            time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            sent: true,
            skipped: None,
            attempts: 1,
            error: None,
        });
    }
    w.rollout.status = Some(status);
}

#[test]
fn each_step_completed_is_queued_once_per_recipient_with_its_step_and_revision() {
    let mut w = subscribed(&[("notifications.stepwise.dev/subscribe.on-rollout-step-completed.slack", "ops;dev")]);
    assert_eq!(keys(&w), Vec::<String>::new(), "the first version completes no step");
    w.set_image("demo:2");
    w.settle(20);
    assert_eq!(w.step(), 1, "paused at the pause step");
    assert_eq!(keys(&w), ["2/on-rollout-step-completed/0/slack/dev", "2/on-rollout-step-completed/0/slack/ops"]);
    let pending = &outbox(&w).pending[0];
    assert_eq!((pending.revision, pending.step), (2, Some(0)));
    assert!(pending.message.starts_with("Rollout step 1/3 completed"), "{}", pending.message);

    w.promote();
    w.settle(20);
    let steps: Vec<Option<i32>> = outbox(&w).pending.iter().map(|p| p.step).collect();
    assert_eq!(steps, [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)], "every step, each once");
}

#[test]
fn an_abort_is_queued_with_the_step_it_happened_at_and_once_delivered_never_again() {
    let mut w = subscribed(&[("notifications.argoproj.io/subscribe.on-rollout-aborted.ci", "")]);
    w.set_image("demo:2");
    w.settle(20);
    w.abort();
    w.settle(20);
    assert_eq!(keys(&w), ["2/on-rollout-aborted/1/ci/"], "Argo's annotation is read too");
    deliver_all(&mut w);
    w.settle(20);
    w.retry();
    w.settle(5);
    w.abort();
    w.settle(20);
    assert!(outbox(&w).pending.is_empty(), "aborted again at the same step: {:?}", outbox(&w).pending);
    assert_eq!(outbox(&w).delivered.len(), 1);
}

#[test]
fn a_rollout_that_subscribes_to_nothing_has_no_outbox() {
    let mut w = subscribed(&[]);
    w.set_image("demo:2");
    w.settle(20);
    w.abort();
    w.settle(20);
    assert_eq!(w.status().notifications, None);
}

#[test]
fn a_degraded_rollout_notifies_with_its_message() {
    let mut w = subscribed(&[("notifications.stepwise.dev/subscribe.on-rollout-degraded.ci", "")]);
    w.set_image("demo:2");
    w.settle(20);
    w.abort();
    w.settle(20);
    let pending = outbox(&w).pending;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].trigger, "on-rollout-degraded");
    assert_eq!(Some(&pending[0].message), w.status().message.as_ref());
}
