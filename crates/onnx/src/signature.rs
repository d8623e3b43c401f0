//! A graph's inputs and outputs as the protocol sees them, and the checks of a request
//! against them.

use ferroserve_protocol::v2::{InferRequest, TensorMetadata};
use ferroserve_protocol::{DataType, Tensor};
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

/// The protocol datatype of an ONNX element type, if the protocol has one.
pub fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// A graph's inputs and outputs: names, datatypes and shapes (`-1` for a dynamic dimension).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signature {
    /// Inputs, in graph order.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorMetadata>,
}

impl Signature {
    /// Reads the signature of a loaded session. A tensor the protocol cannot carry (a map, a
    /// sequence, a complex or 8-bit float element type) is an error naming it.
    pub fn of(session: &Session) -> Result<Signature, String> {
        let read = |kind: &str, name: &str, ty: &ValueType| -> Result<TensorMetadata, String> {
            match ty {
                ValueType::Tensor { ty, shape, .. } => {
                    let dt = datatype(*ty).ok_or_else(|| {
                        format!("{kind} '{name}' has element type {ty:?}, which the V2 protocol cannot carry")
                    })?;
                    Ok(TensorMetadata::new(
                        name,
                        dt,
                        shape.iter().map(|&d| d.max(-1)).collect(),
                    ))
                }
                other => Err(format!(
                    "{kind} '{name}' is a {other:?}, not a tensor: only tensor inputs and outputs are served"
                )),
            }
        };
        Ok(Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|o| read("input", o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| read("output", o.name(), o.dtype()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Checks a request against the inputs: every input given once, none unknown, each with
    /// the graph's datatype, rank and fixed dimensions. Returns the request's tensors in
    /// graph order. The message names the input and what is wrong.
    pub fn check<'r>(&self, request: &'r InferRequest) -> Result<Vec<&'r Tensor>, String> {
        if let Some(t) = request
            .inputs
            .iter()
            .find(|t| !self.inputs.iter().any(|i| i.name == t.name))
        {
            return Err(format!(
                "unexpected inference input '{}', allowed inputs are: {}",
                t.name,
                self.input_names()
            ));
        }
        self.inputs
            .iter()
            .map(|meta| {
                let t = request.input(&meta.name).ok_or_else(|| {
                    format!(
                        "expected {} inputs but got {} inputs for model: missing input '{}'",
                        self.inputs.len(),
                        request.inputs.len(),
                        meta.name
                    )
                })?;
                check_tensor(meta, t)?;
                Ok(t)
            })
            .collect()
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|i| format!("'{}'", i.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check_tensor(meta: &TensorMetadata, t: &Tensor) -> Result<(), String> {
    let name = &meta.name;
    if t.datatype != meta.datatype {
        return Err(format!(
            "inference input '{name}' has datatype {}, but the model expects {}",
            t.datatype, meta.datatype
        ));
    }
    if t.shape.len() != meta.shape.len() {
        return Err(format!(
            "unexpected shape for input '{name}': the model expects {} dimensions {} but the request has {} {:?}",
            meta.shape.len(),
            dims(&meta.shape),
            t.shape.len(),
            t.shape
        ));
    }
    for (i, (&want, &got)) in meta.shape.iter().zip(&t.shape).enumerate() {
        if want >= 0 && u64::try_from(want).ok() != Some(got) {
            return Err(format!(
                "unexpected shape for input '{name}': dimension {i} is {got}, the model expects {want} (shape {})",
                dims(&meta.shape)
            ));
        }
    }
    Ok(())
}

fn dims(shape: &[i64]) -> String {
    let inner: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}
