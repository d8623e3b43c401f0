//! The `ferroserve` binary as a user runs it.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ferroserve(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/v2/health/ready")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server on {port} never became ready");
}

fn terminate(child: &mut Child) -> i32 {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap().code().unwrap_or(-1)
}

#[tokio::test]
async fn serve_with_no_config_serves_the_example_and_identity_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = ferroserve(&["serve", "--http-port", &port.to_string()]);
    wait_ready(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let models: serde_json::Value = reqwest::get(format!("{base}/v2/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models, serde_json::json!({"models": ["iris", "identity"]}));
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/models/iris:predict"))
        .body(
            r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, serde_json::json!({"predictions": [0, 1, 2]}));
    let status = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["status", "--address", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("iris  HEALTHY  target=1"), "{text}");
    assert!(
        text.contains("iris#0") && text.contains("running"),
        "{text}"
    );
    assert_eq!(terminate(&mut child), 0);
}

#[tokio::test]
async fn serve_reads_a_config_file_with_weights_relative_to_it() {
    let dir = std::env::temp_dir().join(format!("ferroserve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/iris/weights.json"
        ),
        dir.join("w.json"),
    )
    .unwrap();
    let port = free_port();
    let config = dir.join("config.yaml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "http_port: {port}\ndeployments:\n  - name: flowers\n    model: iris\n    weights: w.json\n"
    )
    .unwrap();
    let mut child = ferroserve(&["serve", "--config", config.to_str().unwrap()]);
    wait_ready(port).await;
    let r = reqwest::get(format!("http://127.0.0.1:{port}/v2/models/flowers"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(terminate(&mut child), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("ferroserve-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "deployments:\n  - name: x\n    model: resnet\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployments[0] (x).model: unknown model 'resnet'"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
