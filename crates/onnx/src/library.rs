//! Finding ONNX Runtime's shared library and loading it, once per process.
//!
//! Where it comes from, first found wins:
//! 1. `ORT_DYLIB_PATH` (the `ort` crate's own variable): the library file;
//! 2. the `onnxruntime` package of a Python interpreter: the one the server runs Python
//!    models with ([`use_python`], `--python`), `$VIRTUAL_ENV/bin/python`, then `python3` on
//!    `PATH` (`pip install onnxruntime` is how a user gets it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;

/// ONNX Runtime could not be found or loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LibraryError {
    /// No library file was found.
    #[error(
        "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so, or `pip install onnxruntime` into the Python on PATH ({0})"
    )]
    NotFound(String),
    /// The file was found but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {error}")]
    Load {
        /// The library file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

/// Looks for ONNX Runtime in this interpreter's `onnxruntime` package first (the server's
/// Python for models). Only the first call counts.
pub fn use_python(python: PathBuf) {
    let _ = PYTHON.set(python);
}

/// The process's ONNX Runtime environment, loaded on first use.
pub fn environment() -> Result<&'static Environment, LibraryError> {
    static ENV: OnceLock<Result<Environment, LibraryError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = find_library()?;
        let load = |e: String| LibraryError::Load {
            path: path.clone(),
            error: e,
        };
        let env = ort::init_from(&path)
            .map_err(|e| load(e.to_string()))?
            .with_name("ferroserve")
            .build()
            .map_err(|e| load(e.to_string()))?;
        tracing::info!(path = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The library file ONNX Runtime will be loaded from (see the module's doc for the order).
pub fn find_library() -> Result<PathBuf, LibraryError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LibraryError::NotFound(format!(
                "ORT_DYLIB_PATH={} is not a file",
                path.display()
            )))
        };
    }
    let mut pythons: Vec<PathBuf> = PYTHON.get().cloned().into_iter().collect();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        pythons.push(Path::new(&venv).join("bin").join("python"));
    }
    pythons.push(PathBuf::from("python3"));
    let mut tried = Vec::new();
    for python in &pythons {
        match from_python(python) {
            Some(path) => return Ok(path),
            None => tried.push(python.display().to_string()),
        }
    }
    Err(LibraryError::NotFound(format!(
        "no onnxruntime package in {}",
        tried.join(", ")
    )))
}

/// `onnxruntime/capi/libonnxruntime.so*` of the package `python` imports, if any.
fn from_python(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    // `libonnxruntime.so.1.23.2` sorts after a bare `libonnxruntime.so` link; either loads.
    found.sort();
    found.pop()
}
