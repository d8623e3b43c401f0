//! Triton's system shared-memory extension: the regions clients registered (`register`,
//! `unregister`, `status`, over REST and gRPC), inputs read from them and outputs written into
//! them. Only what a client registered can be reached, and only within its range; errors name
//! the region and the range.
//!
//! A region is a POSIX shared-memory object opened by its key ([`ClientRegion`]) and read or
//! written per request with `pread`/`pwrite`. For a deployment that takes inputs by reference
//! (a Python one: [`Handle::takes_mapped_inputs`]), inputs are instead mapped and handed on
//! without a copy: its worker maps the client's object itself. As in Triton (`--allow-client-shm`),
//! the extension is off unless the server is started with `--allow-client-shm`: a client that
//! can register a key can read any shared-memory object this server's user may open.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use ferroserve_protocol::ProtocolError;
use ferroserve_protocol::shared_memory::{SharedMemoryReader, SharedMemoryRef, mark_written};
use ferroserve_protocol::v2::{InferResponse, RequestedOutput};
use ferroserve_runtime::Handle;
use ferroserve_shm::ClientRegion;
use serde::Serialize;

use crate::ApiError;

/// A registered region as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionStatus {
    /// The name it was registered under.
    pub name: String,
    /// The shared-memory object's key.
    pub key: String,
    /// Where the region starts in the object.
    pub offset: u64,
    /// The region's size.
    pub byte_size: u64,
}

/// The registered regions of this server.
#[derive(Debug)]
pub struct SharedMemoryRegistry {
    enabled: bool,
    /// Largest tensor read from a region, in bytes (the request body limit).
    max_tensor_bytes: u64,
    regions: RwLock<BTreeMap<String, Arc<ClientRegion>>>,
}

impl SharedMemoryRegistry {
    /// A registry; when not `enabled`, registering is refused and no region exists.
    pub fn new(enabled: bool, max_tensor_bytes: usize) -> Self {
        SharedMemoryRegistry {
            enabled,
            max_tensor_bytes: max_tensor_bytes as u64,
            regions: RwLock::default(),
        }
    }

    /// Whether clients may register regions.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn get(&self, name: &str) -> Option<Arc<ClientRegion>> {
        self.regions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Registers `[offset, offset + byte_size)` of the object `key` as `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ApiError> {
        if !self.enabled {
            return Err(ApiError::BadRequest(
                "system shared memory is disabled on this server (start it with --allow-client-shm)".into(),
            ));
        }
        if name.is_empty() {
            return Err(ApiError::BadRequest(
                "a shared memory region needs a name".into(),
            ));
        }
        let mut regions = self.regions.write().unwrap_or_else(|p| p.into_inner());
        if regions.contains_key(name) {
            return Err(ApiError::BadRequest(format!(
                "shared memory region '{name}' is already registered"
            )));
        }
        let region = ClientRegion::open(key, offset, byte_size).map_err(|e| {
            ApiError::BadRequest(format!(
                "failed to register shared memory region '{name}': {e}"
            ))
        })?;
        regions.insert(name.to_owned(), Arc::new(region));
        Ok(())
    }

    /// Unregisters `name`, or every region with `None`. Requests in flight keep the regions
    /// they already use.
    pub fn unregister(&self, name: Option<&str>) {
        let mut regions = self.regions.write().unwrap_or_else(|p| p.into_inner());
        match name {
            Some(n) => {
                regions.remove(n);
            }
            None => regions.clear(),
        }
    }

    /// The status of `name`, or of every region with `None`; an unknown name is a 400.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>, ApiError> {
        let regions = self.regions.read().unwrap_or_else(|p| p.into_inner());
        let status = |(name, r): (&String, &Arc<ClientRegion>)| RegionStatus {
            name: name.clone(),
            key: r.key().to_owned(),
            offset: r.offset(),
            byte_size: r.byte_size(),
        };
        match name {
            None => Ok(regions.iter().map(status).collect()),
            Some(n) => regions
                .get_key_value(n)
                .map(|entry| vec![status(entry)])
                .ok_or_else(|| unknown(n).into()),
        }
    }

    /// Writes the outputs `requested` in shared memory into their regions and marks them
    /// written (the response then carries no data for them). An unknown region, or one too
    /// small for the output, is a 400 and nothing is written.
    pub fn write_outputs(
        &self,
        resp: &mut InferResponse,
        requested: &[RequestedOutput],
    ) -> Result<(), ProtocolError> {
        for r in requested {
            let Some(at) = SharedMemoryRef::from_parameters(&r.name, &r.parameters)? else {
                continue;
            };
            let region = self.get(&at.region).ok_or_else(|| unknown(&at.region))?;
            let Some(t) = resp.outputs.iter_mut().find(|t| t.name == r.name) else {
                continue; // selecting outputs already refused a missing one
            };
            if t.data.len() as u64 > at.byte_size {
                return Err(ProtocolError::Tensor {
                    name: r.name.clone(),
                    reason: format!(
                        "shared memory region '{}' was given {} bytes for it but the output has {}",
                        at.region,
                        at.byte_size,
                        t.data.len()
                    ),
                });
            }
            region
                .write(at.offset, &[&t.data])
                .map_err(|e| region_error(&r.name, &at, e))?;
            mark_written(t, &at);
        }
        Ok(())
    }
}

fn unknown(region: &str) -> ProtocolError {
    ProtocolError::Request(format!(
        "unable to find system shared memory region: '{region}'"
    ))
}

fn region_error(tensor: &str, at: &SharedMemoryRef, e: ferroserve_shm::ShmError) -> ProtocolError {
    ProtocolError::Tensor {
        name: tensor.to_owned(),
        reason: format!("shared memory region '{}': {e}", at.region),
    }
}

impl SharedMemoryRegistry {
    /// The region an input names, once its size is checked against the limit.
    fn region_for(
        &self,
        tensor: &str,
        at: &SharedMemoryRef,
    ) -> Result<Arc<ClientRegion>, ProtocolError> {
        let region = self.get(&at.region).ok_or_else(|| unknown(&at.region))?;
        if at.byte_size > self.max_tensor_bytes {
            return Err(ProtocolError::Tensor {
                name: tensor.to_owned(),
                reason: format!(
                    "{} bytes in shared memory are over the limit of {} bytes",
                    at.byte_size, self.max_tensor_bytes
                ),
            });
        }
        Ok(region)
    }

    /// The reader for one request to `model`: it maps inputs where that deployment takes them
    /// by reference, and copies them everywhere else. Asks the handle only if the request has
    /// an input in shared memory.
    pub fn reader_for<'a>(&'a self, handle: &'a Handle, model: &'a str) -> RequestReader<'a> {
        RequestReader {
            registry: self,
            handle,
            model,
            by_reference: OnceLock::new(),
        }
    }
}

/// Reads a request's inputs from shared memory (see [`SharedMemoryRegistry::reader_for`]).
pub struct RequestReader<'a> {
    registry: &'a SharedMemoryRegistry,
    handle: &'a Handle,
    model: &'a str,
    by_reference: OnceLock<bool>,
}

impl SharedMemoryReader for RequestReader<'_> {
    fn read(&self, tensor: &str, at: &SharedMemoryRef) -> Result<Bytes, ProtocolError> {
        let region = self.registry.region_for(tensor, at)?;
        let by_reference = *self
            .by_reference
            .get_or_init(|| self.handle.takes_mapped_inputs(self.model));
        if by_reference {
            region.map(at.offset, at.byte_size)
        } else {
            region.read(at.offset, at.byte_size)
        }
        .map_err(|e| region_error(tensor, at, e))
    }
}
