//! The one error type of the protocol layer: every variant is the client's fault (HTTP 400).

/// Why a request could not be decoded or a tensor could not be built.
///
/// The message names what was wrong and where (input name, element index, byte offset), because
/// it is returned to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not valid JSON, or not a V2 request.
    #[error("invalid JSON request: {0}")]
    Json(String),
    /// A tensor's datatype, shape or data are inconsistent.
    #[error("tensor '{name}': {reason}")]
    Tensor {
        /// The input or output name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The binary tensor extension framing is wrong.
    #[error("binary tensor data: {0}")]
    Binary(String),
    /// A request-level rule is broken (duplicate names, unknown outputs, ...).
    #[error("{0}")]
    Request(String),
}

impl ProtocolError {
    pub(crate) fn tensor(name: &str, reason: impl Into<String>) -> Self {
        Self::Tensor {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}
