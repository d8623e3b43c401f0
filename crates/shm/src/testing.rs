//! For tests (the `test-util` feature): a client's shared-memory object in `/dev/shm`, made
//! and removed as a client would, and shrunk as a misbehaving client may at any time.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use crate::region::SHM_DIR;

/// A shared-memory object under a fresh key, removed when dropped.
#[derive(Debug)]
pub struct TestObject {
    key: String,
}

impl TestObject {
    /// An object of `len` zero bytes.
    ///
    /// # Panics
    /// When `/dev/shm` cannot be written.
    pub fn new(len: u64) -> TestObject {
        let object = TestObject::fresh();
        File::create(object.path())
            .and_then(|f| f.set_len(len))
            .expect("create a shared-memory object");
        object
    }

    /// An object holding `bytes`.
    ///
    /// # Panics
    /// When `/dev/shm` cannot be written.
    pub fn with_bytes(bytes: &[u8]) -> TestObject {
        let object = TestObject::fresh();
        File::create(object.path())
            .and_then(|mut f| f.write_all(bytes))
            .expect("create a shared-memory object");
        object
    }

    fn fresh() -> TestObject {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        TestObject {
            key: format!("ferroserve-test-{}-{nanos}", std::process::id()),
        }
    }

    /// The key a client registers it by.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its path under `/dev/shm`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(SHM_DIR).join(&self.key)
    }

    /// Truncates it to `len` bytes.
    ///
    /// # Panics
    /// When the object cannot be opened.
    pub fn shrink(&self, len: u64) {
        File::options()
            .write(true)
            .open(self.path())
            .and_then(|f| f.set_len(len))
            .expect("shrink a shared-memory object");
    }
}

impl Drop for TestObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}
