//! A client's registered region (Triton's system shared-memory extension): a POSIX
//! shared-memory object, opened by its key as `shm_open` would (`/dev/shm/<key>`), of which
//! only `[offset, offset + byte_size)` may be read or written.
//!
//! The region is read and written with `pread`/`pwrite`: a client that shrinks its object
//! while registered gets an error on its next request, where reading a mapping would have
//! crashed the server (SIGBUS). The one exception is [`ClientRegion::map`], for consumers that
//! pass the bytes on by reference without reading them (see [`crate::mapped`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rustix::fs::OFlags;

use crate::ShmError;
use crate::mapped::Mapping;

/// Where POSIX shared-memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// A registered region: see the module documentation.
#[derive(Debug)]
pub struct ClientRegion {
    file: File,
    key: String,
    offset: u64,
    byte_size: u64,
    /// The object's device and inode.
    identity: (u64, u64),
    /// A read-only mapping of the region, made by the first [`ClientRegion::map`].
    mapping: OnceLock<Mapping>,
}

impl ClientRegion {
    /// Opens the object `key` (as `shm_open` names it: one optional leading `/`, then a name
    /// without `/`) and checks that `[offset, offset + byte_size)` lies within it. Symbolic
    /// links and anything but a regular file are refused.
    pub fn open(key: &str, offset: u64, byte_size: u64) -> Result<ClientRegion, ShmError> {
        let name = key.strip_prefix('/').unwrap_or(key);
        let invalid = |why| ShmError::InvalidKey {
            key: key.to_owned(),
            why,
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(invalid("it names no object"));
        }
        if name.contains('/') || name.contains('\0') {
            return Err(invalid("only one leading '/' is allowed, and no NUL"));
        }
        if name.len() > 255 {
            return Err(invalid("it is longer than 255 bytes"));
        }
        let path = std::path::Path::new(SHM_DIR).join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&path)
            .map_err(|e| ShmError::io(format!("unable to open shared memory key '{key}'"), e))?;
        let meta = file
            .metadata()
            .map_err(|e| ShmError::io(format!("unable to inspect shared memory key '{key}'"), e))?;
        if !meta.file_type().is_file() {
            return Err(invalid("it is not a shared-memory object"));
        }
        let region = ClientRegion {
            file,
            key: key.to_owned(),
            offset,
            byte_size,
            identity: (meta.dev(), meta.ino()),
            mapping: OnceLock::new(),
        };
        region.check("the registered region", 0, byte_size, meta.len())?;
        Ok(region)
    }

    /// The key it was opened by.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Offset of the region in the object.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size of the region.
    pub fn byte_size(&self) -> u64 {
        self.byte_size
    }

    /// The object's device and inode numbers.
    pub fn identity(&self) -> (u64, u64) {
        self.identity
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn mapping(&self) -> Option<&Mapping> {
        self.mapping.get()
    }

    /// `len` bytes at `offset` of the region as [`Bytes`] over a read-only mapping of it, with
    /// no copy, for a consumer that hands them on by reference ([`crate::mapped::find`] says
    /// where they lie) and **never reads them in this process**: a client that shrinks its
    /// object would make such a read crash the server. Everyone else reads with
    /// [`ClientRegion::read`]. The range is checked against the object's size now.
    pub fn map(self: &Arc<Self>, offset: u64, len: u64) -> Result<Bytes, ShmError> {
        let size = self
            .file
            .metadata()
            .map_err(|e| ShmError::io(format!("inspecting shared memory key '{}'", self.key), e))?
            .len();
        self.check("a read", offset, len, size)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mapping = match self.mapping.get() {
            Some(m) => m,
            None => {
                const PAGE: u64 = 4096;
                let start = self.offset - self.offset % PAGE;
                let span = usize::try_from(self.offset + self.byte_size - start).map_err(|_| {
                    ShmError::OutOfRange {
                        what: "a mapping",
                        offset,
                        len,
                        size: self.byte_size,
                    }
                })?;
                let made = Mapping::new(self, start, span)?;
                // Two first requests may race: one mapping stays, the other is dropped.
                let _ = self.mapping.set(made);
                self.mapping.get().ok_or_else(|| {
                    ShmError::io("mapping a shared memory region", std::io::ErrorKind::Other)
                })?
            }
        };
        // Both fit in usize: the range lies within the mapping, checked above.
        let at = (self.offset + offset - mapping.start) as usize;
        Ok(Mapping::bytes(self.clone(), at, len as usize))
    }

    /// Checks that `[offset, offset + len)` of the region lies within `limit` bytes of the
    /// object (and within the region).
    fn check(&self, what: &'static str, offset: u64, len: u64, limit: u64) -> Result<(), ShmError> {
        let fits_region = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.byte_size);
        let fits_object = self
            .offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(len))
            .is_some_and(|end| end <= limit);
        if fits_region && fits_object {
            Ok(())
        } else {
            Err(ShmError::OutOfRange {
                what,
                offset,
                len,
                size: self.byte_size.min(limit.saturating_sub(self.offset)),
            })
        }
    }

    /// Copies `len` bytes at `offset` of the region. The caller bounds `len` before asking.
    pub fn read(&self, offset: u64, len: u64) -> Result<Bytes, ShmError> {
        self.check("a read", offset, len, u64::MAX)?;
        let size = usize::try_from(len).map_err(|_| ShmError::OutOfRange {
            what: "a read",
            offset,
            len,
            size: self.byte_size,
        })?;
        let mut data = vec![0u8; size];
        self.file
            .read_exact_at(&mut data, self.offset + offset)
            .map_err(|e| ShmError::io(format!("reading shared memory key '{}'", self.key), e))?;
        Ok(Bytes::from(data))
    }

    /// Writes `parts` one after another at `offset` of the region.
    pub fn write(&self, offset: u64, parts: &[&[u8]]) -> Result<(), ShmError> {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        self.check("a write", offset, len, u64::MAX)?;
        let mut at = self.offset + offset;
        for p in parts {
            self.file.write_all_at(p, at).map_err(|e| {
                ShmError::io(format!("writing shared memory key '{}'", self.key), e)
            })?;
            at += p.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestObject as Object;

    #[test]
    fn reads_and_writes_stay_inside_the_registered_range() {
        let obj = Object::new(64);
        let key = format!("/{}", obj.key());
        let region = ClientRegion::open(&key, 16, 32).unwrap();
        region.write(0, &[b"abc", b"def"]).unwrap();
        assert_eq!(&region.read(2, 3).unwrap()[..], b"cde");
        assert!(region.read(30, 4).is_err(), "past the region's end");
        assert!(region.write(31, &[b"xy"]).is_err());
        assert!(region.read(u64::MAX, 2).is_err());
        let raw = std::fs::read(obj.path()).unwrap();
        assert_eq!(
            &raw[16..22],
            b"abcdef",
            "written at the region's offset in the object"
        );
    }

    #[test]
    fn regions_beyond_the_object_and_bad_keys_are_refused() {
        let obj = Object::new(64);
        assert!(ClientRegion::open(obj.key(), 0, 65).is_err());
        assert!(ClientRegion::open(obj.key(), 60, 8).is_err());
        assert!(ClientRegion::open(obj.key(), u64::MAX, 2).is_err());
        for key in [
            "",
            "/",
            "/..",
            "../etc/passwd",
            "/a/b",
            "no-such-object-here",
        ] {
            assert!(ClientRegion::open(key, 0, 1).is_err(), "{key:?}");
        }
    }

    #[test]
    fn mapped_bytes_are_found_with_their_object_and_offset() {
        let obj = Object::new(3 * 4096);
        let region = Arc::new(ClientRegion::open(obj.key(), 4100, 8000).unwrap());
        region.write(10, &[b"mapped"]).unwrap();
        let bytes = region.map(10, 6).unwrap();
        assert_eq!(&bytes[..], b"mapped", "no shrink here, so reading is fine");
        let found = crate::mapped::find(&bytes[1..4]).expect("a slice of mapped bytes is found");
        assert_eq!(found.key(), obj.key());
        assert_eq!(found.object_offset(), 4100 + 11);
        assert_eq!(found.len(), 3);
        assert_eq!(found.identity(), region.identity());
        assert_eq!(&found.read().unwrap()[..], b"app");
        assert!(crate::mapped::find(b"mapped").is_none(), "ordinary memory");
        assert!(region.map(7990, 20).is_err(), "past the region's end");
        let again = region.map(0, 8000).unwrap();
        assert!(
            crate::mapped::find(&again).is_some(),
            "one mapping serves every range"
        );
        drop((bytes, again, found));
        let weak = Arc::downgrade(&region);
        drop(region);
        assert!(
            weak.upgrade().is_none(),
            "the bytes held the region, and nothing else"
        );
    }

    #[test]
    fn mapping_a_shrunk_object_is_an_error() {
        let obj = Object::new(64);
        let region = Arc::new(ClientRegion::open(obj.key(), 0, 64).unwrap());
        obj.shrink(8);
        assert!(region.map(0, 64).is_err());
        assert_eq!(
            region.map(0, 8).unwrap().len(),
            8,
            "what is left can still be mapped"
        );
    }

    #[test]
    fn a_shrunk_object_is_an_error_not_a_crash() {
        let obj = Object::new(64);
        let region = ClientRegion::open(obj.key(), 0, 64).unwrap();
        obj.shrink(8);
        assert!(region.read(0, 64).is_err());
    }
}
