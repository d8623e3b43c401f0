//! Fuzzes the gRPC request conversion: ModelInferRequest bytes → prost → InferRequest.
//! The code under test is in `fuzz/harness/grpc_infer_request.rs`, shared with the corpus test.
//! Run: `cargo +nightly fuzz run grpc_infer_request` from the repository root (see `fuzz/README.md`).

#![no_main]

#[path = "../harness/grpc_infer_request.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    harness::check(input);
});
