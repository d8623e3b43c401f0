//! The [`Handle`]: how ingresses reach deployments. Cheap to clone; never waits on the
//! controller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ferroserve_protocol::v2::{InferResponse, ModelMetadata};
use tokio::sync::watch;

use crate::controller::ModelState;
use crate::metrics::StageHistograms;
use crate::{InferError, Model, Payload, Prediction, RequestContext};

/// The published state of a deployment, read-only here.
pub(crate) struct DeploymentEntry {
    name: String,
    state: watch::Receiver<ModelState>,
    stages: StageHistograms,
}

impl DeploymentEntry {
    pub(crate) fn new(
        name: String,
        state: watch::Receiver<ModelState>,
        stages: StageHistograms,
    ) -> Self {
        DeploymentEntry {
            name,
            state,
            stages,
        }
    }
}

/// A model's state as the outside world sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Loading.
    Loading,
    /// Loaded and serving.
    Ready,
    /// Failed to load; the message says why.
    Failed(String),
}

/// The entry point of every ingress into the runtime.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    /// Deployments in registration order.
    deployments: Vec<DeploymentEntry>,
    /// Index into `deployments` by name.
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("models", &self.model_names())
            .finish()
    }
}

impl Handle {
    pub(crate) fn new(deployments: Vec<DeploymentEntry>) -> Self {
        let by_name = deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Handle {
            inner: Arc::new(Inner {
                deployments,
                by_name,
            }),
        }
    }

    fn entry(&self, name: &str) -> Result<&DeploymentEntry, InferError> {
        self.inner
            .by_name
            .get(name)
            .map(|&i| &self.inner.deployments[i])
            .ok_or_else(|| InferError::ModelNotFound(name.to_owned()))
    }

    fn ready_model(&self, entry: &DeploymentEntry) -> Result<Arc<dyn Model>, InferError> {
        match &*entry.state.borrow() {
            ModelState::Ready(m) => Ok(m.clone()),
            ModelState::Loading => Err(InferError::ModelNotReady {
                name: entry.name.clone(),
                detail: None,
            }),
            ModelState::Failed(why) => Err(InferError::ModelNotReady {
                name: entry.name.clone(),
                detail: Some(why.clone()),
            }),
        }
    }

    /// Names of all deployments, ready or not, in registration order.
    pub fn model_names(&self) -> Vec<String> {
        self.inner
            .deployments
            .iter()
            .map(|d| d.name.clone())
            .collect()
    }

    /// The state of a model.
    pub fn status(&self, name: &str) -> Result<ModelStatus, InferError> {
        let entry = self.entry(name)?;
        Ok(match &*entry.state.borrow() {
            ModelState::Loading => ModelStatus::Loading,
            ModelState::Ready(_) => ModelStatus::Ready,
            ModelState::Failed(why) => ModelStatus::Failed(why.clone()),
        })
    }

    /// Whether a model is loaded and its health check passes.
    pub async fn model_ready(&self, name: &str) -> Result<bool, InferError> {
        let entry = self.entry(name)?;
        match self.ready_model(entry) {
            Ok(model) => Ok(model.healthy().await),
            Err(_) => Ok(false),
        }
    }

    /// Whether every model is ready.
    pub async fn server_ready(&self) -> bool {
        for d in &self.inner.deployments {
            if !self.model_ready(&d.name).await.unwrap_or(false) {
                return false;
            }
        }
        true
    }

    /// Metadata of a ready model.
    pub fn metadata(&self, name: &str) -> Result<ModelMetadata, InferError> {
        let entry = self.entry(name)?;
        let info = self.ready_model(entry)?.info();
        Ok(ModelMetadata {
            name: entry.name.clone(),
            versions: None,
            platform: info.platform,
            inputs: info.inputs,
            outputs: info.outputs,
        })
    }

    /// Runs `preprocess` → `predict` → `postprocess` of model `name`.
    ///
    /// For V2 the response gets the model name and the request id when the model left them
    /// unset, and only the requested outputs (an unknown requested output is invalid input).
    pub async fn infer(
        &self,
        name: &str,
        payload: Payload,
        ctx: RequestContext,
    ) -> Result<Prediction, InferError> {
        let entry = self.entry(name)?;
        let model = self.ready_model(entry)?;
        let v2_request = match &payload {
            Payload::V2(req) => {
                req.validate()?;
                Some((req.id.clone(), req.outputs.clone()))
            }
            Payload::V1(_) => None,
        };

        let t0 = Instant::now();
        let payload = model.preprocess(payload, &ctx).await?;
        let t1 = Instant::now();
        let prediction = model.predict(payload, &ctx).await?;
        let t2 = Instant::now();
        let prediction = model.postprocess(prediction, &ctx).await?;
        let t3 = Instant::now();
        entry.stages.preprocess.observe((t1 - t0).as_secs_f64());
        entry.stages.predict.observe((t2 - t1).as_secs_f64());
        entry.stages.postprocess.observe((t3 - t2).as_secs_f64());

        match (v2_request, prediction) {
            (Some((id, requested)), Prediction::V2(resp)) => {
                finish_v2(resp, name, id, &requested).map(Prediction::V2)
            }
            (None, Prediction::V1(body)) => Ok(Prediction::V1(body)),
            (Some(_), Prediction::V1(_)) => Err(InferError::Internal(format!(
                "model '{name}' returned a V1 prediction for a V2 request"
            ))),
            (None, Prediction::V2(_)) => Err(InferError::Internal(format!(
                "model '{name}' returned a V2 response for a V1 request"
            ))),
        }
    }
}

fn finish_v2(
    mut resp: InferResponse,
    name: &str,
    id: Option<String>,
    requested: &[ferroserve_protocol::v2::RequestedOutput],
) -> Result<InferResponse, InferError> {
    if resp.model_name.is_empty() {
        name.clone_into(&mut resp.model_name);
    }
    if resp.id.is_none() {
        resp.id = id;
    }
    resp.select_outputs(requested, name)?;
    Ok(resp)
}
