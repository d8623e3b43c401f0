//! Where a request's tensors travel to a worker and its outputs come back: inline in the
//! frame's payload, or through the worker's shared-memory [`Arena`].
//!
//! A tensor of at least [`SharedMemory::min_tensor_bytes`] is copied once into the arena's
//! request half and crosses as an offset; the worker's numpy arrays are views of it. The
//! worker places large outputs in its own half (ferroserve reads them in place and sends a
//! `free` when done), or names the input an output is a view of (no copy at all). When the
//! arena is full, a tensor goes inline: never an error.
//!
//! An input read from a client's registered region arrives mapped
//! (`ferroserve_shm::ClientRegion::map`) and crosses as the client's object and an offset: the
//! worker maps the object itself, so its bytes are not copied at all. It is never read here
//! (a client shrinking its object would crash the server); below the threshold, or for a
//! worker that cannot map objects, it is copied with `pread` and travels as any other input.

use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use ferroserve_protocol::Tensor;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_runtime::InferError;
use ferroserve_shm::Arena;

use crate::SharedMemory;
use crate::calls::Outbox;
use crate::frame::{ClientObject, Region, ToWorker, WireRequest, WireResponse, WireTensor};

/// A worker's tensor placement: its arena, if it has one, and the size from which it is used.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    arena: Option<Arc<Arena>>,
    min_tensor_bytes: usize,
    /// The worker maps clients' objects itself (it said so when ready).
    client_memory: bool,
}

/// What one request's (or batch's) inputs hold until the worker answers: their blocks of the
/// arena, by offset (also the source of outputs that are views of inputs), and the clients'
/// mapped regions the worker reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct InputBlocks {
    arena: Vec<(u64, Bytes)>,
    /// Held, not read: the worker reads these.
    _client: Vec<Bytes>,
}

impl Placement {
    /// Makes the worker's arena as `options` say; without one (size 0, or the system refused),
    /// every tensor goes inline.
    pub(crate) fn new(options: SharedMemory, replica: &str) -> Placement {
        let arena = (options.arena_bytes > 0)
            .then(|| Arena::new(options.arena_bytes))
            .and_then(|made| {
                made.map_err(|e| {
                    tracing::warn!(%replica, error = %e, "no shared memory for this worker; tensors go inline");
                })
                .ok()
            });
        Placement {
            arena,
            min_tensor_bytes: options.min_tensor_bytes,
            client_memory: false,
        }
    }

    /// Records whether the worker maps clients' objects itself.
    pub(crate) fn set_client_memory(&mut self, on: bool) {
        self.client_memory = on;
    }

    /// The worker's `--arena` argument (`size:inputs_end:min_tensor_bytes`), when it has one.
    pub(crate) fn worker_arg(&self) -> Option<String> {
        let arena = self.arena.as_ref()?;
        Some(format!(
            "{}:{}:{}",
            arena.size(),
            arena.inputs_end(),
            self.min_tensor_bytes
        ))
    }

    /// Hands the arena's memory file to the worker over its socket (`SCM_RIGHTS`, with one
    /// byte), before any frame.
    pub(crate) fn send_fd(&self, socket: impl AsFd) -> std::io::Result<()> {
        let Some(arena) = &self.arena else {
            return Ok(());
        };
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        let fds = [arena.fd()];
        if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other("no room for the descriptor"));
        }
        let sent = rustix::net::sendmsg(
            socket,
            &[std::io::IoSlice::new(b"A")],
            &mut control,
            rustix::net::SendFlags::empty(),
        )?;
        if sent == 1 {
            Ok(())
        } else {
            Err(std::io::ErrorKind::WriteZero.into())
        }
    }

    /// A V2 request as a frame's header part. Tensors below the threshold (or when the arena is
    /// full) are appended to `parts`, their offsets counted from the payload's start (so
    /// several requests can share one payload); the others are copied into the arena, or named
    /// in their client's object, and held in `blocks`. Fails only when a client's region can
    /// no longer be read.
    pub(crate) fn wire_request(
        &self,
        req: &InferRequest,
        parts: &mut Vec<Bytes>,
        blocks: &mut InputBlocks,
    ) -> Result<WireRequest, InferError> {
        let mut offset: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut inputs = Vec::with_capacity(req.inputs.len());
        for t in &req.inputs {
            let mut wire = WireTensor {
                name: t.name.clone(),
                datatype: t.datatype,
                shape: t.shape.clone(),
                parameters: t.parameters.clone(),
                offset,
                length: t.data.len() as u64,
                region: None,
                object: None,
            };
            let copied;
            let data = match ferroserve_shm::mapped::find(&t.data) {
                None => &t.data,
                Some(mapped) if self.client_memory && t.data.len() >= self.min_tensor_bytes => {
                    let (dev, ino) = mapped.identity();
                    wire.offset = mapped.object_offset();
                    wire.region = Some(Region::Client);
                    wire.object = Some(ClientObject {
                        key: mapped.key().to_owned(),
                        dev,
                        ino,
                    });
                    blocks._client.push(t.data.clone());
                    inputs.push(wire);
                    continue;
                }
                // Never read mapped bytes here: copy them with `pread`.
                Some(mapped) => {
                    copied = mapped.read().map_err(|e| {
                        InferError::InvalidInput(format!("input '{}': {e}", t.name))
                    })?;
                    &copied
                }
            };
            match self.place(data) {
                Some((at, block)) => {
                    wire.offset = at;
                    wire.region = Some(Region::In);
                    blocks.arena.push((at, block));
                }
                None => {
                    offset += data.len() as u64;
                    parts.push(data.clone());
                }
            }
            inputs.push(wire);
        }
        Ok(WireRequest {
            id: req.id.clone(),
            parameters: req.parameters.clone(),
            inputs,
            outputs: req.outputs.clone(),
        })
    }

    /// `data` copied into the arena, when it is large enough and there is room.
    fn place(&self, data: &Bytes) -> Option<(u64, Bytes)> {
        if data.len() < self.min_tensor_bytes {
            return None;
        }
        self.arena.as_ref()?.place_input(data)
    }

    /// Builds the response tensors from their places (no copy): slices of the payload, of the
    /// request's input `blocks`, or of the worker's half of the arena (released to the worker
    /// through `outbox` once dropped).
    pub(crate) fn response_from(
        &self,
        wire: WireResponse,
        payload: &Bytes,
        blocks: &InputBlocks,
        outbox: &Outbox,
    ) -> Result<InferResponse, InferError> {
        let mut outputs = Vec::with_capacity(wire.outputs.len());
        for t in wire.outputs {
            let data = match t.region {
                None => slice(payload, t.offset, t.length),
                Some(Region::In) => blocks
                    .arena
                    .iter()
                    .find_map(|(at, block)| slice(block, t.offset.checked_sub(*at)?, t.length)),
                Some(Region::Out) => self.output(t.offset, t.length, outbox),
                Some(Region::Client) => None,
            }
            .ok_or_else(|| {
                invalid_response(format!(
                    "output '{}' lies outside its {}",
                    t.name,
                    match t.region {
                        None => "frame's payload",
                        Some(Region::In) => "request's inputs",
                        Some(Region::Out) => "worker's shared memory",
                        Some(Region::Client) => "request (outputs are never in a client's region)",
                    }
                ))
            })?;
            let mut tensor =
                Tensor::new(t.name, t.datatype, t.shape, data).map_err(invalid_response)?;
            tensor.parameters = t.parameters;
            outputs.push(tensor);
        }
        Ok(InferResponse {
            model_name: wire.model_name,
            model_version: None,
            id: wire.id,
            parameters: wire.parameters,
            outputs,
        })
    }

    /// An output in the worker's half, released with a `free` frame when dropped.
    fn output(&self, offset: u64, length: u64, outbox: &Outbox) -> Option<Bytes> {
        let outbox = outbox.clone();
        let release = Box::new(move || {
            if let Ok(header) = serde_json::to_vec(&ToWorker::Free { offset }) {
                let _ = outbox.send((header, Vec::new()));
            }
        });
        self.arena.as_ref()?.output(offset, length, release).ok()
    }
}

/// `[offset, offset + length)` of `bytes`, if it lies within.
pub(crate) fn slice(bytes: &Bytes, offset: u64, length: u64) -> Option<Bytes> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    (end <= bytes.len()).then(|| bytes.slice(start..end))
}

pub(crate) fn invalid_response(e: impl std::fmt::Display) -> InferError {
    InferError::Internal(format!("the python worker sent an invalid response: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroserve_protocol::DataType;
    use std::os::unix::fs::FileExt;

    fn wire(name: &str, offset: u64, length: u64, region: Option<Region>) -> WireTensor {
        WireTensor {
            name: name.into(),
            datatype: DataType::Uint8,
            shape: vec![length],
            parameters: Default::default(),
            offset,
            length,
            region,
            object: None,
        }
    }

    #[tokio::test]
    async fn outputs_come_from_the_payload_the_inputs_or_the_workers_half() {
        let placement = Placement::new(
            SharedMemory {
                arena_bytes: 1 << 16,
                min_tensor_bytes: 4,
            },
            "test",
        );
        let arena = placement.arena.clone().unwrap();
        let req = InferRequest {
            inputs: vec![
                Tensor::new("small", DataType::Uint8, vec![2], Bytes::from_static(b"ab")).unwrap(),
                Tensor::new(
                    "big",
                    DataType::Uint8,
                    vec![6],
                    Bytes::from_static(b"abcdef"),
                )
                .unwrap(),
            ],
            ..Default::default()
        };
        let (mut parts, mut blocks) = (Vec::new(), InputBlocks::default());
        let w = placement
            .wire_request(&req, &mut parts, &mut blocks)
            .unwrap();
        assert_eq!(w.inputs[0].region, None, "below the threshold: inline");
        assert_eq!(w.inputs[1].region, Some(Region::In));
        assert_eq!(parts.len(), 1);
        // The worker writes an output in its half.
        let out_at = arena.inputs_end() as u64 + 64;
        let file = std::fs::File::from(arena.fd().try_clone_to_owned().unwrap());
        file.write_all_at(b"xyz", out_at).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let resp = WireResponse {
            model_name: "m".into(),
            id: None,
            parameters: Default::default(),
            outputs: vec![
                wire("inline", 0, 2, None),
                wire("view", w.inputs[1].offset + 2, 3, Some(Region::In)),
                wire("new", out_at, 3, Some(Region::Out)),
            ],
        };
        let r = placement
            .response_from(resp, &Bytes::from_static(b"ab"), &blocks, &tx)
            .unwrap();
        let data: Vec<&[u8]> = r.outputs.iter().map(|t| &t.data[..]).collect();
        assert_eq!(data, [&b"ab"[..], b"cde", b"xyz"]);
        drop(r);
        let (free, _) = rx.try_recv().expect("the worker's block is released");
        assert_eq!(
            free,
            format!(r#"{{"type":"free","offset":{out_at}}}"#).into_bytes()
        );
        let outside = WireResponse {
            model_name: "m".into(),
            id: None,
            parameters: Default::default(),
            outputs: vec![wire("bad", 0, 3, Some(Region::Out))],
        };
        assert!(
            placement
                .response_from(outside, &Bytes::new(), &blocks, &tx)
                .is_err()
        );
    }

    #[test]
    fn inputs_mapped_from_a_client_region_cross_by_reference_when_the_worker_maps_them() {
        let name = format!("ferroserve-placement-test-{}", std::process::id());
        let path = std::path::Path::new("/dev/shm").join(&name);
        std::fs::write(&path, vec![5u8; 8192]).unwrap();
        let region = Arc::new(ferroserve_shm::ClientRegion::open(&name, 0, 8192).unwrap());
        let _ = std::fs::remove_file(&path); // the open region keeps the object
        let req = InferRequest {
            inputs: vec![
                Tensor::new(
                    "x",
                    DataType::Uint8,
                    vec![4096],
                    region.map(4096, 4096).unwrap(),
                )
                .unwrap(),
            ],
            ..Default::default()
        };
        let mut placement = Placement::new(
            SharedMemory {
                arena_bytes: 1 << 16,
                min_tensor_bytes: 1024,
            },
            "test",
        );
        let (mut parts, mut blocks) = (Vec::new(), InputBlocks::default());
        let copied = placement
            .wire_request(&req, &mut parts, &mut blocks)
            .unwrap();
        assert_eq!(
            copied.inputs[0].region,
            Some(Region::In),
            "a worker that cannot map objects gets a copy"
        );
        assert_eq!(&blocks.arena[0].1[..], &[5u8; 4096][..]);
        placement.set_client_memory(true);
        let (mut parts, mut blocks) = (Vec::new(), InputBlocks::default());
        let w = placement
            .wire_request(&req, &mut parts, &mut blocks)
            .unwrap();
        let t = &w.inputs[0];
        assert_eq!(t.region, Some(Region::Client));
        assert_eq!((t.offset, t.length), (4096, 4096));
        let object = t.object.as_ref().unwrap();
        assert_eq!(object.key, name);
        assert_eq!((object.dev, object.ino), region.identity());
        assert!(
            parts.is_empty() && blocks.arena.is_empty(),
            "nothing copied"
        );
    }
}
