//! [`Deployment`]: a named model with its options, the unit the controller runs.

use std::sync::Arc;

use crate::config::{AutoscalingOptions, DeploymentOptions};
use crate::replica::ModelFactory;
use crate::replica::{LocalBackend, ReplicaBackend};
use crate::{Model, ModelError};

/// A model served as N replicas, with Ray Serve's deployment options.
///
/// ```
/// use ferroserve_runtime::{Deployment, Identity};
/// let d = Deployment::new("identity", || Identity).num_replicas(4).max_ongoing_requests(8);
/// assert_eq!(d.name(), "identity");
/// ```
#[derive(Clone)]
pub struct Deployment {
    pub(crate) name: String,
    pub(crate) backend: Arc<dyn ReplicaBackend>,
    pub(crate) options: DeploymentOptions,
    /// Whether clients reach it (listed, routed); internal deployments are reached only by
    /// other deployments through handles.
    pub(crate) exposed: bool,
    /// The model version served (a repository's version directory), if versioned.
    pub(crate) version: Option<String>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// A deployment of an in-process Rust model; `factory` makes one instance per replica.
    pub fn new<F, M>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn() -> M + Send + Sync + 'static,
        M: Model,
    {
        Self::from_factory(
            name,
            Arc::new(move || Ok(Box::new(factory()) as Box<dyn Model>)),
        )
    }

    /// A deployment from a fallible model factory.
    pub fn from_factory(name: impl Into<String>, factory: ModelFactory) -> Self {
        Self::from_backend(name, Arc::new(LocalBackend::new(factory)))
    }

    /// A deployment whose replicas another backend starts (e.g. worker processes).
    pub fn from_backend(name: impl Into<String>, backend: Arc<dyn ReplicaBackend>) -> Self {
        Deployment {
            name: name.into(),
            backend,
            options: DeploymentOptions::default(),
            exposed: true,
            version: None,
        }
    }

    /// The name (the model name in URLs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options as set so far.
    pub fn options_ref(&self) -> &DeploymentOptions {
        &self.options
    }

    /// Replaces all options at once (e.g. from a config file).
    pub fn options(mut self, options: DeploymentOptions) -> Self {
        self.options = options;
        self
    }

    /// Fixed replica count.
    pub fn num_replicas(mut self, n: usize) -> Self {
        self.options.num_replicas = Some(n);
        self
    }

    /// Per-replica in-flight limit.
    pub fn max_ongoing_requests(mut self, n: usize) -> Self {
        self.options.max_ongoing_requests = Some(n);
        self
    }

    /// Queue bound (`-1`: unbounded).
    pub fn max_queued_requests(mut self, n: i64) -> Self {
        self.options.max_queued_requests = Some(n);
        self
    }

    /// Autoscaling instead of a fixed count.
    pub fn autoscaling(mut self, a: AutoscalingOptions) -> Self {
        self.options.autoscaling_config = Some(a);
        self
    }

    /// Health-check period and timeout, in seconds.
    pub fn health_check(mut self, period_s: f64, timeout_s: f64) -> Self {
        self.options.health_check_period_s = Some(period_s);
        self.options.health_check_timeout_s = Some(timeout_s);
        self
    }

    /// Drain time of a stopping replica, in seconds.
    pub fn graceful_shutdown_timeout_s(mut self, s: f64) -> Self {
        self.options.graceful_shutdown_timeout_s = Some(s);
        self
    }

    /// Per-request time limit, in seconds.
    pub fn request_timeout_s(mut self, s: f64) -> Self {
        self.options.request_timeout_s = Some(s);
        self
    }

    /// Turns dynamic batching on: at most `n` rows per batch (see `batcher.rs`).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.options.max_batch_size = Some(n);
        self
    }

    /// How long a forming batch waits after its first request, in seconds (default 0.01).
    pub fn batch_wait_timeout_s(mut self, s: f64) -> Self {
        self.options.batch_wait_timeout_s = Some(s);
        self
    }

    /// Batch sizes at which a batch leaves without waiting (Triton's).
    pub fn preferred_batch_sizes(mut self, sizes: Vec<usize>) -> Self {
        self.options.preferred_batch_sizes = Some(sizes);
        self
    }

    /// Batches one replica runs at once (default 1).
    pub fn max_concurrent_batches(mut self, n: usize) -> Self {
        self.options.max_concurrent_batches = Some(n);
        self
    }

    /// Configuration handed to the model's `reconfigure`.
    pub fn user_config(mut self, v: serde_json::Value) -> Self {
        self.options.user_config = Some(v);
        self
    }

    /// Whether clients reach the deployment over the ingress (the default), or only other
    /// deployments do, through handles (Ray Serve's deployments other than the ingress).
    pub fn exposed(mut self, exposed: bool) -> Self {
        self.exposed = exposed;
        self
    }

    /// The version this deployment serves (Triton's model version: listed in metadata, set
    /// in responses, and the only one `/versions/{v}` routes accept). Unversioned by default.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Whether clients reach the deployment over the ingress.
    pub fn is_exposed(&self) -> bool {
        self.exposed
    }
}

/// Makes a [`ModelFactory`] from a closure returning a fallible model.
pub fn factory<F, M>(f: F) -> ModelFactory
where
    F: Fn() -> Result<M, ModelError> + Send + Sync + 'static,
    M: Model,
{
    Arc::new(move || f().map(|m| Box::new(m) as Box<dyn Model>))
}
