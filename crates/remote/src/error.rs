//! How a call to an endpoint fails.

use ferroserve_runtime::InferError;

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Nothing reached the endpoint (the connection could not be made): safe to retry
    /// elsewhere.
    NotSent(String),
    /// The endpoint may have run it; the error to answer.
    Failed(InferError),
}

/// An error with its causes, each once: tonic's and reqwest's own messages are often only
/// "transport error" or "error sending request", the cause (connection refused...) is below.
pub(crate) fn with_causes(message: String, error: &dyn std::error::Error) -> String {
    let mut text = message;
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = e.source();
    }
    text
}
