//! Calls a Python model makes to other deployments, through its `DeploymentHandle`s.
//!
//! A `call` frame from the worker becomes a request through the target deployment's router,
//! exactly as a client's would be (backpressure, queue, timeouts, metrics), bounded by the
//! deadline of the request it is made for; the answer goes back on the same socket as
//! `call_result` or `call_error`, tensors as raw bytes both ways. A `call_cancel` (the model
//! stopped waiting, e.g. because its own request was cancelled) aborts the call, which
//! cancels it downstream; so does the worker's death.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use ferroserve_protocol::Tensor;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_runtime::{Handle, InferError, Payload, Prediction};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::frame::{ToWorker, WireRequest, WireResponse, WireTensor};
use crate::placement::slice;

/// Frames on their way to the worker: header and payload parts.
pub(crate) type Outbox = mpsc::UnboundedSender<(Vec<u8>, Vec<Bytes>)>;

/// One `call` from the worker.
pub(crate) struct Call {
    pub(crate) id: u64,
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) method: Option<String>,
    pub(crate) request: Option<WireRequest>,
    pub(crate) body: Option<serde_json::Value>,
    /// The caller's deadline (that of the request the call is made for).
    pub(crate) deadline: Option<Instant>,
}

/// The calls of one worker that are still running.
#[derive(Default)]
pub(crate) struct Calls {
    running: Mutex<HashMap<u64, AbortHandle>>,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `call` in a task of its own; its answer goes to `out`.
    pub(crate) fn start(
        self: &Arc<Self>,
        handle: Option<Handle>,
        out: Outbox,
        call: Call,
        payload: Bytes,
    ) {
        let id = call.id;
        let calls = self.clone();
        // Registered before the task can finish, so that its removal never comes first.
        let mut running = self.lock();
        let task = tokio::spawn(async move {
            let answer = run(handle, call, payload).await;
            calls.lock().remove(&id);
            let frame = match answer {
                Ok(frame) => frame,
                Err(e) => error_frame(id, &e),
            };
            let _ = out.send(frame);
        });
        running.insert(id, task.abort_handle());
    }

    /// Aborts call `id` (the model stopped waiting for it).
    pub(crate) fn cancel(&self, id: u64) {
        if let Some(task) = self.lock().remove(&id) {
            task.abort();
        }
    }

    /// Aborts every call (the worker is gone).
    pub(crate) fn cancel_all(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }
}

async fn run(
    handle: Option<Handle>,
    call: Call,
    payload: Bytes,
) -> Result<(Vec<u8>, Vec<Bytes>), InferError> {
    let handle = handle.ok_or_else(|| InferError::Unavailable("the server is stopping".into()))?;
    let target = handle
        .deployment(&call.target)?
        .with_deadline(call.deadline);
    if let ("method", Some(method)) = (call.protocol.as_str(), &call.method) {
        let answer = target.call_method(method, payload).await?;
        let header = encode(&ToWorker::CallResult {
            id: call.id,
            protocol: "method",
            response: None,
            body: None,
        })?;
        return Ok((header, vec![answer]));
    }
    let input = match (call.protocol.as_str(), call.request, call.body) {
        ("v2", Some(request), _) => Payload::V2(request_from(request, &payload)?),
        ("v1", _, Some(body)) => Payload::V1(body),
        (protocol, ..) => {
            return Err(InferError::InvalidInput(format!(
                "a call needs protocol 'v1' with a body, 'v2' with a request or 'method' with a method, not '{protocol}'"
            )));
        }
    };
    match target.infer(input).await? {
        Prediction::V1(body) => encode(&ToWorker::CallResult {
            id: call.id,
            protocol: "v1",
            response: None,
            body: Some(body),
        })
        .map(|h| (h, Vec::new())),
        Prediction::V2(response) => {
            let (wire, parts) = response_to_wire(response);
            encode(&ToWorker::CallResult {
                id: call.id,
                protocol: "v2",
                response: Some(wire),
                body: None,
            })
            .map(|h| (h, parts))
        }
    }
}

fn encode(msg: &ToWorker<'_>) -> Result<Vec<u8>, InferError> {
    serde_json::to_vec(msg).map_err(|e| InferError::Internal(format!("cannot encode a frame: {e}")))
}

fn error_frame(id: u64, e: &InferError) -> (Vec<u8>, Vec<Bytes>) {
    let header = serde_json::to_vec(&ToWorker::CallError {
        id,
        kind: e.kind(),
        message: e.to_string(),
    })
    .unwrap_or_else(|_| {
        format!(r#"{{"type":"call_error","id":{id},"kind":"internal","message":"call failed"}}"#)
            .into_bytes()
    });
    (header, Vec::new())
}

/// A V2 request from its header and the frame's payload (tensors sliced, not copied).
fn request_from(wire: WireRequest, payload: &Bytes) -> Result<InferRequest, InferError> {
    let mut inputs = Vec::with_capacity(wire.inputs.len());
    for t in wire.inputs {
        if t.region.is_some() {
            return Err(InferError::InvalidInput(format!(
                "input '{}' of a call is in shared memory; a call's tensors travel in its frame",
                t.name
            )));
        }
        let data = slice(payload, t.offset, t.length).ok_or_else(|| {
            InferError::InvalidInput(format!("input '{}' lies outside the payload", t.name))
        })?;
        let mut tensor = Tensor::new(t.name, t.datatype, t.shape, data)?;
        tensor.parameters = t.parameters;
        inputs.push(tensor);
    }
    Ok(InferRequest {
        id: wire.id,
        parameters: wire.parameters,
        inputs,
        outputs: wire.outputs,
    })
}

/// A V2 response as a header and its tensors' bytes, laid end to end.
fn response_to_wire(response: InferResponse) -> (WireResponse, Vec<Bytes>) {
    let mut offset = 0u64;
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut parts = Vec::with_capacity(response.outputs.len());
    for t in response.outputs {
        let length = t.data.len() as u64;
        outputs.push(WireTensor {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
            parameters: t.parameters,
            offset,
            length,
            region: None,
            object: None,
        });
        offset += length;
        parts.push(t.data);
    }
    (
        WireResponse {
            model_name: response.model_name,
            id: response.id,
            parameters: response.parameters,
            outputs,
        },
        parts,
    )
}
