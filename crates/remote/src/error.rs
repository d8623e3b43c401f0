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
