//! Hostile and departing gRPC clients against a real server on loopback: more streams than
//! allowed, oversized metadata, undecodable messages, streams whose client leaves or whose
//! deadline passes; and repeated metadata as the model sees it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes};
use common::*;
use ferroserve_runtime::{
    Deployment, Identity, Model, ModelError, Payload, Prediction, RequestContext,
};
use ferroserve_server::ServerConfig;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

async fn client(s: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(s.grpc.clone())
        .await
        .unwrap()
}

fn request(model: &str) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "UINT8".into(),
            shape: vec![1],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from_static(&[7])],
        ..Default::default()
    }
}

/// Identity after `delay`, counting how many requests it works on at once.
struct Counting {
    delay: Duration,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

#[async_trait]
impl Model for Counting {
    fn may_block(&self) -> bool {
        false
    }
    async fn predict(&self, p: Payload, ctx: &RequestContext) -> Result<Prediction, ModelError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Identity.predict(p, ctx).await
    }
}

#[tokio::test]
async fn calls_past_max_concurrent_streams_wait_their_turn_and_the_server_stays_healthy() {
    let most = Arc::new(AtomicUsize::new(0));
    let model = {
        let most = most.clone();
        let now = Arc::new(AtomicUsize::new(0));
        move || Counting {
            delay: Duration::from_millis(200),
            now: now.clone(),
            most: most.clone(),
        }
    };
    let s = TestServer::start_with(
        vec![Deployment::new("counting", model).max_ongoing_requests(64)],
        ServerConfig {
            max_concurrent_streams: 2,
            ..Default::default()
        },
    )
    .await;
    s.wait_model("counting", 200).await;
    // One connection: once it has the server's SETTINGS, the client opens only 2 streams at
    // once and queues the rest. (Streams opened before the SETTINGS arrive, beyond the limit,
    // are refused with REFUSED_STREAM: UNAVAILABLE, which clients may retry.)
    let c = client(&s).await;
    c.clone().model_infer(request("counting")).await.unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move { c.model_infer(request("counting")).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "streams in flight at once");
    let mut c = c.clone();
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
}

#[tokio::test]
async fn metadata_over_the_header_list_limit_is_refused() {
    let s = TestServer::start_with(
        vec![identity()],
        ServerConfig {
            max_header_list_bytes: 4096,
            ..Default::default()
        },
    )
    .await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    let mut big = tonic::Request::new(request("identity"));
    big.metadata_mut()
        .insert("x-big", "x".repeat(8192).parse().unwrap());
    assert!(c.model_infer(big).await.is_err());
    // The connection, and the server, still serve calls within the limit.
    let mut c = client(&s).await;
    c.model_infer(request("identity")).await.unwrap();
}

/// Sends and receives raw bytes, to send a message that is not protobuf.
#[derive(Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test]
async fn an_undecodable_message_is_invalid_argument() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let channel = Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    // A field 1 (model_name) of length 200 in 3 bytes: truncated.
    let garbage = Bytes::from_static(&[0x0a, 0xc8, 0x01]);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            tonic::Request::new(garbage.clone()),
            http::uri::PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // In a stream too.
    grpc.ready().await.unwrap();
    let reply = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            http::uri::PathAndQuery::from_static(
                "/inference.GRPCInferenceService/ModelStreamInfer",
            ),
            RawCodec,
        )
        .await;
    let code = match reply {
        Err(status) => status.code(),
        Ok(stream) => stream.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::InvalidArgument);
}

#[tokio::test]
async fn repeated_metadata_reaches_the_model_joined() {
    let s = TestServer::start(vec![Deployment::new("echo", || Echo)]).await;
    s.wait_model("echo", 200).await;
    let mut c = client(&s).await;
    let mut req = tonic::Request::new(request("echo"));
    req.metadata_mut().append("x-test", "a".parse().unwrap());
    req.metadata_mut().append("x-test", "b".parse().unwrap());
    let resp = c.model_infer(req).await.unwrap().into_inner();
    let seen = &resp.parameters["header.x-test"];
    assert_eq!(
        seen.parameter_choice,
        Some(pb::infer_parameter::ParameterChoice::StringParam(
            "a, b".into()
        ))
    );
}

/// The deployment's ongoing requests, from `/-/status`.
async fn ongoing(s: &TestServer) -> u64 {
    s.get("/-/status").await.1["deployments"][0]["ongoing_requests"]
        .as_u64()
        .unwrap()
}

async fn wait_ongoing(s: &TestServer, n: u64, within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if ongoing(s).await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_stream_whose_client_leaves_stops_inferring() {
    // One slot and no queue: while the abandoned request runs, a new call is refused.
    let s = TestServer::start(vec![
        Deployment::new("slow", || SlowPredict(Duration::from_secs(3)))
            .max_ongoing_requests(1)
            .max_queued_requests(0),
    ])
    .await;
    s.wait_model("slow", 200).await;
    let mut c = client(&s).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request("slow")).await.unwrap();
    let replies = c
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(wait_ongoing(&s, 1, Duration::from_secs(2)).await);
    // The client leaves in the middle of the request.
    drop(replies);
    drop(tx);
    assert!(
        wait_ongoing(&s, 0, Duration::from_secs(1)).await,
        "the abandoned request kept running"
    );
    let mut c2 = client(&s).await;
    let t0 = Instant::now();
    let call = tokio::spawn(async move { c2.model_infer(request("slow")).await });
    assert!(wait_ongoing(&s, 1, Duration::from_secs(1)).await);
    assert!(t0.elapsed() < Duration::from_secs(1));
    call.abort();
}

#[tokio::test]
async fn a_stream_ends_at_its_deadline_and_drops_its_request() {
    let s = TestServer::start(vec![
        Deployment::new("slow", || SlowPredict(Duration::from_secs(5))).max_ongoing_requests(1),
    ])
    .await;
    s.wait_model("slow", 200).await;
    let mut c = client(&s).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request("slow")).await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut replies = c.model_stream_infer(req).await.unwrap().into_inner();
    let err = replies.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        wait_ongoing(&s, 0, Duration::from_secs(1)).await,
        "the request kept running past the deadline"
    );
    drop(tx);
}
