//! The notification sender: the leader's task that sends what the Rollouts' outboxes hold
//! (`status.notifications.pending`, queued by core in the status write that records each
//! transition), outside the reconcile, so that a slow or dead receiver never slows a release.
//!
//! Each notification is sent, then recorded as delivered in the Rollout's status with the
//! resourceVersion read, so that nothing core queued meanwhile is lost. Only the leader runs
//! this, so two replicas never send the same one; a new leader reads the outbox from the status
//! and goes on where the last one stopped. The one window for a repeat is a crash between a
//! receiver's answer and that write: every message carries its key as `Idempotency-Key` for a
//! receiver to drop it. A failure is tried again with backoff until [`MAX_ATTEMPTS`], then
//! recorded as failed with a Warning Event and the metric.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use stepwise_api::Rollout;
use stepwise_api::notifications::{DELIVERIES_KEPT, NotificationDelivery, NotificationsStatus, PendingNotification};
use stepwise_core::add_seconds;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Attempts before a notification is given up on (about 10 minutes of backoff).
pub const MAX_ATTEMPTS: i32 = 8;
/// How often the outboxes are looked at.
const TICK: Duration = Duration::from_millis(500);
/// Notifications being sent at once.
const IN_FLIGHT: usize = 16;
/// How long a key recorded as delivered is not taken from the cache again: far longer than the
/// cache takes to show the write.
const HELD_AFTER_DELIVERY: Duration = Duration::from_secs(300);

/// Where the configuration is: the ConfigMap (`trigger.*`, `template.*`, `service.*`) and the
/// Secret its `$key`s name, in the controller's namespace.
#[derive(Clone, Debug)]
pub struct NotifierSettings {
    /// The namespace of both.
    pub namespace: String,
    /// The ConfigMap's name.
    pub config_map: String,
    /// The Secret's name.
    pub secret: String,
    /// Whether a Rollout's namespace may configure its own services in a ConfigMap and Secret of
    /// the same names (Argo's self-service notifications).
    pub self_service: bool,
}

/// What came of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Delivered; the service's thread for later messages of the release, if it has threads.
    Sent { thread: Option<String> },
    /// Not delivered; whether trying again may help.
    Failed { error: String, retryable: bool },
    /// Not to be sent: no condition of the trigger holds, and why.
    Skipped { why: String },
}

/// What recording an outcome did to the notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Moved to the deliveries, sent.
    Sent,
    /// Left pending, to be tried again after its backoff.
    Retried,
    /// Moved to the deliveries, given up on.
    Failed,
    /// Moved to the deliveries, not sent as the trigger's conditions said.
    Skipped,
    /// No longer pending (recorded by another attempt): nothing changed.
    Gone,
}

/// Seconds to wait after the `attempts`-th failure: 2, 4, 8 … at most 5 minutes.
pub fn backoff_seconds(attempts: i32) -> i64 {
    2_i64.saturating_pow(attempts.clamp(1, 20) as u32).min(300)
}

/// The notifications of `outbox` due at `now`.
pub fn due<'a>(outbox: &'a NotificationsStatus, now: &Time) -> impl Iterator<Item = &'a PendingNotification> + 'a {
    let now = now.0;
    outbox.pending.iter().filter(move |p| p.next_attempt.as_ref().is_none_or(|t| t.0 <= now))
}

/// The key of the thread a release's messages to one destination share.
fn thread_key(pending: &PendingNotification) -> String {
    format!("{}/{}/{}", pending.revision, pending.service, pending.recipient)
}

/// Records `outcome` of the notification `key` in `outbox` at `now`.
pub fn record(outbox: &mut NotificationsStatus, key: &str, outcome: &Outcome, now: &Time) -> Recorded {
    let Some(at) = outbox.pending.iter().position(|p| p.key == key) else { return Recorded::Gone };
    let attempts = outbox.pending[at].attempts + 1;
    let (recorded, error, skipped) = match outcome {
        Outcome::Sent { thread } => {
            if let Some(thread) = thread {
                outbox.threads.insert(thread_key(&outbox.pending[at]), thread.clone());
            }
            (Recorded::Sent, None, None)
        }
        Outcome::Skipped { why } => (Recorded::Skipped, None, Some(why.clone())),
        Outcome::Failed { error, retryable } if *retryable && attempts < MAX_ATTEMPTS => {
            let pending = &mut outbox.pending[at];
            pending.attempts = attempts;
            pending.next_attempt = Some(add_seconds(now, backoff_seconds(attempts)));
            pending.last_error = Some(error.clone());
            return Recorded::Retried;
        }
        Outcome::Failed { error, .. } => (Recorded::Failed, Some(error.clone()), None),
    };
    let pending = outbox.pending.remove(at);
    outbox.delivered.push(NotificationDelivery {
        key: pending.key,
        trigger: pending.trigger,
        service: pending.service,
        recipient: pending.recipient,
        time: now.clone(),
        sent: recorded == Recorded::Sent,
        skipped,
        attempts,
        error,
    });
    let beyond = outbox.delivered.len().saturating_sub(DELIVERIES_KEPT);
    outbox.delivered.drain(..beyond);
    recorded
}

/// The key of a notification among every Rollout's: `<namespace>/<name>/<key>`. A pending key is
/// unique in its Rollout's outbox only (`2/on-rollout-updated/0/ci/` is every Rollout's), so the
/// sender tells notifications in flight apart by this one, and receivers drop a repeat by it
/// (the `Idempotency-Key` of a message is this key and the template's name).
pub fn global_key(rollout: &Rollout, pending: &PendingNotification) -> String {
    format!("{}{}", rollout_key(rollout), pending.key)
}

/// `<namespace>/<name>/`: what the [`global_key`]s of a Rollout start with.
fn rollout_key(rollout: &Rollout) -> String {
    format!("{}/{}/", rollout.namespace().unwrap_or_default(), rollout.name_any())
}

/// The variables a template is rendered with: the Rollout as it is now, and the notification
/// with what happened when it became due.
pub fn template_vars(rollout: &Rollout, pending: &PendingNotification) -> Value {
    let notification = stepwise_notify::Notification {
        trigger: pending.trigger.clone(),
        revision: pending.revision,
        step: pending.step,
        message: pending.message.clone(),
        key: global_key(rollout, pending),
        service: pending.service.clone(),
        recipient: pending.recipient.clone(),
    };
    stepwise_notify::template_vars(serde_json::to_value(rollout).unwrap_or(Value::Null), &notification)
}

/// The sender's shared parts.
struct Sender {
    client: Client,
    settings: NotifierSettings,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Keys being sent now, so that a slow send is not started twice.
    in_flight: Mutex<HashSet<String>>,
    /// Keys recorded by this process, with the time before which they are not taken from the
    /// cache again: until the cache has the write, it still shows them pending (or without
    /// their backoff).
    held: Mutex<HashMap<String, Instant>>,
}

/// Sends the due notifications of every Rollout in `rollouts` until `shutdown` completes.
pub async fn run(
    client: Client,
    rollouts: Store<DeserializeGuard<Rollout>>,
    settings: NotifierSettings,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    shutdown: impl Future<Output = ()>,
) {
    let sender = Arc::new(Sender {
        client,
        settings,
        metrics,
        recorder,
        in_flight: Mutex::new(HashSet::new()),
        held: Mutex::new(HashMap::new()),
    });
    let sending = async {
        loop {
            let now = Time(Timestamp::now());
            for rollout in rollouts.state() {
                let Ok(rollout) = &rollout.0 else { continue };
                let Some(outbox) = rollout.status.as_ref().and_then(|s| s.notifications.as_ref()) else { continue };
                // One at a time per Rollout, oldest first, so that a release's messages arrive in
                // the order of its transitions (one failing waits for its backoff without
                // holding up the others).
                if sender.busy(&rollout_key(rollout)) {
                    continue;
                }
                if let Some(pending) = due(outbox, &now).find(|p| !sender.is_held(&global_key(rollout, p))) {
                    let key = global_key(rollout, pending);
                    if !sender.start(&key) {
                        continue;
                    }
                    let (sender, rollout, pending) = (sender.clone(), rollout.clone(), pending.clone());
                    tokio::spawn(async move {
                        sender.deliver(&rollout, &pending, &key).await;
                        sender.finish(&key);
                    });
                }
            }
            tokio::time::sleep(TICK).await;
        }
    };
    tokio::select! {
        () = sending => {},
        () = shutdown => {},
    }
}

impl Sender {
    /// Whether a notification of the Rollout whose keys start with `rollout_key` is being sent.
    fn busy(&self, rollout_key: &str) -> bool {
        let in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        in_flight.iter().any(|key| key.starts_with(rollout_key))
    }

    /// Whether `key` was recorded by this process lately (the cache may not show it yet).
    fn is_held(&self, key: &str) -> bool {
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        held.contains_key(key)
    }

    /// Marks `key` as being sent; false when it is already, or too many are.
    fn start(&self, key: &str) -> bool {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        in_flight.len() < IN_FLIGHT && in_flight.insert(key.to_string())
    }

    /// Keeps `key` from being taken from the cache again for `duration`.
    fn hold(&self, key: &str, duration: Duration) {
        let until = Instant::now() + duration;
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.to_string(), until);
    }

    fn finish(&self, key: &str) {
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    /// Sends one notification, whose [`global_key`] is `key`, and records what came of it.
    async fn deliver(&self, rollout: &Rollout, pending: &PendingNotification, key: &str) {
        let thread = rollout
            .status
            .as_ref()
            .and_then(|s| s.notifications.as_ref())
            .and_then(|n| n.threads.get(&thread_key(pending)).cloned());
        let outcome = self.send(rollout, pending, key, thread.as_deref()).await;
        let recorded = match self.persist(rollout, &pending.key, &outcome).await {
            Ok(recorded) => recorded,
            Err(e) => {
                // Tried again from the outbox, which still holds it: a repeat the receiver can
                // drop by its Idempotency-Key.
                warn!(rollout = %rollout.name_any(), key = %pending.key, error = %e, "could not record a notification");
                return;
            }
        };
        let held = match recorded {
            Recorded::Retried => Duration::from_secs(backoff_seconds(pending.attempts + 1).unsigned_abs()),
            _ => HELD_AFTER_DELIVERY,
        };
        self.hold(key, held);
        self.tell(rollout, pending, &outcome, recorded).await;
    }

    /// Renders the notification with the configuration as it is now and sends every message of
    /// its trigger whose condition holds; with the thread the service keeps for the release.
    async fn send(&self, rollout: &Rollout, pending: &PendingNotification, key: &str, thread: Option<&str>) -> Outcome {
        let failed = |e: stepwise_notify::SendError| Outcome::Failed { error: e.message, retryable: e.retryable };
        let namespace = rollout.namespace().unwrap_or_default();
        let config = match self.config(&namespace, &pending.service).await {
            Ok(config) => config,
            Err(e) => return failed(e),
        };
        let service = match config.service(&pending.service) {
            Ok(service) => service,
            Err(e) => return failed(not_retryable(e)),
        };
        let messages = match config.render(&pending.trigger, &pending.service, &template_vars(rollout, pending)) {
            Ok(messages) => messages,
            Err(e @ stepwise_notify::Error::Unmet { .. }) => return Outcome::Skipped { why: e.to_string() },
            Err(e) => return failed(not_retryable(e)),
        };
        let mut kept = thread.map(String::from);
        for message in &messages {
            let idempotency_key = format!("{key}/{}", message.template);
            match service.send(message, &pending.recipient, kept.as_deref(), &idempotency_key).await {
                Ok(sent) => kept = kept.or(sent.thread),
                Err(e) => return failed(e),
            }
        }
        Outcome::Sent { thread: kept.filter(|t| Some(t.as_str()) != thread) }
    }

    /// The configuration that serves `service` for a Rollout of `namespace`, read at each send so
    /// that a change applies to the next notification: the namespace's own when self-service is
    /// on and its ConfigMap configures the service, the controller's otherwise.
    async fn config(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<stepwise_notify::Config, stepwise_notify::SendError> {
        let NotifierSettings { namespace: home, config_map, self_service, .. } = &self.settings;
        let controller = self.read_config_map(home).await?;
        if *self_service
            && namespace != home
            && let Some(own) =
                self.read_config_map(namespace).await?.filter(|own| stepwise_notify::Config::configures(own, service))
        {
            let secrets = self.read_secret(namespace).await?;
            let shared = controller.unwrap_or_default();
            return stepwise_notify::Config::for_namespace(&shared, &own, &secrets).map_err(|e| {
                stepwise_notify::SendError {
                    retryable: false,
                    message: format!("ConfigMap {namespace}/{config_map}: {e}"),
                }
            });
        }
        let controller = controller.ok_or_else(|| retryable(format!("ConfigMap {home}/{config_map} not found")))?;
        stepwise_notify::Config::parse(&controller, &self.read_secret(home).await?).map_err(not_retryable)
    }

    /// The data of the notifications ConfigMap of `namespace`, if there is one.
    async fn read_config_map(
        &self,
        namespace: &str,
    ) -> Result<Option<BTreeMap<String, String>>, stepwise_notify::SendError> {
        let name = &self.settings.config_map;
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let found = config_maps
            .get_opt(name)
            .await
            .map_err(|e| retryable(format!("reading ConfigMap {namespace}/{name}: {e}")))?;
        Ok(found.map(|c| c.data.unwrap_or_default()))
    }

    /// The data of the notifications Secret of `namespace`, empty when there is none.
    async fn read_secret(&self, namespace: &str) -> Result<BTreeMap<String, String>, stepwise_notify::SendError> {
        let name = &self.settings.secret;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found =
            secrets.get_opt(name).await.map_err(|e| retryable(format!("reading Secret {namespace}/{name}: {e}")))?;
        let data = found.and_then(|s| s.data).unwrap_or_default();
        Ok(data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect())
    }

    /// Records `outcome` in the Rollout's status, read again for its resourceVersion; a conflict
    /// (core queued something meanwhile) reads again.
    async fn persist(&self, rollout: &Rollout, key: &str, outcome: &Outcome) -> Result<Recorded, kube::Error> {
        let api: Api<Rollout> = Api::namespaced(self.client.clone(), &rollout.namespace().unwrap_or_default());
        let mut tries = 0;
        loop {
            let fresh = api.get_status(&rollout.name_any()).await?;
            let mut outbox = fresh.status.as_ref().and_then(|s| s.notifications.clone()).unwrap_or_default();
            let recorded = record(&mut outbox, key, outcome, &Time(Timestamp::now()));
            if recorded == Recorded::Gone {
                return Ok(recorded);
            }
            // Every list whole, empty ones too: a merge patch leaves a field it omits as it was.
            let notifications =
                json!({"pending": outbox.pending, "delivered": outbox.delivered, "threads": outbox.threads});
            let patch = json!({
                "metadata": {"resourceVersion": fresh.resource_version()},
                "status": {"notifications": notifications},
            });
            match api.patch_status(&rollout.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => return Ok(recorded),
                Err(kube::Error::Api(e)) if e.code == 409 && tries < 5 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells what was recorded: a log line and the metric, and a Warning Event when a
    /// notification was given up on.
    async fn tell(&self, rollout: &Rollout, pending: &PendingNotification, outcome: &Outcome, recorded: Recorded) {
        let (name, trigger, service) = (rollout.name_any(), &pending.trigger, &pending.service);
        let result = match recorded {
            Recorded::Sent => "sent",
            Recorded::Retried => "retried",
            Recorded::Failed => "failed",
            Recorded::Skipped => "skipped",
            Recorded::Gone => return,
        };
        self.metrics.notification(trigger, service, result);
        let error = match outcome {
            Outcome::Failed { error, .. } => error.as_str(),
            Outcome::Sent { .. } | Outcome::Skipped { .. } => "",
        };
        match (recorded, outcome) {
            (Recorded::Sent, _) => info!(rollout = %name, %trigger, %service, key = %pending.key, "notification sent"),
            (Recorded::Skipped, Outcome::Skipped { why }) => {
                info!(rollout = %name, %trigger, %service, key = %pending.key, why, "notification not sent: its conditions do not hold")
            }
            (Recorded::Retried, _) => {
                warn!(rollout = %name, %trigger, %service, key = %pending.key, error, "notification not sent; trying again")
            }
            _ => {
                warn!(rollout = %name, %trigger, %service, key = %pending.key, error, "notification given up on");
                let note = format!("Notification {trigger} to {service} not sent: {error}");
                let event = Event {
                    type_: EventType::Warning,
                    reason: "NotificationFailed".into(),
                    note: Some(note.chars().take(1000).collect()),
                    action: "Notify".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&event, &rollout.object_ref(&())).await {
                    warn!(rollout = %name, error = %e, "could not record event");
                }
            }
        }
    }
}

/// A failure to read the configuration: the API server may answer the next time.
fn retryable(message: String) -> stepwise_notify::SendError {
    stepwise_notify::SendError { retryable: true, message }
}

/// A configuration or template error: sending again cannot help until a person changes it.
fn not_retryable(e: stepwise_notify::Error) -> stepwise_notify::SendError {
    stepwise_notify::SendError { retryable: false, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn outbox(keys: &[&str]) -> NotificationsStatus {
        let pending = keys
            .iter()
            .map(|key| PendingNotification {
                key: key.to_string(),
                trigger: "on-rollout-aborted".into(),
                service: "slack".into(),
                recipient: "ops".into(),
                revision: 2,
                step: Some(1),
                message: "aborted".into(),
                due_since: at(0),
                attempts: 0,
                next_attempt: None,
                last_error: None,
            })
            .collect();
        NotificationsStatus { pending, ..Default::default() }
    }

    #[test]
    fn a_sent_notification_moves_to_the_deliveries_and_keeps_its_thread_for_the_release() {
        let mut o = outbox(&["a", "b"]);
        let recorded = record(&mut o, "a", &Outcome::Sent { thread: Some("1700.1".into()) }, &at(10));
        assert_eq!(recorded, Recorded::Sent);
        assert_eq!(o.pending.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!((o.delivered[0].key.as_str(), o.delivered[0].sent, o.delivered[0].attempts), ("a", true, 1));
        assert_eq!(o.threads.get("2/slack/ops").map(String::as_str), Some("1700.1"));
        assert_eq!(record(&mut o, "a", &Outcome::Sent { thread: None }, &at(11)), Recorded::Gone, "recorded once");
    }

    #[test]
    fn a_failure_waits_longer_each_time_then_is_given_up_on_with_its_error() {
        let mut o = outbox(&["a"]);
        let failed = Outcome::Failed { error: "webhook ci answered 503".into(), retryable: true };
        for attempt in 1..MAX_ATTEMPTS {
            assert_eq!(record(&mut o, "a", &failed, &at(100)), Recorded::Retried);
            let next = o.pending[0].next_attempt.clone().unwrap();
            assert_eq!(next, at(100 + backoff_seconds(attempt)));
            assert_eq!(due(&o, &at(100)).count(), 0, "not due before its backoff");
        }
        assert_eq!(record(&mut o, "a", &failed, &at(100)), Recorded::Failed);
        assert!(o.pending.is_empty());
        let given_up = &o.delivered[0];
        assert_eq!((given_up.sent, given_up.attempts), (false, MAX_ATTEMPTS));
        assert_eq!(given_up.error.as_deref(), Some("webhook ci answered 503"));
    }

    #[test]
    fn a_refusal_is_given_up_on_at_once_and_only_the_last_deliveries_are_kept() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let mut o = outbox(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let refused = Outcome::Failed { error: "slack: channel_not_found".into(), retryable: false };
        assert_eq!(record(&mut o, "k0", &refused, &at(5)), Recorded::Failed);
        for key in &keys[1..] {
            record(&mut o, key, &Outcome::Sent { thread: None }, &at(6));
        }
        assert_eq!(o.delivered.len(), DELIVERIES_KEPT);
        assert_eq!(o.delivered.last().unwrap().key, "k11");
    }

    #[test]
    fn a_notification_whose_conditions_do_not_hold_is_recorded_as_skipped_with_the_reason() {
        let mut o = outbox(&["a"]);
        let why = "trigger.on-rollout-aborted sends nothing: `rollout.status.phase == 'Degraded'` is false";
        assert_eq!(record(&mut o, "a", &Outcome::Skipped { why: why.into() }, &at(3)), Recorded::Skipped);
        assert!(o.pending.is_empty());
        let skipped = &o.delivered[0];
        assert_eq!((skipped.sent, skipped.skipped.as_deref(), skipped.error.as_deref()), (false, Some(why), None));
    }

    #[test]
    fn the_same_transition_of_two_rollouts_has_two_keys() {
        let rollout = |namespace: &str, name: &str| {
            let mut rollout = Rollout::default();
            rollout.metadata.namespace = Some(namespace.into());
            rollout.metadata.name = Some(name.into());
            rollout
        };
        let pending = &outbox(&["2/on-rollout-updated/0/ci/"]).pending[0];
        let keys = [rollout("shop", "a"), rollout("shop", "b"), rollout("bank", "a")].map(|r| global_key(&r, pending));
        assert_eq!(
            keys,
            [
                "shop/a/2/on-rollout-updated/0/ci/",
                "shop/b/2/on-rollout-updated/0/ci/",
                "bank/a/2/on-rollout-updated/0/ci/"
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!((1..=10).map(backoff_seconds).collect::<Vec<_>>(), [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
