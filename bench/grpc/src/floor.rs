//! `ferroserve-bench-grpc floor --port N`: the bare gRPC floor. A tonic server whose
//! `ModelInfer` echoes each input as an output of the same name, datatype, shape and bytes,
//! with no model, router or replica in between: what any V2 gRPC server must at least do.
//! `ServerLive`, `ServerReady` and `ModelReady` answer true and `ModelMetadata` an empty
//! signature (so it can be a remote deployment's endpoint); the other RPCs are unimplemented.

use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use tonic::{Request, Response, Status, Streaming};

struct Floor;

type Answer<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Answer<T> {
    Err(Status::unimplemented(
        "the floor server only echoes ModelInfer",
    ))
}

#[tonic::async_trait]
impl GrpcInferenceService for Floor {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Answer<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Answer<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        _: Request<pb::ModelReadyRequest>,
    ) -> Answer<pb::ModelReadyResponse> {
        Ok(Response::new(pb::ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Answer<pb::ServerMetadataResponse> {
        unimplemented()
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Answer<pb::ModelMetadataResponse> {
        Ok(Response::new(pb::ModelMetadataResponse {
            name: req.into_inner().name,
            versions: Vec::new(),
            platform: "floor".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Answer<pb::ModelInferResponse> {
        let req = req.into_inner();
        let outputs = req
            .inputs
            .into_iter()
            .map(|i| pb::model_infer_response::InferOutputTensor {
                name: i.name,
                datatype: i.datatype,
                shape: i.shape,
                parameters: Default::default(),
                contents: None,
            })
            .collect();
        Ok(Response::new(pb::ModelInferResponse {
            model_name: req.model_name,
            model_version: String::new(),
            id: req.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: req.raw_input_contents,
        }))
    }

    type ModelStreamInferStream = tokio_stream::Empty<Result<pb::ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Answer<Self::ModelStreamInferStream> {
        unimplemented()
    }

    async fn model_config(
        &self,
        _: Request<pb::ModelConfigRequest>,
    ) -> Answer<pb::ModelConfigResponse> {
        unimplemented()
    }

    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> Answer<pb::ModelStatisticsResponse> {
        unimplemented()
    }

    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Answer<pb::RepositoryIndexResponse> {
        unimplemented()
    }

    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Answer<pb::RepositoryModelLoadResponse> {
        unimplemented()
    }

    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Answer<pb::RepositoryModelUnloadResponse> {
        unimplemented()
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Answer<pb::SystemSharedMemoryStatusResponse> {
        unimplemented()
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryRegisterResponse> {
        unimplemented()
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::SystemSharedMemoryUnregisterResponse> {
        unimplemented()
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Answer<pb::CudaSharedMemoryStatusResponse> {
        unimplemented()
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented()
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Answer<pb::CudaSharedMemoryUnregisterResponse> {
        unimplemented()
    }
}

/// Serves the floor on 127.0.0.1:`port` until killed.
pub(crate) fn run(port: u16) -> Result<std::process::ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eprintln!("gRPC floor listening on {addr}");
        tonic::transport::Server::builder()
            .add_service(
                GrpcInferenceServiceServer::new(Floor)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve(addr)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
