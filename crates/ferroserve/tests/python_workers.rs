//! Python replicas as real worker processes, through the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn deployment(name: &str, class: &str, extra: &str) -> String {
    python_deployment(name, "workers.py", class, extra)
}

fn pid_of(body: &serde_json::Value) -> u64 {
    body["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replicas_run_in_parallel_processes_and_async_ones_overlap() {
    let s = Server::start(&config(&[
        deployment(
            "blocking",
            "Blocking",
            "    num_replicas: 2\n    max_ongoing_requests: 1\n",
        ),
        deployment("async", "AsyncSleep", "    max_ongoing_requests: 8\n"),
    ]));
    s.wait_ready(30).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| s.spawn_post("/v1/models/blocking:predict", r#"{"sleep": 0.3}"#))
        .collect();
    let mut pids = std::collections::HashSet::new();
    for c in calls {
        pids.insert(pid_of(&c.await.unwrap().1));
    }
    assert_eq!(pids.len(), 2, "two worker processes");
    assert!(
        t0.elapsed() < Duration::from_millis(550),
        "2 × 0.3 s on 2 replicas took {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| s.spawn_post("/v1/models/async:predict", r#"{"sleep": 0.2}"#))
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().0, 200);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "8 × 0.2 s async on 1 worker took {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_tensors_reach_numpy_and_come_back() {
    let s = Server::start(&config(&[deployment("numpy", "Numpy", "")]));
    s.wait_ready(30).await;
    let (status, body) = s
        .post("/v2/models/numpy/infer", json!({"id": "9", "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2.5, -4]}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "9");
    assert_eq!(
        body["outputs"][0],
        json!({"name": "y", "datatype": "FP32", "shape": [3], "data": [2.0, 5.0, -8.0]})
    );
    assert_eq!(body["outputs"][1]["data"], json!([-0.5]));
    let meta: serde_json::Value = reqwest::get(s.url("/v2/models/numpy"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["platform"], "python");
    assert_eq!(meta["inputs"][0]["name"], "x");
    let (status, body) = s
        .post(
            "/v2/models/numpy/infer",
            json!({"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "input 'x' is missing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_a_500_naming_it_and_the_worker_stays_up() {
    let s = Server::start(&config(&[deployment("faulty", "Faulty", "")]));
    s.wait_ready(30).await;
    let (_, ok) = s.post("/v1/models/faulty:predict", json!({})).await;
    let (status, body) = s
        .post("/v1/models/faulty:predict", json!({"fail": true}))
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"], "ValueError : kaput");
    let (status, body) = s
        .post("/v1/models/faulty:predict", json!({"invalid": true}))
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "bad input!")
    );
    let (_, again) = s.post("/v1/models/faulty:predict", json!({})).await;
    assert_eq!(pid_of(&ok), pid_of(&again), "same worker");
    assert_eq!(s.status().await["deployments"][0]["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_under_load_answers_every_request_and_restarts_it() {
    let s = Server::start(&config(&[deployment(
        "victim",
        "Blocking",
        "    num_replicas: 2\n    max_ongoing_requests: 2\n    max_queued_requests: -1\n",
    )]));
    s.wait_ready(30).await;
    let (_, first) = s.post("/v1/models/victim:predict", json!({})).await;
    let victim = pid_of(&first) as u32;
    let load: Vec<_> = (0..40)
        .map(|_| {
            let url = s.url("/v1/models/victim:predict");
            tokio::spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    reqwest::Client::new()
                        .post(url)
                        .body(r#"{"sleep": 0.05}"#)
                        .send(),
                )
                .await
                .expect("a request hung")
                .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    signal(victim, "KILL");
    let (mut ok, mut crashed) = (0, 0);
    for l in load {
        match l.await.unwrap() {
            (200, _) => ok += 1,
            (500, body) => {
                let e = body["error"].as_str().unwrap();
                assert!(e.contains("crashed") && e.contains("SIGKILL"), "{e}");
                crashed += 1;
            }
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!(ok + crashed, 40, "every request was answered");
    assert!(
        crashed <= 2,
        "only the requests the worker held failed ({crashed})"
    );
    eventually(15, "the worker replaced", || async {
        let st = s.status().await;
        let d = &st["deployments"][0];
        d["restarts"] == 1
            && d["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["state"] == "running")
                .count()
                == 2
    })
    .await;
    assert!(
        s.status().await["deployments"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("SIGKILL")
    );
    let (status, body) = s.post("/v1/models/victim:predict", json!({})).await;
    assert_eq!(status, 200);
    assert_ne!(pid_of(&body) as u32, victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_raises_shows_its_traceback_and_is_retried() {
    let flag = TempDir::new("load-flag");
    let ok_file = flag.path().join("ok");
    let s = Server::start(&format!(
        "{}    runtime_env: {{py_executable: {}, env_vars: {{FS_TEST_LOAD_OK: {}}}}}\n",
        config(&[format!(
            "  - name: badload\n    python: {}:BadLoad\n",
            repo().join("tests/python/models/workers.py").display()
        )]),
        python().display(),
        ok_file.display()
    ));
    eventually(20, "the traceback in status", || async {
        reqwest::get(s.url("/-/status")).await.is_ok()
            && s.status().await["deployments"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("RuntimeError: no weights here"))
    })
    .await;
    let st = s.status().await;
    let e = st["deployments"][0]["last_error"].as_str().unwrap();
    assert!(e.contains("Traceback") && e.contains("workers.py"), "{e}");
    assert_eq!(st["deployments"][0]["status"], "UNHEALTHY");
    let (status, body) = s.post("/v1/models/badload:predict", json!({})).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("no weights here"));
    std::fs::write(&ok_file, "").unwrap();
    s.wait_ready(30).await;
    assert!(
        s.status().await["deployments"][0]["restarts"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        s.post("/v1/models/badload:predict", json!({})).await.1,
        json!({"loaded": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stuck_past_request_timeout_is_killed_and_replaced() {
    let s = Server::start(&config(&[deployment(
        "stuck",
        "Blocking",
        "    request_timeout_s: 0.5\n",
    )]));
    s.wait_ready(30).await;
    let (_, before) = s.post("/v1/models/stuck:predict", json!({})).await;
    let t0 = Instant::now();
    let (status, _) = s
        .post("/v1/models/stuck:predict", json!({"sleep": 60}))
        .await;
    assert_eq!(status, 408);
    assert!(t0.elapsed() < Duration::from_secs(2));
    eventually(15, "a new worker", || async {
        let (status, body) = s.post("/v1/models/stuck:predict", json!({})).await;
        status == 200 && pid_of(&body) != pid_of(&before)
    })
    .await;
    assert!(!alive(pid_of(&before) as u32), "the stuck worker is gone");
    assert!(
        s.status().await["deployments"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("stuck")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_outlives_ferroserve_even_after_kill_9() {
    let pids = TempDir::new("pids");
    let mut s = Server::start(&format!(
        "{}    runtime_env: {{py_executable: {}, env_vars: {{FS_TEST_PID_DIR: {}}}}}\n    num_replicas: 3\n",
        config(&[format!(
            "  - name: pids\n    python: {}:PidFile\n",
            repo().join("tests/python/models/workers.py").display()
        )]),
        python().display(),
        pids.path().display()
    ));
    s.wait_ready(30).await;
    let read_pids = || -> Vec<u32> {
        std::fs::read_dir(pids.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect()
    };
    eventually(20, "3 workers loaded", || {
        let n = read_pids().len();
        async move { n == 3 }
    })
    .await;
    let workers = read_pids();
    assert!(workers.iter().all(|&p| alive(p)));
    signal(s.child.id(), "KILL");
    let _ = s.child.wait();
    eventually(5, "every worker gone", || {
        let workers = workers.clone();
        async move { workers.iter().all(|&p| !alive(p)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_vars_working_dir_user_config_and_logs_per_deployment() {
    let wd = TempDir::new("wd");
    let s = Server::start(&format!(
        "deployments:\n  - name: env\n    python: {file}:Environment\n    runtime_env: {{py_executable: {py}, env_vars: {{FS_TEST_VAR: hello}}, working_dir: {wd}}}\n{tunable}{chatty}",
        file = repo().join("tests/python/models/workers.py").display(),
        py = python().display(),
        wd = wd.path().display(),
        tunable = deployment("tunable", "Tunable", "    user_config: {threshold: 3}\n"),
        chatty = deployment("chatty", "Chatty", ""),
    ));
    s.wait_ready(30).await;
    let (_, body) = s.post("/v1/models/env:predict", json!({})).await;
    assert_eq!(body["var"], "hello");
    assert_eq!(
        body["cwd"],
        wd.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        s.post("/v1/models/tunable:predict", json!({})).await.1,
        json!({"config": {"threshold": 3}})
    );
    s.post("/v1/models/chatty:predict", json!({})).await;
    eventually(5, "worker output in the log", || async {
        let log = s.log_text();
        log.lines()
            .any(|l| l.contains("chatty says hello from load") && l.contains("replica=chatty#0"))
            && log.contains("chatty predicts")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_python_replicas_are_ready_quickly() {
    let t0 = Instant::now();
    let s = Server::start(&config(&[deployment(
        "fast",
        "Echo",
        "    num_replicas: 4\n",
    )]));
    s.wait_ready(30).await;
    let took = t0.elapsed();
    // The issue's target is < 1 s on a quiet machine; tests share the cores with other tests,
    // so this only guards against a regression to seconds.
    assert!(took < Duration::from_secs(5), "4 replicas took {took:?}");
}
