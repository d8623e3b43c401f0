//! The REST routes against a real server on loopback, with reqwest.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ferroserve_runtime::Deployment;
use ferroserve_server::ServerConfig;
use serde_json::json;

const INFER: &str = "/v2/models/identity/infer";

fn error_of(body: &serde_json::Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test]
async fn health_and_server_metadata() {
    let s = TestServer::start(vec![identity()]).await;
    assert_eq!(s.get("/").await, (200, json!({"status": "alive"})));
    assert_eq!(s.get("/v2/health/live").await, (200, json!({"live": true})));
    s.wait_model("identity", 200).await;
    assert_eq!(
        s.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    let (status, meta) = s.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "ferroserve");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    assert_eq!(
        s.get("/v2/models").await,
        (200, json!({"models": ["identity"]}))
    );
    assert_eq!(
        s.get("/v1/models").await,
        (200, json!({"models": ["identity"]}))
    );
}

#[tokio::test]
async fn server_is_ready_only_when_every_model_is() {
    let s = TestServer::start(vec![
        identity(),
        Deployment::new("slow", || SlowLoad(Duration::from_millis(400))),
    ])
    .await;
    s.wait_model("identity", 200).await;
    assert_eq!(
        s.get("/v2/health/ready").await,
        (503, json!({"ready": false}))
    );
    let (status, body) = s.get("/v2/models/slow/ready").await;
    assert_eq!(status, 503);
    assert_eq!(error_of(&body), "Model with name slow is not ready.");
    assert_eq!(s.get("/v1/models/slow").await.0, 503);
    let (status, _) = s
        .post_json("/v2/models/slow/infer", json!({"inputs": []}))
        .await;
    assert_eq!(status, 503);
    s.wait_model("slow", 200).await;
    assert_eq!(
        s.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    assert_eq!(
        s.get("/v1/models/slow").await,
        (200, json!({"name": "slow", "ready": true}))
    );
    assert_eq!(
        s.get("/v2/models/slow/ready").await,
        (200, json!({"name": "slow", "ready": true}))
    );
}

#[tokio::test]
async fn a_failed_load_says_why() {
    let s = TestServer::start(vec![Deployment::new("broken", || FailingLoad)]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = s.get("/v2/models/broken/ready").await;
    assert_eq!(status, 503);
    assert!(
        error_of(&body).contains("weights file is corrupt"),
        "{body}"
    );
    let (status, body) = s
        .post("/v1/models/broken:predict", r#"{"instances":[]}"#)
        .await;
    assert_eq!(status, 503);
    assert!(
        error_of(&body).contains("weights file is corrupt"),
        "{body}"
    );
    assert_eq!(s.get("/v2/health/ready").await.0, 503);
}

#[tokio::test]
async fn unknown_models_and_routes_are_404_with_an_error_body() {
    let s = TestServer::start(vec![identity()]).await;
    for (status, body) in [
        s.get("/v2/models/nope").await,
        s.get("/v2/models/nope/ready").await,
        s.get("/v1/models/nope").await,
        s.post_json("/v2/models/nope/infer", json!({"inputs": []}))
            .await,
        s.post_json("/v1/models/nope:predict", json!({"instances": []}))
            .await,
    ] {
        assert_eq!(status, 404);
        assert_eq!(
            error_of(&body),
            "Request for unknown model: 'nope' is not found"
        );
    }
    let (status, body) = s.get("/v3/whatever").await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("/v3/whatever"));
    let r = s
        .client
        .delete(s.url("/v2/models/identity"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // An unversioned deployment has no version 1; a version must be a number (Triton's words).
    let (status, body) = s.get("/v2/models/identity/versions/1").await;
    assert_eq!(status, 404);
    assert_eq!(
        error_of(&body),
        "Request for unknown model: 'identity' version 1 is not found"
    );
    let (status, body) = s.get("/v2/models/identity/versions/latest").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("from specified version string 'latest'"));
    let (status, _) = s.post("/v1/models/identity:explain", "{}").await;
    assert_eq!(status, 501);
}

#[tokio::test]
async fn model_metadata() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let (status, meta) = s.get("/v2/models/identity").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "identity");
    assert_eq!(meta["versions"], serde_json::Value::Null);
    assert!(meta["inputs"].is_array() && meta["outputs"].is_array());
}

#[tokio::test]
async fn v1_predict() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let (status, body) = s
        .post_json(
            "/v1/models/identity:predict",
            json!({"instances": [[1, 2], [3, 4]]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"predictions": [[1, 2], [3, 4]]}))
    );
    let (status, body) = s
        .post_json("/v1/models/identity:predict", json!({"instances": 5}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body), "expected \"instances\" to be a list");
    let (status, body) = s.post("/v1/models/identity:predict", "{not json").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("unrecognized request format"));
}

#[tokio::test]
async fn v2_json_infer_flat_and_nested() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let (status, body) = s
        .post_json(INFER, json!({
            "id": "42",
            "inputs": [
                {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
                {"name": "b", "shape": [3], "datatype": "BYTES", "data": ["x", "", "héllo"]},
                {"name": "c", "shape": [1, 2], "datatype": "UINT64", "data": [0, 18446744073709551615u64]},
                {"name": "d", "shape": [2], "datatype": "BOOL", "data": [true, false]},
                {"name": "e", "shape": [1], "datatype": "FP16", "data": [0.5]}
            ]
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_name"], "identity");
    assert_eq!(body["id"], "42");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(
        outputs[0],
        json!({"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.5]})
    );
    assert_eq!(outputs[1]["data"], json!(["x", "", "héllo"]));
    assert_eq!(outputs[2]["data"], json!([0, 18446744073709551615u64]));
    assert_eq!(outputs[3]["data"], json!([true, false]));
    assert_eq!(outputs[4]["data"], json!([0.5]));
}

#[tokio::test]
async fn json_is_json_whatever_the_content_type() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let body = json!({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [7]}]})
        .to_string();
    for ct in [
        None,
        Some("application/json"),
        Some("application/octet-stream"),
        Some("text/plain"),
    ] {
        let mut r = s.client.post(s.url(INFER)).body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "content type {ct:?}");
    }
}

#[tokio::test]
async fn parameters_and_headers_reach_the_model() {
    let s = TestServer::start(vec![Deployment::new("echo", || Echo)]).await;
    s.wait_model("echo", 200).await;
    let r = s
        .client
        .post(s.url("/v2/models/echo/infer"))
        .header("x-test", "yes")
        .body(json!({
            "parameters": {"s": "str", "i": -3, "f": 1.5, "b": true},
            "inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [1], "parameters": {"p": 1}}]
        }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["parameters"],
        json!({"s": "str", "i": -3, "f": 1.5, "b": true, "a.p": 1, "header.x-test": "yes"})
    );
    let (status, body) = s
        .post_json(
            "/v2/models/echo/infer",
            json!({"parameters": {"nested": {"x": 1}}, "inputs": []}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("not an object"), "{body}");
}

#[tokio::test]
async fn requested_outputs_are_honoured() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let inputs = json!([
        {"name": "a", "shape": [1], "datatype": "INT32", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "INT32", "data": [2]}
    ]);
    let (status, body) = s
        .post_json(INFER, json!({"inputs": inputs, "outputs": [{"name": "b"}]}))
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    let (status, body) = s
        .post_json(
            INFER,
            json!({"inputs": inputs, "outputs": [{"name": "zzz"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "unexpected inference output 'zzz' for model 'identity'"
    );
}

#[tokio::test]
async fn binary_in_and_out() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let floats: Vec<u8> = [1.0f32, -2.5, 3.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let strings = [
        5u32.to_le_bytes().as_slice(),
        b"hello",
        &5u32.to_le_bytes(),
        b"w\0rld",
    ]
    .concat();
    let header = json!({
        "inputs": [
            {"name": "f", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
            {"name": "j", "shape": [1], "datatype": "INT64", "data": [9]},
            {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 18}}
        ],
        "outputs": [
            {"name": "f", "parameters": {"binary_data": true}},
            {"name": "j", "parameters": {"binary_data": false}},
            {"name": "s", "parameters": {"binary_data": true}}
        ]
    });
    let (body, len) = binary_body(&header, &[&floats, &strings]);
    let r = s
        .client
        .post(s.url(INFER))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", len.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let bytes = r.bytes().await.unwrap();
    let head: serde_json::Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(
        head["outputs"][0]["parameters"],
        json!({"binary_data_size": 12})
    );
    assert_eq!(head["outputs"][1]["data"], json!([9]));
    assert_eq!(
        head["outputs"][2]["parameters"],
        json!({"binary_data_size": 18})
    );
    assert_eq!(&bytes[json_len..json_len + 12], floats.as_slice());
    assert_eq!(&bytes[json_len + 12..], strings.as_slice());

    // binary_data_output at request level, JSON input.
    let (status, _) = s
        .post_json(INFER, json!({"parameters": {"binary_data_output": true}, "inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [1]}]}))
        .await;
    assert_eq!(status, 200);
}

/// Every malformed request gets a 400 naming the problem, and the server keeps serving.
#[tokio::test]
async fn bad_input_is_a_400_that_names_the_problem() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let one = |input: serde_json::Value| json!({"inputs": [input]}).to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            one(json!({"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2]})),
            "3 FP32 elements need 12 bytes, got 8",
        ),
        (
            one(json!({"name": "a", "shape": [-1], "datatype": "FP32", "data": [1]})),
            "negative dimension",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "COMPLEX64", "data": [1]})),
            "unknown datatype 'COMPLEX64'",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "INT32", "data": ["x"]})),
            "expected INT32 element, found a string",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]})),
            "expected BYTES element, found a number",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]})),
            "-1 is out of range for UINT8",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "FP32", "data": [{"x": 1}]})),
            "not objects",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "FP32", "data": 1})),
            "'data' must be an array",
        ),
        (
            one(json!({"name": "a", "shape": [1], "datatype": "FP32"})),
            "'data' field is missing",
        ),
        (
            one(json!({"name": "a", "datatype": "FP32", "data": [1]})),
            "missing field 'shape'",
        ),
        (
            one(
                json!({"name": "a", "shape": [1099511627776u64, 1099511627776u64, 1099511627776u64], "datatype": "FP64", "data": [1]}),
            ),
            "too many elements",
        ),
        (
            one(
                json!({"name": "a", "shape": [4611686018427387904u64], "datatype": "FP64", "data": [1]}),
            ),
            "need more than 2^64 bytes",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"a","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
            "nested deeper than 32 levels",
        ),
        (
            json!({"inputs": [
                {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
                {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
            ]})
            .to_string(),
            "duplicate input name 'a'",
        ),
        ("{\"inputs\": [".to_owned(), "invalid JSON request"),
        ("[]".to_owned(), "invalid JSON request"),
        ("".to_owned(), "invalid JSON request"),
    ];
    for (body, expected) in cases {
        let (status, resp) = s.post(INFER, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        assert!(
            error_of(&resp).contains(expected),
            "{body}: expected '{expected}' in {resp}"
        );
    }

    // Binary framing.
    let header = json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]});
    let (body, len) = binary_body(&header, &[&[0u8; 8]]);
    for (hlen, expected) in [
        ((body.len() + 1).to_string(), "but the body has only"),
        ("-4".to_owned(), "must be a non-negative integer"),
        ((len - 1).to_string(), "invalid JSON"),
    ] {
        let r = s
            .client
            .post(s.url(INFER))
            .header("inference-header-content-length", hlen)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let resp: serde_json::Value = r.json().await.unwrap();
        assert!(error_of(&resp).contains(expected), "{resp}");
    }
    let (short, len) = binary_body(&header, &[&[0u8; 7]]);
    let r = s
        .client
        .post(s.url(INFER))
        .header("inference-header-content-length", len.to_string())
        .body(short)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let bad_bytes = json!({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]});
    let (body, len) = binary_body(&bad_bytes, &[&[200, 0, 0, 0, 1]]);
    let r = s
        .client
        .post(s.url(INFER))
        .header("inference-header-content-length", len.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let resp: serde_json::Value = r.json().await.unwrap();
    assert!(
        error_of(&resp).contains("length 200 is beyond the data"),
        "{resp}"
    );

    // Still serving.
    let (status, _) = s
        .post_json(
            INFER,
            json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let s = TestServer::start_with(
        vec![identity()],
        ServerConfig {
            max_request_bytes: 1024,
            ..ServerConfig::default()
        },
    )
    .await;
    s.wait_model("identity", 200).await;
    let data: Vec<f32> = vec![1.0; 1000];
    let body =
        json!({"inputs": [{"name": "a", "shape": [1000], "datatype": "FP32", "data": data}]});
    let (status, resp) = s.post_json(INFER, body).await;
    assert_eq!(status, 413);
    assert!(error_of(&resp).contains("larger than the limit of 1024 bytes"));
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 200])).collect();
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    let r = s
        .client
        .post(s.url(INFER))
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let (status, _) = s
        .post_json(
            INFER,
            json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        )
        .await;
    assert_eq!(status, 200);
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static {
    tokio_stream::iter(items)
}

#[tokio::test]
async fn model_errors_map_to_status_codes() {
    let s = TestServer::start(vec![Deployment::new("failing", || Failing)]).await;
    s.wait_model("failing", 200).await;
    for (mode, status) in [("invalid", 400), ("unavailable", 503), ("other", 500)] {
        let (got, body) = s
            .post_json(
                "/v2/models/failing/infer",
                json!({"parameters": {"mode": mode}, "inputs": []}),
            )
            .await;
        assert_eq!(got, status, "{mode}: {body}");
        assert!(!error_of(&body).is_empty());
        let (got, _) = s
            .post_json(
                "/v1/models/failing:predict",
                json!({"mode": mode, "instances": []}),
            )
            .await;
        assert_eq!(got, status);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_model_and_status() {
    let s = TestServer::start(vec![identity()]).await;
    s.wait_model("identity", 200).await;
    let ok = json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]});
    for _ in 0..3 {
        assert_eq!(s.post_json(INFER, ok.clone()).await.0, 200);
    }
    assert_eq!(s.post(INFER, "nope").await.0, 400);
    assert_eq!(
        s.post_json("/v2/models/random-name/infer", ok.clone())
            .await
            .0,
        404
    );
    let text = s.metrics_text().await;
    assert!(
        text.contains(
            r#"ferroserve_requests_total{model_name="identity",protocol="v2",code="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"ferroserve_requests_total{model_name="identity",protocol="v2",code="400"} 1"#
    ));
    assert!(text.contains(
        r#"ferroserve_requests_total{model_name="<unknown>",protocol="v2",code="404"} 1"#
    ));
    assert!(text.contains(r#"request_predict_seconds_count{model_name="identity"} 3"#));
    // Three answered and one refused as bad input: four for identity; the unknown model's
    // request is under "<unknown>".
    assert!(text.contains(
        r#"ferroserve_request_duration_seconds_count{model_name="identity",protocol="v2"} 4"#
    ));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let mut s = TestServer::start(vec![Deployment::new("slow", || {
        SlowPredict(Duration::from_millis(300))
    })])
    .await;
    s.wait_model("slow", 200).await;
    let client = s.client.clone();
    let url = s.url("/v1/models/slow:predict");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .body(r#"{"instances":[1]}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.begin_shutdown();
    assert_eq!(in_flight.await.unwrap(), 200);
    // New connections are refused once the server has stopped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reqwest::Client::new().get(s.url("/")).send().await.is_err());
}

#[tokio::test]
async fn overload_is_a_quick_503_with_retry_after() {
    let s = TestServer::start(vec![
        Deployment::new("slow", || SlowPredict(Duration::from_millis(300)))
            .max_ongoing_requests(1)
            .max_queued_requests(1),
    ])
    .await;
    s.wait_model("slow", 200).await;
    let url = s.url("/v1/models/slow:predict");
    let spawn = |client: reqwest::Client, url: String| {
        tokio::spawn(async move {
            client
                .post(url)
                .body(r#"{"instances":[1]}"#)
                .send()
                .await
                .unwrap()
        })
    };
    let running = spawn(s.client.clone(), url.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = spawn(s.client.clone(), url.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = std::time::Instant::now();
    let r = s
        .client
        .post(&url)
        .body(r#"{"instances":[1]}"#)
        .send()
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "refusal took {:?}",
        t0.elapsed()
    );
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(error_of(&body).contains("overloaded"), "{body}");
    assert_eq!(running.await.unwrap().status().as_u16(), 200);
    assert_eq!(queued.await.unwrap().status().as_u16(), 200);
    let text = s.metrics_text().await;
    assert!(
        text.contains(r#"ferroserve_deployment_rejected_requests_total{deployment="slow"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_request_past_request_timeout_s_is_a_408() {
    let s = TestServer::start(vec![
        Deployment::new("slow", || SlowPredict(Duration::from_secs(5))).request_timeout_s(0.1),
    ])
    .await;
    s.wait_model("slow", 200).await;
    let (status, body) = s
        .post("/v1/models/slow:predict", r#"{"instances":[1]}"#)
        .await;
    assert_eq!(status, 408);
    assert!(error_of(&body).contains("timed out"), "{body}");
}

#[tokio::test]
async fn the_status_route_shows_deployments_and_replicas() {
    let s = TestServer::start(vec![
        identity().num_replicas(2),
        Deployment::new("broken", || FailingLoad),
    ])
    .await;
    s.wait_model("identity", 200).await;
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        body = s.get("/-/status").await.1;
        // Both deployments settled: identity's replicas running, broken's load failed.
        if body["deployments"][0]["replicas"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["state"] == "running"))
            && body["deployments"][1]["last_error"].is_string()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let identity = &body["deployments"][0];
    assert_eq!(identity["name"], "identity");
    assert_eq!(identity["status"], "HEALTHY", "{body}");
    assert_eq!(identity["target_replicas"], 2);
    assert_eq!(identity["replicas"][0]["state"], "running");
    let broken = &body["deployments"][1];
    assert_eq!(broken["name"], "broken");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("weights file is corrupt"),
        "{body}"
    );
    let text = s.metrics_text().await;
    assert!(
        text.contains(r#"ferroserve_deployment_replicas{deployment="identity",state="running"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"ferroserve_deployment_target_replicas{deployment="identity"} 2"#));
}
