//! Python replicas: each replica of a Python model is a worker process
//! (`python -m ferroserve.worker`, from the `ferroserve` Python package), connected to this
//! process by a Unix socket in a private (0700) directory and fed requests as [`frame`]s whose
//! payload is the raw tensor bytes (numpy arrays are built from them without JSON); large
//! tensors cross through a shared-memory arena per worker instead ([`placement`]).
//!
//! [`PythonBackend`] fills the runtime's `ReplicaBackend`: the controller starts, health-checks,
//! restarts and stops worker processes exactly as it does thread replicas.
//! *Invariant:* no Python runs inside the server process.

mod calls;
pub mod frame;
mod placement;
mod socket;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ferroserve_runtime::{Replica, ReplicaBackend, ReplicaStart};

/// How to run the workers of one Python deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonSpec {
    /// `path/to/model.py:Class` or `package.module:Class`.
    pub target: String,
    /// The interpreter (of a virtualenv, say); [`default_interpreter`] by default.
    pub py_executable: PathBuf,
    /// Extra environment variables of the worker.
    pub env_vars: BTreeMap<String, String>,
    /// The worker's working directory; ferroserve's own by default.
    pub working_dir: Option<PathBuf>,
    /// How tensors cross to the worker through shared memory.
    pub shared_memory: SharedMemory,
}

/// How tensors cross between ferroserve and each worker through shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedMemory {
    /// Size of each worker's arena, in bytes: half for requests, half for outputs. Memory is
    /// used only as tensors pass. 0: every tensor travels inline in the socket's frames.
    pub arena_bytes: usize,
    /// Tensors smaller than this travel inline (cheaper below it: see ARCHITECTURE.md).
    pub min_tensor_bytes: usize,
}

impl Default for SharedMemory {
    fn default() -> Self {
        SharedMemory {
            arena_bytes: 256 << 20,
            min_tensor_bytes: 8 << 10,
        }
    }
}

impl PythonSpec {
    /// A spec with the default interpreter and environment.
    pub fn new(target: impl Into<String>) -> Self {
        PythonSpec {
            target: target.into(),
            py_executable: default_interpreter(),
            env_vars: BTreeMap::new(),
            working_dir: None,
            shared_memory: SharedMemory::default(),
        }
    }
}

/// The interpreter of Python models that name none: the `python3` beside the ferroserve binary
/// when there is one (the ferroserve wheel installs the binary into a venv's `bin/`, beside the
/// venv's interpreter, which has the ferroserve package), else `python3` on `PATH`.
pub fn default_interpreter() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("python3")))
        .filter(|python| python.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Starts Python worker processes as replicas.
#[derive(Debug)]
pub struct PythonBackend {
    spec: Arc<PythonSpec>,
}

impl PythonBackend {
    /// A backend running `spec`'s class.
    pub fn new(spec: PythonSpec) -> Self {
        PythonBackend {
            spec: Arc::new(spec),
        }
    }
}

#[async_trait]
impl ReplicaBackend for PythonBackend {
    async fn start(&self, start: ReplicaStart) -> Result<Arc<dyn Replica>, String> {
        worker::start(self.spec.clone(), start).await
    }

    /// Inputs from a client's shared memory cross to the worker as the object and an offset,
    /// never read here (`placement`).
    fn takes_mapped_inputs(&self) -> bool {
        true
    }
}
