//! [`OnnxModel`]: one replica's ONNX Runtime session behind the [`Model`] trait.

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_runtime::{Model, ModelError, ModelInfo, Payload, Prediction, RequestContext};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};

use crate::signature::Signature;
use crate::tensors::{input_value, output_tensor};

/// How to run an ONNX model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxOptions {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// ONNX Runtime's intra-op threads per replica (see [`default_intra_op_threads`]).
    pub intra_op_threads: usize,
    /// Whether idle intra-op threads spin for the next operator (ONNX Runtime's default, on):
    /// lower latency with cores to spare, CPU taken from other work when there are none.
    pub intra_op_spinning: bool,
}

/// Intra-op threads per replica when the configuration does not say: the machine's cores
/// shared among the replicas (`cores / replicas`, at least 1), so that replicas × threads
/// fits the cores instead of oversubscribing them.
pub fn default_intra_op_threads(replicas: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / replicas.max(1)).max(1)
}

/// An ONNX model served by ONNX Runtime: inputs and outputs from the graph, requests checked
/// against them, one session per replica (ONNX Runtime runs one call of a session at a time
/// through this API, and a replica's requests run on its own thread anyway).
pub struct OnnxModel {
    options: OnnxOptions,
    session: Option<Mutex<Session>>,
    signature: Signature,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("options", &self.options)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// A model that loads `options.path` in [`Model::load`].
    pub fn new(options: OnnxOptions) -> Self {
        OnnxModel {
            options,
            session: None,
            signature: Signature::default(),
        }
    }

    /// The graph's inputs and outputs (empty before `load`).
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn open(&self) -> Result<Session, String> {
        let env = crate::library::environment().map_err(|e| e.to_string())?;
        let path = &self.options.path;
        if !path.is_file() {
            return Err(format!("model file {} does not exist", path.display()));
        }
        let builder = Session::builder(env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| {
                b.with_intra_threads(self.options.intra_op_threads)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|b| {
                b.with_intra_op_spinning(self.options.intra_op_spinning)
                    .map_err(Into::into)
            });
        builder
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| format!("cannot load {}: {e}", path.display()))
    }

    fn run(&self, request: &InferRequest) -> Result<InferResponse, ModelError> {
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| ModelError::Unavailable("the model is not loaded".into()))?;
        let tensors = self
            .signature
            .check(request)
            .map_err(ModelError::InvalidInput)?;
        let inputs = tensors
            .iter()
            .map(|t| Ok((t.name.as_str(), input_value(t)?)))
            .collect::<Result<Vec<(&str, SessionInputValue<'_>)>, String>>()
            .map_err(ModelError::InvalidInput)?;
        let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(inputs).map_err(|e| engine_error(&e))?;
        let outputs = outputs
            .iter()
            .map(|(name, value)| output_tensor(name, &value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ModelError::Internal)?;
        Ok(InferResponse {
            id: request.id.clone(),
            outputs,
            ..InferResponse::default()
        })
    }
}

/// ONNX Runtime's own errors: what the request got wrong is a 400, the rest a 500.
fn engine_error(e: &ort::Error) -> ModelError {
    let message = format!("onnxruntime: {}", e.to_string().trim_end());
    match e.code() {
        ort::error::ErrorCode::InvalidArgument | ort::error::ErrorCode::InvalidGraph => {
            ModelError::InvalidInput(message)
        }
        _ => ModelError::Internal(message),
    }
}

#[async_trait]
impl Model for OnnxModel {
    async fn load(&mut self) -> Result<(), ModelError> {
        let session = self.open().map_err(ModelError::Internal)?;
        self.signature = Signature::of(&session).map_err(ModelError::Internal)?;
        self.session = Some(Mutex::new(session));
        Ok(())
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            platform: crate::PLATFORM.to_owned(),
            inputs: self.signature.inputs.clone(),
            outputs: self.signature.outputs.clone(),
        }
    }

    async fn predict(
        &self,
        payload: Payload,
        _ctx: &RequestContext,
    ) -> Result<Prediction, ModelError> {
        match payload {
            Payload::V2(request) => self.run(&request).map(Prediction::V2),
            Payload::V1(body) => {
                let [input] = self.signature.inputs.as_slice() else {
                    return Err(ModelError::InvalidInput(format!(
                        "V1 :predict needs a model with one input; this one has {}: use V2 (/v2/models/{{name}}/infer)",
                        self.signature.inputs.len()
                    )));
                };
                let request = crate::v1::request(&body, input).map_err(ModelError::InvalidInput)?;
                let response = self.run(&request)?;
                crate::v1::response(&response)
                    .map(Prediction::V1)
                    .map_err(ModelError::Internal)
            }
        }
    }
}
