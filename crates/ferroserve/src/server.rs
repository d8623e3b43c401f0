//! Starting and stopping a whole server from a [`Config`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ferroserve_runtime::{Controller, Deployment, RuntimeMetrics};
use ferroserve_server::{AppState, HttpMetrics, ServerConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::models::deployment;

/// Serves `config` on `listener` until `shutdown` completes; then stops accepting, lets
/// in-flight requests finish (at most the longest `graceful_shutdown_timeout_s`), stops the
/// replicas and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let deployments = config.deployments.iter().map(deployment).collect();
    let server = ServerConfig {
        max_request_bytes: config.max_request_bytes,
    };
    serve_deployments(deployments, server, listener, shutdown).await
}

/// Serves any deployments (e.g. of your own Rust models) on `listener` until `shutdown`
/// completes, with the same shutdown behaviour as [`run`].
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use ferroserve_runtime::{Deployment, Identity};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let deployments = vec![Deployment::new("echo", || Identity).num_replicas(2)];
/// ferroserve::server::serve_deployments(
///     deployments,
///     ferroserve_server::ServerConfig::default(),
///     listener,
///     async { let _ = tokio::signal::ctrl_c().await; },
/// )
/// .await
/// # }
/// ```
pub async fn serve_deployments(
    deployments: Vec<Deployment>,
    server: ServerConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let runtime_metrics = RuntimeMetrics::new(&mut registry);
    let http_metrics = HttpMetrics::new(&mut registry);
    let (controller, handle) = Controller::start(deployments, runtime_metrics)?;
    let state = AppState {
        handle,
        config: Arc::new(server),
        metrics: http_metrics,
        registry: Arc::new(registry),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ferroserve HTTP listening");
    let (stopping_tx, stopping) = oneshot::channel::<()>();
    let serve = ferroserve_server::serve(listener, state, async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let grace = controller.graceful_shutdown_timeout();
    tokio::select! {
        served = serve => served.context("HTTP server failed")?,
        () = async {
            if stopping.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the graceful shutdown timeout");
        }
    }
    controller.shutdown().await;
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
