//! Errors of models and of the runtime. The server maps [`InferError`] to status codes in one
//! place; [`InferError::kind`] is the label used in metrics.

use ferroserve_protocol::ProtocolError;

/// An error raised by model code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request is not something this model can take (HTTP 400).
    #[error("{0}")]
    InvalidInput(String),
    /// The model cannot serve right now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

impl ModelError {
    /// An invalid-input error.
    pub fn invalid_input(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// An internal error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }
}

impl From<ProtocolError> for ModelError {
    fn from(e: ProtocolError) -> Self {
        Self::InvalidInput(e.to_string())
    }
}

/// Why an inference (or a metadata/readiness query) failed. `Clone`, so that one failure can
/// answer several requests (a refused queue, a failed batch).
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    /// No deployment has this name (Triton's wording, which tritonclient's examples check).
    #[error("Request for unknown model: '{0}' is not found")]
    ModelNotFound(String),
    /// The model exists, but not in the version asked for.
    #[error("Request for unknown model: '{name}' version {version} is not found")]
    VersionNotFound {
        /// Deployment name.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// The deployment exists but has no ready model.
    #[error("Model with name {name} is not ready.{}", detail.as_ref().map(|d| format!(" {d}")).unwrap_or_default())]
    ModelNotReady {
        /// Deployment name.
        name: String,
        /// Why, when known (e.g. the load error).
        detail: Option<String>,
    },
    /// The request is malformed or does not fit the model.
    #[error("{0}")]
    InvalidInput(String),
    /// The model is temporarily unable to serve.
    #[error("{0}")]
    Unavailable(String),
    /// The model failed.
    #[error("{0}")]
    Internal(String),
    /// Every replica is busy and the queue is full.
    #[error(
        "deployment {name} is overloaded: every replica is at max_ongoing_requests and {queued} requests are queued; retry later"
    )]
    Overloaded {
        /// Deployment name.
        name: String,
        /// Requests waiting when this one was refused.
        queued: usize,
    },
    /// A replica could not send the request anywhere (a remote endpoint refused the
    /// connection): nothing ran, so the router may retry it on another replica.
    #[error("replica {replica} could not take the request: {reason}")]
    NotSent {
        /// The replica (for a remote deployment, its endpoint).
        replica: String,
        /// Why.
        reason: String,
    },
    /// The request took longer than the deployment's `request_timeout_s`.
    #[error("request to deployment {name} timed out after {after:?}")]
    Timeout {
        /// Deployment name.
        name: String,
        /// The limit that passed.
        after: std::time::Duration,
    },
}

impl InferError {
    /// A short, stable name for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => "model_not_found",
            InferError::ModelNotReady { .. } => "model_not_ready",
            InferError::InvalidInput(_) => "invalid_input",
            InferError::Unavailable(_) | InferError::NotSent { .. } => "unavailable",
            InferError::Internal(_) => "internal",
            InferError::Overloaded { .. } => "overloaded",
            InferError::Timeout { .. } => "timeout",
        }
    }
}

impl InferError {
    /// The error of a call to deployment `name` made by another deployment: the same kind
    /// (an inner 503 stays a 503), its message naming the hop that failed.
    pub fn in_deployment(self, name: &str) -> Self {
        let named = |m: String| format!("deployment '{name}': {m}");
        match self {
            InferError::InvalidInput(m) => InferError::InvalidInput(named(m)),
            InferError::Unavailable(m) => InferError::Unavailable(named(m)),
            InferError::Internal(m) => InferError::Internal(named(m)),
            // These name the deployment already.
            other => other,
        }
    }
}

impl From<InferError> for ModelError {
    /// An inner call's failure as the calling model's own: bad input stays bad input, a
    /// deployment that cannot serve now (not ready, overloaded, timed out) is unavailable
    /// (503), anything else is internal.
    fn from(e: InferError) -> Self {
        match e {
            InferError::InvalidInput(m) => ModelError::InvalidInput(m),
            e @ (InferError::Unavailable(_)
            | InferError::NotSent { .. }
            | InferError::ModelNotReady { .. }
            | InferError::Overloaded { .. }
            | InferError::Timeout { .. }) => ModelError::Unavailable(e.to_string()),
            e => ModelError::Internal(e.to_string()),
        }
    }
}

impl From<ProtocolError> for InferError {
    fn from(e: ProtocolError) -> Self {
        Self::InvalidInput(e.to_string())
    }
}

impl From<ModelError> for InferError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput(m) => Self::InvalidInput(m),
            ModelError::Unavailable(m) => Self::Unavailable(m),
            ModelError::Internal(m) => Self::Internal(m),
        }
    }
}
