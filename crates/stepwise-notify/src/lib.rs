//! Notifications of Rollouts, configured as Argo Rollouts users know them from its
//! notifications-engine: one ConfigMap of `trigger.<name>`, `template.<name>` and
//! `service.<type>[.<name>]` keys, and a Secret whose keys service configs reference as `$key`.
//!
//! The controller keeps the outbox (what is due, what was sent, retries) in the Rollout's status;
//! this crate only parses the configuration ([`Config::parse`]), renders a trigger's templates
//! ([`Config::render`], pure) and sends a rendered [`Message`] through a [`Service`], the I/O
//! seam. Each service type is one module ([`webhook`], [`slack`], [`alertmanager`],
//! [`teams_workflows`], [`email`], [`github`]) and one row of [`SERVICES`].
//! There is no Kubernetes client here: the controller hands over the ConfigMap's and the Secret's
//! data.
//!
//! Secrets never leave a service: no [`Error`] and no [`SendError`] quotes a Secret's value, a
//! Slack token or webhook URL, a Teams workflow's URL, a header value, a bearer token or basic-auth
//! credentials, as both end up in the
//! Rollout's status and in events, where everyone reading the Rollout sees them.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub mod alertmanager;
mod config;
pub mod email;
pub mod github;
mod http;
pub mod slack;
pub mod teams_workflows;
mod template;
mod vars;
pub mod webhook;
mod when;

pub use config::{Condition, Config};
pub use vars::{Notification, template_vars};

/// One rendered message: the text of the template's `message`, and for the destination service
/// its own section of the template, rendered (a webhook's `method`, `path` and `body`; Slack's
/// `attachments`, `blocks`, `groupingKey`, `notifyBroadcast` and `deliveryPolicy`; Alertmanager's
/// `labels`, `annotations` and `generatorURL`; Teams workflows' `title`, `text` and `facts`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// The name of the template the message was rendered from.
    pub template: String,
    /// The rendered `message`.
    pub text: String,
    /// Service kind (`webhook`, `slack`, …) → its rendered section of the template. A kind is absent
    /// when the template has no section for the destination.
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// What a service returns once a message is delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// A thread id to keep for later messages of the same release (Slack's `ts` of the first
    /// message), if the service has threads.
    pub thread: Option<String>,
}

/// Why a message was not delivered.
///
/// `message` names the service, the HTTP status and the receiver's own error text only: never a
/// token, a webhook URL, a header value or credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether sending again later may succeed: timeouts, connection errors, HTTP 429 and 5xx
    /// (and Slack's `ratelimited`); not a refusal (other 4xx) or a bad configuration.
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

/// The future of a [`Service::send`].
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<Sent, SendError>> + Send + 'a>>;

/// A configured destination (`service.slack`, `service.webhook.ci`): where rendered messages go.
///
/// A trait object (`&dyn Service`), so that services of every kind sit in one [`Config`]; tests
/// of the controller stand in their own.
pub trait Service: Send + Sync {
    /// The kind (`webhook`, `slack`, …): the key of the message's [`Message::fields`] it reads.
    fn kind(&self) -> &'static str;

    /// Sends `message` to `recipient` (a Slack channel, a key of Teams workflows' `recipientUrls`;
    /// ignored by a webhook and by Alertmanager).
    ///
    /// `thread` is a thread id this service returned in [`Sent`] before for the same Rollout
    /// release (Slack's `ts`): the message is posted in that thread, or updates that message,
    /// as the template's delivery policy says. `idempotency_key` is the same for every attempt of
    /// one notification, so that a receiver can drop a repeat. Takes no longer than the
    /// service's timeout (10 s unless configured; Alertmanager's is per target, 3 s by default).
    fn send<'a>(
        &'a self,
        message: &'a Message,
        recipient: &'a str,
        thread: Option<&'a str>,
        idempotency_key: &'a str,
    ) -> Sending<'a>;

    /// How many times the caller may retry a retryable failure, when the service's config says
    /// (`retryMax`); the caller's own policy otherwise.
    fn retry_max(&self) -> Option<u32> {
        None
    }
}

/// Builds the service of the ConfigMap key `key` from its YAML `config`, resolving `$key`
/// references from the Secret's data `secrets`.
pub type Build = fn(key: &str, config: &str, secrets: &BTreeMap<String, String>) -> Result<Box<dyn Service>, Error>;

/// A service type: the `<type>` of `service.<type>[.<name>]` keys and of template sections.
pub struct ServiceType {
    /// `webhook`, `slack`, `alertmanager`, `teams-workflows`.
    pub kind: &'static str,
    /// Builds a service of this type.
    pub build: Build,
    /// The part of a template's `<kind>` section that is meant for the service named `name`, with
    /// the path that error messages give it (`webhook.ci`): a webhook template names its webhook,
    /// a Slack template serves every Slack service.
    pub section: fn(section: &serde_json::Value, name: &str) -> Option<(String, serde_json::Value)>,
    /// Checks and completes a rendered section (Slack's attachments, given as text, become JSON);
    /// an error names the field.
    pub finish: fn(rendered: serde_json::Value) -> Result<serde_json::Value, (String, String)>,
}

/// The service types of this crate. A new service is its module and one row.
pub const SERVICES: &[ServiceType] = &[
    ServiceType {
        kind: webhook::KIND,
        build: webhook::build,
        section: webhook::section,
        finish: |rendered| Ok(rendered),
    },
    ServiceType { kind: slack::KIND, build: slack::build, section: slack::section, finish: slack::finish },
    ServiceType {
        kind: alertmanager::KIND,
        build: alertmanager::build,
        section: alertmanager::section,
        finish: alertmanager::finish,
    },
    ServiceType { kind: email::KIND, build: email::build, section: email::section, finish: email::finish },
    ServiceType { kind: github::KIND, build: github::build, section: github::section, finish: github::finish },
    ServiceType {
        kind: teams_workflows::KIND,
        build: teams_workflows::build,
        section: teams_workflows::section,
        finish: teams_workflows::finish,
    },
];

/// The service type named `kind`.
fn service_type(kind: &str) -> Option<&'static ServiceType> {
    SERVICES.iter().find(|t| t.kind == kind)
}

/// Why the configuration cannot be used, or a message cannot be rendered. Each names the
/// ConfigMap key at fault and never quotes a Secret's value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key's value is unusable.
    #[error("{key}: {message}")]
    Config {
        /// The ConfigMap key, e.g. `service.webhook.ci`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A service config references a Secret key the Secret does not have.
    #[error("{key}: ${secret} is not a key of the Secret")]
    MissingSecret {
        /// The ConfigMap key, e.g. `service.slack`.
        key: String,
        /// The Secret key referenced, without its `$`.
        secret: String,
    },
    /// A template does not parse or does not render.
    #[error("{key}: {field}: {message}")]
    Template {
        /// The ConfigMap key, e.g. `template.rollout-aborted`.
        key: String,
        /// The field of the template, e.g. `message`, `webhook.ci.body`, `slack.attachments`.
        field: String,
        /// The template engine's error.
        message: String,
    },
    /// A trigger condition's `when` does not compile, or cannot be evaluated.
    #[error("{key}: condition {index}: when {message}")]
    Condition {
        /// The ConfigMap key, e.g. `trigger.on-rollout-aborted`.
        key: String,
        /// The condition's index in the trigger's list.
        index: usize,
        /// The problem, with the expression.
        message: String,
    },
    /// No condition of the trigger holds: nothing is to be sent.
    #[error("trigger.{trigger} sends nothing: {why}")]
    Unmet {
        /// The trigger's name.
        trigger: String,
        /// Why each condition does not hold.
        why: String,
    },
    /// No `trigger.<name>` key configures the trigger.
    #[error("trigger.{trigger} is not configured")]
    UnknownTrigger {
        /// The trigger's name.
        trigger: String,
    },
    /// No `service.*` key configures a service of this name.
    #[error("no service is named {name}: configure service.<type>.{name} or service.{name}")]
    UnknownService {
        /// The service's name.
        name: String,
    },
}
