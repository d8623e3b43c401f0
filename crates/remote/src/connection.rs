//! How a replica talks to its endpoint: gRPC (the default) or REST, behind one interface.

use std::time::{Duration, Instant};

use ferroserve_runtime::{ModelInfo, Payload, Prediction};

use crate::error::CallError;
use crate::grpc::GrpcConnection;
use crate::http::HttpConnection;

/// How long connecting to an endpoint may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The protocol a remote deployment speaks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoteProtocol {
    /// V2 over gRPC (raw tensor contents).
    #[default]
    Grpc,
    /// V2 over REST with the binary tensor extension, and V1 passed through.
    Http,
}

/// One endpoint's clients.
#[derive(Clone)]
pub(crate) enum Connection {
    Grpc(GrpcConnection),
    Http(HttpConnection),
}

impl Connection {
    pub(crate) fn new(
        protocol: RemoteProtocol,
        endpoint: &str,
        model: &str,
        connections: usize,
    ) -> Result<Self, String> {
        Ok(match protocol {
            RemoteProtocol::Grpc => Connection::Grpc(GrpcConnection::new(
                endpoint,
                model,
                connections,
                CONNECT_TIMEOUT,
            )?),
            RemoteProtocol::Http => {
                Connection::Http(HttpConnection::new(endpoint, model, CONNECT_TIMEOUT)?)
            }
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        match self {
            Connection::Grpc(c) => &c.endpoint,
            Connection::Http(c) => &c.endpoint,
        }
    }

    /// The server's and the model's readiness, within `timeout`: `Err` says what failed.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let probe = async {
            match self {
                Connection::Grpc(c) => c.probe().await,
                Connection::Http(c) => c.probe(timeout).await,
            }
        };
        tokio::time::timeout(timeout, probe)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "endpoint {}: no answer within {timeout:?}",
                    self.endpoint()
                ))
            })
    }

    /// The model's metadata on the endpoint.
    pub(crate) async fn metadata(&self, timeout: Duration) -> Result<ModelInfo, String> {
        match self {
            Connection::Grpc(c) => c.metadata(timeout).await,
            Connection::Http(c) => c.metadata(timeout).await,
        }
    }

    /// Runs one request, within `deadline`.
    pub(crate) async fn infer(
        &self,
        payload: Payload,
        deadline: Option<Instant>,
    ) -> Result<Prediction, CallError> {
        match self {
            Connection::Grpc(c) => c.infer(payload, deadline).await,
            Connection::Http(c) => c.infer(payload, deadline).await,
        }
    }
}
