//! ferroserve's built-in ONNX backend: a [`Model`](ferroserve_runtime::Model) that runs an
//! `.onnx` file with ONNX Runtime, so a standard model needs no code.
//!
//! ONNX Runtime is the `libonnxruntime` shared library that the `onnxruntime` wheel from PyPI
//! ships, loaded once per process at run time ([`library`]); nothing is downloaded at build or
//! run time. Inputs and outputs come from the graph ([`signature`]); requests are checked
//! against them and become ONNX Runtime values without a per-element conversion, and outputs
//! leave as raw bytes ([`tensors`]). Each replica owns one session ([`model`]). V1 bodies
//! (`{"instances": ...}`) reach a one-input model as KServe's scikit-learn server takes them
//! ([`v1`]).

pub mod library;
pub mod model;
pub mod signature;
pub mod tensors;
pub mod v1;

pub use library::{LibraryError, find_library};
pub use model::{OnnxModel, OnnxOptions, default_intra_op_threads};
pub use signature::Signature;

/// Triton's platform name for ONNX models (`platform` in metadata and model config).
pub const PLATFORM: &str = "onnxruntime_onnx";
