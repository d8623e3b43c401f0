//! Python deployments calling other deployments (Python and Rust) through handles, over the
//! worker's own socket and the target's router.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn python(name: &str, class: &str, extra: &str) -> String {
    python_deployment(name, "compose.py", class, extra)
}

fn server(extra_double: &str) -> Server {
    Server::start(&format!(
        "deployments:\n  - name: identity\n    model: identity\n{}{}{}{}{}{}",
        python("double", "Double", extra_double),
        python("ingress", "Ingress", "    request_timeout_s: 5\n"),
        // `.result()` needs the sync handler on a thread of its own, as in Ray.
        python("sync-ingress", "SyncIngress", "").replace(
            "runtime_env: {",
            "runtime_env: {env_vars: {FERROSERVE_RUN_SYNC_IN_THREADPOOL: \"1\"}, ",
        ),
        python("forward", "SyncForwarder", ""),
        python("sleeper", "Sleeper", "    max_ongoing_requests: 16\n"),
        python("fan", "FanOut", "    request_timeout_s: 0.5\n"),
    ))
}

async fn sleeper_ongoing(s: &Server) -> u64 {
    let st = s.status().await;
    st["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sleeper")
        .unwrap()["ongoing_requests"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_calls_python_and_rust_with_chaining_fan_out_and_named_errors() {
    let s = server("");
    s.wait_ready(60).await;

    // V1, the second call chained on the first's DeploymentResponse.
    let (status, body) = s.post("/v1/models/ingress:predict", json!({"x": 3})).await;
    assert_eq!((status, body["x"].clone()), (200, json!(12)), "{body}");
    // From a sync handler, with .result().
    let (status, body) = s
        .post("/v1/models/sync-ingress:predict", json!({"x": 5}))
        .await;
    assert_eq!((status, body["x"].clone()), (200, json!(10)), "{body}");

    // A sync handler on the loop returning the call's response unawaited, several requests at
    // once: each gets its own answer.
    let calls: Vec<_> = (0..6)
        .map(|x| s.spawn_post("/v1/models/forward:predict", json!({"x": x}).to_string()))
        .collect();
    for (x, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!((status, body["x"].clone()), (200, json!(2 * x)), "{body}");
    }

    // V2 through the Rust identity, then the Python double: tensors as raw bytes.
    let (status, body) = s
        .post(
            "/v2/models/ingress/infer",
            json!({"id": "7", "inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2.5, -4]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "7");
    assert_eq!(
        body["outputs"][0],
        json!({"name": "x", "datatype": "FP32", "shape": [3], "data": [2.0, 5.0, -8.0]})
    );

    // Fan-out: four 0.3 s calls at once take about 0.3 s, not 1.2 s.
    let t0 = Instant::now();
    let (status, body) = s
        .post("/v1/models/fan:predict", json!({"n": 4, "sleep": 0.3}))
        .await;
    assert_eq!((status, body["answers"].clone()), (200, json!(4)), "{body}");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    // A failing middle hop is named in the error.
    let (status, body) = s
        .post("/v1/models/ingress:predict", json!({"fail": true}))
        .await;
    assert_eq!(status, 500, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(
        e.contains("deployment 'double'") && e.contains("kaput"),
        "{e}"
    );

    // A client's timeout on the outer request cancels the inner calls.
    let (status, _) = s
        .post("/v1/models/fan:predict", json!({"n": 3, "sleep": 5}))
        .await;
    assert_eq!(status, 408);
    eventually(2, "the inner calls cancelled", || async {
        sleeper_ongoing(&s).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_backpressure_reaches_the_client_as_a_503() {
    let s = server("    max_ongoing_requests: 1\n    max_queued_requests: 0\n");
    s.wait_ready(60).await;
    let busy = s.spawn_post("/v1/models/double:predict", r#"{"sleep": 1.0}"#);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = s.post("/v1/models/ingress:predict", json!({"x": 1})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("overloaded"),
        "{body}"
    );
    assert_eq!(busy.await.unwrap().0, 200);
}

fn app_graph() -> std::path::PathBuf {
    repo().join("tests/python/models/app_graph.py")
}

async fn check_app(s: &Server) {
    let (status, body) = s
        .post("/v1/models/ingress-app:predict", json!({"x": 1}))
        .await;
    assert_eq!((status, body.clone()), (200, json!({"x": 12})), "{body}");
    // The ingress is exposed, and add10 declared so; add1 is internal but in the status.
    let (status, _) = s.post("/v1/models/add1:predict", json!({"x": 1})).await;
    assert_eq!(status, 404);
    let (status, body) = s.post("/v1/models/add10:predict", json!({"x": 1})).await;
    assert_eq!((status, body), (200, json!({"x": 11})));
    let models: serde_json::Value = reqwest::get(s.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"], json!(["ingress-app", "add10"]));
    let st = s.status().await;
    let names: Vec<_> = st["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["ingress-app", "add1", "add10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_from_the_config_file_serves_its_ingress_only() {
    let s = Server::start(&format!(
        "applications:\n  - name: demo\n    import_path: {}:app\n    runtime_env: {{py_executable: {}}}\n    deployments:\n      - name: add10\n        num_replicas: 2\n",
        app_graph().display(),
        common::python().display()
    ));
    s.wait_ready(60).await;
    check_app(&s).await;
    let st = s.status().await;
    assert_eq!(st["deployments"][2]["target_replicas"], 2, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_server_start_serves_a_bound_application() {
    let port = free_port();
    let dir = TempDir::new("app");
    let log = dir.path().join("stderr.log");
    let child = std::process::Command::new(common::python())
        .arg(app_graph())
        .args(["--http_port", &port.to_string(), "--grpc_port", "0"])
        .env("FERROSERVE_BIN", env!("CARGO_BIN_EXE_ferroserve"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let s = Server {
        child,
        port,
        log,
        dir,
    };
    s.wait_ready(60).await;
    check_app(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_called_with_python_objects() {
    let s = Server::start(&format!(
        "deployments:\n  - name: identity\n    model: identity\n{}{}",
        python("counter", "Counter", ""),
        python("caller", "MethodCaller", ""),
    ));
    s.wait_ready(60).await;
    let (status, body) = s.post("/v1/models/caller:predict", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"total": "1", "type": "Fraction", "described": "now: 1"})
    );
    // The state lives in the counter's replica.
    let (_, body) = s.post("/v1/models/counter:predict", json!({})).await;
    assert_eq!(body["total"], "1");
    let (status, body) = s
        .post("/v1/models/caller:predict", json!({"missing": true}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("has no method 'no_such_method'"),
        "{body}"
    );
    let (status, body) = s
        .post("/v1/models/caller:predict", json!({"rust": true}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no method 'add'"),
        "{body}"
    );
}

/// The composition example of the README: a Python application calling the Rust iris model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composition_example_serves() {
    let example = repo().join("examples/python/composition");
    let yaml = std::fs::read_to_string(example.join("ferroserve.yaml"))
        .unwrap()
        .replace(
            "import_path: pipeline.py:app",
            &format!(
                "import_path: {}:app\n    runtime_env: {{py_executable: {}}}",
                example.join("pipeline.py").display(),
                common::python().display()
            ),
        );
    let s = Server::start(&yaml);
    s.wait_ready(60).await;
    let (status, body) = s
        .post(
            "/v1/models/flowers:predict",
            json!({"instances": [[51, 35, 14, 2], [69, 31, 54, 21]]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"predictions": ["setosa", "virginica"]}))
    );
    let (status, body) = s
        .post("/v1/models/flowers:predict", json!({"instances": [[1, 2]]}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("millimetres"),
        "{body}"
    );
    let (status, _) = s
        .post(
            "/v1/models/iris:predict",
            json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 404, "iris is internal");
}

/// A kill -9 of an inner replica under load fails at most the requests it held: the others wait
/// for, or go to, the live replica, and the outer requests fail only for those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_inner_replica_fails_at_most_what_it_held() {
    let s = server("    num_replicas: 2\n");
    s.wait_ready(60).await;
    let (_, direct) = s.post("/v1/models/double:predict", json!({"x": 1})).await;
    let victim = direct["pid"].as_u64().unwrap() as u32;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (url, stop) = (s.url("/v1/models/ingress:predict"), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = client.post(&url).body(r#"{"x": 1}"#).send().await.unwrap();
                    match r.status().as_u16() {
                        200 => ok += 1,
                        500 => failed += 1,
                        other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(victim, "KILL");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    let held = s
        .metric("ferroserve_deployment_requests_held_at_death_total{deployment=\"double\"}")
        .await;
    assert!(ok > 100, "the load ran ({ok} answered)");
    assert!(
        f64::from(failed) <= held,
        "{failed} outer requests failed, the inner replica held {held}"
    );
}
