//! V2 (Open Inference Protocol) messages, independent of their encoding.

use serde::{Deserialize, Serialize};

use crate::{DataType, Parameters, ProtocolError, Tensor};

/// An inference request: inputs, the outputs asked for, and parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferRequest {
    /// Client-chosen identifier, echoed in the response.
    pub id: Option<String>,
    /// Request-level parameters (e.g. `binary_data_output`).
    pub parameters: Parameters,
    /// Input tensors, names unique.
    pub inputs: Vec<Tensor>,
    /// Outputs the client asked for; empty means all.
    pub outputs: Vec<RequestedOutput>,
}

/// An output named in a request's `outputs`, with its parameters (e.g. `binary_data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Output parameters, kept as received.
    #[serde(
        default,
        deserialize_with = "crate::parameters::deserialize_optional",
        skip_serializing_if = "Parameters::is_empty"
    )]
    pub parameters: Parameters,
}

impl InferRequest {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// Checks request-level rules that no single tensor can: input names are unique, requested
    /// output names are unique.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        for (i, t) in self.inputs.iter().enumerate() {
            if self.inputs[..i].iter().any(|o| o.name == t.name) {
                return Err(ProtocolError::Request(format!(
                    "duplicate input name '{}'",
                    t.name
                )));
            }
        }
        for (i, o) in self.outputs.iter().enumerate() {
            if self.outputs[..i].iter().any(|p| p.name == o.name) {
                return Err(ProtocolError::Request(format!(
                    "duplicate requested output '{}'",
                    o.name
                )));
            }
        }
        Ok(())
    }
}

/// An inference response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// Its version, if versioned.
    pub model_version: Option<String>,
    /// The request's `id`.
    pub id: Option<String>,
    /// Response-level parameters.
    pub parameters: Parameters,
    /// Output tensors.
    pub outputs: Vec<Tensor>,
}

impl InferResponse {
    /// Keeps only the requested outputs, in request order. An output that was asked for but not
    /// produced is an error. (The requested outputs' parameters, such as `binary_data`, steer
    /// the encoding and are not copied onto the outputs.)
    pub fn select_outputs(
        &mut self,
        requested: &[RequestedOutput],
        model: &str,
    ) -> Result<(), ProtocolError> {
        if requested.is_empty() {
            return Ok(());
        }
        let mut produced = std::mem::take(&mut self.outputs);
        for r in requested {
            let Some(pos) = produced.iter().position(|t| t.name == r.name) else {
                return Err(ProtocolError::Request(format!(
                    "unexpected inference output '{}' for model '{model}'",
                    r.name
                )));
            };
            self.outputs.push(produced.swap_remove(pos));
        }
        Ok(())
    }
}

/// Server metadata (`GET /v2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions supported.
    pub extensions: Vec<String>,
}

/// Model metadata (`GET /v2/models/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions; `null` when unversioned, as KServe answers.
    pub versions: Option<Vec<String>>,
    /// Framework or backend name.
    pub platform: String,
    /// Input signatures.
    pub inputs: Vec<TensorMetadata>,
    /// Output signatures.
    pub outputs: Vec<TensorMetadata>,
}

/// The signature of one input or output. `-1` in `shape` means a dimension of any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions, `-1` for variable.
    pub shape: Vec<i64>,
}

impl TensorMetadata {
    /// A signature.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            datatype,
            shape,
        }
    }
}
