//! Errors of shared-memory regions.

/// Why a shared-memory region could not be made, opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The key names no shared-memory object this server may open.
    #[error("invalid shared memory key '{key}': {why}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A range lies (partly) outside the region.
    #[error("{what} of {len} bytes at offset {offset} is outside the region's {size} bytes")]
    OutOfRange {
        /// What was asked for (e.g. "a read").
        what: &'static str,
        /// Start of the range, relative to the region.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// The region's size.
        size: u64,
    },
    /// The operating system refused.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ShmError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        ShmError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}
