//! Shared memory for tensors, in two forms:
//!
//! - [`Arena`]: the memory ferroserve shares with one Python worker, an anonymous memory file
//!   (`memfd_create`: no name in `/dev/shm` to guess or leak, reclaimed by the kernel once both
//!   processes have closed and unmapped it) sealed at its size and mapped by both. Request
//!   tensors are copied into its first half by ferroserve; the worker writes its outputs into
//!   the second half. A tensor then crosses the worker's socket as an offset, not as bytes.
//! - [`ClientRegion`]: a region a client registered through Triton's system shared-memory
//!   extension (a POSIX shared-memory object, `/dev/shm/<key>`), read and written with
//!   `pread`/`pwrite` only within what was registered, or mapped read-only for a consumer that
//!   hands the bytes on by reference without reading them ([`mapped`]).
//!
//! *Invariant:* this crate holds the workspace's only `unsafe` code (in [`arena`] and
//! [`mapped`]): mapping the arena and clients' regions, and reading and writing the arena's
//! blocks.

pub mod arena;
mod error;
mod free_list;
pub mod mapped;
mod region;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use arena::Arena;
pub use error::ShmError;
pub use mapped::MappedInput;
pub use region::ClientRegion;
