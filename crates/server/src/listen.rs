//! The accept loop both ingresses share: a bound on open connections, the header read and
//! keep-alive idle timeouts, `TCP_NODELAY`, and graceful shutdown.
//!
//! hyper's own `header_read_timeout` also counts the idle time between keep-alive requests as
//! header time, and hyper-util's HTTP/1-or-2 detection waits for the first bytes without any
//! timeout, so one watchdog per connection keeps both clocks instead (as Go's `net/http` does):
//!
//! - a new connection must send a complete request head (HTTP/1) or the HTTP/2 preface within
//!   the header read timeout;
//! - a connection with no request in flight is closed after the keep-alive timeout (HTTP/2 with
//!   a GOAWAY, so clients reconnect without losing a call); once the first byte of a next
//!   HTTP/1 request arrives, its head must be complete within the header read timeout;
//! - while a request is in flight there is no connection deadline: the body read timeout
//!   (`body.rs`), the deployment's `request_timeout_s` and the client's deadline apply.
//!
//! The hot path only stores a few relaxed atomics per read and per request; the watchdog's
//! timer is re-armed lazily when it fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The limits of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// What happens to a connection beyond `max_connections`.
    pub at_bound: AtBound,
    /// Time to send a request head (from the connection's start, or from the first byte of a
    /// request after an idle period).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub keep_alive_timeout: Duration,
}

/// The behaviour at the connection bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtBound {
    /// Accept, answer `503 Service Unavailable` with `Retry-After: 1` and close, as uvicorn's
    /// `--limit-concurrency` does for KServe and Ray Serve: clients get a quick, clear answer
    /// and the refused connection costs nothing once answered (HTTP).
    Refuse,
    /// Stop accepting: further connections wait in the kernel's accept backlog until one
    /// closes (gRPC: there is no HTTP/1 answer to give, and gRPC clients wait on connect with
    /// their own deadline).
    Wait,
}

/// Refused connections being answered at once, at most; beyond it they are closed unanswered.
const MAX_REFUSING: usize = 64;
/// How long a refused connection's request is drained (so the client reads the 503 instead of
/// a reset) before it is closed.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` with `builder` until `shutdown` completes; then stops accepting,
/// lets in-flight requests finish and returns once every connection has closed.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    app: S,
    limits: Limits,
    ingress: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusal = refusal(limits.max_connections);
    // Each connection holds a receiver; `closed()` completes when the last one has ended.
    let (stop, _) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = match limits.at_bound {
            AtBound::Wait => tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break, // never closed
                },
                () = &mut shutdown => break,
            },
            AtBound::Refuse => None,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, ingress, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers leave at once instead of waiting on the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let permit = match permit {
            Some(p) => p,
            None => match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    tracing::debug!(ingress, "connection refused: at max_connections");
                    if let Ok(r) = refusing.clone().try_acquire_owned() {
                        let refusal = refusal.clone();
                        tokio::spawn(async move {
                            let _r = r;
                            refuse(stream, &refusal).await;
                        });
                    }
                    continue;
                }
            },
        };
        let conn = Arc::new(ConnState::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            conn: conn.clone(),
        });
        let tracked = {
            let conn = conn.clone();
            tower::ServiceExt::map_future(app.clone(), move |fut: S::Future| {
                let guard = conn.begin();
                async move {
                    fut.await.map(|res| {
                        res.map(|body| TrackedBody {
                            inner: body,
                            _guard: guard,
                        })
                    })
                }
            })
        };
        let connection = builder
            .serve_connection(io, TowerToHyperService::new(tracked))
            .into_owned();
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let timer =
                tokio::time::sleep(limits.header_read_timeout.min(limits.keep_alive_timeout));
            tokio::pin!(timer);
            // Finishing its requests and closing (server stopping, or idle).
            let mut closing = false;
            let mut stop_seen = false;
            loop {
                tokio::select! {
                    biased;
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, ingress, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopped.changed(), if !stop_seen => {
                        stop_seen = true;
                        if !closing {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                    () = timer.as_mut() => match conn.check(&limits) {
                        Check::Until(at) => timer.as_mut().reset(at.into()),
                        Check::HeadTimedOut => {
                            tracing::debug!(ingress, "closing a connection: no request head in time");
                            break;
                        }
                        Check::Idle if closing => break, // did not close in time
                        Check::Idle => {
                            closing = true;
                            connection.as_mut().graceful_shutdown();
                            let grace = Instant::now() + limits.header_read_timeout;
                            timer.as_mut().reset(grace.into());
                        }
                    },
                }
            }
        });
    }
    drop(listener); // refuse new connections while the open ones finish
    let _ = stop.send(());
    stop.closed().await;
    Ok(())
}

/// The answer to a connection beyond the bound.
fn refusal(max_connections: usize) -> Bytes {
    let body = format!(
        "{{\"error\":\"the server is at its limit of {max_connections} open connections; retry later\"}}"
    );
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Answers 503 and closes: once the request head has arrived (an HTTP client does not expect
/// an answer before it has sent its request), then reads what else the client sends for a
/// moment so that the close does not reset the connection before the client has read it.
async fn refuse(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// What the watchdog found.
enum Check {
    /// Nothing is due before this time.
    Until(Instant),
    /// A request head did not arrive in time.
    HeadTimedOut,
    /// The connection has been idle for the keep-alive timeout.
    Idle,
}

/// Not a time: no byte has arrived since the connection went idle.
const NONE: u64 = u64::MAX;

/// One connection's clock, shared by its IO, its requests and its watchdog. Times are
/// milliseconds since `start`.
struct ConnState {
    start: Instant,
    /// Requests begun and not yet answered in full.
    active: AtomicUsize,
    /// Whether any request has begun.
    served: AtomicBool,
    /// Whether the client spoke HTTP/2 (its first bytes were the preface).
    h2: AtomicBool,
    /// Whether no byte has been read yet.
    fresh: AtomicBool,
    /// When the last request ended.
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived, or `NONE`.
    head_started: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived.
    fn on_read(&self, bytes: &[u8]) {
        if self.fresh.load(Relaxed) {
            self.fresh.store(false, Relaxed);
            const PREFACE: &[u8] = b"PRI * HTTP/2.0";
            let n = bytes.len().min(PREFACE.len());
            if bytes[..n] == PREFACE[..n] {
                self.h2.store(true, Relaxed);
                self.idle_since.store(self.now(), Relaxed);
            }
        } else if self.head_started.load(Relaxed) == NONE && self.active.load(Relaxed) == 0 {
            self.head_started.store(self.now(), Relaxed);
        }
    }

    /// A request begins; it ends when the guard (held by its response body) is dropped.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Relaxed);
        self.served.store(true, Relaxed);
        RequestGuard(self.clone())
    }

    /// The longest the watchdog sleeps, in milliseconds.
    fn period(limits: &Limits) -> u64 {
        let shorter = limits.header_read_timeout.min(limits.keep_alive_timeout);
        u64::try_from(shorter.as_millis()).unwrap_or(NONE / 2)
    }

    fn check(&self, limits: &Limits) -> Check {
        let now = self.now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE - 1);
        let (due, head) = if self.active.load(Relaxed) > 0 {
            // In flight: look again later.
            (
                now.saturating_add(ms(limits
                    .header_read_timeout
                    .min(limits.keep_alive_timeout))),
                None,
            )
        } else if self.h2.load(Relaxed) {
            (
                self.idle_since
                    .load(Relaxed)
                    .saturating_add(ms(limits.keep_alive_timeout)),
                Some(false),
            )
        } else if !self.served.load(Relaxed) {
            (ms(limits.header_read_timeout), Some(true))
        } else {
            match self.head_started.load(Relaxed) {
                NONE => (
                    self.idle_since
                        .load(Relaxed)
                        .saturating_add(ms(limits.keep_alive_timeout)),
                    Some(false),
                ),
                t => (t.saturating_add(ms(limits.header_read_timeout)), Some(true)),
            }
        };
        match head {
            Some(true) if due <= now => Check::HeadTimedOut,
            Some(false) if due <= now => Check::Idle,
            // Looks again within the shorter timeout at the latest: the state may change
            // meanwhile (a head may start during an idle period) without waking the watchdog.
            _ => Check::Until(
                self.start + Duration::from_millis(due.min(now + Self::period(limits))),
            ),
        }
    }
}

/// Ends a request when dropped.
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(c.now(), Relaxed);
        c.head_started.store(NONE, Relaxed);
        c.active.fetch_sub(1, Relaxed);
    }
}

/// A response body that ends its request when it is dropped (sent in full, or abandoned).
struct TrackedBody<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling the connection's clock when bytes arrive.
struct Watched {
    inner: TcpStream,
    conn: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.on_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
