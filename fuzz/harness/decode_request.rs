//! The V2 request decoder, JSON and binary-extension bodies (`binary::decode_request`).
//!
//! Shared by the fuzz target `fuzz/fuzz_targets/decode_request.rs` and the corpus test
//! `crates/protocol/tests/fuzz_corpus.rs`, so both run the same code.

use bytes::Bytes;
use ferroserve_protocol::binary;

/// Decodes one input; true when it is a request. Panics only on a bug.
///
/// The first two bytes are the little-endian `Inference-Header-Content-Length` (`ff ff`: none,
/// a JSON body); the rest is the body.
pub fn check(input: &[u8]) -> bool {
    let (len, body) = match input {
        [a, b, rest @ ..] => {
            let n = u16::from_le_bytes([*a, *b]) as usize;
            (
                if n == u16::MAX as usize {
                    None
                } else {
                    Some(n)
                },
                rest,
            )
        }
        _ => (None, input),
    };
    match binary::decode_request(Bytes::copy_from_slice(body), len) {
        Ok(req) => {
            // Whatever decodes must encode again.
            binary::encode_request(&req).expect("a decoded request encodes");
            true
        }
        Err(_) => false,
    }
}
