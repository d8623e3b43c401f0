//! A client's region handed on by reference: its tensor bytes as [`Bytes`] over a read-only
//! mapping of the client's object, which a consumer that never reads them in this process (a
//! Python worker, which maps the same object itself) recognizes with [`find`] and passes on as
//! the object and an offset, so the bytes are never copied.
//!
//! *Safety argument.* A client may shrink its object while it is registered; reading a mapped
//! page past the new end raises SIGBUS. So mapped bytes are only handed out to a consumer that
//! promised not to read them here ([`ClientRegion::map`]'s contract): the Python backend sends
//! them by reference, and ferroserve reads a client region everywhere else with `pread`,
//! which fails cleanly instead. The mapping is read-only and lives as long as its
//! [`ClientRegion`]; every [`Bytes`] handed out holds the region.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use memmap2::MmapRaw;

use crate::{ClientRegion, ShmError};

/// A read-only mapping of part of a client's object, known to [`find`] while it lives.
pub(crate) struct Mapping {
    map: MmapRaw,
    /// Offset in the object of the mapping's first byte.
    pub(crate) start: u64,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("start", &self.start)
            .field("len", &self.map.len())
            .finish()
    }
}

/// Where each live mapping lies in this process's memory, and whose it is.
struct Entry {
    lo: usize,
    hi: usize,
    region: Weak<ClientRegion>,
}

static DIRECTORY: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
/// Entries in [`DIRECTORY`], so that [`find`] takes no lock while there are none.
static MAPPINGS: AtomicUsize = AtomicUsize::new(0);

impl Mapping {
    /// Maps `[start, start + len)` of `region`'s object (`start` a multiple of the page size)
    /// and enters it in the directory.
    pub(crate) fn new(
        region: &Arc<ClientRegion>,
        start: u64,
        len: usize,
    ) -> Result<Mapping, ShmError> {
        let map = memmap2::MmapOptions::new()
            .offset(start)
            .len(len)
            .map_raw_read_only(region.file())
            .map_err(|e| {
                ShmError::io(format!("mapping shared memory key '{}'", region.key()), e)
            })?;
        let lo = map.as_ptr() as usize;
        DIRECTORY
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry {
                lo,
                hi: lo + map.len(),
                region: Arc::downgrade(region),
            });
        MAPPINGS.fetch_add(1, Ordering::Release);
        Ok(Mapping { map, start })
    }

    /// `len` bytes at `at` of the mapping, as [`Bytes`] holding `region`. The caller checked
    /// the range against the mapping.
    pub(crate) fn bytes(region: Arc<ClientRegion>, at: usize, len: usize) -> Bytes {
        Bytes::from_owner(MappedSlice { region, at, len })
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let lo = self.map.as_ptr() as usize;
        let mut directory = DIRECTORY.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = directory.iter().position(|e| e.lo == lo) {
            directory.swap_remove(i);
            MAPPINGS.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Bytes of a mapped client region.
struct MappedSlice {
    region: Arc<ClientRegion>,
    at: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        match self.region.mapping() {
            // SAFETY: `[at, at + len)` was checked against the mapping when the slice was made,
            // and the mapping lives as long as the region this slice holds. Reading it is
            // subject to the module's contract (no reads after the client shrank its object).
            Some(m) if self.at + self.len <= m.len() => unsafe {
                std::slice::from_raw_parts(m.map.as_ptr().add(self.at), self.len)
            },
            _ => &[],
        }
    }
}

/// Tensor bytes found to lie in a client's mapped region: which object, where.
#[derive(Debug, Clone)]
pub struct MappedInput {
    region: Arc<ClientRegion>,
    /// Offset in the region.
    offset: u64,
    len: u64,
}

impl MappedInput {
    /// The key the object was opened by (`/dev/shm/<key>`).
    pub fn key(&self) -> &str {
        self.region.key()
    }

    /// The object's device and inode: whoever opens the key again checks it found the same
    /// object.
    pub fn identity(&self) -> (u64, u64) {
        self.region.identity()
    }

    /// Offset of the bytes in the object.
    pub fn object_offset(&self) -> u64 {
        self.region.offset() + self.offset
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the bytes, read with `pread` (an error, not a crash, if the object shrank).
    pub fn read(&self) -> Result<Bytes, ShmError> {
        self.region.read(self.offset, self.len)
    }
}

/// The client region `data` lies in, if it is bytes handed out by [`ClientRegion::map`].
pub fn find(data: &[u8]) -> Option<MappedInput> {
    if data.is_empty() || MAPPINGS.load(Ordering::Acquire) == 0 {
        return None;
    }
    let lo = data.as_ptr() as usize;
    let hi = lo + data.len();
    let directory = DIRECTORY.read().unwrap_or_else(|p| p.into_inner());
    let entry = directory.iter().find(|e| e.lo <= lo && hi <= e.hi)?;
    let region = entry.region.upgrade()?;
    let start = region.mapping()?.start;
    let offset = (start + (lo - entry.lo) as u64).checked_sub(region.offset())?;
    Some(MappedInput {
        region,
        offset,
        len: data.len() as u64,
    })
}
