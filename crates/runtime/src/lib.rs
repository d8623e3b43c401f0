//! The model runtime, Ray Serve's shape inside one process: a model is served as a
//! [`Deployment`] of N replicas, started, health-checked, restarted, updated and autoscaled by
//! the [`Controller`], with requests spread over replicas by a router behind the [`Handle`]
//! that every ingress (HTTP, gRPC) calls.
//!
//! Nothing here knows HTTP: errors are typed ([`InferError`]) and the server maps them to
//! status codes. The controller publishes each deployment's replica set to its router; the
//! request path only reads it, so it never waits on the controller.

mod autoscale;
mod batcher;
mod builtin;
pub mod config;
mod controller;
mod deployment;
mod error;
pub mod graph;
mod handle;
mod metrics;
mod model;
mod replica;
mod router;
mod stats;
mod status;

pub use batcher::BatchSettings;
pub use builtin::Identity;
pub use config::{
    AutoscalingOptions, BatchConfig, ConfigError, DeploymentConfig, DeploymentOptions,
};
pub use controller::{Controller, ControllerError};
pub use deployment::{Deployment, factory};
pub use error::{InferError, ModelError};
pub use handle::{DeploymentHandle, Handle, ModelStatus, WeakHandle};
pub use metrics::{LATENCY_BUCKETS, RuntimeMetrics};
pub use model::{Model, ModelInfo, Payload, Prediction, RequestContext};
pub use replica::{Liveness, LocalBackend, ModelFactory, Replica, ReplicaBackend, ReplicaStart};
pub use router::Permit;
pub use stats::{DurationStat, ModelStatistics};
pub use status::{
    AutoscalingStatus, BatchingStatus, DeploymentStatus, ReplicaState, ReplicaStatus,
};

pub use ferroserve_protocol as protocol;
