//! Deployments calling deployments through handles (`RequestContext::deployment`), with real
//! replica threads.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferroserve_runtime::{
    Controller, Deployment, Handle, InferError, Model, ModelError, Payload, Prediction,
    RequestContext, RuntimeMetrics,
};
use serde_json::{Value, json};

/// `{"x": n}` → `{"x": 2n}`; `{"fail": true}` raises; `{"sleep_ms": n}` waits first.
struct Double {
    running: Arc<AtomicUsize>,
}

#[async_trait]
impl Model for Double {
    async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        let Payload::V1(body) = p else {
            return Err(ModelError::invalid_input("V1 only"));
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        let _running = Decrement(self.running.clone());
        if let Some(ms) = body["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if body["fail"] == true {
            return Err(ModelError::internal("no can do"));
        }
        let x = body["x"].as_i64().unwrap_or(0);
        Ok(Prediction::V1(json!({"x": 2 * x})))
    }
}

struct Decrement(Arc<AtomicUsize>);
impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends its request through `double` twice.
struct Front;

#[async_trait]
impl Model for Front {
    async fn predict(&self, p: Payload, ctx: &RequestContext) -> Result<Prediction, ModelError> {
        let double = ctx.deployment("double")?;
        let once = double.infer(p).await?;
        let Prediction::V1(once) = once else {
            return Err(ModelError::internal("V1 expected"));
        };
        Ok(double.infer(Payload::V1(once)).await?)
    }
}

fn start(running: &Arc<AtomicUsize>, front_timeout_s: Option<f64>) -> (Controller, Handle) {
    let running = running.clone();
    let mut front = Deployment::new("front", || Front);
    if let Some(t) = front_timeout_s {
        front = front.request_timeout_s(t);
    }
    let double = Deployment::new("double", move || Double {
        running: running.clone(),
    })
    .max_ongoing_requests(1)
    .max_queued_requests(0)
    .exposed(false);
    Controller::start(vec![front, double], RuntimeMetrics::unregistered()).unwrap()
}

async fn call(h: &Handle, name: &str, body: Value) -> Result<Value, InferError> {
    match h
        .infer(name, Payload::V1(body), RequestContext::default())
        .await?
    {
        Prediction::V1(v) => Ok(v),
        Prediction::V2(_) => panic!("V2 answer"),
    }
}

async fn ready(h: &Handle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.server_ready().await {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_calls_an_internal_one_through_its_router() {
    let running = Arc::new(AtomicUsize::new(0));
    let (_c, h) = start(&running, None);
    ready(&h).await;
    assert_eq!(
        call(&h, "front", json!({"x": 3})).await.unwrap(),
        json!({"x": 12})
    );
    // Internal: not listed, not reachable by clients, but in the status.
    assert_eq!(h.model_names(), vec!["front".to_owned()]);
    assert!(matches!(
        call(&h, "double", json!({"x": 1})).await,
        Err(InferError::ModelNotFound(_))
    ));
    assert!(h.deployment_status("double").is_ok());
    // A handle from outside reaches it too (Ray's get_deployment_handle).
    let d = h.deployment("double").unwrap();
    assert_eq!(
        d.infer(Payload::V1(json!({"x": 5}))).await.unwrap(),
        Prediction::V1(json!({"x": 10}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_failure_names_its_hop_and_inner_backpressure_is_a_503() {
    let running = Arc::new(AtomicUsize::new(0));
    let (_c, h) = start(&running, None);
    ready(&h).await;
    let err = call(&h, "front", json!({"fail": true})).await.unwrap_err();
    assert!(
        matches!(&err, InferError::Internal(m) if m == "deployment 'double': no can do"),
        "{err:?}"
    );
    // `double` takes one request and queues none: a second caller is refused, as unavailable.
    let h1 = h.clone();
    let busy = tokio::spawn(async move { call(&h1, "front", json!({"sleep_ms": 400})).await });
    let deadline = Instant::now() + Duration::from_secs(2);
    while running.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = call(&h, "front", json!({"x": 1})).await.unwrap_err();
    assert!(
        matches!(&err, InferError::Unavailable(m) if m.contains("double") && m.contains("overloaded")),
        "{err:?}"
    );
    busy.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outer_timeout_cancels_the_inner_call() {
    let running = Arc::new(AtomicUsize::new(0));
    let (_c, h) = start(&running, Some(0.2));
    ready(&h).await;
    let t0 = Instant::now();
    let err = call(&h, "front", json!({"sleep_ms": 5000}))
        .await
        .unwrap_err();
    assert!(matches!(err, InferError::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(1);
    while running.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the inner work was not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Its slot is free again: the next call runs at once.
    assert_eq!(
        call(&h, "front", json!({"x": 1})).await.unwrap(),
        json!({"x": 4})
    );
}
