//! `ferroserve-bench-chaos`: a chaos benchmark. Under a closed-loop load of `--concurrency`
//! keep-alive connections, a replica dies every `--interval` seconds for `--duration` seconds,
//! and for each death the benchmark reports what it cost and how fast the deployment recovered:
//!
//! - **held**: the requests the replica held when it was known dead, from the server's counter
//!   `ferroserve_deployment_requests_held_at_death_total` (read before each death and after the
//!   last) — the most its death may fail;
//! - **failed**: requests answered 500 "crashed" / "panicked" between this death and the next;
//!   503s (overload) and any other non-200 (a bug) are counted apart;
//! - **running again**: from the death until `GET /-/status` (polled every 10 ms) shows the
//!   deployment's `--replicas` replicas `running` again, one of them new;
//! - **new replica's first 200**: from the death until the first 200 answered by the new
//!   replica (a worker pid, or the Rust model's instance number, not seen before the death).
//!
//! ```text
//! ferroserve-bench-chaos python [--replicas 2] [--duration 60] [--interval 5] [--concurrency 64]
//!     [--ferroserve PATH] [--python PATH] [--model FILE:CLASS] [--replacement-target-ms 1000]
//!     [--port P] [--json FILE] [--log FILE] [--threads 1]
//! ferroserve-bench-chaos rust-panic [--replicas 2] [--duration 60] [--interval 5] ...
//! ```
//!
//! `python` starts `ferroserve serve` with a Python deployment (`tests/python/models/workers.py:Echo`,
//! which answers with its worker's pid) and kills a worker with SIGKILL: a child of the server
//! whose command line has `ferroserve.worker` and that has answered a request. `rust-panic`
//! starts this binary's hidden `serve-panic` subcommand, which serves a Rust model in process
//! (`ferroserve::server::serve_deployments`) that panics on a request with `"panic": true`; the
//! benchmark sends one such request per interval. Each prints a markdown table on stdout, writes
//! the raw results with `--json`, and exits with status 1 if a target was missed:
//!
//! - every death: failed ≤ held, exactly one death counted, no non-200 other than 500
//!   crashed/panicked and 503;
//! - Python: a replacement runs within `--replacement-target-ms` of the kill;
//! - Rust: the marked request answers 500 "panicked" and every other request succeeds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};

/// The deployment's name in every scenario.
const DEPLOYMENT: &str = "echo";
/// The V1 route the load and the marked requests go to.
const PREDICT: &str = "/v1/models/echo:predict";
/// The body of every load request.
const BODY: &str = r#"{"instances": [1]}"#;
/// The body of a marked request (Rust scenario): the model panics on it.
const MARKED_BODY: &str = r#"{"instances": [1], "panic": true}"#;
/// How often `/-/status` is polled after a death.
const POLL: Duration = Duration::from_millis(10);
/// Most examples of unexpected answers kept.
const MAX_EXAMPLES: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "ferroserve-bench-chaos",
    about = "Kill replicas under load; report per death the requests failed against those held, \
             and the time until the replacement serves."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// kill -9 a Python worker every --interval seconds under load.
    Python {
        #[command(flatten)]
        common: Common,
        /// The ferroserve binary (default: `ferroserve` next to this binary).
        #[arg(long)]
        ferroserve: Option<PathBuf>,
        /// A Python with the ferroserve package (default: $FERROSERVE_TEST_PYTHON, else the
        /// repository's .venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
        /// The model as FILE:CLASS; it must answer V1 `{"instances": ...}` with a `pid` field
        /// (default: the repository's tests/python/models/workers.py:Echo).
        #[arg(long)]
        model: Option<String>,
        /// Target: the replacement runs within this many ms of the kill.
        #[arg(long, default_value_t = 1000.0)]
        replacement_target_ms: f64,
    },
    /// A Rust model, served in process, that panics on a marked request every --interval s.
    RustPanic {
        #[command(flatten)]
        common: Common,
    },
    /// Serves the panicking Rust model on 127.0.0.1:PORT until SIGTERM (used by rust-panic).
    #[command(hide = true)]
    ServePanic {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Ingress threads (ferroserve's default on 2 cores is 1).
        #[arg(long, default_value_t = 1)]
        io_threads: usize,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// Replicas of the deployment.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Seconds of load; deaths happen at interval, 2 × interval, ... before the end.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds between deaths (the first comes after one interval of load).
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Concurrent requests, each on its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The server's HTTP port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Write the raw results to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The server's log (default: in the temp directory, named in the report).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Load-generator threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds to wait for the server's replicas to run.
    #[arg(long, default_value_t = 60.0)]
    start_timeout: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::ServePanic {
            port,
            replicas,
            io_threads,
        } => serve_panic(port, replicas, io_threads).map(|()| true),
        Cmd::Python {
            common,
            ferroserve,
            python,
            model,
            replacement_target_ms,
        } => python_scenario(common, ferroserve, python, model, replacement_target_ms),
        Cmd::RustPanic { common } => rust_scenario(common),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

// --- the Rust model that panics ------------------------------------------------------------------

/// Instance numbers of the panicking model, one per replica started.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// V1 echo: `instances` back as `predictions`, with this instance's number as `replica`;
/// panics on a body with `"panic": true`.
#[derive(Debug)]
struct PanicEcho {
    instance: u64,
}

#[async_trait::async_trait]
impl ferroserve_runtime::Model for PanicEcho {
    async fn predict(
        &self,
        payload: ferroserve_runtime::Payload,
        _ctx: &ferroserve_runtime::RequestContext,
    ) -> Result<ferroserve_runtime::Prediction, ferroserve_runtime::ModelError> {
        let ferroserve_runtime::Payload::V1(body) = payload else {
            return Err(ferroserve_runtime::ModelError::invalid_input(
                "this model takes V1 requests",
            ));
        };
        if body.get("panic") == Some(&Value::Bool(true)) {
            panic!("asked to panic (chaos benchmark)");
        }
        Ok(ferroserve_runtime::Prediction::V1(json!({
            "predictions": body.get("instances"),
            "replica": self.instance,
        })))
    }
}

fn serve_panic(port: u16, replicas: usize, io_threads: usize) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERROSERVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = ferroserve::server::Listeners {
            http: tokio::net::TcpListener::bind(("127.0.0.1", port)).await?,
            grpc: None,
        };
        let deployment = ferroserve_runtime::Deployment::new(DEPLOYMENT, || PanicEcho {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
        })
        .num_replicas(replicas);
        let shutdown = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        ferroserve::server::serve_deployments(
            vec![deployment],
            ferroserve_server::ServerConfig::default(),
            listeners,
            shutdown,
        )
        .await
    })
}

// --- scenarios -----------------------------------------------------------------------------------

/// How a replica dies.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL to a Python worker; the replacement must run within this many ms.
    Kill9 { target_ms: f64 },
    /// A marked request makes the Rust model panic.
    Panic,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_scenario(
    common: Common,
    ferroserve: Option<PathBuf>,
    python: Option<PathBuf>,
    model: Option<String>,
    target_ms: f64,
) -> anyhow::Result<bool> {
    let ferroserve = match ferroserve {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("ferroserve"),
    };
    if !ferroserve.exists() {
        bail!(
            "no ferroserve binary at {} (cargo build --release -p ferroserve, or --ferroserve)",
            ferroserve.display()
        );
    }
    let python = python
        .or_else(|| std::env::var_os("FERROSERVE_TEST_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if !python.exists() {
        bail!(
            "no Python at {} (run scripts/python-venv.sh, or set --python / FERROSERVE_TEST_PYTHON)",
            python.display()
        );
    }
    let model = match model {
        Some(m) => m,
        None => format!(
            "{}:Echo",
            repo()
                .join("tests/python/models/workers.py")
                .canonicalize()
                .context("tests/python/models/workers.py")?
                .display()
        ),
    };
    let port = common.port.unwrap_or_else(free_port);
    let dir = std::env::temp_dir().join(format!(
        "ferroserve-bench-chaos-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "http_port: {port}\ngrpc_port: 0\ndeployments:\n  - name: {DEPLOYMENT}\n    python: {model}\n    runtime_env: {{py_executable: {}}}\n    num_replicas: {}\n",
            python.display(),
            common.replicas
        ),
    )?;
    let log = common.log.clone().unwrap_or_else(|| dir.join("server.log"));
    let mut cmd = Command::new(&ferroserve);
    cmd.args(["serve", "--config"]).arg(&config);
    let server = Server::spawn(cmd, port, log)?;
    let label = format!("python, {} replicas", common.replicas);
    let ok = run(&common, server, Fault::Kill9 { target_ms }, &label);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir(&dir);
    ok
}

fn rust_scenario(common: Common) -> anyhow::Result<bool> {
    let port = common.port.unwrap_or_else(free_port);
    let log = common.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "ferroserve-bench-chaos-{}-{port}.log",
            std::process::id()
        ))
    });
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "serve-panic",
        "--port",
        &port.to_string(),
        "--replicas",
        &common.replicas.to_string(),
    ]);
    let server = Server::spawn(cmd, port, log)?;
    let label = format!("rust-panic, {} replicas", common.replicas);
    run(&common, server, Fault::Panic, &label)
}

// --- the server process --------------------------------------------------------------------------

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn spawn(mut cmd: Command, port: u16, log: PathBuf) -> anyhow::Result<Server> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create the log {}", log.display()))?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the server")?;
        Ok(Server { child, port, log })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 15 s; the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("!!! the server did not stop within 15 s of SIGTERM; SIGKILL");
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(18480, |a| a.port())
}

/// Pids of the server's worker processes: its children whose command line has
/// `ferroserve.worker` (zombies left out).
fn worker_pids(server: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u64> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name (in parentheses, which may contain spaces).
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            state != Some("Z")
                && ppid == Some(server)
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("ferroserve.worker"))
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// --- the run -------------------------------------------------------------------------------------

/// What one answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// 500 naming a crashed worker.
    Crashed,
    /// 500 naming a panic.
    Panicked,
    /// 503: overload (queue full) or no replica.
    Overload,
    /// Anything else: a bug.
    Other,
}

/// One answered (or failed) load request.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// When it finished, since the load started.
    done: Duration,
    latency: Duration,
    outcome: Outcome,
}

/// What the load tasks share with the fault task.
struct Shared {
    start: Instant,
    end: Instant,
    /// Each replica tag (worker pid, Rust instance number) and when its first 200 arrived.
    first_seen: Mutex<HashMap<u64, Duration>>,
    /// Unexpected answers, a few.
    examples: Mutex<Vec<String>>,
}

impl Shared {
    fn example(&self, text: String) {
        let mut ex = lock(&self.examples);
        if ex.len() < MAX_EXAMPLES {
            ex.push(text);
        }
    }
}

/// The deployment's counters from `/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Counters {
    deaths: f64,
    held: f64,
}

/// One death, as measured.
#[derive(Debug, Clone, Default, Serialize)]
struct Death {
    index: usize,
    /// When the fault was injected (the kill, or the marked request sent), since the load
    /// started.
    at_s: f64,
    /// The killed pid, or the replica the panic named.
    victim: String,
    /// Replicas running just before.
    running_before: usize,
    /// Deaths the server counted (should be 1).
    deaths: f64,
    /// Requests the replica held at its death (the server's counter).
    held: f64,
    /// Load requests answered 200 in this death's window (until the next death or the end).
    ok: u64,
    /// Load requests answered 500 naming a crash.
    failed_crashed: u64,
    /// Load requests answered 500 naming a panic.
    failed_panicked: u64,
    /// 503s.
    overload: u64,
    /// Other answers (bugs).
    other: u64,
    /// Rust: the marked request's status and error.
    marked_status: Option<u16>,
    marked_error: Option<String>,
    /// Rust: ms from sending the marked request to its answer (queueing included). The death
    /// is timed from the send.
    marked_ms: Option<f64>,
    /// ms from the death until `/-/status` first showed it.
    death_seen_ms: Option<f64>,
    /// ms from the death until `/-/status` showed all replicas running, one of them new.
    running_again_ms: Option<f64>,
    /// ms from the death until the first 200 from the new replica.
    first_200_new_ms: Option<f64>,
    /// The new replica's tag (pid or instance number).
    new_replica: Option<u64>,
    /// Why this death misses a target; empty when it passes.
    problems: Vec<String>,
}

impl Death {
    /// Requests failed by the death: 500 crashed/panicked, the marked one included.
    fn failed(&self) -> u64 {
        self.failed_crashed
            + self.failed_panicked
            + u64::from(self.marked_status.is_some_and(|s| s != 200))
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    requests: u64,
    ok: u64,
    load_seconds: f64,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
    held: f64,
    overload: u64,
    other: u64,
    /// Non-200 answers before the first death (all are bugs).
    before_first_death: u64,
    slowest_running_again_ms: Option<f64>,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: String,
    replicas: usize,
    duration_s: f64,
    interval_s: f64,
    concurrency: usize,
    replacement_target_ms: Option<f64>,
    load_average_before: String,
    load_average_after: String,
    server_log: String,
    server_exit: Option<String>,
    /// `RUST_BACKTRACE` as the server got it: with it, the panic hook prints a backtrace on
    /// the replica's thread before the panic fails the request (slow the first time).
    rust_backtrace: Option<String>,
    deaths: Vec<Death>,
    summary: Summary,
    unexpected_examples: Vec<String>,
}

fn run(common: &Common, mut server: Server, fault: Fault, label: &str) -> anyhow::Result<bool> {
    if common.replicas == 0 || common.concurrency == 0 {
        bail!("--replicas and --concurrency must be at least 1");
    }
    if !(common.interval > 0.0 && common.duration > common.interval) {
        bail!("--duration must be longer than --interval, and --interval positive");
    }
    let runtime = if common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.threads)
            .enable_all()
            .build()?
    };
    let load_before = load_average();
    eprintln!(
        "==> {label}: server pid {}, log {}",
        server.pid(),
        server.log.display()
    );
    let measured = runtime.block_on(measure(common, &mut server, fault));
    let exit = server.stop();
    let (deaths, recs, shared) = match measured {
        Ok(m) => m,
        Err(e) => {
            return Err(e.context(format!(
                "{label}: the server's log ends with:\n{}",
                server.log_tail()
            )));
        }
    };
    let report = analyse(
        common,
        fault,
        label,
        deaths,
        &recs,
        &shared,
        load_before,
        &server,
        exit,
    );
    print!("{}", markdown(&report, fault));
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("==> raw results in {}", path.display());
    }
    Ok(report.summary.pass)
}

type Measured = (Vec<(Death, Counters)>, Vec<Rec>, Arc<Shared>);

/// Starts the load, injects the faults, and returns each death (with the counters read just
/// before it; the last entry's are followed by the counters read after the load) and every
/// answer.
async fn measure(common: &Common, server: &mut Server, fault: Fault) -> anyhow::Result<Measured> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(5))
        .build()?;
    wait_running(&client, server, common).await?;

    let start = Instant::now();
    let duration = Duration::from_secs_f64(common.duration);
    let shared = Arc::new(Shared {
        start,
        end: start + duration,
        first_seen: Mutex::new(HashMap::new()),
        examples: Mutex::new(Vec::new()),
    });
    let url = server.url(PREDICT);
    let loaders: Vec<_> = (0..common.concurrency)
        .map(|_| tokio::spawn(load(shared.clone(), url.clone())))
        .collect();

    let interval = Duration::from_secs_f64(common.interval);
    let mut deaths = Vec::new();
    for index in 1.. {
        let at = start + interval * index;
        if at >= shared.end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let window_end = (at + interval).min(shared.end + interval);
        let before = counters(&client, server).await?;
        let death = one_death(
            &client,
            server,
            &shared,
            fault,
            index as usize,
            common.replicas,
            window_end,
        )
        .await;
        let death = death?;
        eprintln!(
            "    death {index} at {:.1} s: victim {}, running again after {} ms",
            death.at_s,
            death.victim,
            death
                .running_again_ms
                .map_or("-".to_owned(), |v| format!("{v:.0}"))
        );
        deaths.push((death, before));
    }
    let mut recs = Vec::new();
    for l in loaders {
        recs.extend(l.await.context("a load task failed")?);
    }
    // The last death's counters: wait a little for the controller to count it.
    let mut after = counters(&client, server).await?;
    for _ in 0..20 {
        if after.deaths >= deaths.first().map_or(0.0, |(_, c)| c.deaths) + deaths.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = counters(&client, server).await?;
    }
    deaths.push((Death::default(), after));
    Ok((deaths, recs, shared))
}

/// Waits until the deployment's replicas all run.
async fn wait_running(
    client: &reqwest::Client,
    server: &mut Server,
    common: &Common,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(common.start_timeout);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!("the server exited ({status}) before its replicas ran");
        }
        if let Ok(st) = status(client, server).await
            && running(&st).len() == common.replicas
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} replicas not running within {} s",
        common.replicas,
        common.start_timeout
    )
}

async fn status(client: &reqwest::Client, server: &Server) -> anyhow::Result<Value> {
    let r = client.get(server.url("/-/status")).send().await?;
    if r.status() != 200 {
        bail!("GET /-/status answered {}", r.status());
    }
    Ok(r.json().await?)
}

/// Ids of the deployment's running replicas.
fn running(status: &Value) -> BTreeSet<String> {
    status["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["name"] == DEPLOYMENT)
        .flat_map(|d| d["replicas"].as_array().into_iter().flatten())
        .filter(|r| r["state"] == "running")
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

async fn counters(client: &reqwest::Client, server: &Server) -> anyhow::Result<Counters> {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let sample = |name: &str| {
        let prefix = format!("{name}{{deployment=\"{DEPLOYMENT}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Counters {
        deaths: sample("ferroserve_deployment_replica_deaths_total"),
        held: sample("ferroserve_deployment_requests_held_at_death_total"),
    })
}

/// One load connection: requests in a closed loop until the end.
async fn load(shared: Arc<Shared>, url: String) -> Vec<Rec> {
    let mut recs = Vec::new();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            shared.example(format!("cannot build a client: {e}"));
            return recs;
        }
    };
    while Instant::now() < shared.end {
        let sent = Instant::now();
        let answer = async {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.bytes().await?))
        }
        .await;
        let done = Instant::now();
        let outcome = match answer {
            Ok((200, body)) => {
                let tag = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["pid"].as_u64().or_else(|| v["replica"].as_u64()));
                if let Some(tag) = tag {
                    lock(&shared.first_seen)
                        .entry(tag)
                        .or_insert(done - shared.start);
                }
                Outcome::Ok
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
                let outcome = match status {
                    500 if text.contains("crashed") => Outcome::Crashed,
                    500 if text.contains("panicked") => Outcome::Panicked,
                    503 => Outcome::Overload,
                    _ => Outcome::Other,
                };
                if outcome == Outcome::Other {
                    shared.example(format!(
                        "{:.3} s: HTTP {status}: {text}",
                        (done - shared.start).as_secs_f64()
                    ));
                }
                outcome
            }
            Err(e) => {
                shared.example(format!(
                    "{:.3} s: transport error: {e:?}",
                    (done - shared.start).as_secs_f64()
                ));
                Outcome::Other
            }
        };
        recs.push(Rec {
            done: done - shared.start,
            latency: done - sent,
            outcome,
        });
    }
    recs
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Injects one fault and follows the recovery until all replicas run again (one of them new)
/// and the new one has answered, or until `window_end`.
async fn one_death(
    client: &reqwest::Client,
    server: &Server,
    shared: &Shared,
    fault: Fault,
    index: usize,
    replicas: usize,
    window_end: Instant,
) -> anyhow::Result<Death> {
    let pre_running = status(client, server)
        .await
        .map(|s| running(&s))
        .unwrap_or_default();
    let pre_tags: HashSet<u64> = lock(&shared.first_seen).keys().copied().collect();
    let mut death = Death {
        index,
        running_before: pre_running.len(),
        ..Death::default()
    };
    let died = match fault {
        Fault::Kill9 { .. } => {
            let workers = worker_pids(server.pid());
            let serving: Vec<u64> = workers
                .iter()
                .copied()
                .filter(|p| pre_tags.contains(p))
                .collect();
            let candidates = if serving.is_empty() { workers } else { serving };
            let Some(&victim) = candidates.get(index % candidates.len().max(1)) else {
                bail!("death {index}: no worker process to kill");
            };
            death.victim = victim.to_string();
            let at = Instant::now();
            let ok = tokio::task::spawn_blocking(move || {
                Command::new("kill")
                    .args(["-KILL", &victim.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .await?;
            if !ok {
                death.problems.push(format!("kill -9 {victim} failed"));
            }
            death.at_s = (at - shared.start).as_secs_f64();
            at
        }
        Fault::Panic => {
            let sent = Instant::now();
            death.at_s = (sent - shared.start).as_secs_f64();
            let answer = async {
                let r = client
                    .post(server.url(PREDICT))
                    .header("content-type", "application/json")
                    .body(MARKED_BODY)
                    .send()
                    .await?;
                let status = r.status().as_u16();
                Ok::<_, reqwest::Error>((status, r.text().await?))
            }
            .await;
            let answered = Instant::now();
            death.marked_ms = Some(ms(answered - sent));
            match answer {
                Ok((status, text)) => {
                    death.marked_status = Some(status);
                    let error = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_owned))
                        .unwrap_or(text);
                    // "replica echo#3 panicked in predict: ..."
                    death.victim = error
                        .split_whitespace()
                        .skip_while(|w| *w != "replica")
                        .nth(1)
                        .unwrap_or("?")
                        .to_owned();
                    death.marked_error = Some(error);
                }
                Err(e) => {
                    death.marked_status = Some(0);
                    death.marked_error = Some(format!("transport error: {e:?}"));
                    death.victim = "?".to_owned();
                }
            }
            // The replica died between the send and the answer; the recovery is timed from the
            // send (an overestimate by at most `marked_ms`): the replacement may already serve
            // before this task reads the answer.
            sent
        }
    };

    // Follow the recovery.
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < window_end {
        tick.tick().await;
        let now = Instant::now();
        if death.running_again_ms.is_none()
            && let Ok(st) = status(client, server).await
        {
            let ids = running(&st);
            if death.death_seen_ms.is_none() && ids != pre_running {
                death.death_seen_ms = Some(ms(now.saturating_duration_since(died)));
            }
            if ids.len() >= replicas && ids.iter().any(|i| !pre_running.contains(i)) {
                death.running_again_ms = Some(ms(now.saturating_duration_since(died)));
            }
        }
        if death.first_200_new_ms.is_none() {
            let seen = lock(&shared.first_seen);
            let since = died.saturating_duration_since(shared.start);
            if let Some((&tag, &t)) = seen
                .iter()
                .filter(|(tag, t)| !pre_tags.contains(tag) && **t >= since)
                .min_by_key(|(_, t)| **t)
            {
                death.new_replica = Some(tag);
                death.first_200_new_ms =
                    Some(ms((shared.start + t).saturating_duration_since(died)));
            }
        }
        if death.running_again_ms.is_some() && death.first_200_new_ms.is_some() {
            break;
        }
    }
    Ok(death)
}

#[allow(clippy::too_many_arguments)]
fn analyse(
    common: &Common,
    fault: Fault,
    label: &str,
    mut deaths: Vec<(Death, Counters)>,
    recs: &[Rec],
    shared: &Shared,
    load_before: String,
    server: &Server,
    exit: Option<std::process::ExitStatus>,
) -> Report {
    let after = deaths.pop().map(|(_, c)| c).unwrap_or_default();
    let starts: Vec<Duration> = deaths
        .iter()
        .map(|(d, _)| Duration::from_secs_f64(d.at_s))
        .collect();
    let mut before_first = 0;
    let mut ok_latencies: Vec<Duration> = Vec::new();
    let mut totals = [0u64; 5];
    let mut windows: Vec<[u64; 5]> = vec![[0; 5]; deaths.len()];
    for r in recs {
        let kind = match r.outcome {
            Outcome::Ok => 0,
            Outcome::Crashed => 1,
            Outcome::Panicked => 2,
            Outcome::Overload => 3,
            Outcome::Other => 4,
        };
        totals[kind] += 1;
        if r.outcome == Outcome::Ok {
            ok_latencies.push(r.latency);
        }
        match starts.partition_point(|s| *s <= r.done) {
            0 => before_first += u64::from(r.outcome != Outcome::Ok),
            w => windows[w - 1][kind] += 1,
        }
    }
    let mut out = Vec::new();
    let mut pass = before_first == 0;
    for (i, (mut d, before)) in deaths.clone().into_iter().enumerate() {
        let next = deaths.get(i + 1).map_or(after, |(_, c)| *c);
        d.deaths = next.deaths - before.deaths;
        d.held = next.held - before.held;
        let [ok, crashed, panicked, overload, other] = windows[i];
        d.ok = ok;
        d.failed_crashed = crashed;
        d.failed_panicked = panicked;
        d.overload = overload;
        d.other = other;
        if d.deaths != 1.0 {
            d.problems.push(format!("{} deaths counted", d.deaths));
        }
        if d.failed() as f64 > d.held {
            d.problems
                .push(format!("failed {} > held {}", d.failed(), d.held));
        }
        if other > 0 {
            d.problems.push(format!("{other} unexpected answers"));
        }
        match fault {
            Fault::Kill9 { target_ms } => match d.running_again_ms {
                Some(t) if t <= target_ms => {}
                Some(t) => d
                    .problems
                    .push(format!("replacement after {t:.0} ms > {target_ms:.0} ms")),
                None => d.problems.push("no replacement in the interval".to_owned()),
            },
            Fault::Panic => {
                let marked_ok = d.marked_status == Some(500)
                    && d.marked_error
                        .as_deref()
                        .is_some_and(|e| e.contains("panicked"));
                if !marked_ok {
                    d.problems.push(format!(
                        "the marked request answered {:?}: {}",
                        d.marked_status,
                        d.marked_error.as_deref().unwrap_or("")
                    ));
                }
                if crashed + panicked > 0 {
                    d.problems
                        .push(format!("{} other requests failed", crashed + panicked));
                }
                if d.running_again_ms.is_none() {
                    d.problems.push("no replacement in the interval".to_owned());
                }
            }
        }
        pass &= d.problems.is_empty();
        out.push(d);
    }
    ok_latencies.sort_unstable();
    let pct = |p: f64| {
        if ok_latencies.is_empty() {
            return 0.0;
        }
        let i = ((ok_latencies.len() as f64 * p).ceil() as usize).clamp(1, ok_latencies.len());
        ms(ok_latencies[i - 1])
    };
    let load_seconds = recs
        .iter()
        .map(|r| r.done)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-3);
    let summary = Summary {
        requests: recs.len() as u64,
        ok: totals[0],
        load_seconds,
        throughput: totals[0] as f64 / load_seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failed: out.iter().map(Death::failed).sum(),
        held: out.iter().map(|d| d.held).sum(),
        overload: totals[3],
        other: totals[4],
        before_first_death: before_first,
        slowest_running_again_ms: out
            .iter()
            .filter_map(|d| d.running_again_ms)
            .max_by(f64::total_cmp),
        pass: pass && !out.is_empty(),
    };
    Report {
        scenario: label.to_owned(),
        replicas: common.replicas,
        duration_s: common.duration,
        interval_s: common.interval,
        concurrency: common.concurrency,
        replacement_target_ms: match fault {
            Fault::Kill9 { target_ms } => Some(target_ms),
            Fault::Panic => None,
        },
        load_average_before: load_before,
        load_average_after: load_average(),
        server_log: server.log.display().to_string(),
        server_exit: exit.map(|s| s.to_string()),
        rust_backtrace: std::env::var("RUST_BACKTRACE").ok(),
        deaths: out,
        summary,
        unexpected_examples: lock(&shared.examples).clone(),
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.0}"))
}

fn markdown(r: &Report, fault: Fault) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let what = match fault {
        Fault::Kill9 { .. } => "kill -9 a worker",
        Fault::Panic => "a request that panics the model",
    };
    let _ = writeln!(
        s,
        "### {}\n\n{what} every {} s for {} s at c={}; load average {} before, {} after; server log: `{}`\n",
        r.scenario,
        r.interval_s,
        r.duration_s,
        r.concurrency,
        r.load_average_before,
        r.load_average_after,
        r.server_log
    );
    if fault == Fault::Panic {
        let _ = writeln!(
            s,
            "RUST_BACKTRACE={} (a panic prints {} backtrace before its request fails)\n",
            r.rust_backtrace.as_deref().unwrap_or("unset"),
            if r.rust_backtrace.as_deref().is_some_and(|v| v != "0") {
                "a"
            } else {
                "no"
            }
        );
    }
    let _ = writeln!(
        s,
        "| # | t (s) | victim | running before | deaths | held | failed (500) | 503 | other | 200 in window | death seen (ms) | running again (ms) | new replica's first 200 (ms) | verdict |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for d in &r.deaths {
        let failed = match fault {
            Fault::Kill9 { .. } => d.failed().to_string(),
            Fault::Panic => format!(
                "{} (marked: {} in {} ms)",
                d.failed(),
                d.marked_status.map_or("?".to_owned(), |s| s.to_string()),
                opt_ms(d.marked_ms)
            ),
        };
        let verdict = if d.problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("**FAIL**: {}", d.problems.join("; "))
        };
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {} | {} | {failed} | {} | {} | {} | {} | {} | {} | {verdict} |",
            d.index,
            d.at_s,
            d.victim,
            d.running_before,
            d.deaths,
            d.held,
            d.overload,
            d.other,
            d.ok,
            opt_ms(d.death_seen_ms),
            opt_ms(d.running_again_ms),
            opt_ms(d.first_200_new_ms),
        );
    }
    let m = &r.summary;
    let target = match r.replacement_target_ms {
        Some(t) => format!(" (target ≤ {t:.0} ms)"),
        None => String::new(),
    };
    let _ = writeln!(
        s,
        "\n**Summary**: {} requests, {} ok in {:.1} s = {:.0} req/s; ok latency p50 {:.2} ms, p99 {:.2} ms; \
         failed {} against {} held; 503: {}; other: {}; non-200 before the first death: {}; \
         slowest replacement {} ms{target}; server exit: {}. **{}**\n",
        m.requests,
        m.ok,
        m.load_seconds,
        m.throughput,
        m.p50_ms,
        m.p99_ms,
        m.failed,
        m.held,
        m.overload,
        m.other,
        m.before_first_death,
        opt_ms(m.slowest_running_again_ms),
        r.server_exit.as_deref().unwrap_or("?"),
        if m.pass { "PASS" } else { "FAIL" }
    );
    if !r.unexpected_examples.is_empty() {
        let _ = writeln!(
            s,
            "Unexpected answers (first {}):\n",
            r.unexpected_examples.len()
        );
        for e in &r.unexpected_examples {
            let _ = writeln!(s, "- `{}`", e.replace('`', "'").replace('\n', " "));
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_ids_of_the_deployment() {
        let st = json!({"deployments": [
            {"name": "other", "replicas": [{"id": "other#1", "state": "running"}]},
            {"name": "echo", "replicas": [
                {"id": "echo#1", "state": "running"},
                {"id": "echo#2", "state": "unhealthy"},
                {"id": "echo#3", "state": "starting"},
                {"id": "echo#4", "state": "running"}
            ]}
        ]});
        let ids: Vec<String> = running(&st).into_iter().collect();
        assert_eq!(ids, ["echo#1", "echo#4"]);
    }

    #[test]
    fn a_death_fails_the_marked_request_too() {
        let d = Death {
            failed_crashed: 2,
            marked_status: Some(500),
            ..Death::default()
        };
        assert_eq!(d.failed(), 3);
    }
}
