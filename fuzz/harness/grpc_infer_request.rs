//! A gRPC `ModelInferRequest` as the service takes it: prost decodes the message, then
//! `grpc::convert::request_from` makes the protocol's `InferRequest`; the way back is
//! `convert::response_to` (here with the inputs as outputs, an identity model's answer).
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/grpc_infer_request.rs` and the corpus test
//! `crates/server/tests/fuzz_corpus.rs`, so both run the same code.

use bytes::Bytes;
use ferroserve_protocol::v2::InferResponse;
use ferroserve_server::grpc::{convert, pb};
use prost::Message;

/// Converts one input; true when it is a valid request. Panics only on a bug.
pub fn check(input: &[u8]) -> bool {
    // tonic hands prost a `Bytes`, so `raw_input_contents` are slices of it.
    let Ok(message) = pb::ModelInferRequest::decode(Bytes::copy_from_slice(input)) else {
        return false;
    };
    let Ok(req) =
        convert::request_from(message, &ferroserve_protocol::shared_memory::NoSharedMemory)
    else {
        return false;
    };
    for t in &req.inputs {
        let count = t.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        if let (Some(size), Some(count)) = (t.datatype.element_size(), count) {
            assert_eq!(
                Some(t.data.len() as u64),
                count.checked_mul(size as u64),
                "input '{}': data does not match its shape",
                t.name
            );
        }
    }
    let resp = convert::response_to(InferResponse {
        model_name: "m".to_owned(),
        id: req.id.clone(),
        outputs: req.inputs,
        ..Default::default()
    });
    assert_eq!(resp.outputs.len(), resp.raw_output_contents.len());
    let _ = resp.encode_to_vec();
    true
}
