//! A request whose inputs are a client's mapped shared memory, sent to a deployment that does
//! not take mapped inputs (a Rust model), reaches the model as a copy: the server never reads
//! a mapping the client may shrink.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_protocol::{DataType, Tensor};
use ferroserve_runtime::{
    Controller, Deployment, Handle, InferError, Model, ModelError, Payload, Prediction,
    RequestContext, RuntimeMetrics,
};
use ferroserve_shm::ClientRegion;
use ferroserve_shm::testing::TestObject;

/// Refuses inputs that are still a client's mapping; answers the others as they are.
struct RefusesMappings;

#[async_trait]
impl Model for RefusesMappings {
    async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        let Payload::V2(req) = p else {
            return Err(ModelError::InvalidInput("V2 only".into()));
        };
        if req
            .inputs
            .iter()
            .any(|t| ferroserve_shm::mapped::find(&t.data).is_some())
        {
            return Err(ModelError::Internal(
                "the model was given mapped bytes".into(),
            ));
        }
        Ok(Prediction::V2(InferResponse {
            outputs: req.inputs,
            ..InferResponse::default()
        }))
    }
}

fn request(data: bytes::Bytes) -> Payload {
    let input = Tensor::new("x", DataType::Fp32, vec![2], data).unwrap();
    Payload::V2(InferRequest {
        inputs: vec![input],
        ..InferRequest::default()
    })
}

async fn ready(h: &Handle) {
    for _ in 0..200 {
        if h.model_ready("m").await.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the deployment did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_model_gets_a_copy_of_mapped_inputs_and_a_shrunk_object_is_a_400() {
    let (_controller, handle) = Controller::start(
        vec![Deployment::new("m", || RefusesMappings)],
        RuntimeMetrics::unregistered(),
    )
    .unwrap();
    ready(&handle).await;
    let content = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let object = TestObject::with_bytes(&content);
    let region = Arc::new(ClientRegion::open(object.key(), 0, 8).unwrap());

    let mapped = region.map(0, 8).unwrap();
    let answer = handle
        .infer("m", request(mapped), RequestContext::default())
        .await
        .unwrap();
    let Prediction::V2(answer) = answer else {
        panic!("V2 answer")
    };
    assert_eq!(answer.outputs[0].data.as_ref(), content);

    let mapped = region.map(0, 8).unwrap();
    object.shrink(0);
    let error = handle
        .infer("m", request(mapped), RequestContext::default())
        .await
        .unwrap_err();
    assert!(matches!(error, InferError::InvalidInput(_)), "{error:?}");
}
