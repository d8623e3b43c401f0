//! Dynamic batching through the public API, on Tokio's paused clock: time only moves when every
//! task waits, so "waited the batch timeout" and "left at once" are exact, not raced.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferroserve_runtime::protocol::v2::{InferRequest, InferResponse};
use ferroserve_runtime::protocol::{DataType, Tensor};
use ferroserve_runtime::{
    Controller, Deployment, Handle, InferError, Model, ModelError, Payload, Prediction,
    RequestContext, RuntimeMetrics, factory,
};
use serde_json::json;
use tokio::time::Instant;

/// Doubles `x` (INT32, rows × k) into `y`; echoes BYTES `s` as `s_out`. Records each batch's
/// rows. A negative value fails the call; 99 answers one row too few; `sleep_ms` in the
/// request's parameters sleeps first.
#[derive(Default)]
struct Doubler {
    batches: Arc<Mutex<Vec<usize>>>,
}

#[async_trait]
impl Model for Doubler {
    fn may_block(&self) -> bool {
        false // runs on the test's runtime, so on its paused clock
    }

    async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        match p {
            Payload::V1(body) => {
                let instances = body["instances"].as_array().unwrap().clone();
                self.batches.lock().unwrap().push(instances.len());
                let predictions: Vec<_> = instances
                    .iter()
                    .map(|v| json!(v.as_i64().unwrap() * 2))
                    .collect();
                Ok(Prediction::V1(json!({ "predictions": predictions })))
            }
            Payload::V2(req) => {
                if let Some(ms) = req.parameters.get("sleep_ms") {
                    let ms: u64 = serde_json::to_value(ms).unwrap().as_u64().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut outputs = Vec::new();
                let rows = req.inputs[0].shape[0] as usize;
                self.batches.lock().unwrap().push(rows);
                if let Some(x) = req.input("x") {
                    let v: Vec<i32> = x.to_vec()?;
                    if v.iter().any(|&e| e < 0) {
                        return Err(ModelError::invalid_input("negative input"));
                    }
                    let mut shape = x.shape.clone();
                    if v.contains(&99) {
                        shape[0] -= 1; // one row short
                    }
                    let k: u64 = shape[1..].iter().product();
                    let y: Vec<i32> = v
                        .iter()
                        .take((shape[0] * k) as usize)
                        .map(|e| e * 2)
                        .collect();
                    outputs.push(Tensor::from_values("y", shape, &y)?);
                }
                if let Some(s) = req.input("s") {
                    let mut out = s.clone();
                    out.name = "s_out".into();
                    outputs.push(out);
                }
                Ok(Prediction::V2(InferResponse {
                    model_name: "doubler".into(),
                    outputs,
                    ..Default::default()
                }))
            }
        }
    }
}

fn doubler(batches: &Arc<Mutex<Vec<usize>>>) -> Deployment {
    let batches = batches.clone();
    Deployment::from_factory(
        "doubler",
        factory(move || {
            Ok(Doubler {
                batches: batches.clone(),
            })
        }),
    )
}

async fn started(d: Deployment) -> (Controller, Handle) {
    let (c, h) = Controller::start(vec![d], RuntimeMetrics::unregistered()).unwrap();
    // Time is paused, so virtual sleeps pass at once while the replica's thread needs real
    // time to start (much of it on a loaded machine): wait on the real clock too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if h.model_ready("doubler").await.unwrap_or(false) {
            return (c, h);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("doubler did not start within 30 s");
}

/// A started doubler batching up to `max` rows, waiting `wait_s`; and its record of batches.
async fn batching(max: usize, wait_s: f64) -> (Arc<Mutex<Vec<usize>>>, Controller, Handle) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let (c, h) = started(
        doubler(&batches)
            .max_batch_size(max)
            .batch_wait_timeout_s(wait_s),
    )
    .await;
    (batches, c, h)
}

/// A request of `rows` rows of `k` values, every value `tag`.
fn request(id: &str, tag: i32, rows: u64, k: u64) -> InferRequest {
    let values = vec![tag; (rows * k) as usize];
    InferRequest {
        id: Some(id.into()),
        inputs: vec![Tensor::from_values("x", vec![rows, k], &values).unwrap()],
        ..Default::default()
    }
}

async fn infer(h: &Handle, req: InferRequest) -> Result<InferResponse, InferError> {
    match h
        .infer("doubler", Payload::V2(req), RequestContext::default())
        .await?
    {
        Prediction::V2(r) => Ok(r),
        Prediction::V1(_) => panic!("V1 answer"),
    }
}

fn y(r: &InferResponse) -> (Vec<u64>, Vec<i32>) {
    let t = r.outputs.iter().find(|t| t.name == "y").unwrap();
    (t.shape.clone(), t.to_vec().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_leaves_at_once_and_each_caller_gets_its_own_rows() {
    let (batches, _c, h) = batching(6, 10.0).await;
    let t0 = Instant::now();
    // Three callers of 1, 2 and 3 rows, each row tagged with the caller: 6 rows, full.
    let calls = (1..=3).map(|i| infer(&h, request(&format!("r{i}"), i, i as u64, 2)));
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "a full batch waited");
    assert_eq!(*batches.lock().unwrap(), vec![6]);
    for (i, a) in (1..=3).zip(answers) {
        let a = a.unwrap();
        assert_eq!(a.id.as_deref(), Some(format!("r{i}").as_str()));
        assert_eq!(y(&a), (vec![i as u64, 2], vec![i * 2; (i * 2) as usize]));
    }
    let stats = h.statistics("doubler").unwrap();
    assert_eq!((stats.inference_count, stats.execution_count), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_leaves_after_the_wait() {
    let (batches, _c, h) = batching(8, 0.05).await;
    let t0 = Instant::now();
    let calls = (0..3).map(|i| infer(&h, request("p", i, 1, 1)));
    for a in futures_util::future::join_all(calls).await {
        a.unwrap();
    }
    // It leaves within the timer's last two milliseconds of the wait, never after it.
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(48) && waited <= Duration::from_millis(50),
        "{waited:?}"
    );
    assert_eq!(*batches.lock().unwrap(), vec![3]);
}

#[tokio::test(start_paused = true)]
async fn a_preferred_size_leaves_without_waiting() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let d = doubler(&batches)
        .max_batch_size(8)
        .batch_wait_timeout_s(10.0)
        .preferred_batch_sizes(vec![2]);
    let (_c, h) = started(d).await;
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        infer(&h, request("a", 1, 1, 1)),
        infer(&h, request("b", 2, 1, 1))
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(*batches.lock().unwrap(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn requests_of_different_shapes_never_share_a_batch() {
    let (batches, _c, h) = batching(8, 0.01).await;
    let narrow = (0..3).map(|i| infer(&h, request("n", i, 1, 2)));
    let wide = (0..2).map(|i| infer(&h, request("w", i, 1, 3)));
    let answers = futures_util::future::join_all(narrow.chain(wide)).await;
    for (k, a) in answers.into_iter().enumerate() {
        let width = if k < 3 { 2 } else { 3 };
        assert_eq!(y(&a.unwrap()).0, vec![1, width]);
    }
    let mut seen = batches.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_max_batch_size_runs_alone() {
    let (batches, _c, h) = batching(4, 0.01).await;
    let a = infer(&h, request("big", 7, 10, 1)).await.unwrap();
    assert_eq!(y(&a), (vec![10, 1], vec![14; 10]));
    assert_eq!(*batches.lock().unwrap(), vec![10]);
}

#[tokio::test(start_paused = true)]
async fn an_error_fails_exactly_the_requests_of_its_batch() {
    let (batches, _c, h) = batching(3, 0.01).await;
    // First batch: 3 requests, one of them poisoned. Second batch: 2 clean ones.
    let first = [1, -1, 2].map(|v| infer(&h, request("e", v, 1, 1)));
    let answers = futures_util::future::join_all(first).await;
    for a in &answers {
        match a {
            Err(InferError::InvalidInput(m)) => assert!(m.contains("negative input"), "{m}"),
            other => panic!("expected the batch's error, got {other:?}"),
        }
    }
    let second = [3, 4].map(|v| infer(&h, request("ok", v, 1, 1)));
    for a in futures_util::future::join_all(second).await {
        a.unwrap();
    }
    assert_eq!(*batches.lock().unwrap(), vec![3, 2]);
}

#[tokio::test(start_paused = true)]
async fn an_output_without_one_row_per_input_row_fails_the_batch_naming_it() {
    let (batches, _c, h) = batching(2, 0.01).await;
    let (a, b) = tokio::join!(
        infer(&h, request("a", 99, 1, 1)),
        infer(&h, request("b", 1, 1, 1))
    );
    for r in [a, b] {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("output 'y'") && e.contains("first dimension"),
            "{e}"
        );
    }
    // One call of two rows: the batch failed as a whole, not one request alone.
    assert_eq!(*batches.lock().unwrap(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_takes_its_rows_out() {
    let (batches, _c, h) = batching(8, 0.1).await;
    // Forming: one of three callers gives up before the batch leaves.
    let leaver = tokio::time::timeout(
        Duration::from_millis(20),
        infer(&h, request("gone", 5, 1, 1)),
    );
    let (gone, a, b) = tokio::join!(
        leaver,
        infer(&h, request("a", 1, 1, 1)),
        infer(&h, request("b", 2, 1, 1))
    );
    assert!(gone.is_err());
    assert_eq!(y(&a.unwrap()).1, vec![2]);
    assert_eq!(y(&b.unwrap()).1, vec![4]);
    assert_eq!(*batches.lock().unwrap(), vec![2]);

    // Running: a caller leaves while the model works; the others get their rows.
    let slow = |id: &str, v: i32| {
        let mut r = request(id, v, 1, 1);
        r.parameters.insert(
            "sleep_ms".into(),
            serde_json::from_value(json!(100)).unwrap(),
        );
        r
    };
    let leaver = tokio::time::timeout(Duration::from_millis(150), infer(&h, slow("gone", 5)));
    let (gone, a, b) = tokio::join!(leaver, infer(&h, slow("a", 1)), infer(&h, slow("b", 2)));
    assert!(gone.is_err());
    assert_eq!(y(&a.unwrap()).1, vec![2]);
    assert_eq!(y(&b.unwrap()).1, vec![4]);
    assert_eq!(batches.lock().unwrap().last(), Some(&3));
}

#[tokio::test(start_paused = true)]
async fn each_request_of_a_batch_holds_its_slot() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let d = doubler(&batches)
        .max_batch_size(4)
        .max_ongoing_requests(4)
        .batch_wait_timeout_s(0.01);
    let (_c, h) = started(d).await;
    let slow = |v: i32| {
        let mut r = request("s", v, 1, 1);
        r.parameters.insert(
            "sleep_ms".into(),
            serde_json::from_value(json!(1000)).unwrap(),
        );
        r
    };
    let all = tokio::spawn({
        let h = h.clone();
        async move { futures_util::future::join_all((0..6).map(|v| infer(&h, slow(v)))).await }
    });
    // The controller's status snapshot is refreshed every 100 ms: look well inside the batch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = h
        .deployment_statuses()
        .into_iter()
        .find(|s| s.name == "doubler")
        .unwrap();
    assert_eq!((s.ongoing_requests, s.queued_requests), (4, 2));
    assert_eq!(s.batching.unwrap().max_batch_size, 4);
    for a in all.await.unwrap() {
        a.unwrap();
    }
    assert_eq!(*batches.lock().unwrap(), vec![4, 2]);
}

#[tokio::test(start_paused = true)]
async fn v1_instances_and_bytes_tensors_batch_too() {
    let (batches, _c, h) = batching(8, 0.01).await;
    let v1 = |xs: serde_json::Value| {
        let h = h.clone();
        async move {
            match h
                .infer(
                    "doubler",
                    Payload::V1(json!({ "instances": xs })),
                    RequestContext::default(),
                )
                .await
                .unwrap()
            {
                Prediction::V1(v) => v,
                Prediction::V2(_) => panic!("V2 answer"),
            }
        }
    };
    let (a, b) = tokio::join!(v1(json!([1, 2])), v1(json!([3])));
    assert_eq!(a, json!({"predictions": [2, 4]}));
    assert_eq!(b, json!({"predictions": [6]}));

    let words = |id: &str, w: &[&str]| InferRequest {
        id: Some(id.into()),
        inputs: vec![
            Tensor::from_byte_strings("s", vec![w.len() as u64, 1], w.iter().map(|s| s.as_bytes()))
                .unwrap(),
        ],
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        infer(&h, words("a", &["one", "three"])),
        infer(&h, words("b", &["", "seventeen", "x"]))
    );
    let strings = |r: &InferResponse| {
        let t = r.outputs.iter().find(|t| t.name == "s_out").unwrap();
        assert_eq!(t.datatype, DataType::Bytes);
        t.byte_strings()
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(strings(&a.unwrap()), vec!["one", "three"]);
    assert_eq!(strings(&b.unwrap()), vec!["", "seventeen", "x"]);
    assert_eq!(*batches.lock().unwrap(), vec![3, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_a_forming_batch_frees_its_slot_at_once() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let d = doubler(&batches)
        .max_batch_size(2)
        .max_ongoing_requests(2)
        .batch_wait_timeout_s(10.0);
    let (_c, h) = started(d).await;
    let t0 = Instant::now();
    // A (a shape of its own) leaves at 20 ms, holding one of the replica's two slots until
    // then; C arrives at 30 ms and must get that slot back at once, filling B's batch, not
    // wait for the 10 s.
    let a = tokio::time::timeout(Duration::from_millis(20), infer(&h, request("a", 1, 1, 2)));
    let b = infer(&h, request("b", 2, 1, 1));
    let c = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        infer(&h, request("c", 3, 1, 1)).await
    };
    let (a, b, c) = tokio::join!(a, b, c);
    assert!(a.is_err());
    assert_eq!(y(&b.unwrap()).1, vec![4]);
    assert_eq!(y(&c.unwrap()).1, vec![6]);
    assert_eq!(t0.elapsed(), Duration::from_millis(30));
    assert_eq!(*batches.lock().unwrap(), vec![2]);
}
