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
    /// The traffic router the Rollout names is not available.
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
    /// A short stable label: the `kind` of the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::InvalidObject(_) => "invalid_object",
            Error::Analysis(_) => "analysis",
            Error::Traffic(_) => "traffic",
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
            Error::Analysis(_) | Error::Traffic(_) | Error::Collision(_) | Error::Selector(_) => true,
            // Not found, a conflict and too many requests pass by themselves: the next plan is
            // made from newer caches, or later.
            Error::Kube { source: kube::Error::Api(status), .. } => {
                (400..500).contains(&status.code) && ![404, 409, 429].contains(&status.code)
            }
            _ => false,
        }
    }
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
    fn an_api_error_reads_as_the_servers_message_reason_and_code() {
        assert_eq!(api_error(422, "Invalid").to_string(), "create ReplicaSet app-1: it said 422 (422 Invalid)");
    }
}
