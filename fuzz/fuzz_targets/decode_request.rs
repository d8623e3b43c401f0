//! Fuzzes the V2 request decoder: JSON and binary-extension bodies.
//! Run: `cargo +nightly fuzz run decode_request` from the repository root.

#![no_main]

use bytes::Bytes;
use ferroserve_protocol::binary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first two bytes choose the header length (or none), the rest is the body.
    let (len, body) = match input {
        [a, b, rest @ ..] => {
            let n = u16::from_le_bytes([*a, *b]) as usize;
            (if n == u16::MAX as usize { None } else { Some(n) }, rest)
        }
        _ => (None, input),
    };
    if let Ok(req) = binary::decode_request(Bytes::copy_from_slice(body), len) {
        // Whatever decodes must encode again.
        binary::encode_request(&req).expect("a decoded request encodes");
    }
});
