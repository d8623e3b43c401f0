//! Worker processes through the controller, with this test process as the server.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve_python::{PythonBackend, PythonSpec};
use ferroserve_runtime::{Controller, Deployment, RuntimeMetrics};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("FERROSERVE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

fn slow_load(pid_dir: &Path, load_s: &str) -> Deployment {
    let mut spec = PythonSpec::new(format!(
        "{}:SlowLoad",
        repo().join("tests/python/models/faults.py").display()
    ));
    spec.py_executable = python();
    spec.env_vars
        .insert("FS_TEST_PID_DIR".into(), pid_dir.display().to_string());
    spec.env_vars.insert("FS_TEST_LOAD_S".into(), load_s.into());
    Deployment::from_backend("slow", Arc::new(PythonBackend::new(spec)))
}

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

/// Regression: a replica abandoned while `load()` ran (here by a rolling update) left its
/// worker loading, two loads overlapping in memory, until the server itself exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_abandoned_while_loading_leaves_no_worker() {
    let dir = std::env::temp_dir().join(format!("ferroserve-test-slowload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (controller, _handle) =
        Controller::start(vec![slow_load(&dir, "30")], RuntimeMetrics::unregistered()).unwrap();
    let pid_files = || std::fs::read_dir(&dir).unwrap().flatten().count();
    eventually(20, "load() running", || pid_files() == 1).await;
    let first: u32 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(alive(first));
    controller.deploy(slow_load(&dir, "0")).await.unwrap();
    eventually(10, "the abandoned worker gone", || !alive(first)).await;
    controller.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
