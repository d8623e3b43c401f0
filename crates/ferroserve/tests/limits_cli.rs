//! The connection limits and the status route switch as a user sets them: config file and
//! flags of the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;

#[tokio::test]
async fn status_says_so_when_the_server_does_not_expose_its_status() {
    let mut s =
        Server::start("status_route: false\ndeployments:\n  - name: a\n    model: identity\n");
    s.wait_ready(10).await;
    let r = reqwest::get(s.url("/-/status")).await.unwrap();
    assert_eq!(r.status(), 404);
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["status", "--address", &format!("127.0.0.1:{}", s.port)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not expose /-/status"), "{err}");
    assert_eq!(s.terminate(), 0);
}

#[tokio::test]
async fn the_flags_set_the_limits() {
    let port = free_port();
    let dir = TempDir::new("limit-flags");
    let log = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "serve",
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            "0",
            "--no-status-route",
            "--max-connections",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut s = Server {
        child,
        port,
        log,
        dir,
    };
    s.wait_ready(10).await;
    // The connections of earlier clients close a moment after they are dropped.
    let without_503 = |client: reqwest::Client, path: &'static str| {
        let url = s.url(path);
        async move {
            for _ in 0..100 {
                let r = client.get(&url).send().await.unwrap();
                if r.status() != 503 {
                    return r.status().as_u16();
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            503
        }
    };
    assert_eq!(without_503(reqwest::Client::new(), "/-/status").await, 404);
    // One connection at most: a second client, while the first keeps its connection, is 503.
    let first = reqwest::Client::new();
    assert_eq!(without_503(first.clone(), "/").await, 200);
    let second = reqwest::Client::new().get(s.url("/")).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(s.terminate(), 0);
}

#[test]
fn bad_limits_are_refused_with_their_name() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["serve", "--http-port", "0", "--keep-alive-timeout-s", "0"]);
    assert!(
        err.contains("--keep-alive-timeout-s: 0 must be above 0"),
        "{err}"
    );
    let err = run(&["serve", "--http-port", "0", "--max-connections", "0"]);
    assert!(
        err.contains("--max-connections must be at least 1"),
        "{err}"
    );
    let dir = TempDir::new("bad-limits");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "body_read_timeout_s: -3\ndeployments:\n  - name: a\n    model: identity\n",
    )
    .unwrap();
    let err = run(&["serve", "--config", config.to_str().unwrap()]);
    assert!(
        err.contains("body_read_timeout_s: -3 must be above 0"),
        "{err}"
    );
}
