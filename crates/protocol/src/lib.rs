//! Wire types and codecs of the KServe V1 and V2 (Open Inference Protocol) APIs.
//!
//! The centre is [`Tensor`]: a datatype, a shape and one contiguous little-endian buffer
//! ([`bytes::Bytes`]) that the layers above pass on without copying. Around it:
//! - [`v2`]: inference requests and responses, metadata messages;
//! - [`json`]: the V2 JSON codec (flat or nested `data` in, flat `data` out);
//! - [`binary`]: the binary tensor data extension (`Inference-Header-Content-Length`);
//! - [`v1`]: the V1 (`instances` → `predictions`) body checks;
//! - [`shared_memory`]: tensors that name a client's shared-memory region instead of data.
//!
//! Nothing here knows HTTP or gRPC: the codecs take and return bytes.
//! Every size that comes from a client is checked (overflow-safe) against the data actually
//! received before anything is allocated from it.

pub mod binary;
mod datatype;
mod element;
mod error;
pub mod json;
mod parameters;
pub mod shared_memory;
mod tensor;
pub mod v1;
pub mod v2;

pub use datatype::DataType;
pub use element::Element;
pub use error::ProtocolError;
pub use parameters::{Parameter, Parameters};
pub use tensor::Tensor;
