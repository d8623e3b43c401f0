//! Remote deployments: a deployment whose replicas are other V2 servers (another ferroserve,
//! Triton, KServe), one replica per endpoint, reached over gRPC or REST. The router, backpressure
//! (`max_ongoing_requests` per endpoint), timeouts, metrics and status treat them as any
//! replica.
//!
//! - Endpoints are a fixed list or a DNS name's addresses, resolved again periodically
//!   ([`EndpointSource`]); the controller keeps one replica per endpoint
//!   ([`ReplicaBackend::replica_count`]).
//! - A replica starts once its endpoint answers the model's metadata (served as this
//!   deployment's metadata and Triton model config); until then the controller retries with
//!   back-off, so an endpoint down at start joins when it answers.
//! - Each replica probes its endpoint (ServerReady, ModelReady): a failed probe or a refused
//!   connection takes it out of rotation, a passed probe puts it back.
//! - A request that was never sent (connection refused) is retried once on another endpoint;
//!   one that was sent is not retried and fails naming the endpoint. The caller's deadline is
//!   sent as `grpc-timeout`, and a caller that leaves resets the stream.

mod connection;
mod endpoints;
mod error;
mod grpc;
mod http;
mod http2;
mod replica;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferroserve_runtime::{Replica, ReplicaBackend, ReplicaStart};
use tokio::sync::watch;

pub use connection::RemoteProtocol;
pub use endpoints::EndpointSource;

use crate::connection::Connection;
use crate::endpoints::Endpoints;
use crate::replica::RemoteReplica;

/// Default seconds between DNS lookups of a `dns:` remote.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Default seconds between probes of each endpoint.
pub const DEFAULT_HEALTH_PERIOD: Duration = Duration::from_secs(1);

/// What a remote deployment reaches and how.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSpec {
    /// The endpoints.
    pub source: EndpointSource,
    /// The model's name on the remote servers.
    pub model: String,
    /// gRPC or REST.
    pub protocol: RemoteProtocol,
    /// HTTP/2 connections per endpoint (used in turn).
    pub connections: usize,
    /// Time between probes of each endpoint.
    pub health_period: Duration,
}

impl RemoteSpec {
    /// How long one probe (or the metadata read at start) may take: the probe period, at
    /// least a second.
    fn probe_timeout(&self) -> Duration {
        self.health_period.max(Duration::from_secs(1))
    }
}

/// Starts one replica per endpoint of a remote deployment.
pub struct RemoteBackend {
    spec: RemoteSpec,
    endpoints: Arc<Endpoints>,
}

impl RemoteBackend {
    /// A backend for `spec`.
    pub fn new(spec: RemoteSpec) -> Self {
        let endpoints = Endpoints::new(spec.source.clone());
        RemoteBackend { spec, endpoints }
    }
}

#[async_trait]
impl ReplicaBackend for RemoteBackend {
    async fn start(&self, start: ReplicaStart) -> Result<Arc<dyn Replica>, String> {
        let endpoint = self
            .endpoints
            .claim(start.liveness())
            .ok_or_else(|| "every endpoint has a replica already".to_owned())?;
        let prepared = async {
            let connection = Connection::new(
                self.spec.protocol,
                &endpoint,
                &self.spec.model,
                self.spec.connections,
            )?;
            connection.probe(self.spec.probe_timeout()).await?;
            let info = connection.metadata(self.spec.probe_timeout()).await?;
            Ok::<_, String>((connection, info))
        };
        match prepared.await {
            Ok((connection, info)) => {
                tracing::info!(deployment = %start.deployment, replica = %start.replica_id, %endpoint, "remote endpoint serving");
                Ok(Arc::new(RemoteReplica::new(
                    start.deployment.clone(),
                    connection,
                    self.endpoints.clone(),
                    start.liveness(),
                    info,
                    self.spec.health_period,
                    self.spec.probe_timeout(),
                )))
            }
            Err(why) => {
                self.endpoints.release(&endpoint);
                Err(why)
            }
        }
    }

    fn replica_count(&self) -> Option<watch::Receiver<usize>> {
        Some(self.endpoints.count())
    }

    fn may_refuse_unsent(&self) -> bool {
        true
    }
}
