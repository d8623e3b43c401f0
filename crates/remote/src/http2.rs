//! One HTTP/2 connection to an endpoint, made on first use and made again after it closes, as
//! the service the gRPC client sends through. A call goes from the caller's task straight to
//! hyper's connection task: tonic's `Channel` would put a buffer task between the two, one
//! more task hop per call (see ARCHITECTURE.md, "Remote deployments").

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

/// HTTP/2 pings on idle connections, so a partitioned endpoint is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A request that never left this server: the connection could not be made, or closed before
/// the request was written. Safe to send elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unsent(pub(crate) String);

/// One connection to `endpoint`, shared by every clone.
#[derive(Clone)]
pub(crate) struct Http2Channel {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    connect_timeout: Duration,
    /// The open connection's sender; `None` before the first call.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Held while connecting, so concurrent callers wait for one attempt instead of each
    /// making their own.
    connecting: tokio::sync::Mutex<()>,
    /// When the last attempt failed and why: callers that waited for that attempt share its
    /// failure instead of trying again one after another.
    failed: Mutex<Option<(Instant, String)>>,
}

impl Http2Channel {
    /// A channel to `endpoint` (`host:port`); connects on the first call.
    pub(crate) fn new(endpoint: &str, connect_timeout: Duration) -> Self {
        Http2Channel {
            inner: Arc::new(Inner {
                endpoint: endpoint.to_owned(),
                connect_timeout,
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                failed: Mutex::new(None),
            }),
        }
    }
}

impl Inner {
    /// The open connection's sender, if it is still open.
    fn open(&self) -> Option<SendRequest<Body>> {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        sender.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Body>, Unsent> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let asked = Instant::now();
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        if let Some((at, why)) = &*self.failed.lock().unwrap_or_else(PoisonError::into_inner)
            && *at >= asked
        {
            return Err(Unsent(why.clone()));
        }
        match self.connect().await {
            Ok(sender) => {
                *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok(sender)
            }
            Err(why) => {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), why.clone()));
                Err(Unsent(why))
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let endpoint = &self.endpoint;
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(endpoint),
        )
        .await
        .map_err(|_| {
            format!(
                "connect to {endpoint} timed out after {:?}",
                self.connect_timeout
            )
        })?
        .map_err(|e| format!("connect to {endpoint}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("connect to {endpoint}: {e}"))?;
        let handshake = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream));
        let (sender, connection) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| format!("HTTP/2 handshake with {endpoint} timed out"))?
            .map_err(|e| format!("HTTP/2 handshake with {endpoint}: {e}"))?;
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%endpoint, error = %e, "connection to remote endpoint closed");
            }
        });
        Ok(sender)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<Body>> for Http2Channel {
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    /// Always ready: a call connects if it must, and hyper queues streams beyond the
    /// endpoint's limit.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut sender = inner.sender().await?;
            match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(e) if e.message().is_some() => Err(Unsent(format!(
                    "connection to {} closed before the request was sent: {}",
                    inner.endpoint,
                    e.error()
                ))
                .into()),
                Err(e) => Err(e.into_error().into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn request(port: u16) -> http::Request<Body> {
        http::Request::post(format!("http://127.0.0.1:{port}/x"))
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test]
    async fn a_refused_connection_is_unsent_and_the_next_call_tries_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let channel = Http2Channel::new(&format!("127.0.0.1:{port}"), Duration::from_secs(1));
        let error = channel
            .clone()
            .oneshot(request(port))
            .await
            .expect_err("refused");
        assert!(error.is::<Unsent>(), "{error}");

        // Something listens now: the next call connects (and fails later, as HTTP/2 to a
        // socket that never answers the handshake), so it was not refused from a cache.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind again");
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let _ =
            tokio::time::timeout(Duration::from_millis(300), channel.oneshot(request(port))).await;
        tokio::time::timeout(Duration::from_secs(5), accepted)
            .await
            .expect("the second call connected, not refused from a cached failure")
            .expect("join")
            .expect("accept");
    }
}
