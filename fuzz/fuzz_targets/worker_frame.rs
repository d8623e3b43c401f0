//! Fuzzes the Python worker frame codec: frames, their JSON headers, result tensors.
//! The code under test is in `fuzz/harness/worker_frame.rs`, shared with the corpus test.
//! Run: `cargo +nightly fuzz run worker_frame` from the repository root (see `fuzz/README.md`).

#![no_main]

#[path = "../harness/worker_frame.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    harness::check(input);
});
