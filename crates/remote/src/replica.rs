//! One endpoint of a remote deployment as a replica: requests go to it over gRPC (raw tensor
//! contents, `connections` HTTP/2 connections used in turn), with the caller's deadline as
//! `grpc-timeout` and cancellation as a reset stream. A probe (ServerReady + ModelReady every
//! `health_period`) takes the endpoint out of rotation when it fails and puts it back when it
//! answers; a refused connection takes it out at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferroserve_runtime::protocol::v2::TensorMetadata;
use ferroserve_runtime::{
    InferError, Liveness, ModelInfo, Payload, Permit, Prediction, Replica, RequestContext,
};
use ferroserve_server::grpc::convert;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::endpoints::Endpoints;

/// How long connecting to an endpoint may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on idle connections, so a partitioned endpoint is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

type Client = GrpcInferenceServiceClient<Channel>;

/// A connection-level view of one endpoint: its clients (one per connection) and the model.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) endpoint: String,
    model: String,
    clients: Arc<Vec<Client>>,
    next: Arc<AtomicUsize>,
}

impl Connection {
    /// Clients for `endpoint` (`host:port`); connects lazily, on the first call.
    pub(crate) fn new(endpoint: &str, model: &str, connections: usize) -> Result<Self, String> {
        let uri = format!("http://{endpoint}");
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let channel = tonic::transport::Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("endpoint {endpoint}: {e}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEP_ALIVE)
                .keep_alive_timeout(KEEP_ALIVE)
                .keep_alive_while_idle(true)
                .connect_lazy();
            clients.push(
                GrpcInferenceServiceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            );
        }
        Ok(Connection {
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn client(&self) -> Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// ServerReady and ModelReady, within `timeout`: `Err` says what failed.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let check = async {
            let mut client = self.client();
            let server = client
                .server_ready(pb::ServerReadyRequest {})
                .await
                .map_err(|s| self.named(&s))?;
            if !server.get_ref().ready {
                return Err(format!(
                    "endpoint {}: the server is not ready",
                    self.endpoint
                ));
            }
            let model = client
                .model_ready(pb::ModelReadyRequest {
                    name: self.model.clone(),
                    version: String::new(),
                })
                .await
                .map_err(|s| self.named(&s))?;
            if !model.get_ref().ready {
                return Err(format!(
                    "endpoint {}: model '{}' is not ready",
                    self.endpoint, self.model
                ));
            }
            Ok(())
        };
        tokio::time::timeout(timeout, check)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "endpoint {}: no answer within {timeout:?}",
                    self.endpoint
                ))
            })
    }

    /// The model's metadata on the endpoint, as this server's metadata of the deployment.
    pub(crate) async fn metadata(&self, timeout: Duration) -> Result<ModelInfo, String> {
        let request = pb::ModelMetadataRequest {
            name: self.model.clone(),
            version: String::new(),
        };
        let mut client = self.client();
        let answer = tokio::time::timeout(timeout, client.model_metadata(request))
            .await
            .map_err(|_| format!("endpoint {}: no metadata within {timeout:?}", self.endpoint))?
            .map_err(|s| self.named(&s))?
            .into_inner();
        let tensors = |list: Vec<pb::model_metadata_response::TensorMetadata>| {
            list.into_iter()
                .map(convert::tensor_metadata_from)
                .collect::<Result<Vec<TensorMetadata>, _>>()
                .map_err(|e| format!("endpoint {}: metadata: {e}", self.endpoint))
        };
        Ok(ModelInfo {
            platform: answer.platform,
            inputs: tensors(answer.inputs)?,
            outputs: tensors(answer.outputs)?,
        })
    }

    fn named(&self, status: &tonic::Status) -> String {
        format!("endpoint {}: {}", self.endpoint, describe(status))
    }
}

/// A status's message, or its transport error where the message is only "transport error".
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = e.source();
    }
    text
}

/// Whether a call failed before anything reached the endpoint: the connection could not be
/// made (refused, unreachable, timed out connecting). Then nothing ran and the request may go
/// to another endpoint; any other failure may have happened after the remote model ran.
fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let text = describe(status).to_ascii_lowercase();
    [
        "tcp connect error",
        "error trying to connect",
        "connection refused",
        "connect timed out",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The runtime error of a call that reached the endpoint and failed there.
fn remote_error(endpoint: &str, status: &tonic::Status) -> InferError {
    let msg = format!("endpoint {endpoint}: {}", describe(status));
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => InferError::InvalidInput(msg),
        tonic::Code::Unavailable
        | tonic::Code::ResourceExhausted
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::NotFound => InferError::Unavailable(msg),
        _ => InferError::Internal(msg),
    }
}

/// One endpoint of a remote deployment, as the router's replica.
pub(crate) struct RemoteReplica {
    /// The deployment's name, which answers carry (not the remote's name of the model).
    deployment: String,
    connection: Connection,
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    info: ModelInfo,
    probe_timeout: Duration,
    monitor: JoinHandle<()>,
    died: watch::Sender<Option<String>>,
    released: std::sync::Once,
}

impl RemoteReplica {
    pub(crate) fn new(
        deployment: String,
        connection: Connection,
        endpoints: Arc<Endpoints>,
        liveness: Arc<Liveness>,
        info: ModelInfo,
        health_period: Duration,
    ) -> Self {
        let monitor = tokio::spawn(monitor(
            connection.clone(),
            endpoints.clone(),
            liveness.clone(),
            health_period,
        ));
        RemoteReplica {
            deployment,
            connection,
            endpoints,
            liveness,
            info,
            probe_timeout: health_period.max(Duration::from_secs(1)),
            monitor,
            died: watch::channel(None).0,
            released: std::sync::Once::new(),
        }
    }

    fn release(&self) {
        self.released
            .call_once(|| self.endpoints.release(&self.connection.endpoint));
    }
}

impl Drop for RemoteReplica {
    fn drop(&mut self) {
        self.monitor.abort();
        self.release();
    }
}

/// Takes the endpoint out of rotation while its probe fails (or it left DNS), and puts it back
/// when the probe passes again.
async fn monitor(
    connection: Connection,
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    period: Duration,
) {
    let timeout = period.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let verdict = if endpoints.contains(&connection.endpoint) {
            connection.probe(timeout).await
        } else {
            Err(format!(
                "endpoint {}: no longer in the DNS answer",
                connection.endpoint
            ))
        };
        match verdict {
            Ok(()) => {
                if liveness.set_ejected(false) {
                    tracing::info!(endpoint = %connection.endpoint, "remote endpoint back in rotation");
                }
            }
            Err(why) => {
                if liveness.set_ejected(true) {
                    tracing::warn!(endpoint = %connection.endpoint, reason = %why, "remote endpoint taken out of rotation");
                }
            }
        }
    }
}

#[async_trait]
impl Replica for RemoteReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        let Payload::V2(request) = payload else {
            return Err(InferError::InvalidInput(format!(
                "endpoint {}: a remote deployment takes V2 (Open Inference Protocol) requests; V1 bodies are not forwarded",
                self.connection.endpoint
            )));
        };
        let mut call = tonic::Request::new(convert::request_to(request, &self.connection.model));
        if let Some(deadline) = ctx.deadline {
            call.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        // Dropping this future (the caller left or timed out) drops the call: tonic resets the
        // stream, so the endpoint learns of it.
        let answer = self.connection.client().model_infer(call).await;
        drop(permit);
        match answer {
            Ok(response) => convert::response_from(response.into_inner())
                .map(|mut answer| {
                    answer.model_name.clone_from(&self.deployment);
                    answer.model_version = None;
                    Prediction::V2(answer)
                })
                .map_err(|e| {
                    InferError::Internal(format!(
                        "endpoint {}: invalid response: {e}",
                        self.connection.endpoint
                    ))
                }),
            Err(status) if never_sent(&status) => {
                if self.liveness.set_ejected(true) {
                    tracing::warn!(endpoint = %self.connection.endpoint, reason = %describe(&status), "remote endpoint taken out of rotation");
                }
                Err(InferError::NotSent {
                    replica: self.connection.endpoint.clone(),
                    reason: describe(&status),
                })
            }
            Err(status) => Err(remote_error(&self.connection.endpoint, &status)),
        }
    }

    async fn check_health(&self) -> Result<(), String> {
        if !self.endpoints.contains(&self.connection.endpoint) {
            return Err(format!(
                "endpoint {}: no longer in the DNS answer",
                self.connection.endpoint
            ));
        }
        self.connection.probe(self.probe_timeout).await
    }

    async fn reconfigure(&self, _user_config: serde_json::Value) -> Result<(), String> {
        Err("a remote deployment has no user_config: configure the model on its own servers".into())
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn stop(&self) {
        self.monitor.abort();
        self.release();
    }

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.died.subscribe()
    }
}
