//! Starting and stopping a whole server from a [`Config`].

use std::sync::Arc;

use anyhow::Context;
use ferroserve_runtime::{Controller, Deployment, RuntimeMetrics};
use ferroserve_server::{AppState, HttpMetrics, ServerConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::config::{ControlMode, RepositoryOptions};
use crate::models::deployment;
use crate::repository::Repository;

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    /// HTTP (REST).
    pub http: TcpListener,
    /// gRPC, if served.
    pub grpc: Option<TcpListener>,
}

/// Serves `config` until `shutdown` completes; then stops accepting, lets in-flight requests
/// finish (at most the longest `graceful_shutdown_timeout_s`), stops the replicas and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let deployments: Vec<_> = config.deployments.iter().map(deployment).collect();
    let server = ServerConfig {
        max_request_bytes: config.max_request_bytes,
        max_grpc_message_bytes: config.max_grpc_message_bytes,
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        keep_alive_timeout: config.keep_alive_timeout,
        body_read_timeout: config.body_read_timeout,
        max_concurrent_streams: config.max_concurrent_streams,
        max_header_list_bytes: config.max_header_list_bytes,
        status_route: config.status_route,
        http_restricted: config.http_restricted.clone(),
        grpc_restricted: config.grpc_restricted.clone(),
        allow_client_shm: config.allow_client_shm,
    };
    serve(
        deployments,
        config.repository.clone(),
        server,
        listeners,
        shutdown,
    )
    .await
}

/// Serves any deployments (e.g. of your own Rust models) until `shutdown` completes, with
/// the same shutdown behaviour as [`run`].
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use ferroserve_runtime::{Deployment, Identity};
/// let listeners = ferroserve::server::Listeners {
///     http: tokio::net::TcpListener::bind("127.0.0.1:8080").await?,
///     grpc: None,
/// };
/// let deployments = vec![Deployment::new("echo", || Identity).num_replicas(2)];
/// ferroserve::server::serve_deployments(
///     deployments,
///     ferroserve_server::ServerConfig::default(),
///     listeners,
///     async { let _ = tokio::signal::ctrl_c().await; },
/// )
/// .await
/// # }
/// ```
pub async fn serve_deployments(
    deployments: Vec<Deployment>,
    server: ServerConfig,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(deployments, None, server, listeners, shutdown).await
}

/// Serves `deployments` and, with `repository`, the models of a model repository: those to
/// load at start are loaded (each reported as loaded or why not) before the ports answer.
async fn serve(
    deployments: Vec<Deployment>,
    repository: Option<RepositoryOptions>,
    server: ServerConfig,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let runtime_metrics = RuntimeMetrics::new(&mut registry);
    let http_metrics = HttpMetrics::new(&mut registry);
    let (controller, handle) = Controller::start(deployments, runtime_metrics)?;
    let repository = match repository {
        Some(options) => {
            let poll = options.mode == ControlMode::Poll;
            let repo = Repository::new(options, controller.clone());
            repo.load_startup().await?;
            if poll {
                tokio::spawn(repo.clone().poll());
            }
            Some(repo as Arc<dyn ferroserve_server::repository::ModelRepository>)
        }
        None => None,
    };
    let state = AppState::new(handle, server, http_metrics, registry, repository);
    // One shutdown signal for both ingresses.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let addr = listeners.http.local_addr()?;
    tracing::info!(%addr, "ferroserve HTTP listening");
    let http = ferroserve_server::serve(listeners.http, state.clone(), stopped(stop_rx.clone()));
    let grpc = async {
        match listeners.grpc {
            Some(l) => {
                tracing::info!(addr = %l.local_addr()?, "ferroserve gRPC listening");
                ferroserve_server::grpc::serve(l, state.clone(), stopped(stop_rx.clone())).await
            }
            None => Ok(()),
        }
    };
    let mut timer = stop_rx.clone();
    let grace = async {
        let _ = timer.wait_for(|s| *s).await;
        controller.graceful_shutdown_timeout().await
    };
    tokio::select! {
        (h, g) = async { tokio::join!(http, grpc) } => {
            h.context("HTTP server failed")?;
            g.context("gRPC server failed")?;
        }
        grace = async {
            let grace = grace.await;
            tokio::time::sleep(grace).await;
            grace
        } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the graceful shutdown timeout");
        }
    }
    controller.shutdown().await;
    tracing::info!("ferroserve stopped");
    Ok(())
}

/// Binds the HTTP and (unless disabled) gRPC ports of `config` on its host.
pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let host = config.host.as_str();
    let listen = |port: u16| async move {
        TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot listen on {host} port {port}"))
    };
    let grpc = match config.grpc_enabled {
        true => Some(listen(config.grpc_port).await?),
        false => None,
    };
    Ok(Listeners {
        http: listen(config.http_port).await?,
        grpc,
    })
}
