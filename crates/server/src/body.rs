//! Bodies in and out: reading a request body under the size limit, and a response body made of
//! several chunks (JSON header + tensor blobs) sent without concatenating them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{ApiError, ServerConfig};

/// Reads the whole body, refusing (413) one over `max_request_bytes` before reading it when
/// its `Content-Length` says so, and while reading otherwise; a body not received within
/// `body_read_timeout` is refused with 408 (a client trickling a body forever).
///
/// *Invariant:* handlers read the body before they call the runtime, so a slow client never
/// holds a replica's slot or a place in its queue.
pub async fn read(
    body: Body,
    headers: &HeaderMap,
    config: &ServerConfig,
) -> Result<Bytes, ApiError> {
    let limit = config.max_request_bytes;
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collect = http_body_util::Limited::new(body, limit).collect();
    let Ok(collected) = tokio::time::timeout(config.body_read_timeout, collect).await else {
        return Err(ApiError::BodyTimeout {
            after: config.body_read_timeout,
        });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A response body of ready chunks with an exact size, so `Content-Length` is set.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    /// A body of these chunks, in order.
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl From<Chunks> for Body {
    fn from(c: Chunks) -> Body {
        Body::new(c)
    }
}
