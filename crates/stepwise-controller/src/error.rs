//! Errors of the controller, with a stable label for metrics and events.

/// Everything that can fail in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action}: {source}")]
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
            Error::Conflict(_) => "conflict",
        }
    }

    /// Whether retrying without a change to the Rollout can help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Error::InvalidObject(_))
    }

    /// Whether a person has to fix something (a template, a router, a name clash) before a
    /// retry can succeed: such errors are told on the Rollout as Warning events.
    pub fn needs_a_person(&self) -> bool {
        matches!(self, Error::Analysis(_) | Error::Traffic(_) | Error::Collision(_))
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
