//! Frames from a Python worker as ferroserve's reader takes them: `frame::read_frame` one after
//! another from the stream, each header parsed as a `FromWorker`, and the tensors of a result
//! (output tensors) or of a call to another deployment (input tensors) built from their places
//! in the payload. That last step mirrors private code of the worker (`response_from` in
//! `worker.rs`, `request_from` in `calls.rs`); a result's tensors then go through the response
//! encoders as they would on their way to a client.
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/worker_frame.rs` and the corpus test
//! `crates/python/tests/fuzz_corpus.rs`, so both run the same code.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ferroserve_protocol::Tensor;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_protocol::{binary, json};
use ferroserve_python::frame::{FromWorker, WireTensor, read_frame};

/// Reads every frame of one input; true when it is whole frames only, each header a message and
/// the tensors of each result and call valid. Panics only on a bug.
pub fn check(input: &[u8]) -> bool {
    let mut reader = input;
    let mut valid = true;
    loop {
        let left = reader.len();
        let (header, payload) = match now(read_frame(&mut reader)) {
            Ok(Some(frame)) => frame,
            // The end of the stream, or a cut-off prefix (the real reader stops there too).
            Ok(None) => return valid && left == 0,
            Err(_) => return false,
        };
        let Ok(message) = serde_json::from_slice::<FromWorker>(&header) else {
            return false;
        };
        match message {
            FromWorker::Result {
                response: Some(wire),
                ..
            } => {
                let (outputs, ok) = tensors(wire.outputs, &payload);
                valid &= ok;
                let resp = InferResponse {
                    model_name: wire.model_name,
                    model_version: None,
                    id: wire.id,
                    parameters: wire.parameters,
                    outputs,
                };
                // On to a client. The response's parameters stand in for the request's, so that
                // an input can ask for binary outputs (`binary_data_output`).
                let _ = json::encode_response(&resp);
                let _ = binary::encode_response(&resp, &resp.parameters, &[]);
            }
            FromWorker::Call {
                request: Some(wire),
                ..
            } => {
                // A call to another deployment: its request, as `calls::request_from` builds it
                // (private), then validated.
                let (inputs, ok) = tensors(wire.inputs, &payload);
                let req = InferRequest {
                    id: wire.id,
                    parameters: wire.parameters,
                    inputs,
                    outputs: wire.outputs,
                };
                valid &= ok && req.validate().is_ok();
            }
            _ => {}
        }
    }
}

/// The tensors of a header from their places in the payload (slices, as the worker's
/// `response_from` and `calls::request_from` make them); false when one is invalid.
fn tensors(wire: Vec<WireTensor>, payload: &Bytes) -> (Vec<Tensor>, bool) {
    let mut out = Vec::with_capacity(wire.len());
    let mut valid = true;
    for t in wire {
        let place = usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(t.length).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|r| r.end <= payload.len());
        let Some(place) = place else {
            valid = false;
            continue;
        };
        match Tensor::new(t.name, t.datatype, t.shape, payload.slice(place)) {
            Ok(mut tensor) => {
                tensor.parameters = t.parameters;
                out.push(tensor);
            }
            Err(_) => valid = false,
        }
    }
    (out, valid)
}

/// Runs a future that never waits (`read_frame` over a slice) to its end.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("reading from memory never waits"),
    }
}
