//! The controller: owns the deployments, loads their models in the background and publishes
//! each model's state on a `watch` channel that the [`Handle`] reads.
//!
//! *Invariant:* the controller is the only writer of a deployment's state; the request path
//! only reads it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::handle::{DeploymentEntry, Handle};
use crate::{Model, ModelError, RuntimeMetrics};

/// Makes a fresh, unloaded instance of a model. Called once per instance the controller
/// starts, so a deployment can (re)start instances without the user's help.
pub type ModelFactory = Arc<dyn Fn() -> Result<Box<dyn Model>, ModelError> + Send + Sync>;

/// A deployment: a name (the model name in URLs) and how to make the model.
#[derive(Clone)]
pub struct DeploymentSpec {
    /// Model name, unique in the server.
    pub name: String,
    /// Constructor of model instances.
    pub factory: ModelFactory,
}

impl std::fmt::Debug for DeploymentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DeploymentSpec {
    /// A deployment of the model that `factory` makes.
    pub fn new<F, M>(name: impl Into<String>, factory: F) -> Self
    where
        F: Fn() -> M + Send + Sync + 'static,
        M: Model,
    {
        DeploymentSpec {
            name: name.into(),
            factory: Arc::new(move || Ok(Box::new(factory()) as Box<dyn Model>)),
        }
    }

    /// A deployment from a fallible factory.
    pub fn from_factory(name: impl Into<String>, factory: ModelFactory) -> Self {
        DeploymentSpec {
            name: name.into(),
            factory,
        }
    }
}

/// The state of a deployment's model, as published to handles.
#[derive(Clone)]
pub(crate) enum ModelState {
    /// `load` is running.
    Loading,
    /// Loaded and serving.
    Ready(Arc<dyn Model>),
    /// Construction or `load` failed; the message says why.
    Failed(String),
}

/// Starts and stops the deployments' models.
#[derive(Debug)]
pub struct Controller {
    loaders: Vec<JoinHandle<()>>,
}

/// The deployment list could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Two deployments have the same name.
    #[error("deployment name '{0}' is used twice")]
    DuplicateName(String),
    /// A deployment name cannot be used in URLs.
    #[error("deployment name '{0}' is invalid: use letters, digits, '-', '_' and '.'")]
    InvalidName(String),
}

impl Controller {
    /// Registers the deployments and starts loading their models in the background. Must be
    /// called inside a Tokio runtime. Returns at once; readiness shows on the handle.
    pub fn start(
        specs: Vec<DeploymentSpec>,
        metrics: RuntimeMetrics,
    ) -> Result<(Controller, Handle), ControllerError> {
        let mut seen = HashSet::new();
        for spec in &specs {
            let valid = !spec.name.is_empty()
                && spec
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(ControllerError::InvalidName(spec.name.clone()));
            }
            if !seen.insert(spec.name.clone()) {
                return Err(ControllerError::DuplicateName(spec.name.clone()));
            }
        }
        let mut entries = Vec::with_capacity(specs.len());
        let mut loaders = Vec::with_capacity(specs.len());
        for spec in specs {
            let (tx, rx) = watch::channel(ModelState::Loading);
            entries.push(DeploymentEntry::new(
                spec.name.clone(),
                rx,
                metrics.stages(&spec.name),
            ));
            loaders.push(tokio::spawn(load(spec, tx)));
        }
        Ok((Controller { loaders }, Handle::new(entries)))
    }

    /// Stops loading models that are still loading.
    pub fn shutdown(self) {
        for l in self.loaders {
            l.abort();
        }
    }
}

/// Makes and loads one instance, then publishes the outcome.
async fn load(spec: DeploymentSpec, tx: watch::Sender<ModelState>) {
    let name = spec.name.clone();
    tracing::info!(model = %name, "loading model");
    let started = std::time::Instant::now();
    // Run construction and load in their own task so that a panic in user code becomes a
    // reported failure instead of a silent one.
    let outcome = tokio::spawn(async move {
        let mut model = (spec.factory)()?;
        model.load().await?;
        Ok::<_, ModelError>(Arc::<dyn Model>::from(model))
    })
    .await;
    let state = match outcome {
        Ok(Ok(model)) => {
            tracing::info!(model = %name, elapsed_ms = started.elapsed().as_millis() as u64, "model ready");
            ModelState::Ready(model)
        }
        Ok(Err(e)) => {
            tracing::error!(model = %name, error = %e, "model failed to load");
            ModelState::Failed(format!("load failed: {e}"))
        }
        Err(join) => {
            let msg = panic_message(join);
            tracing::error!(model = %name, error = %msg, "model load panicked");
            ModelState::Failed(format!("load panicked: {msg}"))
        }
    };
    tx.send_replace(state);
    // Keep the sender alive so handles keep seeing the last state.
    tx.closed().await;
}

/// The message of a panicked task, if it had one.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned()),
        Err(e) => e.to_string(),
    }
}
