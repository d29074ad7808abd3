//! Errors of the controller, with a stable label for metrics and events.

/// Everything that can fail in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {}", describe(source))]
    Kube {
        /// What the controller was doing.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The Rollout could not be decoded; the message names the field.
    #[error("the Rollout cannot be decoded: {0}")]
    InvalidObject(String),
    /// An analysis template the Rollout names does not exist or cannot be combined.
    #[error("analysis: {0}")]
    Analysis(String),
    /// A router's object needs a person: missing, malformed, or without the route named.
    #[error("traffic routing: {0}")]
    Router(#[from] stepwise_traffic::Error),
    /// A router plugin failed: no answer or no connection passes by itself, an answer it refuses
    /// or cannot be read needs a person ([`Error::needs_a_person`]).
    #[error("traffic routing: {0}")]
    RouterPlugin(#[from] stepwise_traffic::plugin::PluginError),
    /// Routing cannot be done as the cluster stands: an API it does not serve, a generated
    /// object of the same name that is not the Rollout's.
    #[error("traffic routing: {0}")]
    Traffic(String),
    /// A ReplicaSet with the name stepwise wants exists but belongs to something else.
    #[error("ReplicaSet {0} exists and is not owned by this Rollout")]
    Collision(String),
    /// The Rollout's pod selector cannot be rendered as a label selector.
    #[error("spec.selector: {0}")]
    Selector(String),
    /// The status patch lost a race with another writer; the next reconcile retries.
    #[error("status of {0} changed while reconciling; retrying")]
    Conflict(String),
}

impl Error {
    /// A short stable label: the `kind` of the errors metric. A failed API call is labelled by
    /// what went wrong (`client_kind`), so that throttling, conflicts, a failing API server and an
    /// unreachable one can be told apart on a dashboard.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => client_kind(source),
            Error::InvalidObject(_) => "invalid_object",
            Error::Analysis(_) => "analysis",
            Error::Router(_) | Error::Traffic(_) => "traffic",
            Error::RouterPlugin(_) => "router_plugin",
            Error::Collision(_) => "collision",
            Error::Selector(_) => "selector",
            Error::Conflict(_) => "conflict",
        }
    }

    /// Whether retrying without a change to the Rollout can help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::InvalidObject(_))
    }

    /// Whether a person has to fix something (a template, a router, a name clash, an object the
    /// API server refuses, a permission) before a retry can succeed: such errors are told on the
    /// Rollout as Warning events, a condition and its message, and retried only now and then.
    pub fn needs_a_person(&self) -> bool {
        match self {
            Error::Analysis(_) | Error::Router(_) | Error::Traffic(_) | Error::Collision(_) | Error::Selector(_) => {
                true
            }
            Error::RouterPlugin(e) => plugin_refused(&e.problem),
            // Not found, a conflict and too many requests pass by themselves: the next plan is
            // made from newer caches, or later.
            Error::Kube { source: kube::Error::Api(status), .. } => {
                (400..500).contains(&status.code) && ![404, 409, 429].contains(&status.code)
            }
            _ => false,
        }
    }
}

/// Whether a router plugin's answer says something a person must change (its configuration, the
/// plugin itself), as opposed to a plugin that is not there or not answering now, or failing on
/// its side (5xx): those pass, as the API server's do.
fn plugin_refused(problem: &stepwise_traffic::plugin::Problem) -> bool {
    use stepwise_traffic::plugin::Problem;
    match problem {
        Problem::Timeout(_) | Problem::Connect(_) | Problem::Transport(_) => false,
        Problem::Http { status, .. } => *status < 500,
        Problem::NotJson { .. } | Problem::Protocol(_) | Problem::NotARouter | Problem::BadAnswer(_) => true,
    }
}

/// The kind of a client error: what the API server answered (throttled, conflict, not found,
/// expired, a server error, or refused: any other 4xx), or why it answered nothing (a timeout, or
/// unreachable: the connection failed). `kube` is what is left: a response that could not be read.
fn client_kind(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => status_kind(status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) if timed_out(error) => "timeout",
        kube::Error::HyperError(_) | kube::Error::Service(_) => "unreachable",
        _ => "kube",
    }
}

/// The kind of an error answer of the API server, by its code.
pub fn status_kind(code: u16) -> &'static str {
    match code {
        429 => "throttled",
        409 => "conflict",
        404 => "not_found",
        410 => "expired",
        500..=599 => "server_error",
        _ => "refused",
    }
}

/// Whether a timeout lies anywhere in the error's chain of causes (the client's read timeout is
/// an I/O error of kind TimedOut a few layers down).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.is::<tokio::time::error::Elapsed>()
    })
}

/// A client error as a person reads it: the API server's message, reason and code, without the
/// debug dump of the client's own rendering.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// Attaches what the controller was doing to a client error.
pub trait KubeContext<T> {
    /// Names the action that failed.
    fn during(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { action: action(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> Error {
        let status = kube::core::Status::failure(&format!("it said {code}"), reason).with_code(code);
        Error::Kube { action: "create ReplicaSet app-1".into(), source: kube::Error::Api(status.boxed()) }
    }

    #[test]
    fn refusals_a_retry_cannot_fix_need_a_person_and_passing_ones_do_not() {
        for (code, reason) in [(400, "BadRequest"), (403, "Forbidden"), (422, "Invalid")] {
            assert!(api_error(code, reason).needs_a_person(), "{code}");
        }
        for (code, reason) in [(404, "NotFound"), (409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError")] {
            assert!(!api_error(code, reason).needs_a_person(), "{code}");
        }
        assert!(Error::Collision("app-1".into()).needs_a_person());
        assert!(!Error::Conflict("ns/app".into()).needs_a_person());
    }

    #[test]
    fn api_errors_are_counted_by_what_the_server_answered_and_connection_failures_by_why() {
        for (code, reason, kind) in [
            (429, "TooManyRequests", "throttled"),
            (409, "Conflict", "conflict"),
            (404, "NotFound", "not_found"),
            (410, "Expired", "expired"),
            (500, "InternalError", "server_error"),
            (503, "ServiceUnavailable", "server_error"),
            (403, "Forbidden", "refused"),
            (422, "Invalid", "refused"),
        ] {
            assert_eq!(api_error(code, reason).kind(), kind, "{code}");
        }
        let service = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kube {
            action: "scale ReplicaSet app-1 to 2".into(),
            source: kube::Error::Service(source),
        };
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        assert_eq!(service(Box::new(timeout)).kind(), "timeout");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(service(Box::new(refused)).kind(), "unreachable");
        assert_eq!(Error::Conflict("ns/app".into()).kind(), "conflict", "a lost status race is a conflict too");
    }

    #[test]
    fn a_router_plugin_that_does_not_answer_is_retried_and_one_that_refuses_needs_a_person() {
        use std::time::Duration;
        use stepwise_traffic::plugin::{PluginError, Problem};
        let plugin = |problem| Error::RouterPlugin(PluginError { plugin: "p".into(), url: "http://p".into(), problem });
        let http = |status| Problem::Http { path: "v1/traffic/set", status, message: None, body: String::new() };
        for passing in [Problem::Timeout(Duration::from_secs(5)), Problem::Connect("refused".into()), http(503)] {
            let e = plugin(passing);
            assert!(!e.needs_a_person() && e.is_transient(), "{e}");
        }
        for refused in [http(400), Problem::BadAnswer("no verified".into()), Problem::NotARouter] {
            assert!(plugin(refused).needs_a_person());
        }
        let malformed = Error::Router(stepwise_traffic::Error::NotFound("VirtualService ns/web".into()));
        assert!(malformed.needs_a_person(), "a malformed or missing routing object waits for a person");
        assert_eq!((malformed.kind(), plugin(http(503)).kind()), ("traffic", "router_plugin"));
    }

    #[test]
    fn an_api_error_reads_as_the_servers_message_reason_and_code() {
        assert_eq!(api_error(422, "Invalid").to_string(), "create ReplicaSet app-1: it said 422 (422 Invalid)");
    }
}
