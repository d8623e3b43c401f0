//! The contract between ferroserve and a model: [`Model`].

use std::time::Instant;

use async_trait::async_trait;
use ferroserve_protocol::v2::{InferRequest, InferResponse, TensorMetadata};

use crate::handle::{DeploymentHandle, Handle};
use crate::{InferError, ModelError};

/// What a model receives: a V2 request, or the free-form JSON body of a V1 `:predict`
/// (as `kserve.Model.predict` receives an `InferRequest` or a dict).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A V2 (Open Inference Protocol) request.
    V2(InferRequest),
    /// A V1 body, conventionally `{"instances": [...]}` or `{"inputs": ...}`.
    V1(serde_json::Value),
}

/// What a model returns: a V2 response, or a V1 JSON body (conventionally
/// `{"predictions": [...]}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// A V2 response.
    V2(InferResponse),
    /// A V1 body.
    V1(serde_json::Value),
}

/// Per-request context handed to every model handler.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Request headers (HTTP headers or gRPC metadata), names in lower case.
    pub headers: Vec<(String, String)>,
    /// When the caller stops waiting (a client's `grpc-timeout`, an outer request's deadline);
    /// calls made to other deployments for this request inherit it.
    pub deadline: Option<Instant>,
    /// The server's deployments, set by the [`Handle`] that routes the request.
    pub(crate) handle: Option<Handle>,
}

impl RequestContext {
    /// A context with these headers.
    pub fn with_headers(headers: Vec<(String, String)>) -> Self {
        RequestContext {
            headers,
            ..Self::default()
        }
    }

    /// A handle to another deployment of this server (internal ones included), for calls made
    /// while handling this request: they go through that deployment's router (backpressure,
    /// timeouts, metrics), inherit this request's deadline, and are cancelled with it (drop
    /// the call's future).
    pub fn deployment(&self, name: &str) -> Result<DeploymentHandle, InferError> {
        let handle = self.handle.as_ref().ok_or_else(|| {
            InferError::Internal("this request was not routed by a handle".into())
        })?;
        let mut d = handle.deployment(name)?;
        d.deadline = self.deadline;
        Ok(d)
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a model says about itself, for the metadata routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// Framework or backend name, e.g. `"rust"`.
    pub platform: String,
    /// Input signatures.
    pub inputs: Vec<TensorMetadata>,
    /// Output signatures.
    pub outputs: Vec<TensorMetadata>,
}

/// A servable model: the Rust counterpart of `kserve.Model`.
///
/// The runtime calls [`load`](Model::load) once on a fresh instance before any request, then
/// `preprocess` → `predict` → `postprocess` for each request, possibly concurrently from several
/// tasks (hence `&self`). Errors map to protocol status codes: [`ModelError::InvalidInput`] is
/// a 400, [`ModelError::Unavailable`] a 503, anything else a 500.
#[async_trait]
pub trait Model: Send + Sync + 'static {
    /// Loads weights and whatever else the model needs. May be slow; runs before the model is
    /// marked ready.
    async fn load(&mut self) -> Result<(), ModelError> {
        Ok(())
    }

    /// Whether `predict` may block its thread (CPU-heavy work, blocking I/O). Replicas of a
    /// model that answers `false` run as tasks on the server's runtime instead of on a thread
    /// of their own, which saves a thread hop (about 10–20 µs) per request. Keep the default
    /// unless every handler returns within microseconds or only awaits.
    fn may_block(&self) -> bool {
        true
    }

    /// Inputs, outputs and platform, for `GET /v2/models/{name}`.
    fn info(&self) -> ModelInfo {
        ModelInfo::default()
    }

    /// Receives the deployment's `user_config`: once after `load`, then on every change,
    /// without a restart (Ray Serve's `reconfigure`).
    async fn reconfigure(&self, _user_config: &serde_json::Value) -> Result<(), ModelError> {
        Ok(())
    }

    /// Whether the loaded model can serve; checked by the controller's health checks and by
    /// readiness probes.
    async fn healthy(&self) -> bool {
        true
    }

    /// Transforms the request before `predict`. The default passes it through.
    async fn preprocess(
        &self,
        payload: Payload,
        _ctx: &RequestContext,
    ) -> Result<Payload, ModelError> {
        Ok(payload)
    }

    /// Runs inference.
    async fn predict(
        &self,
        payload: Payload,
        ctx: &RequestContext,
    ) -> Result<Prediction, ModelError>;

    /// Transforms the result of `predict`. The default passes it through.
    async fn postprocess(
        &self,
        prediction: Prediction,
        _ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        Ok(prediction)
    }
}
