//! The memory ferroserve shares with one Python worker.
//!
//! The arena is an anonymous memory file sealed at its size (so neither side can shrink it
//! under the other's mapping) and mapped by both processes. `[0, inputs_end)` holds request
//! tensors: ferroserve takes a block, copies the tensor in and names the block's offset in the
//! frame; the block is given back when its [`Bytes`] are dropped (the worker has answered and
//! no output refers to it). `[inputs_end, size)` belongs to the worker, which places outputs
//! there and takes them back when ferroserve says it is done with them (the release callback
//! of [`Arena::output`]).
//!
//! *Safety argument.* The two processes never touch the same block at once: a block of the
//! input half is written by ferroserve before its frame is sent and only read by the worker
//! until the answer (the model may modify its own inputs, which ferroserve reads back only as
//! that request's outputs); a block of the output half is written by the worker before its
//! answer and read by ferroserve until it is released. Every offset from the worker is checked
//! against the arena's bounds before it is used.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::ShmError;
use crate::free_list::{self, FreeList};

/// A worker's shared memory: see the module documentation.
pub struct Arena {
    map: MmapRaw,
    fd: OwnedFd,
    inputs_end: usize,
    inputs: Mutex<FreeList>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("size", &self.size())
            .field("inputs_end", &self.inputs_end)
            .finish_non_exhaustive()
    }
}

impl Arena {
    /// A new arena of about `size` bytes (rounded to pages), half for inputs, half for outputs.
    /// Memory is taken from the system only as blocks are first written.
    pub fn new(size: usize) -> Result<Arc<Arena>, ShmError> {
        const PAGE: usize = 4096;
        let size = size
            .checked_next_multiple_of(2 * PAGE)
            .filter(|&s| s > 0)
            .ok_or_else(|| {
                ShmError::io(
                    "arena size",
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                )
            })?;
        let fd = rustix::fs::memfd_create(
            "ferroserve-arena",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| ShmError::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, size as u64).map_err(|e| ShmError::io("sizing the arena", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| ShmError::io("sealing the arena", e))?;
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&fd)
            .map_err(|e| ShmError::io("mapping the arena", e))?;
        let inputs_end = size / 2;
        Ok(Arc::new(Arena {
            map,
            fd,
            inputs_end,
            inputs: Mutex::new(FreeList::new(0, inputs_end)),
        }))
    }

    /// The memory file, to hand to the worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// Where the worker's half begins.
    pub fn inputs_end(&self) -> usize {
        self.inputs_end
    }

    /// Copies `data` into a free block of the input half: its offset, and the block as
    /// [`Bytes`] (given back when the last clone is dropped). `None` when no block is free or
    /// `data` is empty: the caller sends it inline.
    pub fn place_input(self: &Arc<Self>, data: &[u8]) -> Option<(u64, Bytes)> {
        if data.is_empty() {
            return None;
        }
        let reserved = free_list::aligned(data.len())?;
        let offset = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(reserved)?;
        // SAFETY: `[offset, offset + reserved)` lies in the input half (the free list only
        // hands out blocks of it) and was just taken: nothing else reads or writes it until
        // the block is given back, which happens only when the `InputBlock` below is dropped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                data.len(),
            );
        }
        let block = InputBlock {
            arena: self.clone(),
            offset,
            len: data.len(),
            reserved,
        };
        Some((offset as u64, Bytes::from_owner(block)))
    }

    /// The worker's output at `[offset, offset + len)` of its half, as [`Bytes`] read in place;
    /// `release` runs when they are dropped (ferroserve is done with the block).
    pub fn output(
        self: &Arc<Self>,
        offset: u64,
        len: u64,
        release: Box<dyn FnOnce() + Send>,
    ) -> Result<Bytes, ShmError> {
        let out_of_range = || ShmError::OutOfRange {
            what: "an output",
            offset,
            len,
            size: self.size() as u64,
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let len_usize = usize::try_from(len).map_err(|_| out_of_range())?;
        start
            .checked_add(len_usize)
            .filter(|&end| start >= self.inputs_end && end <= self.size())
            .ok_or_else(out_of_range)?;
        Ok(Bytes::from_owner(OutputBlock {
            arena: self.clone(),
            offset: start,
            len: len_usize,
            release: Some(release),
        }))
    }

    /// The bytes at `[offset, offset + len)`.
    ///
    /// SAFETY (for callers): the range lies in the mapping and no one writes it while the
    /// returned slice lives (see the module documentation).
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        // SAFETY: as the caller promised.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }
}

/// A request tensor's block in the input half.
struct InputBlock {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    reserved: usize,
}

impl AsRef<[u8]> for InputBlock {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the block lies in the input half; the worker writes it only while it
        // computes the request, before its answer, and ferroserve reads it after.
        unsafe { self.arena.bytes(self.offset, self.len) }
    }
}

impl Drop for InputBlock {
    fn drop(&mut self) {
        self.arena
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .give_back(self.offset, self.reserved);
    }
}

/// An output in the worker's half, until ferroserve releases it.
struct OutputBlock {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl AsRef<[u8]> for OutputBlock {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: bounds checked in `Arena::output`; the worker does not reuse the block
        // before `release` runs, in `drop`.
        unsafe { self.arena.bytes(self.offset, self.len) }
    }
}

impl Drop for OutputBlock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn file_of(arena: &Arena) -> std::fs::File {
        std::fs::File::from(arena.fd().try_clone_to_owned().unwrap())
    }

    #[test]
    fn inputs_land_in_the_memory_file_and_their_blocks_are_reused() {
        let arena = Arena::new(1 << 16).unwrap();
        let (offset, bytes) = arena.place_input(b"hello").unwrap();
        assert_eq!(&bytes[..], b"hello");
        let mut seen = [0u8; 5];
        file_of(&arena).read_exact_at(&mut seen, offset).unwrap();
        assert_eq!(&seen, b"hello", "the other side sees what was placed");
        let (second, _keep) = arena.place_input(b"world").unwrap();
        assert_ne!(second, offset, "a block in use is not handed out twice");
        drop(bytes);
        let (third, _) = arena.place_input(b"again").unwrap();
        assert_eq!(third, offset, "a dropped block is free again");
    }

    #[test]
    fn a_full_input_half_says_so_instead_of_failing() {
        let arena = Arena::new(1 << 16).unwrap();
        let half = arena.inputs_end();
        let big = vec![7u8; half];
        let (_, held) = arena.place_input(&big).unwrap();
        assert!(arena.place_input(b"x").is_none());
        drop(held);
        assert!(arena.place_input(b"x").is_some());
    }

    #[test]
    fn outputs_are_read_in_place_and_released_once_dropped() {
        let arena = Arena::new(1 << 16).unwrap();
        let at = arena.inputs_end() as u64 + 128;
        file_of(&arena).write_all_at(b"result", at).unwrap();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let out = arena
            .output(
                at,
                6,
                Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)),
            )
            .unwrap();
        assert_eq!(&out[..], b"result");
        let part = out.slice(1..3);
        drop(out);
        assert!(
            !released.load(std::sync::atomic::Ordering::SeqCst),
            "a slice still holds it"
        );
        drop(part);
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn outputs_outside_the_workers_half_are_refused() {
        let arena = Arena::new(1 << 16).unwrap();
        let size = arena.size() as u64;
        let end = arena.inputs_end() as u64;
        for (offset, len) in [
            (0, 8),
            (end - 8, 16),
            (size - 4, 8),
            (u64::MAX, 2),
            (end, u64::MAX),
        ] {
            assert!(
                arena.output(offset, len, Box::new(|| ())).is_err(),
                "{offset}+{len}"
            );
        }
    }

    #[test]
    fn the_arena_cannot_be_shrunk_under_a_mapping() {
        let arena = Arena::new(1 << 16).unwrap();
        assert!(file_of(&arena).set_len(4096).is_err(), "sealed");
    }
}
