//! Deployments, replicas, router and controller, driven through the public API with real
//! replica threads.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferroserve_runtime::{
    AutoscalingOptions, Controller, Deployment, DeploymentStatus, Handle, InferError, Model,
    ModelError, Payload, Prediction, ReplicaState, RequestContext, RuntimeMetrics, factory,
};
use serde_json::json;

/// What a test model does, shared by all its instances.
#[derive(Default)]
struct Probe {
    /// Requests in flight per instance (index = instance number).
    in_flight: Mutex<Vec<Arc<AtomicUsize>>>,
    /// Highest in-flight count seen on any one instance.
    max_seen: AtomicUsize,
    /// Instances constructed.
    made: AtomicUsize,
    /// `load` calls that must still fail.
    failing_loads: AtomicUsize,
    unhealthy: AtomicBool,
}

struct TestModel {
    probe: Arc<Probe>,
    in_flight: Arc<AtomicUsize>,
    instance: usize,
    tag: &'static str,
    user_config: Mutex<serde_json::Value>,
}

fn make(probe: &Arc<Probe>, tag: &'static str) -> TestModel {
    let in_flight = Arc::new(AtomicUsize::new(0));
    probe.in_flight.lock().unwrap().push(in_flight.clone());
    TestModel {
        probe: probe.clone(),
        in_flight,
        instance: probe.made.fetch_add(1, Ordering::SeqCst),
        tag,
        user_config: Mutex::new(serde_json::Value::Null),
    }
}

#[async_trait]
impl Model for TestModel {
    async fn load(&mut self) -> Result<(), ModelError> {
        let failing = self.probe.failing_loads.load(Ordering::SeqCst);
        if failing > 0 {
            self.probe
                .failing_loads
                .store(failing - 1, Ordering::SeqCst);
            return Err(ModelError::internal("weights are corrupt"));
        }
        Ok(())
    }

    async fn reconfigure(&self, user_config: &serde_json::Value) -> Result<(), ModelError> {
        *self.user_config.lock().unwrap() = user_config.clone();
        Ok(())
    }

    async fn healthy(&self) -> bool {
        !self.probe.unhealthy.load(Ordering::SeqCst)
    }

    /// V1 body: `{"sleep_ms": n, "block_ms": n, "panic": bool}`; answers with the instance,
    /// the tag and the user config.
    async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        let Payload::V1(body) = p else {
            return Err(ModelError::invalid_input("V1 only"));
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.max_seen.fetch_max(now, Ordering::SeqCst);
        let _guard = Decrement(self.in_flight.clone());
        if body["panic"] == true {
            panic!("boom");
        }
        if let Some(ms) = body["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(ms) = body["block_ms"].as_u64() {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let uc = self.user_config.lock().unwrap().clone();
        Ok(Prediction::V1(
            json!({"instance": self.instance, "tag": self.tag, "user_config": uc}),
        ))
    }
}

struct Decrement(Arc<AtomicUsize>);
impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn deployment(name: &str, probe: &Arc<Probe>, tag: &'static str) -> Deployment {
    let probe = probe.clone();
    Deployment::from_factory(name, factory(move || Ok(make(&probe, tag))))
}

fn start(deployments: Vec<Deployment>) -> (Controller, Handle) {
    Controller::start(deployments, RuntimeMetrics::unregistered()).unwrap()
}

async fn call(
    h: &Handle,
    name: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, InferError> {
    match h
        .infer(name, Payload::V1(body), RequestContext::default())
        .await?
    {
        Prediction::V1(v) => Ok(v),
        Prediction::V2(_) => panic!("V2 answer"),
    }
}

fn status(h: &Handle, name: &str) -> DeploymentStatus {
    h.deployment_statuses()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

fn running(s: &DeploymentStatus) -> usize {
    s.replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Running)
        .count()
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn ready(h: &Handle, name: &str, replicas: usize) {
    eventually(
        10,
        &format!("{name} with {replicas} running replicas"),
        || running(&status(h, name)) == replicas,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_replicas_serve_n_requests_in_parallel() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("sleepy", &probe, "v1")
            .num_replicas(4)
            .max_ongoing_requests(1),
    ]);
    ready(&h, "sleepy", 4).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { call(&h, "sleepy", json!({"sleep_ms": 50})).await })
        })
        .collect();
    let mut instances = std::collections::HashSet::new();
    for c in calls {
        instances.insert(c.await.unwrap().unwrap()["instance"].as_u64().unwrap());
    }
    let elapsed = t0.elapsed();
    assert_eq!(instances.len(), 4, "each request ran on its own replica");
    assert!(
        elapsed < Duration::from_millis(150),
        "4 × 50 ms on 4 replicas took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_predict_stalls_neither_the_runtime_nor_other_replicas() {
    let probe = Arc::new(Probe::default());
    let other = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("blocking", &probe, "v1")
            .num_replicas(2)
            .max_ongoing_requests(1),
        deployment("other", &other, "v1"),
    ]);
    ready(&h, "blocking", 2).await;
    ready(&h, "other", 1).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { call(&h, "blocking", json!({"block_ms": 300})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // While both replica threads are blocked, another deployment answers at once.
    let t1 = Instant::now();
    call(&h, "other", json!({})).await.unwrap();
    assert!(
        t1.elapsed() < Duration::from_millis(100),
        "other deployment took {:?}",
        t1.elapsed()
    );
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(
        t0.elapsed() < Duration::from_millis(550),
        "2 × 300 ms blocking on 2 replicas took {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ongoing_requests_is_never_exceeded() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("limited", &probe, "v1")
            .num_replicas(2)
            .max_ongoing_requests(3)
            .max_queued_requests(-1),
    ]);
    ready(&h, "limited", 2).await;
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { call(&h, "limited", json!({"sleep_ms": 10})).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        probe.max_seen.load(Ordering::SeqCst),
        3,
        "the limit is reached but never passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("busy", &probe, "v1")
            .max_ongoing_requests(1)
            .max_queued_requests(2),
    ]);
    ready(&h, "busy", 1).await;
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                (
                    call(&h, "busy", json!({"sleep_ms": 200})).await,
                    t0.elapsed(),
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut overloaded = 0;
    for c in calls {
        match c.await.unwrap() {
            (Ok(_), _) => ok += 1,
            (Err(InferError::Overloaded { queued, .. }), took) => {
                assert_eq!(queued, 2);
                assert!(took < Duration::from_millis(50), "refusal took {took:?}");
                overloaded += 1;
            }
            (Err(e), _) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, overloaded), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_replica_is_restarted_and_the_others_keep_serving() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![deployment("fragile", &probe, "v1").num_replicas(2)]);
    ready(&h, "fragile", 2).await;
    let err = call(&h, "fragile", json!({"panic": true}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InferError::Internal(m) if m.contains("panicked") && m.contains("boom")),
        "{err}"
    );
    // The other replica serves at once.
    for _ in 0..5 {
        call(&h, "fragile", json!({})).await.unwrap();
    }
    eventually(10, "the panicked replica replaced", || {
        let s = status(&h, "fragile");
        s.restarts == 1 && running(&s) == 2
    })
    .await;
    let s = status(&h, "fragile");
    assert!(s.last_error.unwrap().contains("boom"));
    assert_eq!(
        probe.made.load(Ordering::SeqCst),
        3,
        "one new instance was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_load_shows_in_status_and_is_retried_with_backoff() {
    let probe = Arc::new(Probe::default());
    probe.failing_loads.store(2, Ordering::SeqCst);
    let t0 = Instant::now();
    let (_c, h) = start(vec![deployment("flaky", &probe, "v1")]);
    eventually(5, "the load error in status", || {
        status(&h, "flaky")
            .last_error
            .is_some_and(|e| e.contains("weights are corrupt"))
    })
    .await;
    let s = status(&h, "flaky");
    assert_eq!(s.status, "UNHEALTHY");
    assert!(s.message.contains("weights are corrupt"));
    // Requests meanwhile are refused with the reason, not left hanging.
    let err = call(&h, "flaky", json!({})).await.unwrap_err();
    assert!(
        matches!(&err, InferError::ModelNotReady { detail: Some(d), .. } if d.contains("weights are corrupt")),
        "{err}"
    );
    ready(&h, "flaky", 1).await;
    // Two failures: back-off of 0.5 s then 1 s before the third attempt.
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "retried too soon: {:?}",
        t0.elapsed()
    );
    assert_eq!(status(&h, "flaky").restarts, 2);
    call(&h, "flaky", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_health_checks_is_replaced() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("sick", &probe, "v1").health_check(0.05, 1.0),
    ]);
    ready(&h, "sick", 1).await;
    probe.unhealthy.store(true, Ordering::SeqCst);
    eventually(5, "a restart after failed health checks", || {
        status(&h, "sick").restarts >= 1
    })
    .await;
    assert!(
        status(&h, "sick")
            .last_error
            .unwrap()
            .contains("health check failed 3 times")
    );
    probe.unhealthy.store(false, Ordering::SeqCst);
    ready(&h, "sick", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_goes_up_under_load_and_back_down_after() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("elastic", &probe, "v1")
            .max_ongoing_requests(2)
            .max_queued_requests(-1)
            .autoscaling(AutoscalingOptions {
                min_replicas: Some(1),
                max_replicas: Some(3),
                target_ongoing_requests: Some(1.0),
                upscale_delay_s: Some(0.2),
                downscale_delay_s: Some(0.5),
                look_back_period_s: Some(0.5),
                ..Default::default()
            }),
    ]);
    ready(&h, "elastic", 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..6)
        .map(|_| {
            let h = h.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    call(&h, "elastic", json!({"sleep_ms": 50})).await.unwrap();
                }
            })
        })
        .collect();
    eventually(10, "3 replicas under load", || {
        running(&status(&h, "elastic")) == 3
    })
    .await;
    assert_eq!(status(&h, "elastic").target_replicas, 3);
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    eventually(10, "back to 1 replica when idle", || {
        let s = status(&h, "elastic");
        s.target_replicas == 1 && s.replicas.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_to_zero_the_first_request_waits_for_a_replica() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![deployment("lazy", &probe, "v1").autoscaling(
        AutoscalingOptions {
            min_replicas: Some(0),
            max_replicas: Some(1),
            ..Default::default()
        },
    )]);
    eventually(5, "scaled to zero", || {
        status(&h, "lazy").status == "SCALED_TO_ZERO"
    })
    .await;
    assert!(
        h.model_ready("lazy").await.unwrap(),
        "a scaled-to-zero deployment is ready to serve"
    );
    assert_eq!(probe.made.load(Ordering::SeqCst), 0);
    call(&h, "lazy", json!({})).await.unwrap();
    assert_eq!(probe.made.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_steady_load_fails_no_request() {
    let probe = Arc::new(Probe::default());
    let (c, h) = start(vec![
        deployment("rolling", &probe, "v1")
            .num_replicas(2)
            .max_ongoing_requests(4)
            .max_queued_requests(-1),
    ]);
    ready(&h, "rolling", 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (h, stop, failures) = (h.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    if call(&h, "rolling", json!({"sleep_ms": 5})).await.is_err() {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.deploy(
        deployment("rolling", &probe, "v2")
            .num_replicas(2)
            .max_ongoing_requests(4)
            .max_queued_requests(-1),
    )
    .await
    .unwrap();
    eventually(10, "both replicas on v2", || {
        let s = status(&h, "rolling");
        s.replicas.len() == 2
            && s.replicas
                .iter()
                .all(|r| r.version == 2 && r.state == ReplicaState::Running)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for l in load {
        total += l.await.unwrap();
    }
    assert!(total > 100, "the load kept flowing ({total} requests)");
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(call(&h, "rolling", json!({})).await.unwrap()["tag"], "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_config_reaches_the_model_without_a_restart() {
    let probe = Arc::new(Probe::default());
    let d = deployment("tunable", &probe, "v1").user_config(json!({"threshold": 1}));
    let (c, h) = start(vec![d.clone()]);
    ready(&h, "tunable", 1).await;
    assert_eq!(
        call(&h, "tunable", json!({})).await.unwrap()["user_config"],
        json!({"threshold": 1})
    );
    c.deploy(d.user_config(json!({"threshold": 2})))
        .await
        .unwrap();
    eventually(5, "the new user_config", || {
        block_on_here(call(&h, "tunable", json!({})))
            .map(|v| v["user_config"] == json!({"threshold": 2}))
            .unwrap_or(false)
    })
    .await;
    assert_eq!(probe.made.load(Ordering::SeqCst), 1, "no new instance");
}

/// Runs a future to completion from a synchronous closure inside the multi-thread runtime.
fn block_on_here<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_leaves_the_queue() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("single", &probe, "v1").max_ongoing_requests(1),
    ]);
    ready(&h, "single", 1).await;
    let h1 = h.clone();
    let running = tokio::spawn(async move { call(&h1, "single", json!({"sleep_ms": 300})).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let h2 = h.clone();
    let queued = tokio::spawn(async move { call(&h2, "single", json!({})).await });
    eventually(2, "one queued request", || {
        status(&h, "single").queued_requests == 1
    })
    .await;
    queued.abort();
    eventually(2, "an empty queue", || {
        status(&h, "single").queued_requests == 0
    })
    .await;
    running.await.unwrap().unwrap();
    call(&h, "single", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_gets_an_error() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("slow", &probe, "v1").request_timeout_s(0.1),
    ]);
    ready(&h, "slow", 1).await;
    let t0 = Instant::now();
    let err = call(&h, "slow", json!({"sleep_ms": 2000}))
        .await
        .unwrap_err();
    assert!(matches!(err, InferError::Timeout { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_millis(500));
    // The abandoned work gave its capacity back.
    eventually(2, "no ongoing request", || {
        probe.in_flight.lock().unwrap()[0].load(Ordering::SeqCst) == 0
    })
    .await;
    call(&h, "slow", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let probe = Arc::new(Probe::default());
    let (c, h) = start(vec![
        deployment("draining", &probe, "v1").graceful_shutdown_timeout_s(5.0),
    ]);
    ready(&h, "draining", 1).await;
    let h1 = h.clone();
    let in_flight =
        tokio::spawn(async move { call(&h1, "draining", json!({"sleep_ms": 200})).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.shutdown().await;
    in_flight.await.unwrap().unwrap();
    assert!(
        call(&h, "draining", json!({})).await.is_err(),
        "no new work after shutdown"
    );
}

#[test]
fn a_bad_option_is_refused_at_start_naming_the_field() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let probe = Arc::new(Probe::default());
        let err = Controller::start(
            vec![deployment("bad", &probe, "v1").max_ongoing_requests(0)],
            RuntimeMetrics::unregistered(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "deployment 'bad': max_ongoing_requests: must be at least 1"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_does_not_wait_behind_other_requests_on_its_replica() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("cpu", &probe, "v1").max_ongoing_requests(3),
    ]);
    ready(&h, "cpu", 1).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                call(&h, "cpu", json!({"block_ms": 150})).await.unwrap();
                t0.elapsed()
            })
        })
        .collect();
    let mut done = Vec::new();
    for c in calls {
        done.push(c.await.unwrap());
    }
    done.sort();
    // One replica runs them one after the other; each answer leaves as soon as it is ready.
    assert!(
        done[0] < Duration::from_millis(280),
        "first answer after {:?}",
        done[0]
    );
    assert!(
        done[1] < Duration::from_millis(430),
        "second answer after {:?}",
        done[1]
    );
}

/// A model that never blocks runs on the caller's runtime; a panic there still fails only its
/// request and gets the replica replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_replicas_survive_panics_too() {
    struct Inline;
    #[async_trait]
    impl Model for Inline {
        fn may_block(&self) -> bool {
            false
        }
        async fn predict(&self, p: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
            let Payload::V1(body) = p else { unreachable!() };
            if body["panic"] == true {
                panic!("inline boom");
            }
            Ok(Prediction::V1(json!({"ok": true})))
        }
    }
    let (_c, h) = start(vec![Deployment::new("inline", || Inline).num_replicas(2)]);
    ready(&h, "inline", 2).await;
    let err = call(&h, "inline", json!({"panic": true}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("inline boom"), "{err}");
    call(&h, "inline", json!({})).await.unwrap();
    eventually(10, "the replica replaced", || {
        let s = status(&h, "inline");
        s.restarts == 1 && running(&s) == 2
    })
    .await;
}

/// Regression: a caller that left gave its permit back at once, so a new request ran beside
/// the abandoned one still blocking the replica (beyond `max_ongoing_requests`, and invisible
/// to the queue). The permit now stays with the work until the replica has finished it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_holds_its_permit_until_the_replica_finishes() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("single", &probe, "v1").max_ongoing_requests(1),
    ]);
    ready(&h, "single", 1).await;
    let h1 = h.clone();
    let abandoned =
        tokio::spawn(async move { call(&h1, "single", json!({"block_ms": 600})).await });
    eventually(2, "the blocking request running", || {
        probe.in_flight.lock().unwrap()[0].load(Ordering::SeqCst) == 1
    })
    .await;
    abandoned.abort();
    let t0 = Instant::now();
    let h2 = h.clone();
    let fresh = tokio::spawn(async move { call(&h2, "single", json!({})).await });
    eventually(
        2,
        "the fresh request queued behind the abandoned one",
        || {
            let s = status(&h, "single");
            s.queued_requests == 1 && s.ongoing_requests == 1
        },
    )
    .await;
    fresh.await.unwrap().unwrap();
    assert_eq!(
        probe.max_seen.load(Ordering::SeqCst),
        1,
        "never two at once"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
}

/// A replica that panics under load costs only the request that panicked: its other requests
/// finish, and no new request reaches it once it is known dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_replica_under_load_fails_only_what_it_held() {
    let probe = Arc::new(Probe::default());
    let (_c, h) = start(vec![
        deployment("fragile", &probe, "v1")
            .num_replicas(2)
            .max_ongoing_requests(4),
    ]);
    ready(&h, "fragile", 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (h, stop, failures, served) =
                (h.clone(), stop.clone(), failures.clone(), served.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match call(&h, "fragile", json!({"sleep_ms": 2})).await {
                        Ok(_) => served.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = call(&h, "fragile", json!({"panic": true}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "only the panicking request failed"
    );
    assert!(served.load(Ordering::SeqCst) > 100);
    ready(&h, "fragile", 2).await;
}

/// Regression (found by the chaos benchmark): the permit of the request that panicked was
/// given back before the replica was marked dead, so its death counted 0 requests held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_that_panics_counts_among_those_its_replica_held() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = RuntimeMetrics::new(&mut registry);
    let probe = Arc::new(Probe::default());
    let (_c, h) = Controller::start(vec![deployment("fragile", &probe, "v1")], metrics).unwrap();
    ready(&h, "fragile", 1).await;
    call(&h, "fragile", json!({"panic": true}))
        .await
        .unwrap_err();
    let held = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "ferroserve_deployment_requests_held_at_death_total{deployment=\"fragile\"}",
                )?
                .trim()
                .parse::<f64>()
                .ok()
            })
            .unwrap_or(-1.0)
    };
    eventually(5, "the death counted", || held() >= 0.0 && held() != 0.0).await;
    assert_eq!(held(), 1.0);
}
