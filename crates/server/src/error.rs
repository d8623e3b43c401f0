//! The one place where errors become HTTP status codes and `{"error": ...}` bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferroserve_protocol::ProtocolError;
use ferroserve_runtime::InferError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the runtime.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The request could not be decoded.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Something about the HTTP request itself (headers, route) is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive within the body read timeout.
    #[error("the request body was not received within {after:?}")]
    BodyTimeout {
        /// The timeout.
        after: std::time::Duration,
    },
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists for other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The feature is not there.
    #[error("{0}")]
    NotImplemented(String),
    /// A restricted API without its key.
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Infer(e) => match e {
                InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                InferError::ModelNotReady { .. }
                | InferError::Unavailable(_)
                | InferError::NotSent { .. }
                | InferError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
                InferError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
                InferError::InvalidInput(_) => StatusCode::BAD_REQUEST,
                InferError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Protocol(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// The gRPC status of a runtime error: unknown model NOT_FOUND, bad input INVALID_ARGUMENT,
/// not ready or overloaded UNAVAILABLE, timeout DEADLINE_EXCEEDED, anything else INTERNAL.
pub fn grpc_status(e: &InferError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => {
            tonic::Status::not_found(msg)
        }
        InferError::InvalidInput(_) => tonic::Status::invalid_argument(msg),
        InferError::ModelNotReady { .. }
        | InferError::Unavailable(_)
        | InferError::NotSent { .. }
        | InferError::Overloaded { .. } => tonic::Status::unavailable(msg),
        InferError::Timeout { .. } => tonic::Status::deadline_exceeded(msg),
        InferError::Internal(_) => tonic::Status::internal(msg),
    }
}

impl From<crate::repository::RepositoryError> for ApiError {
    /// A load or unload that did not happen is the request's fault (Triton answers 400).
    fn from(e: crate::repository::RepositoryError) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if matches!(self, ApiError::Infer(InferError::Overloaded { .. })) {
            // Overload is brief by design (the queue is bounded): tell clients when to retry.
            return (status, [(http::header::RETRY_AFTER, "1")], body).into_response();
        }
        if matches!(self, ApiError::BodyTimeout { .. }) {
            // The rest of the body may never come: do not wait for it to read a next request.
            return (status, [(http::header::CONNECTION, "close")], body).into_response();
        }
        (status, body).into_response()
    }
}
