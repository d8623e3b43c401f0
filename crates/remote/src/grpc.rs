//! An endpoint reached over gRPC (`protocol: grpc`, the default): tensors as raw contents
//! both ways, `connections` HTTP/2 connections used in turn, the caller's deadline as
//! `grpc-timeout`, and a dropped call as a reset stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferroserve_runtime::protocol::v2::TensorMetadata;
use ferroserve_runtime::{InferError, ModelInfo, Payload, Prediction};
use ferroserve_server::grpc::convert;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

use crate::error::{CallError, with_causes};
use crate::http2::{Http2Channel, Unsent};

type Client = GrpcInferenceServiceClient<Http2Channel>;

/// gRPC clients of one endpoint (one per connection) and the model's name there.
#[derive(Clone)]
pub(crate) struct GrpcConnection {
    pub(crate) endpoint: String,
    model: String,
    clients: Arc<Vec<Client>>,
    next: Arc<AtomicUsize>,
}

impl GrpcConnection {
    /// Clients for `endpoint` (`host:port`); connects lazily, on the first call.
    pub(crate) fn new(
        endpoint: &str,
        model: &str,
        connections: usize,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let origin: http::Uri = format!("http://{endpoint}")
            .parse()
            .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            let channel = Http2Channel::new(endpoint, connect_timeout);
            clients.push(
                GrpcInferenceServiceClient::with_origin(channel, origin.clone())
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            );
        }
        Ok(GrpcConnection {
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

    /// ServerReady and ModelReady (`Connection::probe` bounds the time): `Err` says what
    /// failed.
    pub(crate) async fn probe(&self) -> Result<(), String> {
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

    /// Runs one request: V2 only (gRPC has no V1).
    pub(crate) async fn infer(
        &self,
        payload: Payload,
        deadline: Option<Instant>,
    ) -> Result<Prediction, CallError> {
        let Payload::V2(request) = payload else {
            return Err(CallError::Failed(InferError::InvalidInput(format!(
                "endpoint {}: a remote deployment over gRPC takes V2 (Open Inference Protocol) requests; use protocol: http for V1 bodies",
                self.endpoint
            ))));
        };
        let mut call = tonic::Request::new(convert::request_to(request, &self.model));
        if let Some(deadline) = deadline {
            call.set_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        match self.client().model_infer(call).await {
            Ok(response) => convert::response_from(response.into_inner())
                .map(Prediction::V2)
                .map_err(|e| {
                    CallError::Failed(InferError::Internal(format!(
                        "endpoint {}: invalid response: {e}",
                        self.endpoint
                    )))
                }),
            Err(status) if never_sent(&status) => Err(CallError::NotSent(describe(&status))),
            Err(status) => Err(CallError::Failed(remote_error(&self.endpoint, &status))),
        }
    }

    fn named(&self, status: &tonic::Status) -> String {
        format!("endpoint {}: {}", self.endpoint, describe(status))
    }
}

/// A status's message, or its transport error where the message is only "transport error".
fn describe(status: &tonic::Status) -> String {
    with_causes(status.message().to_owned(), status)
}

/// Whether a call failed before anything reached the endpoint: the connection could not be
/// made (refused, unreachable, timed out connecting) or closed before the request was written
/// ([`Unsent`]). Then nothing ran and the request may go to another endpoint; any other
/// failure may have happened after the remote model ran.
fn never_sent(status: &tonic::Status) -> bool {
    caused_by::<Unsent>(status)
}

/// Whether an error of type `E` is among the status's causes.
fn caused_by<E: std::error::Error + 'static>(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
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
        // The connection failed under the call (the endpoint died or reset it): the endpoint
        // is unavailable, not broken.
        tonic::Code::Unknown if caused_by::<hyper::Error>(status) => InferError::Unavailable(msg),
        _ => InferError::Internal(msg),
    }
}
