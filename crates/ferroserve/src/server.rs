//! Starting and stopping a whole server from a [`Config`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ferroserve_runtime::{Controller, RuntimeMetrics};
use ferroserve_server::{AppState, HttpMetrics, ServerConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::models::deployment_spec;

/// Serves `config` on `listener` until `shutdown` completes; then stops accepting, lets
/// in-flight requests finish and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let runtime_metrics = RuntimeMetrics::new(&mut registry);
    let http_metrics = HttpMetrics::new(&mut registry);
    let specs = config.deployments.iter().map(deployment_spec).collect();
    let (controller, handle) = Controller::start(specs, runtime_metrics)?;
    let state = AppState {
        handle,
        config: Arc::new(ServerConfig {
            max_request_bytes: config.max_request_bytes,
        }),
        metrics: http_metrics,
        registry: Arc::new(registry),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ferroserve HTTP listening");
    ferroserve_server::serve(listener, state, shutdown)
        .await
        .context("HTTP server failed")?;
    controller.shutdown();
    tracing::info!("ferroserve stopped");
    Ok(())
}

/// Binds the HTTP port of `config` on all interfaces.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], config.http_port));
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}
