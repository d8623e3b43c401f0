//! Between the gRPC messages and the protocol types. Tensor bytes move as `Bytes` slices:
//! `raw_input_contents` become tensor data as they are, tensor data becomes
//! `raw_output_contents` as it is.

use bytes::Bytes;
use ferroserve_protocol::shared_memory::{SharedMemoryReader, SharedMemoryRef};
use ferroserve_protocol::v2::{InferRequest, InferResponse, RequestedOutput, TensorMetadata};
use ferroserve_protocol::{DataType, Parameter, Parameters, ProtocolError, Tensor};

use super::pb;

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Request(msg.into())
}

/// gRPC parameters → protocol parameters (every kind is kept).
pub fn parameters_from(map: std::collections::HashMap<String, pb::InferParameter>) -> Parameters {
    use pb::infer_parameter::ParameterChoice as C;
    map.into_iter()
        .filter_map(|(k, v)| {
            let p = match v.parameter_choice? {
                C::BoolParam(b) => Parameter::Bool(b),
                C::Int64Param(i) => Parameter::Int(i),
                C::StringParam(s) => Parameter::String(s),
                C::DoubleParam(d) => Parameter::Float(d),
                C::Uint64Param(u) => Parameter::Uint(u),
            };
            Some((k, p))
        })
        .collect()
}

/// Protocol parameters → gRPC parameters.
pub fn parameters_to(params: &Parameters) -> std::collections::HashMap<String, pb::InferParameter> {
    use pb::infer_parameter::ParameterChoice as C;
    params
        .iter()
        .map(|(k, v)| {
            let choice = match v {
                Parameter::Bool(b) => C::BoolParam(*b),
                Parameter::Int(i) => C::Int64Param(*i),
                Parameter::Uint(u) => C::Uint64Param(*u),
                Parameter::Float(f) => C::DoubleParam(*f),
                Parameter::String(s) => C::StringParam(s.clone()),
            };
            (
                k.clone(),
                pb::InferParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect()
}

fn shape_from(name: &str, shape: &[i64]) -> Result<Vec<u64>, ProtocolError> {
    shape
        .iter()
        .map(|&d| {
            u64::try_from(d).map_err(|_| {
                invalid(format!(
                    "input '{name}': shape {shape:?} has a negative dimension"
                ))
            })
        })
        .collect()
}

/// A protocol shape as gRPC's signed dimensions.
fn shape_to(shape: &[u64]) -> Vec<i64> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

/// Typed `contents` → the little-endian buffer of `datatype`.
fn contents_bytes(
    name: &str,
    datatype: DataType,
    c: pb::InferTensorContents,
) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::new();
    macro_rules! narrow {
        ($src:expr, $t:ty) => {{
            out.reserve($src.len() * std::mem::size_of::<$t>());
            for (i, v) in $src.into_iter().enumerate() {
                let x = <$t>::try_from(v).map_err(|_| {
                    invalid(format!(
                        "input '{name}': element {i} ({v}) is out of range for {datatype}"
                    ))
                })?;
                out.extend_from_slice(&x.to_le_bytes());
            }
        }};
    }
    match datatype {
        DataType::Bool => out.extend(c.bool_contents.iter().map(|&b| u8::from(b))),
        DataType::Int8 => narrow!(c.int_contents, i8),
        DataType::Int16 => narrow!(c.int_contents, i16),
        DataType::Int32 => narrow!(c.int_contents, i32),
        DataType::Int64 => narrow!(c.int64_contents, i64),
        DataType::Uint8 => narrow!(c.uint_contents, u8),
        DataType::Uint16 => narrow!(c.uint_contents, u16),
        DataType::Uint32 => narrow!(c.uint_contents, u32),
        DataType::Uint64 => narrow!(c.uint64_contents, u64),
        DataType::Fp32 => c
            .fp32_contents
            .iter()
            .for_each(|f| out.extend_from_slice(&f.to_le_bytes())),
        DataType::Fp64 => c
            .fp64_contents
            .iter()
            .for_each(|f| out.extend_from_slice(&f.to_le_bytes())),
        DataType::Bytes => {
            for e in &c.bytes_contents {
                let len = u32::try_from(e.len()).map_err(|_| {
                    invalid(format!("input '{name}': a BYTES element is over 4 GiB"))
                })?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(e);
            }
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(invalid(format!(
                "input '{name}': {datatype} has no typed contents; send it in raw_input_contents"
            )));
        }
    }
    Ok(Bytes::from(out))
}

/// One tensor of a message: its bytes from `raw` (raw contents) or from typed `contents`;
/// `kind` (input, output) names it in errors. With neither, an output is empty and an input an
/// error.
fn tensor_from_parts(
    kind: &str,
    name: String,
    datatype: &str,
    shape: &[i64],
    parameters: std::collections::HashMap<String, pb::InferParameter>,
    raw: Option<Bytes>,
    contents: Option<pb::InferTensorContents>,
) -> Result<Tensor, ProtocolError> {
    let datatype: DataType = datatype
        .parse()
        .map_err(|e| invalid(format!("{kind} '{name}': {e}")))?;
    let shape = shape_from(&name, shape)?;
    let data = match (raw, contents) {
        (Some(bytes), _) => bytes,
        (None, Some(c)) => contents_bytes(&name, datatype, c)?,
        (None, None) if kind == "output" => Bytes::new(),
        (None, None) => return Err(invalid(format!("{kind} '{name}' has no contents"))),
    };
    let mut t = Tensor::new(name, datatype, shape, data)?;
    t.parameters = parameters_from(parameters);
    Ok(t)
}

/// An input whose data is in a registered shared-memory region.
fn tensor_from_shared_memory(
    input: pb::model_infer_request::InferInputTensor,
    shm: &dyn SharedMemoryReader,
) -> Result<Tensor, ProtocolError> {
    let name = input.name;
    if input.contents.is_some() {
        return Err(invalid(format!(
            "input '{name}' has contents and the 'shared_memory_region' parameter; give one"
        )));
    }
    let datatype: DataType = input
        .datatype
        .parse()
        .map_err(|e| invalid(format!("input '{name}': {e}")))?;
    let shape = shape_from(&name, &input.shape)?;
    let mut parameters = parameters_from(input.parameters);
    let at = SharedMemoryRef::from_parameters(&name, &parameters)?
        .ok_or_else(|| invalid(format!("input '{name}': 'shared_memory_region' is missing")))?;
    at.check_size(&name, datatype, &shape)?;
    let data = shm.read(&name, &at)?;
    ferroserve_protocol::shared_memory::strip_parameters(&mut parameters);
    let mut t = Tensor::new(name, datatype, shape, data)?;
    t.parameters = parameters;
    Ok(t)
}

/// A `ModelInferRequest` → an `InferRequest`, with every size checked. Inputs in shared
/// memory (Triton's `shared_memory_region` parameters) are read through `shm` and take no
/// `raw_input_contents` entry.
pub fn request_from(
    req: pb::ModelInferRequest,
    shm: &dyn SharedMemoryReader,
) -> Result<InferRequest, ProtocolError> {
    let raw = !req.raw_input_contents.is_empty();
    let in_shm = |i: &pb::model_infer_request::InferInputTensor| {
        i.parameters
            .contains_key(ferroserve_protocol::shared_memory::REGION)
    };
    let inline = req.inputs.iter().filter(|i| !in_shm(i)).count();
    if let Some(input) = req.inputs.iter().find(|i| raw && i.contents.is_some()) {
        // Triton's wording, which its example clients check.
        return Err(invalid(format!(
            "contents field must not be specified when using raw_input_contents for '{}' for model '{}'",
            input.name, req.model_name
        )));
    }
    if raw && req.raw_input_contents.len() != inline {
        let note = if inline < req.inputs.len() {
            " (inputs in shared memory take none)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "the request has {inline} inputs but {} raw_input_contents{note}",
            req.raw_input_contents.len()
        )));
    }
    let mut raws = req.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        if in_shm(&input) {
            inputs.push(tensor_from_shared_memory(input, shm)?);
            continue;
        }
        inputs.push(tensor_from_parts(
            "input",
            input.name,
            &input.datatype,
            &input.shape,
            input.parameters,
            raws.next(),
            input.contents,
        )?);
    }
    let req = InferRequest {
        id: (!req.id.is_empty()).then_some(req.id),
        parameters: parameters_from(req.parameters),
        inputs,
        outputs: req
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                name: o.name,
                parameters: parameters_from(o.parameters),
            })
            .collect(),
    };
    req.validate()?;
    Ok(req)
}

/// An `InferResponse` → a `ModelInferResponse`, every output in `raw_output_contents` (where
/// tritonclient reads numeric outputs).
pub fn response_to(resp: InferResponse) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for t in resp.outputs {
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_owned(),
            shape: shape_to(&t.shape),
            parameters: parameters_to(&t.parameters),
            contents: None,
        });
        raw.push(t.data);
    }
    // Outputs written into shared memory have no contents: their entries are empty, and the
    // trailing ones are left out (tritonclient matches `raw_output_contents` to outputs by
    // position, so an empty entry is kept only before an output that has contents).
    while raw.last().is_some_and(Bytes::is_empty)
        && outputs.get(raw.len() - 1).is_some_and(|o| {
            o.parameters
                .contains_key(ferroserve_protocol::shared_memory::REGION)
        })
    {
        raw.pop();
    }
    pb::ModelInferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version.unwrap_or_default(),
        id: resp.id.unwrap_or_default(),
        parameters: parameters_to(&resp.parameters),
        outputs,
        raw_output_contents: raw,
    }
}

/// An `InferRequest` → a `ModelInferRequest` for `model_name` (a remote server's name of the
/// model), every input in `raw_input_contents`: the bytes are not copied.
pub fn request_to(req: InferRequest, model_name: &str) -> pb::ModelInferRequest {
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut raw = Vec::with_capacity(req.inputs.len());
    for t in req.inputs {
        inputs.push(pb::model_infer_request::InferInputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_owned(),
            shape: shape_to(&t.shape),
            parameters: parameters_to(&t.parameters),
            contents: None,
        });
        raw.push(t.data);
    }
    pb::ModelInferRequest {
        model_name: model_name.to_owned(),
        model_version: String::new(),
        id: req.id.unwrap_or_default(),
        parameters: parameters_to(&req.parameters),
        inputs,
        outputs: req
            .outputs
            .into_iter()
            .map(|o| pb::model_infer_request::InferRequestedOutputTensor {
                parameters: parameters_to(&o.parameters),
                name: o.name,
            })
            .collect(),
        raw_input_contents: raw,
    }
}

/// A `ModelInferResponse` (from a remote server) → an `InferResponse`, with every size
/// checked; outputs come from `raw_output_contents` or, where a server sends them, typed
/// `contents`.
pub fn response_from(resp: pb::ModelInferResponse) -> Result<InferResponse, ProtocolError> {
    let raw = !resp.raw_output_contents.is_empty();
    if raw && resp.raw_output_contents.len() != resp.outputs.len() {
        return Err(invalid(format!(
            "the response has {} outputs but {} raw_output_contents",
            resp.outputs.len(),
            resp.raw_output_contents.len()
        )));
    }
    let mut raws = resp.raw_output_contents.into_iter();
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    for output in resp.outputs {
        outputs.push(tensor_from_parts(
            "output",
            output.name,
            &output.datatype,
            &output.shape,
            output.parameters,
            raws.next(),
            output.contents,
        )?);
    }
    Ok(InferResponse {
        model_name: resp.model_name,
        model_version: (!resp.model_version.is_empty()).then_some(resp.model_version),
        id: (!resp.id.is_empty()).then_some(resp.id),
        parameters: parameters_from(resp.parameters),
        outputs,
    })
}

/// gRPC tensor metadata (a remote server's) → protocol tensor metadata.
pub fn tensor_metadata_from(
    t: pb::model_metadata_response::TensorMetadata,
) -> Result<TensorMetadata, ProtocolError> {
    let datatype = t
        .datatype
        .parse()
        .map_err(|e| invalid(format!("tensor '{}': {e}", t.name)))?;
    Ok(TensorMetadata {
        name: t.name,
        datatype,
        shape: t.shape,
    })
}

/// Protocol tensor metadata → gRPC tensor metadata.
pub fn tensor_metadata_to(t: &TensorMetadata) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.as_str().to_owned(),
        shape: t.shape.clone(),
    }
}

/// Triton's config `DataType` of a V2 datatype.
pub fn config_datatype(dt: DataType) -> pb::DataType {
    match dt {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::Uint8 => pb::DataType::TypeUint8,
        DataType::Uint16 => pb::DataType::TypeUint16,
        DataType::Uint32 => pb::DataType::TypeUint32,
        DataType::Uint64 => pb::DataType::TypeUint64,
        DataType::Int8 => pb::DataType::TypeInt8,
        DataType::Int16 => pb::DataType::TypeInt16,
        DataType::Int32 => pb::DataType::TypeInt32,
        DataType::Int64 => pb::DataType::TypeInt64,
        DataType::Fp16 => pb::DataType::TypeFp16,
        DataType::Bf16 => pb::DataType::TypeBf16,
        DataType::Fp32 => pb::DataType::TypeFp32,
        DataType::Fp64 => pb::DataType::TypeFp64,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_contents_are_range_checked() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        };
        let err = contents_bytes("x", DataType::Int8, c)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("element 1 (300) is out of range for INT8"),
            "{err}"
        );
    }
}
