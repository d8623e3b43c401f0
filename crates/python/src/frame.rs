//! Frames between ferroserve and a Python worker.
//!
//! A frame is `u32 LE header length | u64 LE payload length | header | payload`. The header is
//! UTF-8 JSON with a `type` and, for requests and their replies, an `id`; the payload is raw
//! tensor bytes at the offsets the header gives. Messages:
//!
//! | to the worker | from the worker |
//! |---|---|
//! | `infer` (`protocol` `v2` with `request`, or `v1` with `body`; `headers`) | `result` (`response` or `body`), or `error` (`kind`, `message`) |
//! | `health` | `health` (`ok`) |
//! | `reconfigure` (`user_config`) | `reconfigured` (`error`) |
//! | `free` (`offset`: an output's block in the arena that ferroserve is done with) | |
//! | `cancel` (the caller went away) | `cancelled` if the request was dropped before it finished (else its `result` or `error`) |
//! | | `ready` (`info`, `concurrent`, `arena`) once `load()` returned, or `load_failed` (`error`: the traceback) |
//! | `method` (`method`; payload: pickled `(args, kwargs)`) | `method_result` (payload: the pickled answer), or `error` |
//! | `call_result` (`protocol`, `response` or `body`; for `method`, the payload), or `call_error` (`kind`, `message`) | `call` (`target`, `protocol` `v1`/`v2`/`method`, `request`, `body` or `method`, `parent`): the model calls another deployment |
//! | | `call_cancel`: the model stopped waiting for its call |
//!
//! Every `infer` gets exactly one answer: `result`, `error` or `cancelled`.
//!
//! A tensor with a `region` is not in the payload but in the worker's shared-memory arena
//! (`ferroserve_shm::Arena`), at `offset`: inputs of at least `SharedMemory::inline_max` bytes
//! are placed in its request half, and the worker places large outputs in its own half (or
//! names the input an output is a view of).

use std::collections::HashMap;

use bytes::Bytes;
use ferroserve_protocol::v2::RequestedOutput;
use ferroserve_protocol::{DataType, Parameters};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest header accepted from a worker.
const MAX_HEADER: u32 = 64 << 20;
/// Largest payload accepted from a worker.
const MAX_PAYLOAD: u64 = 16 << 30;
/// Frame parts up to this size are allocated at once; larger ones grow as their bytes arrive.
const PREALLOCATE: usize = 64 << 20;

/// A tensor in a header: its metadata and where its bytes are in the payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Tensor parameters.
    #[serde(default)]
    pub parameters: Parameters,
    /// Byte offset in the payload, in the arena when `region` is `in` or `out`, in the
    /// client's object when it is `client`.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
    /// Where the bytes are when not in the frame's payload: in the worker's shared-memory
    /// arena (`in`: its request half, `out`: its own half), or in a client's object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// The client's object, when `region` is `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ClientObject>,
}

/// A client's shared-memory object that an input lies in (Triton's system shared-memory
/// extension): the worker opens `/dev/shm/<key>` and checks it found the object ferroserve
/// registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientObject {
    /// The key, as the client registered it.
    pub key: String,
    /// The object's device number.
    pub dev: u64,
    /// The object's inode number.
    pub ino: u64,
}

/// A half of a worker's shared-memory arena (`ferroserve_shm::Arena`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// The request half, where ferroserve places inputs (an output there is a view of one of
    /// its request's inputs).
    In,
    /// The worker's half, where it places outputs.
    Out,
    /// A client's registered region, mapped by the worker itself (inputs only).
    Client,
}

/// A V2 request in a header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRequest {
    /// Request id.
    #[serde(default)]
    /// Request id.
    pub id: Option<String>,
    /// Request parameters.
    #[serde(default)]
    pub parameters: Parameters,
    /// Inputs.
    pub inputs: Vec<WireTensor>,
    /// Requested outputs.
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
}

/// A V2 response in a header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResponse {
    /// Model name.
    #[serde(default)]
    pub model_name: String,
    /// Request id.
    #[serde(default)]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default)]
    pub parameters: Parameters,
    /// Outputs.
    pub outputs: Vec<WireTensor>,
}

/// What the worker says about the model. Signatures stay JSON here: they are optional, and
/// one the server cannot read is dropped with a warning rather than failing the start.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireInfo {
    /// Platform name.
    #[serde(default)]
    pub platform: String,
    /// Input signatures (`TensorMetadata` as JSON).
    #[serde(default)]
    pub inputs: Vec<serde_json::Value>,
    /// Output signatures (`TensorMetadata` as JSON).
    #[serde(default)]
    pub outputs: Vec<serde_json::Value>,
    /// The model's `@serve.batch` options, when its predict handler batches lists.
    #[serde(default)]
    pub batch: Option<WireBatch>,
}

/// A `@serve.batch` handler's options.
#[derive(Debug, Clone, Deserialize)]
pub struct WireBatch {
    /// Most requests per batch.
    pub max_batch_size: usize,
    /// Seconds a batch waits after its first request.
    pub batch_wait_timeout_s: f64,
}

/// One request's answer in a `batch_result`: a V2 response, a V1 body, or an error.
#[derive(Debug, Clone, Deserialize)]
pub struct WireAnswer {
    /// V2 answer (tensor offsets into the frame's payload).
    #[serde(default)]
    pub response: Option<WireResponse>,
    /// V1 answer.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Why this request failed.
    #[serde(default)]
    pub error: Option<WireError>,
}

/// An error in a `batch_result`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireError {
    /// `invalid_input`, `unavailable` or `internal`.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// Messages to a worker.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker<'a> {
    /// Run a request.
    Infer {
        /// Pairs the reply.
        id: u64,
        /// `v1` or `v2`.
        protocol: &'static str,
        /// The V2 request.
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<WireRequest>,
        /// The V1 body.
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<&'a serde_json::Value>,
        /// Request headers.
        headers: HashMap<&'a str, &'a str>,
    },
    /// Run a batch of requests through the model's `@serve.batch` handler, as one list.
    Batch {
        /// Pairs the reply.
        id: u64,
        /// `v1` or `v2`.
        protocol: &'static str,
        /// The V2 requests (tensor offsets into the one payload).
        #[serde(skip_serializing_if = "Option::is_none")]
        requests: Option<Vec<WireRequest>>,
        /// The V1 bodies.
        #[serde(skip_serializing_if = "Option::is_none")]
        bodies: Option<Vec<&'a serde_json::Value>>,
        /// The batch's headers: its first request's (the batch has one context).
        headers: HashMap<&'a str, &'a str>,
    },
    /// Check health.
    Health {
        /// Pairs the reply.
        id: u64,
    },
    /// Apply a new `user_config`.
    Reconfigure {
        /// Pairs the reply.
        id: u64,
        /// The new configuration.
        user_config: &'a serde_json::Value,
    },
    /// Call a method of the model (from another Python deployment's handle).
    Method {
        /// Pairs the reply.
        id: u64,
        /// The method's name.
        method: &'a str,
    },
    /// The worker may reuse the block of its arena at `offset` (ferroserve is done with it).
    Free {
        /// The block's offset, as the worker's output named it.
        offset: u64,
    },
    /// The caller of request `id` went away.
    Cancel {
        /// The request.
        id: u64,
    },
    /// The answer to the worker's `call`.
    CallResult {
        /// The call.
        id: u64,
        /// `v1` or `v2`.
        protocol: &'static str,
        /// V2 answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<WireResponse>,
        /// V1 answer.
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<serde_json::Value>,
    },
    /// The worker's `call` failed.
    CallError {
        /// The call.
        id: u64,
        /// The error's kind (`InferError::kind`: `invalid_input`, `overloaded`, ...).
        kind: &'static str,
        /// What happened, naming the deployment.
        message: String,
    },
}

/// Messages from a worker.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// `load()` returned: the worker serves.
    Ready {
        /// Model metadata.
        #[serde(default)]
        info: WireInfo,
        /// Whether the model runs requests concurrently (an `async` model); a sync one runs
        /// them one at a time, in order.
        #[serde(default)]
        concurrent: bool,
        /// Whether the worker took the shared-memory arena it was handed.
        #[serde(default)]
        arena: bool,
        /// Whether the worker maps clients' objects itself (inputs in `region: client`).
        #[serde(default)]
        client_memory: bool,
    },
    /// Construction or `load()` raised.
    LoadFailed {
        /// The traceback.
        error: String,
    },
    /// A request's answer.
    Result {
        /// The request.
        id: u64,
        /// V2 answer.
        #[serde(default)]
        response: Option<WireResponse>,
        /// V1 answer.
        #[serde(default)]
        body: Option<serde_json::Value>,
    },
    /// A request's failure.
    Error {
        /// The request.
        id: u64,
        /// `invalid_input`, `unavailable` or `internal`.
        kind: String,
        /// What happened (`ValueError : ...`).
        message: String,
    },
    /// Health answer.
    Health {
        /// The check.
        id: u64,
        /// Healthy or not.
        ok: bool,
    },
    /// The model calls another deployment (a `DeploymentHandle`).
    Call {
        /// Pairs the answer (the worker's own numbering).
        id: u64,
        /// The deployment called.
        target: String,
        /// `v1`, `v2` or `method`.
        protocol: String,
        /// The method to call (protocol `method`; the payload holds its arguments).
        #[serde(default)]
        method: Option<String>,
        /// V2 request.
        #[serde(default)]
        request: Option<WireRequest>,
        /// V1 body.
        #[serde(default)]
        body: Option<serde_json::Value>,
        /// The request the call is made for, whose deadline it inherits.
        #[serde(default)]
        parent: Option<u64>,
    },
    /// A method's answer (pickled, in the payload).
    MethodResult {
        /// The request.
        id: u64,
    },
    /// The model stopped waiting for call `id`.
    CallCancel {
        /// The call.
        id: u64,
    },
    /// Request `id` was dropped after a `cancel`, before it finished.
    Cancelled {
        /// The request.
        id: u64,
    },
    /// The answers to a `batch`, one per request, in order.
    BatchResult {
        /// The batch.
        id: u64,
        /// One per request.
        results: Vec<WireAnswer>,
    },
    /// The model changed its batching (`set_max_batch_size`, `set_batch_wait_timeout_s`).
    BatchConfig {
        /// New most requests per batch.
        #[serde(default)]
        max_batch_size: Option<usize>,
        /// New wait, in seconds.
        #[serde(default)]
        batch_wait_timeout_s: Option<f64>,
    },
    /// Reconfigure answer.
    Reconfigured {
        /// The request.
        id: u64,
        /// Why it failed, if it did.
        #[serde(default)]
        error: Option<String>,
    },
}

/// Reads one frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(Vec<u8>, Bytes)>> {
    let mut prefix = [0u8; 12];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (h, p) = prefix.split_at(4);
    let header_len = u32::from_le_bytes(h.try_into().unwrap_or_default());
    let payload_len = u64::from_le_bytes(p.try_into().unwrap_or_default());
    if header_len > MAX_HEADER || payload_len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame too large: header {header_len} bytes, payload {payload_len} bytes"),
        ));
    }
    let header = read_exactly(r, u64::from(header_len)).await?;
    let payload = read_exactly(r, payload_len).await?;
    Ok(Some((header, Bytes::from(payload))))
}

/// Reads exactly `len` bytes. Memory is taken as bytes arrive beyond `PREALLOCATE`, so a
/// declared length that the stream does not back cannot make the server allocate it.
async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> std::io::Result<Vec<u8>> {
    let size = usize::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"))?;
    if size <= PREALLOCATE {
        let mut buf = vec![0u8; size];
        r.read_exact(&mut buf).await?;
        return Ok(buf);
    }
    let mut buf = Vec::with_capacity(PREALLOCATE);
    (&mut *r).take(len).read_to_end(&mut buf).await?;
    if buf.len() != size {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Writes one frame: the header, then the payload parts in order (without concatenating them).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    header: &[u8],
    parts: &[Bytes],
) -> std::io::Result<()> {
    let header_len = u32::try_from(header.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "header too large"))?;
    let payload_len: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let mut prefix = [0u8; 12];
    prefix[..4].copy_from_slice(&header_len.to_le_bytes());
    prefix[4..].copy_from_slice(&payload_len.to_le_bytes());
    w.write_all(&prefix).await?;
    w.write_all(header).await?;
    for p in parts {
        w.write_all(p).await?;
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(
            &mut a,
            br#"{"type":"x"}"#,
            &[Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
        )
        .await
        .unwrap();
        drop(a);
        let (h, p) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(h, br#"{"type":"x"}"#);
        assert_eq!(&p[..], b"abcd");
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut prefix = [0u8; 12];
        prefix[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        a.write_all(&prefix).await.unwrap();
        assert!(read_frame(&mut b).await.is_err());
    }
}
