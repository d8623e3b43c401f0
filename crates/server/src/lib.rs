//! The ingresses: KServe V1 and V2 REST routes, health, metadata and `/metrics` over HTTP
//! ([`router`], [`serve`]), and the V2 gRPC service ([`grpc`]).
//!
//! Handlers decode bytes into protocol types, call the runtime through its [`Handle`] and
//! encode the answer. *Invariant:* the ingress never calls a model directly, and errors become
//! status codes only in [`error`].

mod body;
mod context;
mod error;
pub mod grpc;
mod listen;
mod metrics;
mod model_info;
pub mod repository;
mod rest;
pub mod shared_memory;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ferroserve_runtime::Handle;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use error::{ApiError, grpc_status};
pub use metrics::HttpMetrics;

/// Settings of the HTTP and gRPC ingresses. The connection limits apply to each listener on
/// its own, so that neither ingress can starve the other.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_request_bytes: usize,
    /// Largest gRPC message accepted or sent, in bytes; beyond it RESOURCE_EXHAUSTED.
    pub max_grpc_message_bytes: usize,
    /// Most connections open at once on each port. Beyond it the HTTP port answers 503 with
    /// `Retry-After: 1` and closes; the gRPC port stops accepting until one closes (further
    /// connections wait in the kernel's accept backlog).
    pub max_connections: usize,
    /// Time a client has to send a request head: from the connection's opening (its first
    /// request, or the HTTP/2 preface), or from the first byte of a later request. Beyond it
    /// the connection is closed (slow or stalled headers).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight; HTTP/2 ones get a GOAWAY.
    pub keep_alive_timeout: Duration,
    /// Time a client has to send a whole HTTP request body; beyond it 408 and the connection
    /// is closed. The body is read before the request reaches a replica, so a slow body never
    /// holds a replica's slot.
    pub body_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection (gRPC and h2c); clients queue beyond it,
    /// and a stream over it is refused (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
    /// Largest HTTP/2 header list (gRPC metadata, h2c headers), as HTTP/2's
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`: a larger one is refused. (HTTP/1 heads are bounded by
    /// hyper: 100 headers within its ~400 KiB read buffer, beyond it 431.)
    pub max_header_list_bytes: u32,
    /// Whether `GET /-/status` (every deployment, replica and last error) is served; when
    /// not, it answers 404, like any unknown route.
    pub status_route: bool,
    /// The header (and value) the model-repository API needs over HTTP, if restricted.
    pub http_restricted: Option<repository::Restriction>,
    /// The metadata key (and value) the model-repository RPCs need over gRPC, if restricted.
    pub grpc_restricted: Option<repository::Restriction>,
    /// Whether clients may register system shared-memory regions (Triton's
    /// `--allow-client-shm`; off by default, as in Triton).
    pub allow_client_shm: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: 64 * 1024 * 1024,
            max_grpc_message_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(60),
            max_concurrent_streams: 256,
            max_header_list_bytes: 16 * 1024,
            status_route: true,
            http_restricted: None,
            grpc_restricted: None,
            allow_client_shm: false,
        }
    }
}

/// Protocol extensions this server implements, as listed in server metadata.
const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
];

/// Server metadata, the same over REST and gRPC; `system_shared_memory` is listed when
/// clients may register regions.
pub fn server_metadata(shared_memory: bool) -> ferroserve_protocol::v2::ServerMetadata {
    let mut extensions: Vec<String> = EXTENSIONS.iter().map(|e| (*e).to_owned()).collect();
    if shared_memory {
        extensions.push("system_shared_memory".to_owned());
    }
    ferroserve_protocol::v2::ServerMetadata {
        name: "ferroserve".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        extensions,
    }
}

/// Everything a handler needs, shared by all requests.
#[derive(Clone)]
pub struct AppState {
    /// The runtime.
    pub handle: Handle,
    /// Ingress settings.
    pub config: Arc<ServerConfig>,
    /// Request counters and latency histograms of the ingress.
    pub metrics: HttpMetrics,
    /// The registry `/metrics` encodes (runtime and ingress metrics).
    pub registry: Arc<Registry>,
    /// The model repository, when the server serves one (else the configured deployments).
    pub repository: Option<Arc<dyn repository::ModelRepository>>,
    /// The shared-memory regions clients registered.
    pub shared_memory: Arc<shared_memory::SharedMemoryRegistry>,
}

impl AppState {
    /// The state of a server over `handle` with `config`, its metrics registered in `registry`.
    pub fn new(
        handle: Handle,
        config: ServerConfig,
        metrics: HttpMetrics,
        registry: Registry,
        repository: Option<Arc<dyn repository::ModelRepository>>,
    ) -> AppState {
        let shared_memory = Arc::new(shared_memory::SharedMemoryRegistry::new(
            config.allow_client_shm,
            config.max_request_bytes,
        ));
        AppState {
            handle,
            config: Arc::new(config),
            metrics,
            registry: Arc::new(registry),
            repository,
            shared_memory,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("handle", &self.handle)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The HTTP application: every route, as a [`Router`] that can be served or called in tests.
pub fn router(state: AppState) -> Router {
    rest::routes(state)
}

/// HTTP/2 keep-alive pings (HTTP h2c and gRPC): a peer that does not answer one within
/// [`PING_TIMEOUT`] is gone, and its connection (and streams) are dropped.
const PING_INTERVAL: Duration = Duration::from_secs(60);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection builder with the limits of `config` (HTTP/1 and HTTP/2).
fn builder(config: &ServerConfig) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The connection watchdog (`listen`) keeps the header clock instead. HTTP/1 heads are
        // bounded by hyper: 100 headers in its ~400 KiB read buffer, beyond it 431.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_list_bytes);
    builder
}

/// The connection limits of `config`.
fn limits(config: &ServerConfig, at_bound: listen::AtBound) -> listen::Limits {
    listen::Limits {
        max_connections: config.max_connections,
        at_bound,
        header_read_timeout: config.header_read_timeout,
        keep_alive_timeout: config.keep_alive_timeout,
    }
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish. HTTP/1.1 and h2c, with the connection limits of `state.config`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let builder = builder(&state.config);
    let limits = limits(&state.config, listen::AtBound::Refuse);
    listen::serve(listener, builder, router(state), limits, "http", shutdown).await
}
