//! The `ferroserve` binary as a user runs it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

#[tokio::test]
async fn serve_with_no_config_serves_the_example_and_identity_and_stops_on_sigterm() {
    let mut s = Server::start_default();
    s.wait_ready(10).await;
    let models: serde_json::Value = reqwest::get(s.url("/v2/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models, serde_json::json!({"models": ["iris", "identity"]}));
    let (status, r) = s
        .post(
            "/v1/models/iris:predict",
            serde_json::json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]}),
        )
        .await;
    assert_eq!(
        (status, r),
        (200, serde_json::json!({"predictions": [0, 1, 2]}))
    );
    let status = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["status", "--address", &format!("127.0.0.1:{}", s.port)])
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("iris  HEALTHY  target=1"), "{text}");
    assert!(
        text.contains("iris#0") && text.contains("running"),
        "{text}"
    );
    assert_eq!(s.terminate(), 0);
}

#[tokio::test]
async fn serve_reads_a_config_file_with_weights_relative_to_it() {
    let weights = repo().join("examples/iris/weights.json");
    let mut s = Server::start(&format!(
        "deployments:\n  - name: flowers\n    model: iris\n    weights: {}\n",
        weights.display()
    ));
    s.wait_ready(10).await;
    let r = reqwest::get(s.url("/v2/models/flowers")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.terminate(), 0);
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = TempDir::new("bad-config");
    let config = dir.path().join("config.yaml");
    let run = |yaml: &str| {
        std::fs::write(&config, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("deployments:\n  - name: x\n    model: resnet\n");
    assert!(
        err.contains("deployments[0] (x).model: unknown model 'resnet'"),
        "{err}"
    );
    let err = run("deployments:\n  - name: x\n    model: identity\n    max_queued_requests: -7\n");
    assert!(
        err.contains("deployments[0] (x).max_queued_requests"),
        "{err}"
    );
    let err = run("deployments:\n  - name: x\n    python: nowhere.py:Model\n");
    assert!(
        err.contains("deployments[0] (x).python") && err.contains("is not a file"),
        "{err}"
    );
}
