//! The model runtime: the [`Model`] contract, deployments of models, and the [`Handle`] through
//! which every ingress (HTTP, gRPC) reaches them.
//!
//! Nothing here knows HTTP: errors are typed ([`InferError`]) and the server maps them to
//! status codes. The [`Controller`] loads models in the background and publishes their state
//! on `watch` channels; the handle reads those, so the request path never waits on the
//! controller.

mod builtin;
mod controller;
mod error;
mod handle;
mod metrics;
mod model;

pub use builtin::Identity;
pub use controller::{Controller, ControllerError, DeploymentSpec, ModelFactory};
pub use error::{InferError, ModelError};
pub use handle::{Handle, ModelStatus};
pub use metrics::{LATENCY_BUCKETS, RuntimeMetrics};
pub use model::{Model, ModelInfo, Payload, Prediction, RequestContext};

pub use ferroserve_protocol as protocol;
