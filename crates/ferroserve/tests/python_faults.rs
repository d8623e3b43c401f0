//! Python replicas under faults, in combination and under load: kill -9 while requests keep
//! coming, callers that leave, slow predicts while health checks run, request timeouts.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `clients` callers posting `body` in a loop until `stop`; each result's status and body.
fn load(
    s: &Server,
    clients: usize,
    path: &str,
    body: serde_json::Value,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(u16, serde_json::Value)>>> {
    (0..clients)
        .map(|_| {
            let (url, body, stop) = (s.url(path), body.to_string(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.post(&url).body(body.clone()).send(),
                    )
                    .await
                    .expect("a request hung")
                    .unwrap();
                    let status = r.status().as_u16();
                    seen.push((status, r.json().await.unwrap_or_default()));
                }
                seen
            })
        })
        .collect()
}

async fn results(
    load: Vec<tokio::task::JoinHandle<Vec<(u16, serde_json::Value)>>>,
) -> Vec<(u16, serde_json::Value)> {
    let mut all = Vec::new();
    for l in load {
        all.extend(l.await.unwrap());
    }
    all
}

/// Regression: after a kill -9, requests kept being handed to the dead worker (its permits
/// free, as its requests had all failed) until the controller published a new replica set:
/// hundreds failed where only the few it held should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_sustained_load_fails_at_most_what_the_worker_held() {
    let s = Server::start(&config(&[python_deployment(
        "echo",
        "workers.py",
        "Echo",
        "    num_replicas: 2\n",
    )]));
    s.wait_ready(30).await;
    let (_, first) = s
        .post("/v1/models/echo:predict", json!({"instances": [1]}))
        .await;
    let victim = pid_of(&first);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(
        &s,
        32,
        "/v1/models/echo:predict",
        json!({"instances": [1]}),
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(victim, "KILL");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let all = results(running).await;
    let failed: Vec<_> = all.iter().filter(|(status, _)| *status != 200).collect();
    for (status, body) in &failed {
        assert_eq!(*status, 500, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(e.contains("crashed") && e.contains("SIGKILL"), "{e}");
    }
    let held = s
        .metric("ferroserve_deployment_requests_held_at_death_total{deployment=\"echo\"}")
        .await;
    let deaths = s
        .metric("ferroserve_deployment_replica_deaths_total{deployment=\"echo\"}")
        .await;
    assert_eq!(deaths, 1.0);
    assert!(held <= 5.0, "a replica holds at most max_ongoing_requests");
    assert!(
        failed.len() as f64 <= held,
        "{} requests failed, the worker held {held}",
        failed.len()
    );
    assert!(all.len() > 200, "the load ran ({} requests)", all.len());
    eventually(10, "the worker replaced", || async {
        let st = s.status().await;
        st["deployments"][0]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "running")
            .count()
            == 2
    })
    .await;
}

/// Regression: a cancelled request of an async model got no reply, so its pending entry
/// stayed; with `request_timeout_s` the watchdog then killed the healthy worker as "stuck" and
/// failed an unrelated request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_on_an_async_model_costs_nothing_else() {
    let s = Server::start(&config(&[python_deployment(
        "async",
        "workers.py",
        "AsyncSleep",
        "    request_timeout_s: 0.5\n",
    )]));
    s.wait_ready(30).await;
    let (status, _) = s
        .post("/v1/models/async:predict", json!({"sleep": 5}))
        .await;
    assert_eq!(status, 408);
    let (_, first) = s
        .post("/v1/models/async:predict", json!({"sleep": 0.05}))
        .await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        let (status, body) = s
            .post("/v1/models/async:predict", json!({"sleep": 0.05}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(pid_of(&body), pid_of(&first), "the same worker");
    }
    assert_eq!(s.status().await["deployments"][0]["restarts"], 0);
}

/// Regression: a request of an async model cancelled before its task had started (the cancel
/// came in the same read as the request: its client left at once) got no answer, so its slot
/// stayed taken for good: capacity shrank with each one, and stopping waited out the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_at_once_under_load_leave_no_slot_taken() {
    let s = Server::start(&config(&[python_deployment(
        "async",
        "workers.py",
        "AsyncSleep",
        "    max_ongoing_requests: 8\n",
    )]));
    s.wait_ready(30).await;
    let url = s.url("/v1/models/async:predict");
    let leavers: Vec<_> = (0..16u64)
        .map(|k| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let t0 = Instant::now();
                let mut sent = 0;
                while t0.elapsed() < Duration::from_millis(1500) {
                    // Gone after 1 to 4 ms: before, while or after the worker takes it in.
                    let _ = client
                        .post(&url)
                        .body(json!({"sleep": 0.002}).to_string())
                        .timeout(Duration::from_micros(1000 + 750 * (k % 5) + sent % 7 * 100))
                        .send()
                        .await;
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for l in leavers {
        sent += l.await.unwrap();
    }
    assert!(sent > 500, "the clients ran ({sent} requests)");
    eventually(5, "every slot given back", || async {
        s.status().await["deployments"][0]["ongoing_requests"] == 0
    })
    .await;
    let (status, body) = s
        .post("/v1/models/async:predict", json!({"sleep": 0}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Regression: health checks waited behind a long synchronous predict, so a busy, healthy
/// replica failed them and was replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sync_predict_passes_its_health_checks() {
    let s = Server::start(&config(&[python_deployment(
        "slow",
        "workers.py",
        "Blocking",
        "    health_check_period_s: 0.2\n    health_check_timeout_s: 0.3\n",
    )]));
    s.wait_ready(30).await;
    let (_, before) = s.post("/v1/models/slow:predict", json!({})).await;
    let (status, body) = s
        .post("/v1/models/slow:predict", json!({"sleep": 2.5}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pid_of(&body), pid_of(&before), "the same worker");
    assert_eq!(s.status().await["deployments"][0]["restarts"], 0);
}

/// Regression: abandoned requests overloaded a sync worker beyond `max_ongoing_requests` (its
/// permits freed while it still ran them), and the watchdog counted time requests waited
/// inside the worker as if they were stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_on_a_busy_sync_worker_neither_overload_nor_kill_it() {
    let s = Server::start(&config(&[python_deployment(
        "busy",
        "workers.py",
        "Blocking",
        "    request_timeout_s: 2.5\n",
    )]));
    s.wait_ready(30).await;
    let (_, before) = s.post("/v1/models/busy:predict", json!({})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(
        &s,
        3,
        "/v1/models/busy:predict",
        json!({"sleep": 1.0}),
        &stop,
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::SeqCst);
    let all = results(running).await;
    for (status, body) in &all {
        assert!(matches!(status, 200 | 408), "{status}: {body}");
    }
    let st = s.status().await;
    assert_eq!(st["deployments"][0]["restarts"], 0, "{st}");
    let (_, after) = s.post("/v1/models/busy:predict", json!({})).await;
    assert_eq!(pid_of(&after), pid_of(&before), "the same worker");

    // A caller that leaves holds its replica's slot until the worker is done with it: a fresh
    // request on `max_ongoing_requests: 1` waits in the queue (where autoscaling sees it)
    // behind one abandoned predict, not behind five.
    let s = Server::start(&config(&[python_deployment(
        "one",
        "workers.py",
        "Blocking",
        "    max_ongoing_requests: 1\n",
    )]));
    s.wait_ready(30).await;
    for _ in 0..5 {
        let r = reqwest::Client::new()
            .post(s.url("/v1/models/one:predict"))
            .timeout(Duration::from_millis(100))
            .body(r#"{"sleep": 1.5}"#)
            .send()
            .await;
        assert!(r.is_err(), "the caller left");
    }
    let t0 = Instant::now();
    let fresh = s.spawn_post("/v1/models/one:predict", r#"{"sleep": 0.05}"#);
    eventually(2, "the fresh request queued", || async {
        s.status().await["deployments"][0]["queued_requests"] == 1
    })
    .await;
    assert_eq!(fresh.await.unwrap().0, 200);
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "waited {:?} behind abandoned requests",
        t0.elapsed()
    );
}

/// Regression: one line that was not UTF-8 stopped log forwarding for good, and every later
/// `print()` in the model failed with BrokenPipeError.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_is_logged_lossily_and_printing_goes_on() {
    let s = Server::start(&config(&[python_deployment(
        "printer",
        "faults.py",
        "Printer",
        "",
    )]));
    s.wait_ready(30).await;
    for n in 0..3 {
        let (status, body) = s.post("/v1/models/printer:predict", json!({"n": n})).await;
        assert_eq!(status, 200, "{body}");
    }
    eventually(5, "the last line in the log", || async {
        s.log_text().contains("printer line 2")
    })
    .await;
    assert!(s.log_text().contains("not utf-8: \u{fffd}\u{fffd}"));
}

/// A failed `load()` answers clients in one line; the traceback stays in the log and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_answers_clients_in_one_line_without_the_traceback() {
    let s = Server::start(&config(&[python_deployment(
        "broken",
        "workers.py",
        "BadLoad",
        "",
    )]));
    eventually(20, "the load error", || async {
        reqwest::get(s.url("/-/status")).await.is_ok()
            && s.status().await["deployments"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no weights here"))
    })
    .await;
    let (status, body) = s.post("/v1/models/broken:predict", json!({})).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["error"],
        "Model with name broken is not ready. load() raised RuntimeError: no weights here"
    );
    let st = s.status().await;
    assert!(
        st["deployments"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("Traceback")
    );
}

/// Regression: a worker that exited before connecting left its socket file behind (one per
/// retry), and each server run left its socket directory in the temp dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_files_and_directories_are_removed() {
    let mut s = Server::start(&format!(
        "deployments:\n  - name: gone\n    python: missing_module:X\n    runtime_env: {{py_executable: /bin/false}}\n  - name: echo\n    python: {}:Echo\n    runtime_env: {{py_executable: {}}}\n",
        repo().join("tests/python/models/workers.py").display(),
        python().display()
    ));
    s.wait_ready_model("echo", 30).await;
    let dir_of_server = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("ferroserve-{}-", s.child.id())))
            })
    };
    let dir = dir_of_server().expect("a socket directory");
    eventually(10, "a few failed starts of 'gone'", || async {
        s.status().await["deployments"][0]["restarts"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    })
    .await;
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.len() <= 1, "socket files left behind: {left:?}");
    assert_eq!(s.terminate(), 0);
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
