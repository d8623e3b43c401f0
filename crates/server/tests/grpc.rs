//! The gRPC service against a real server on loopback, with the tonic client generated from the
//! same proto.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferroserve_runtime::Deployment;
use ferroserve_server::grpc::pb;
use ferroserve_server::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;
use tonic::transport::Channel;

async fn client(s: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(s.grpc.clone())
        .await
        .unwrap()
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn raw_request(model: &str, inputs: Vec<(&str, &str, Vec<i64>, Vec<u8>)>) -> pb::ModelInferRequest {
    let mut req = pb::ModelInferRequest {
        model_name: model.into(),
        id: "42".into(),
        ..Default::default()
    };
    for (name, dt, shape, data) in inputs {
        req.inputs.push(pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            ..Default::default()
        });
        req.raw_input_contents.push(Bytes::from(data));
    }
    req
}

#[tokio::test]
async fn health_and_metadata() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = c
        .model_ready(pb::ModelReadyRequest {
            name: "identity".into(),
            version: String::new(),
        })
        .await
        .unwrap();
    assert!(ready.into_inner().ready);
    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "ferroserve");
    let err = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "Request for unknown model: 'nope' is not found"
    );
}

#[tokio::test]
async fn every_datatype_round_trips_raw() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    let strings = [3u32.to_le_bytes().as_slice(), b"a\0b", &0u32.to_le_bytes()].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("BOOL", vec![1, 0]),
        ("UINT8", vec![0, 255]),
        (
            "UINT16",
            [0u16, 65535].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "UINT32",
            [1u32, u32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "UINT64",
            [1u64, u64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ("INT8", vec![0x80, 0x7f]),
        (
            "INT16",
            [i16::MIN, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "INT32",
            [i32::MIN, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "INT64",
            [i64::MIN, 7].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("FP16", vec![0x00, 0x3c, 0x00, 0xc0]),
        ("BF16", vec![0x80, 0x3f, 0x00, 0xc0]),
        (
            "FP32",
            [1.5f32, f32::NAN]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "FP64",
            [-0.0f64, 1e300]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ("BYTES", strings),
    ];
    for (dt, data) in cases {
        let req = raw_request("identity", vec![("x", dt, vec![2], data.clone())]);
        let resp = c.model_infer(req).await.unwrap().into_inner();
        assert_eq!(resp.model_name, "identity");
        assert_eq!(resp.id, "42");
        assert_eq!(resp.outputs[0].datatype, dt);
        assert_eq!(resp.outputs[0].shape, vec![2]);
        assert_eq!(
            resp.raw_output_contents[0].as_ref(),
            data.as_slice(),
            "{dt}"
        );
    }
}

#[tokio::test]
async fn typed_contents_are_accepted_and_answered_raw() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    let req = pb::ModelInferRequest {
        model_name: "identity".into(),
        inputs: vec![
            pb::model_infer_request::InferInputTensor {
                name: "f".into(),
                datatype: "FP32".into(),
                shape: vec![2],
                contents: Some(pb::InferTensorContents {
                    fp32_contents: vec![1.0, 2.5],
                    ..Default::default()
                }),
                ..Default::default()
            },
            pb::model_infer_request::InferInputTensor {
                name: "s".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(pb::InferTensorContents {
                    bytes_contents: vec![Bytes::from_static(b"hi")],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "s".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resp = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1, "only the requested output");
    assert_eq!(resp.raw_output_contents[0].as_ref(), b"\x02\x00\x00\x00hi");
}

#[tokio::test]
async fn errors_have_the_right_codes() {
    let s = TestServer::start(vec![
        identity(),
        Deployment::new("slow", || SlowPredict(Duration::from_millis(500)))
            .max_ongoing_requests(1)
            .max_queued_requests(0),
        Deployment::new("broken", || FailingLoad),
    ])
    .await;
    s.wait_model("identity", 200).await;
    s.wait_model("slow", 200).await;
    let mut c = client(&s).await;
    let code = |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>| r.unwrap_err();

    let e = code(c.model_infer(raw_request("nope", vec![])).await);
    assert_eq!(e.code(), Code::NotFound);
    let e = code(
        c.model_infer(raw_request(
            "identity",
            vec![("x", "FP32", vec![3], vec![0; 8])],
        ))
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("3 FP32 elements need 12 bytes, got 8"),
        "{}",
        e.message()
    );
    let e = code(
        c.model_infer(raw_request(
            "identity",
            vec![("x", "FP32", vec![-1], vec![])],
        ))
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut mismatch = raw_request("identity", vec![("x", "INT8", vec![1], vec![1])]);
    mismatch
        .raw_input_contents
        .push(Bytes::from_static(b"extra"));
    let e = code(c.model_infer(mismatch).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("1 inputs but 2 raw_input_contents"));
    let mut both = raw_request("identity", vec![("x", "INT8", vec![1], vec![1])]);
    both.inputs[0].contents = Some(pb::InferTensorContents {
        int_contents: vec![1],
        ..Default::default()
    });
    assert_eq!(
        code(c.model_infer(both).await).code(),
        Code::InvalidArgument
    );
    let e = code(c.model_infer(raw_request("broken", vec![])).await);
    assert_eq!(e.code(), Code::Unavailable);

    // Overload: one running, no queue.
    let mut c2 = client(&s).await;
    let running = tokio::spawn(async move { c2.model_infer(raw_request("slow", vec![])).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = code(c.model_infer(raw_request("slow", vec![])).await);
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("overloaded"));
    running.await.unwrap().unwrap();

    // The client's deadline (grpc-timeout). tonic's own client gives up at the same moment
    // and reports CANCELLED "Timeout expired", so either answer may win the race here; the
    // server's DEADLINE_EXCEEDED is checked through grpcio in the Python suite.
    let mut req = tonic::Request::new(raw_request("slow", vec![]));
    req.set_timeout(Duration::from_millis(100));
    let t0 = std::time::Instant::now();
    let e = c.model_infer(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let s = TestServer::start_with(
        vec![identity()],
        ferroserve_server::ServerConfig {
            max_grpc_message_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    let req = raw_request(
        "identity",
        vec![("x", "UINT8", vec![2 << 20], vec![0; 2 << 20])],
    );
    assert_eq!(
        c.model_infer(req).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let ok = raw_request("identity", vec![("x", "UINT8", vec![1000], vec![0; 1000])]);
    c.model_infer(ok).await.unwrap();
}

#[tokio::test]
async fn a_cancelled_call_leaves_the_queue() {
    let s = TestServer::start(vec![
        Deployment::new("slow", || SlowPredict(Duration::from_millis(400))).max_ongoing_requests(1),
    ])
    .await;
    s.wait_model("slow", 200).await;
    let mut c1 = client(&s).await;
    let running = tokio::spawn(async move { c1.model_infer(raw_request("slow", vec![])).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c2 = client(&s).await;
    let queued = tokio::spawn(async move { c2.model_infer(raw_request("slow", vec![])).await });
    let queued_count = || async {
        s.get("/-/status").await.1["deployments"][0]["queued_requests"]
            .as_u64()
            .unwrap()
    };
    for _ in 0..100 {
        if queued_count().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queued_count().await, 1);
    queued.abort();
    for _ in 0..100 {
        if queued_count().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queued_count().await, 0, "the cancelled call left the queue");
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stream_is_answered_in_order_and_survives_errors() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    let mut requests = Vec::new();
    for i in 0..5u8 {
        let mut r = raw_request("identity", vec![("x", "UINT8", vec![1], vec![i])]);
        r.id = format!("req-{i}");
        if i == 2 {
            r.model_name = "nope".into();
        }
        requests.push(r);
    }
    let mut stream = c
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        match reply.infer_response {
            Some(resp) => seen.push((resp.id, resp.raw_output_contents[0][0])),
            None => {
                assert!(reply.error_message.contains("is not found"));
                seen.push(("error".into(), 0));
            }
        }
    }
    assert_eq!(
        seen,
        vec![
            ("req-0".into(), 0),
            ("req-1".into(), 1),
            ("error".into(), 0),
            ("req-3".into(), 3),
            ("req-4".into(), 4)
        ]
    );
}

#[tokio::test]
async fn config_statistics_and_repository() {
    let s = TestServer::start(vec![
        identity().num_replicas(2),
        Deployment::new("broken", || FailingLoad),
    ])
    .await;
    s.wait_model("identity", 200).await;
    let mut c = client(&s).await;
    for _ in 0..3 {
        c.model_infer(raw_request(
            "identity",
            vec![("x", "INT8", vec![1], vec![1])],
        ))
        .await
        .unwrap();
    }
    let _ = c
        .model_infer(raw_request(
            "identity",
            vec![("x", "INT8", vec![2], vec![1])],
        ))
        .await;
    let config = c
        .model_config(pb::ModelConfigRequest {
            name: "identity".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.name, "identity");
    assert_eq!(config.instance_group[0].count, 2);
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "identity".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let st = &stats.model_stats[0];
    assert_eq!(st.inference_count, 3);
    let inf = st.inference_stats.as_ref().unwrap();
    assert_eq!(inf.success.as_ref().unwrap().count, 3);
    assert!(inf.success.as_ref().unwrap().ns > 0);
    // The request with a bad shape never reached the runtime: counted as neither.
    assert_eq!(inf.fail.as_ref().unwrap().count, 0);

    let index = c
        .repository_index(pb::RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    let states: Vec<(String, String)> = index
        .models
        .into_iter()
        .map(|m| (m.name, m.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("identity".into(), "READY".into()),
            ("broken".into(), "UNAVAILABLE".into())
        ]
    );
    // KServe puts the model name in field 1, Triton in field 2: both work.
    let kserve = pb::RepositoryModelLoadRequest {
        repository_name: "identity".into(),
        ..Default::default()
    };
    assert!(
        c.repository_model_load(kserve)
            .await
            .unwrap()
            .into_inner()
            .is_loaded
    );
    let triton = pb::RepositoryModelLoadRequest {
        model_name: "identity".into(),
        ..Default::default()
    };
    assert!(
        c.repository_model_load(triton)
            .await
            .unwrap()
            .into_inner()
            .is_loaded
    );
    let missing = pb::RepositoryModelLoadRequest {
        model_name: "nope".into(),
        ..Default::default()
    };
    let err = c.repository_model_load(missing).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("failed to load 'nope'"),
        "{err:?}"
    );
    let unload = pb::RepositoryModelUnloadRequest {
        model_name: "identity".into(),
        ..Default::default()
    };
    let err = c.repository_model_unload(unload).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("not unloaded at run time"),
        "{err:?}"
    );

    // The same over REST, in Triton's JSON shapes.
    let (status, config) = s.get("/v2/models/identity/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["instance_group"][0]["count"], 2);
    let (status, stats) = s.get("/v2/models/identity/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        3
    );
    // gRPC requests are in the metrics, labelled as such.
    let text = s.metrics_text().await;
    assert!(
        text.contains(
            r#"ferroserve_requests_total{model_name="identity",protocol="grpc",code="0"} 3"#
        ),
        "{text}"
    );
}

/// A graph (here identity → identity) is a model like any other over gRPC: raw tensors in
/// and out through both hops.
#[tokio::test]
async fn an_inference_graph_answers_over_grpc() {
    use ferroserve_runtime::graph::{GraphModel, GraphSpec};
    let spec: GraphSpec = serde_json::from_value(serde_json::json!({
        "name": "twice",
        "nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceName": "identity"}, {"serviceName": "identity"}
        ]}}
    }))
    .unwrap();
    spec.validate(&["identity".to_owned()].into()).unwrap();
    let spec = std::sync::Arc::new(spec);
    let graph = Deployment::new("twice", move || GraphModel::new(spec.clone()));
    let s = TestServer::start(vec![identity(), graph]).await;
    s.wait_model("twice", 200).await;
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let resp = client(&s)
        .await
        .model_infer(raw_request(
            "twice",
            vec![("x", "FP32", vec![2], data.clone())],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_name, "twice");
    assert_eq!(resp.id, "42");
    assert_eq!(resp.outputs[0].name, "x");
    assert_eq!(resp.raw_output_contents[0], data);
}

/// Holds every call until `n` have arrived, then answers them all (identity): a server that
/// handled one connection's streams one after another would never answer.
struct Gathering(Arc<tokio::sync::Barrier>);

#[async_trait::async_trait]
impl ferroserve_runtime::Model for Gathering {
    fn may_block(&self) -> bool {
        false
    }

    async fn predict(
        &self,
        p: ferroserve_runtime::Payload,
        ctx: &ferroserve_runtime::RequestContext,
    ) -> Result<ferroserve_runtime::Prediction, ferroserve_runtime::ModelError> {
        self.0.wait().await;
        ferroserve_runtime::Identity.predict(p, ctx).await
    }
}

#[tokio::test]
async fn sixty_four_calls_on_one_channel_are_served_concurrently() {
    const CALLS: usize = 64;
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let s = TestServer::start(vec![
        Deployment::new("gather", move || Gathering(barrier.clone())).max_ongoing_requests(CALLS),
    ])
    .await;
    s.wait_model("gather", 200).await;
    let channel = client(&s).await; // one connection; every call below is a stream on it
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let mut c = channel.clone();
            tokio::spawn(async move {
                let data = (i as u32).to_le_bytes().to_vec();
                c.model_infer(raw_request("gather", vec![("x", "UINT32", vec![1], data)]))
                    .await
            })
        })
        .collect();
    let all = async {
        let mut answers = Vec::with_capacity(CALLS);
        for call in calls {
            answers.push(call.await.unwrap().unwrap().into_inner());
        }
        answers
    };
    let answers = tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("all 64 calls were answered (served concurrently, not one after another)");
    for (i, resp) in answers.iter().enumerate() {
        assert_eq!(
            resp.raw_output_contents[0].as_ref(),
            (i as u32).to_le_bytes()
        );
    }
}
