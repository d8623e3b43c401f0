//! Fuzzes the V2 request decoder: JSON and binary-extension bodies.
//! The code under test is in `fuzz/harness/decode_request.rs`, shared with the corpus test.
//! Run: `cargo +nightly fuzz run decode_request` from the repository root (see `fuzz/README.md`).

#![no_main]

#[path = "../harness/decode_request.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    harness::check(input);
});
