//! What a model sees of a request's headers ([`RequestContext`]), from HTTP headers or gRPC
//! metadata alike.
//!
//! A header sent several times is one value, its values joined with ", " in order (RFC 9110
//! §5.3), or with "; " for `cookie` (RFC 9113 §8.2.3), so that none is lost. Names are lower
//! case; values that are not visible ASCII and binary (`-bin`) metadata are left out.

use ferroserve_runtime::RequestContext;
use http::HeaderMap;
use tonic::metadata::{KeyRef, MetadataMap};

/// The context of an HTTP request.
pub(crate) fn from_headers(headers: &HeaderMap) -> RequestContext {
    let mut out = Vec::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        if let Some(v) = join(name.as_str(), values) {
            out.push((name.as_str().to_owned(), v));
        }
    }
    RequestContext::with_headers(out)
}

/// The context of a gRPC call.
pub(crate) fn from_metadata(metadata: &MetadataMap) -> RequestContext {
    let mut out = Vec::with_capacity(metadata.keys_len());
    for key in metadata.keys() {
        let KeyRef::Ascii(name) = key else {
            continue;
        };
        let values = metadata
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok());
        if let Some(v) = join(name.as_str(), values) {
            out.push((name.as_str().to_owned(), v));
        }
    }
    RequestContext::with_headers(out)
}

fn join<'a>(name: &str, mut values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut joined = values.next()?.to_owned();
    let separator = if name == "cookie" { "; " } else { ", " };
    for v in values {
        joined.push_str(separator);
        joined.push_str(v);
    }
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap_or_else(|_| unreachable!()));
        h.append("x-a", "2".parse().unwrap_or_else(|_| unreachable!()));
        h.append("cookie", "a=1".parse().unwrap_or_else(|_| unreachable!()));
        h.append("cookie", "b=2".parse().unwrap_or_else(|_| unreachable!()));
        h.append("x-b", "3".parse().unwrap_or_else(|_| unreachable!()));
        let c = from_headers(&h);
        assert_eq!(c.header("x-a"), Some("1, 2"));
        assert_eq!(c.header("cookie"), Some("a=1; b=2"));
        assert_eq!(c.header("x-b"), Some("3"));
        assert_eq!(c.headers.len(), 3);
    }
}
