//! The ingresses: KServe V1 and V2 REST routes, health, metadata and `/metrics` over HTTP
//! ([`router`], [`serve`]), and the V2 gRPC service ([`grpc`]).
//!
//! Handlers decode bytes into protocol types, call the runtime through its [`Handle`] and
//! encode the answer. *Invariant:* the ingress never calls a model directly, and errors become
//! status codes only in [`error`].

mod body;
mod error;
pub mod grpc;
mod metrics;
mod model_info;
mod rest;

use std::sync::Arc;

use axum::Router;
use ferroserve_runtime::Handle;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use error::{ApiError, grpc_status};
pub use metrics::HttpMetrics;

/// Settings of the HTTP and gRPC ingresses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_request_bytes: usize,
    /// Largest gRPC message accepted or sent, in bytes; beyond it RESOURCE_EXHAUSTED.
    pub max_grpc_message_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: 64 * 1024 * 1024,
            max_grpc_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Protocol extensions this server implements, as listed in server metadata.
const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_configuration", "statistics"];

/// Server metadata, the same over REST and gRPC.
pub fn server_metadata() -> ferroserve_protocol::v2::ServerMetadata {
    ferroserve_protocol::v2::ServerMetadata {
        name: "ferroserve".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
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

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Answers leave at once instead of waiting on the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
