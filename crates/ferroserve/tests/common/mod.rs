//! Running the `ferroserve` binary in tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ferroserve-test-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(free_port())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Python of the test venv (with the ferroserve package installed): `FERROSERVE_TEST_PYTHON`,
/// else the repository's `.venv`, which `scripts/test.sh` creates.
pub fn python() -> PathBuf {
    let p = std::env::var_os("FERROSERVE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python at {} (run scripts/python-venv.sh, or set FERROSERVE_TEST_PYTHON)",
        p.display()
    );
    p
}

/// A config entry for a Python deployment: class `class` of `tests/python/models/<file>`, run by
/// the test venv's Python; `extra` holds more option lines (indented four spaces).
pub fn python_deployment(name: &str, file: &str, class: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    python: {}:{class}\n    runtime_env: {{py_executable: {}}}\n{extra}",
        repo().join("tests/python/models").join(file).display(),
        python().display()
    )
}

/// A config file's `deployments:` with these entries.
pub fn config(deployments: &[String]) -> String {
    format!("deployments:\n{}", deployments.concat())
}

/// The worker pid a test model put in its answer.
pub fn pid_of(body: &serde_json::Value) -> u32 {
    body["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no pid in {body}"))
}

/// A running `ferroserve serve`, killed when dropped; its stderr goes to `log`.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub dir: TempDir,
}

impl Server {
    /// Starts `ferroserve serve` on a free port with `config` (YAML without `http_port`).
    pub fn start(config: &str) -> Server {
        let dir = TempDir::new("server");
        let port = free_port();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, format!("http_port: {port}\ngrpc_port: 0\n{config}")).unwrap();
        Self::spawn(dir, port, &["serve", "--config", path.to_str().unwrap()])
    }

    /// Starts `ferroserve serve --http-port <free port>` with no config: the default example
    /// (gRPC on an ephemeral port).
    pub fn start_default() -> Server {
        let port = free_port();
        Self::spawn(
            TempDir::new("server"),
            port,
            &["serve", "--http-port", &port.to_string()],
        )
    }

    fn spawn(dir: TempDir, port: u16, args: &[&str]) -> Server {
        let log = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server {
            child,
            port,
            log,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/v2/health/ready` answers 200.
    pub async fn wait_ready(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(self.url("/v2/health/ready")).await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server never became ready; its log:\n{}", self.log_text());
    }

    /// Waits until `/v2/models/{model}/ready` answers 200.
    pub async fn wait_ready_model(&self, model: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(self.url(&format!("/v2/models/{model}/ready"))).await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{model} never became ready; the log:\n{}", self.log_text());
    }

    /// The value of one sample of `/metrics`, e.g. `name{deployment="echo"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in /metrics"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `/-/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(self.url("/-/status"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs a JSON body; returns status and JSON answer.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POSTs a raw body in a task of its own (so that several run at once, or one runs while
    /// the test goes on); the task answers status and JSON answer, and fails if the request
    /// takes over 30 s.
    pub fn spawn_post(
        &self,
        path: &str,
        body: impl Into<String>,
    ) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
        let (url, body) = (self.url(path), body.into());
        tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                reqwest::Client::new().post(url).body(body).send(),
            )
            .await
            .expect("a request hung")
            .unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(serde_json::Value::Null))
        })
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> i32 {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal (`TERM`, `KILL`, ...) to a process.
pub fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2).is_none_or(|state| state != "Z"))
        .unwrap_or(false)
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
