//! Python replicas: each replica of a Python model is a worker process
//! (`python -m ferroserve.worker`, from the `ferroserve` Python package), connected to this
//! process by a Unix socket in a private (0700) directory and fed requests as [`frame`]s whose
//! payload is the raw tensor bytes (numpy arrays are built from them without JSON).
//!
//! [`PythonBackend`] fills the runtime's `ReplicaBackend`: the controller starts, health-checks,
//! restarts and stops worker processes exactly as it does thread replicas.
//! *Invariant:* no Python runs inside the server process.

mod calls;
pub mod frame;
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
}

impl PythonSpec {
    /// A spec with the default interpreter and environment.
    pub fn new(target: impl Into<String>) -> Self {
        PythonSpec {
            target: target.into(),
            py_executable: default_interpreter(),
            env_vars: BTreeMap::new(),
            working_dir: None,
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
}
