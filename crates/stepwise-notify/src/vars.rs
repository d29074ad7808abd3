//! The variables every template is rendered with, the same for the controller and for
//! `kubectl stepwise notify test`.

use serde::Serialize;
use serde_json::{Value, json};

/// What a notification tells, beside the Rollout: `.notification` in a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Notification {
    /// The trigger (`on-rollout-aborted`).
    pub trigger: String,
    /// The revision the transition belongs to.
    pub revision: i64,
    /// The step index at the transition.
    pub step: Option<i32>,
    /// What happened, in words (the Event's text).
    pub message: String,
    /// Its key among every Rollout's (`<namespace>/<rollout>/<revision>/<trigger>/<step>/<service>/<recipient>`),
    /// the `Idempotency-Key` of its messages before the template's name.
    pub key: String,
    /// The service, as the configuration names it.
    pub service: String,
    /// The recipient; empty when the service has none.
    pub recipient: String,
}

/// The root of a template: `.rollout` (the Rollout as JSON) and `.notification`.
pub fn template_vars(rollout: Value, notification: &Notification) -> Value {
    json!({"rollout": rollout, "notification": notification})
}
