//! The gRPC ingress: `inference.GRPCInferenceService` (KServe's and the Open Inference
//! Protocol's service, with Triton's stream, config, statistics and repository RPCs), through
//! the same runtime handle as REST.
//!
//! It is served by hyper-util rather than tonic's own transport so that a client's
//! `grpc-timeout` ends the call with DEADLINE_EXCEEDED (tonic's transport would answer
//! CANCELLED) and abandons the queued work.

// Public for the fuzz target and corpus test (fuzz/harness/grpc_infer_request.rs).
pub mod convert;

mod codec;

use std::pin::Pin;
use std::time::{Duration, Instant};

use ferroserve_runtime::{InferError, Payload, Prediction, RequestContext};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::AppState;
use crate::error::grpc_status;
use crate::model_info::{model_config, model_statistics};

/// Generated from `proto/inference.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

pub use codec::Codec;
pub use convert::config_datatype;

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// The service, over the shared application state.
#[derive(Debug, Clone)]
pub struct InferenceService {
    state: AppState,
}

impl InferenceService {
    /// A service using `state`'s handle, metrics and limits.
    pub fn new(state: AppState) -> Self {
        InferenceService { state }
    }

    /// The tonic server of this service, with the configured message size limits (beyond them
    /// a call gets RESOURCE_EXHAUSTED).
    pub fn into_server(self) -> GrpcInferenceServiceServer<Self> {
        let limit = self.state.config.max_grpc_message_bytes;
        GrpcInferenceServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }
}

/// HTTP/2 flow-control windows: big enough that a large tensor flows without waiting on
/// window updates (hyper's defaults, 1 MiB, made a 16 MiB message take ~190 context switches).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// HTTP/2 frame size: 1 MiB instead of 16 KiB, fewer frames per tensor.
const MAX_FRAME: u32 = 1 << 20;

/// Serves gRPC on `listener` until `shutdown` completes, then lets in-flight calls finish.
///
/// Connections are served by hyper directly (not `axum::serve`) to set the HTTP/2 windows and
/// frame size for tensors, and `TCP_NODELAY` (without it small unary calls wait on delayed
/// ACKs: ~40 ms at concurrency 1), with the connection limits of `state.config`; at
/// `max_connections` further connections wait in the accept backlog.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = crate::builder(&state.config);
    builder
        .http2()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buf_size(STREAM_WINDOW as usize);
    let limits = crate::limits(&state.config, crate::listen::AtBound::Wait);
    // The generated server routes by method itself: no router in front of it.
    let app = tower::ServiceBuilder::new()
        .map_response(message_too_large)
        .service(InferenceService::new(state).into_server());
    crate::listen::serve(listener, builder, app, limits, "grpc", shutdown).await
}

/// tonic refuses a message over the size limit (from its length prefix, before reading it)
/// with OUT_OF_RANGE; gRPC's own servers answer RESOURCE_EXHAUSTED, which is what clients
/// expect, so the code is rewritten.
fn message_too_large<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("too large") || m.contains("too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// The client's deadline, from the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`).
fn deadline<T>(req: &Request<T>) -> Option<Duration> {
    parse_timeout(req.metadata().get("grpc-timeout")?.to_str().ok()?)
}

fn parse_timeout(v: &str) -> Option<Duration> {
    if v.len() > 9 {
        return None; // the spec allows at most 8 digits
    }
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Request metadata as the model sees headers.
fn context<T>(req: &Request<T>) -> RequestContext {
    crate::context::from_metadata(req.metadata())
}

impl InferenceService {
    /// PERMISSION_DENIED when the repository RPCs are restricted and the metadata key is
    /// missing or wrong.
    #[allow(clippy::result_large_err)]
    fn restricted<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(r) = &self.state.config.grpc_restricted else {
            return Ok(());
        };
        let value = req
            .metadata()
            .get(r.header.as_str())
            .and_then(|v| v.to_str().ok());
        r.check(value).map_err(Status::permission_denied)
    }
}

impl InferenceService {
    /// Runs one inference request; the error is already a gRPC status.
    async fn infer(
        &self,
        mut req: pb::ModelInferRequest,
        ctx: RequestContext,
        deadline: Option<Duration>,
    ) -> Result<pb::ModelInferResponse, Status> {
        let started = Instant::now();
        let name = req.model_name.clone();
        // Calls the model makes to other deployments inherit the client's deadline.
        let mut ctx = ctx;
        if let Some(d) = deadline {
            ctx.deadline = Some(started + d);
        }
        let version = std::mem::take(&mut req.model_version);
        let result = async {
            self.state.handle.check_version(&name, &version)?;
            let reader = self
                .state
                .shared_memory
                .reader_for(&self.state.handle, &name);
            let request = convert::request_from(req, &reader).map_err(InferError::from)?;
            let shm_outputs = request.outputs.iter().any(|o| {
                o.parameters
                    .contains_key(ferroserve_protocol::shared_memory::REGION)
            });
            let requested = shm_outputs.then(|| request.outputs.clone());
            let work = self.state.handle.infer(&name, Payload::V2(request), ctx);
            let prediction = match deadline {
                None => work.await?,
                Some(d) => {
                    tokio::time::timeout(d, work)
                        .await
                        .map_err(|_| InferError::Timeout {
                            name: name.clone(),
                            after: d,
                        })??
                }
            };
            match prediction {
                Prediction::V2(mut resp) => {
                    if let Some(requested) = &requested {
                        self.state
                            .shared_memory
                            .write_outputs(&mut resp, requested)
                            .map_err(InferError::from)?;
                    }
                    Ok(convert::response_to(resp))
                }
                Prediction::V1(_) => {
                    Err(InferError::Internal("model returned a V1 response".into()))
                }
            }
        }
        .await
        .map_err(|e| grpc_status(&e));
        let code = result.as_ref().map_or_else(|s| s.code() as u16, |_| 0);
        let known = self.state.handle.has_model(&name);
        self.state.metrics.record(
            if known { &name } else { "<unknown>" },
            "grpc",
            code,
            started.elapsed(),
        );
        result
    }
}

/// Why CUDA shared memory cannot be registered.
pub(crate) const CUDA_UNSUPPORTED: &str = "CUDA shared memory is not supported by this server (it serves on CPUs); use system shared memory";

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.handle.server_ready().await,
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        // An unknown (e.g. unloaded) model is not ready, as Triton answers: tritonclient's
        // `is_model_ready` raises on an error status instead of returning false.
        let r = req.get_ref();
        let ready = self.state.handle.check_version(&r.name, &r.version).is_ok()
            && self
                .state
                .handle
                .model_ready(&r.name)
                .await
                .unwrap_or(false);
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = crate::server_metadata(self.state.shared_memory.enabled());
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name,
            version: m.version,
            extensions: m.extensions,
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.get_ref();
        self.state
            .handle
            .check_version(&r.name, &r.version)
            .map_err(|e| grpc_status(&e))?;
        let m = self
            .state
            .handle
            .metadata(&r.name)
            .map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions.unwrap_or_default(),
            platform: m.platform,
            inputs: m.inputs.iter().map(convert::tensor_metadata_to).collect(),
            outputs: m.outputs.iter().map(convert::tensor_metadata_to).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let ctx = context(&req);
        let deadline = deadline(&req);
        self.infer(req.into_inner(), ctx, deadline)
            .await
            .map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream;

    /// Answers each request of the stream in order; a failed request answers with its
    /// `error_message` and the stream goes on. When the client goes away, the request in
    /// flight is dropped (the runtime cancels it) and nothing more is read; the call's
    /// `grpc-timeout` is a deadline for the whole stream, as gRPC and tritonclient's
    /// `stream_timeout` mean it: at it, the request in flight is dropped too and the stream
    /// ends with DEADLINE_EXCEEDED.
    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        // The deadline bounds the stream, not each request: it is not the requests' own
        // (dropping the request in flight at the deadline cancels its inner calls too).
        let ctx = context(&req);
        let timeout = deadline(&req);
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let mut inbound = req.into_inner();
        let service = self.clone();
        let stream = async_stream(move |tx| async move {
            let work = async {
                while let Some(next) = inbound.next().await {
                    let request = match next {
                        Ok(r) => r,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    };
                    let reply = match service.infer(request, ctx.clone(), None).await {
                        Ok(resp) => pb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(resp),
                        },
                        Err(status) => pb::ModelStreamInferResponse {
                            error_message: status.message().to_owned(),
                            infer_response: None,
                        },
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return; // the client went away
                    }
                }
            };
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = work => {}
                () = tx.closed() => tracing::debug!("stream client left; its request in flight is dropped"),
                () = expired => {
                    let after = timeout.unwrap_or_default();
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(format!(
                            "the stream's deadline of {after:?} passed"
                        ))))
                        .await;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let config =
            model_config(&self.state.handle, &req.get_ref().name).map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let name = &req.get_ref().name;
        let names = if name.is_empty() {
            self.state.handle.model_names()
        } else {
            vec![name.clone()]
        };
        let model_stats = names
            .iter()
            .map(|n| model_statistics(&self.state.handle, n))
            .collect::<Result<_, _>>()
            .map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        self.restricted(&req)?;
        let models = crate::repository::index(&self.state, req.get_ref().ready)
            .await
            .into_iter()
            .map(|m| pb::repository_index_response::ModelIndex {
                name: m.name,
                version: m.version,
                state: m.state,
                reason: m.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.restricted(&req)?;
        let r = req.into_inner();
        let name = if r.model_name.is_empty() {
            r.repository_name
        } else {
            r.model_name
        };
        crate::repository::refuse_files(&name, r.parameters.keys().map(String::as_str))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let config = match r
            .parameters
            .get("config")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => None,
            Some(pb::model_repository_parameter::ParameterChoice::StringParam(c)) => {
                Some(c.clone())
            }
            Some(_) => {
                return Err(Status::invalid_argument(format!(
                    "failed to load '{name}': the 'config' parameter must be a string holding the model configuration as JSON"
                )));
            }
        };
        crate::repository::load(&self.state, &name, config.as_deref())
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {
            model_name: name,
            is_loaded: true,
        }))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.restricted(&req)?;
        let r = req.into_inner();
        let name = if r.model_name.is_empty() {
            r.repository_name
        } else {
            r.model_name
        };
        crate::repository::unload(&self.state, &name)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {
            model_name: name,
            is_unloaded: true,
        }))
    }

    async fn system_shared_memory_status(
        &self,
        req: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        let name = req.into_inner().name;
        let regions = self
            .state
            .shared_memory
            .status((!name.is_empty()).then_some(name.as_str()))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse {
            regions: regions
                .into_iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        pb::system_shared_memory_status_response::RegionStatus {
                            name: r.name,
                            key: r.key,
                            offset: r.offset,
                            byte_size: r.byte_size,
                        },
                    )
                })
                .collect(),
        }))
    }

    async fn system_shared_memory_register(
        &self,
        req: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        let r = req.into_inner();
        self.state
            .shared_memory
            .register(&r.name, &r.key, r.offset, r.byte_size)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        req: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        let name = req.into_inner().name;
        self.state
            .shared_memory
            .unregister((!name.is_empty()).then_some(name.as_str()));
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    /// No CUDA region exists here (there is no GPU): the status is empty, or NOT_FOUND for
    /// a named region.
    async fn cuda_shared_memory_status(
        &self,
        req: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        let name = req.into_inner().name;
        if !name.is_empty() {
            return Err(Status::not_found(format!(
                "unable to find cuda shared memory region: '{name}'"
            )));
        }
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented(CUDA_UNSUPPORTED))
    }

    /// Nothing to unregister: succeeds, as clients clear regions before they start.
    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }
}

/// A stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(body: F) -> ResponseStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_timeout("x"), None);
        assert_eq!(parse_timeout("10q"), None);
        assert_eq!(parse_timeout("123456789S"), None);
    }
}
