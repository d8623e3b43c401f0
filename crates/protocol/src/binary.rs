//! The binary tensor data extension (Triton's, adopted by KServe).
//!
//! A body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw tensor
//! blobs, in the order of the inputs (or outputs) that carry a `binary_data_size` parameter.
//! Binary input data is sliced from the body without copying.

use bytes::Bytes;

use crate::json::{decode_header, decode_response_header, write_request, write_response};
use crate::shared_memory::{NoSharedMemory, SharedMemoryReader};
use crate::v2::{InferRequest, InferResponse, RequestedOutput};
use crate::{Parameters, ProtocolError};

/// Name of the header that gives the JSON part's length, in lower case.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Decodes a V2 request body. With `json_len` (the header's value) the body is a JSON header of
/// that many bytes followed by binary tensor data; without it the whole body is JSON.
/// Inputs in shared memory are refused (see [`decode_request_with`]).
pub fn decode_request(body: Bytes, json_len: Option<usize>) -> Result<InferRequest, ProtocolError> {
    decode_request_with(body, json_len, &NoSharedMemory)
}

/// As [`decode_request`], reading inputs in shared memory (Triton's `shared_memory_region`
/// parameters) through `shm`.
pub fn decode_request_with(
    body: Bytes,
    json_len: Option<usize>,
    shm: &dyn SharedMemoryReader,
) -> Result<InferRequest, ProtocolError> {
    let (json, binary) = split(body, json_len)?;
    decode_header(&json)?.assemble(binary, json_len.is_some(), shm)
}

/// Decodes a V2 response body (what a forwarding replica reads back), as
/// [`decode_request`] decodes a request: with `json_len`, a JSON header followed by the binary
/// data of the outputs that carry `binary_data_size`; without it, all JSON.
pub fn decode_response(
    body: Bytes,
    json_len: Option<usize>,
) -> Result<InferResponse, ProtocolError> {
    let (json, binary) = split(body, json_len)?;
    decode_response_header(&json)?.assemble(binary, json_len.is_some())
}

/// A body's JSON part and its binary data (none without `json_len`), sliced, not copied.
fn split(body: Bytes, json_len: Option<usize>) -> Result<(Bytes, Bytes), ProtocolError> {
    match json_len {
        None => Ok((body, Bytes::new())),
        Some(len) if len > body.len() => Err(ProtocolError::Binary(format!(
            "Inference-Header-Content-Length is {len} but the body has only {} bytes",
            body.len()
        ))),
        Some(len) => Ok((body.slice(..len), body.slice(len..))),
    }
}

/// An encoded body: the JSON part, then the binary blobs to send after it.
#[derive(Debug, Clone)]
pub struct EncodedBody {
    /// The JSON part.
    pub json: Vec<u8>,
    /// Tensor data sent in binary, in tensor order; empty for a pure JSON body.
    pub blobs: Vec<Bytes>,
}

impl EncodedBody {
    /// Whether any output is sent as binary data (so the body needs the length header).
    pub fn is_binary(&self) -> bool {
        !self.blobs.is_empty()
    }

    /// Total body length.
    pub fn len(&self) -> usize {
        self.json.len() + self.blobs.iter().map(Bytes::len).sum::<usize>()
    }

    /// Whether the body is empty (it never is: the JSON part is always there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in one buffer (copies; for clients and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.json);
        for b in &self.blobs {
            out.extend_from_slice(b);
        }
        out
    }
}

/// Encodes a request with every input's data sent as binary after the JSON part (how
/// tritonclient sends by default); each input gets a `binary_data_size` parameter.
pub fn encode_request(req: &InferRequest) -> Result<EncodedBody, ProtocolError> {
    let mut json = Vec::with_capacity(256);
    write_request(req, &vec![true; req.inputs.len()], &mut json)?;
    let blobs = req.inputs.iter().map(|t| t.data.clone()).collect();
    Ok(EncodedBody { json, blobs })
}

/// Encodes a response, sending an output as binary when its requested-output `binary_data`
/// parameter says so, or, without one, when the request's `binary_data_output` does.
pub fn encode_response(
    resp: &InferResponse,
    request_parameters: &Parameters,
    requested: &[RequestedOutput],
) -> Result<EncodedBody, ProtocolError> {
    let default = request_parameters
        .get("binary_data_output")
        .and_then(|p| p.as_bool())
        .unwrap_or(false);
    let flags: Vec<bool> = resp
        .outputs
        .iter()
        .map(|t| {
            requested
                .iter()
                .find(|r| r.name == t.name)
                .and_then(|r| r.parameters.get("binary_data"))
                .and_then(|p| p.as_bool())
                .unwrap_or(default)
                && !crate::shared_memory::is_written(t)
        })
        .collect();
    let mut json = Vec::with_capacity(256);
    write_response(resp, &flags, &mut json)?;
    let blobs = resp
        .outputs
        .iter()
        .zip(&flags)
        .filter(|(_, b)| **b)
        .map(|(t, _)| t.data.clone())
        .collect();
    Ok(EncodedBody { json, blobs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataType, Tensor};

    fn body(json: &str, blobs: &[&[u8]]) -> (Bytes, usize) {
        let mut b = json.as_bytes().to_vec();
        for blob in blobs {
            b.extend_from_slice(blob);
        }
        (Bytes::from(b), json.len())
    }

    #[test]
    fn a_response_encoded_with_binary_and_json_outputs_decodes_to_itself() {
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: Some("2".into()),
            id: Some("r1".into()),
            parameters: Parameters::new(),
            outputs: vec![
                Tensor::from_values("b", vec![2], &[1.5f32, -2.0]).unwrap(),
                Tensor::from_values("j", vec![1, 2], &[7i64, 8]).unwrap(),
            ],
        };
        let requested = [RequestedOutput {
            name: "b".into(),
            parameters: [("binary_data".to_owned(), crate::Parameter::Bool(true))]
                .into_iter()
                .collect(),
        }];
        let encoded = encode_response(&resp, &Parameters::new(), &requested).unwrap();
        assert_eq!(encoded.blobs.len(), 1);
        let json_len = encoded.json.len();
        let back = decode_response(Bytes::from(encoded.to_vec()), Some(json_len)).unwrap();
        assert_eq!(back.model_name, "m");
        assert_eq!(back.id.as_deref(), Some("r1"));
        assert_eq!(back.outputs[0].data, resp.outputs[0].data);
        assert_eq!(back.outputs[1].data, resp.outputs[1].data);
        assert_eq!(back.outputs[1].shape, vec![1, 2]);
        let short = Bytes::from(encoded.json.clone());
        assert!(
            decode_response(short, Some(json_len)).is_err(),
            "missing binary data"
        );
    }

    #[test]
    fn binary_inputs_are_sliced_in_order() {
        let json = r#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT16","parameters":{"binary_data_size":4}},{"name":"j","shape":[1],"datatype":"FP32","data":[1]},{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":18}}]}"#;
        let s = Tensor::from_byte_strings("s", vec![2], ["hello", "w\0rld"]).unwrap();
        let (b, n) = body(json, &[&[1, 0, 2, 0], &s.data]);
        let r = decode_request(b, Some(n)).unwrap();
        assert_eq!(r.inputs[0].to_vec::<i16>().unwrap(), vec![1, 2]);
        assert_eq!(r.inputs[2].data, s.data);
        assert_eq!(r.inputs[2].datatype, DataType::Bytes);
    }

    #[test]
    fn framing_errors_are_reported() {
        let json = r#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT16","parameters":{"binary_data_size":4}}]}"#;
        let (b, n) = body(json, &[&[1, 0, 2]]);
        assert!(
            decode_request(b, Some(n))
                .unwrap_err()
                .to_string()
                .contains("only 3 remain")
        );
        let (b, n) = body(json, &[&[1, 0, 2, 0, 9]]);
        assert!(
            decode_request(b, Some(n))
                .unwrap_err()
                .to_string()
                .contains("1 bytes follow")
        );
        let (b, _) = body(json, &[&[1, 0, 2, 0]]);
        assert!(decode_request(b.clone(), Some(b.len() + 1)).is_err());
        let (b, _) = body(json, &[]);
        assert!(
            decode_request(b, None)
                .unwrap_err()
                .to_string()
                .contains("no Inference-Header")
        );
    }

    #[test]
    fn outputs_go_binary_when_asked() {
        let resp = InferResponse {
            model_name: "m".into(),
            outputs: vec![
                Tensor::from_values("a", vec![1], &[1.0f32]).unwrap(),
                Tensor::from_values("b", vec![1], &[2i32]).unwrap(),
            ],
            ..Default::default()
        };
        let mut params = Parameters::new();
        params.insert("binary_data_output".into(), true.into());
        let requested = vec![RequestedOutput {
            name: "b".into(),
            parameters: [("binary_data".to_owned(), false.into())]
                .into_iter()
                .collect(),
        }];
        let enc = encode_response(&resp, &params, &requested).unwrap();
        assert_eq!(enc.blobs, vec![Bytes::from_static(&[0, 0, 128, 63])]);
        let json = String::from_utf8(enc.json).unwrap();
        assert!(
            json.contains(r#""parameters":{"binary_data_size":4}"#),
            "{json}"
        );
        assert!(json.contains(r#""data":[2]"#), "{json}");
    }
}
