//! One Python replica: a worker process, the socket to it, and the requests it holds.
//!
//! Tasks per worker: a *writer* (frames from an mpsc to the socket, so writes never
//! interleave), a *reader* (frames to the waiting callers by id), a *supervisor* (owns the child
//! process, kills it on request, reports its exit), two *log* tasks (stdout/stderr lines into
//! ferroserve's log, tagged with deployment and replica) and, with `request_timeout_s`, a
//! *watchdog* that kills a worker stuck in a request. When the worker dies, it is marked dead
//! at once (so the router sends it nothing more), every request it held fails with the reason,
//! and the controller is told through `died`.
//!
//! A request's permit (its slot of `max_ongoing_requests`) is kept in its pending entry until
//! the worker answers it: with a result, an error, or `cancelled` after the caller left. So a
//! worker never holds more requests than the router believes, and the entry never leaks.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ferroserve_runtime::protocol::v2::TensorMetadata;
use ferroserve_runtime::{
    BatchConfig, InferError, Liveness, ModelInfo, Payload, Permit, Prediction, Replica,
    ReplicaStart, RequestContext,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, BufWriter};
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::PythonSpec;
use crate::calls::{Call, Calls, Outbox};
use crate::frame::{FromWorker, ToWorker, WireInfo, read_frame, write_frame};
use crate::placement::{InputBlocks, Placement, invalid_response};
use crate::socket;

/// How long a new worker may take to connect (interpreter start-up and imports).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping worker gets to exit after its socket closes.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Lines of a worker's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 20;

/// A private (0700) directory for this process's sockets, removed when the last Python
/// backend using it is dropped (at shutdown). Sockets are unlinked as soon as their worker
/// connects, so the directory is empty by then.
#[derive(Debug)]
struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    /// The directory of this process, made on first use and shared while anyone holds it.
    fn shared() -> Result<Arc<SocketDir>, String> {
        static CURRENT: Mutex<std::sync::Weak<SocketDir>> = Mutex::new(std::sync::Weak::new());
        let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = current.upgrade() {
            return Ok(dir);
        }
        remove_stale_dirs();
        let path = std::env::temp_dir().join(format!(
            "ferroserve-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create socket directory {}: {e}", path.display()))?;
        let dir = Arc::new(SocketDir { path });
        *current = Arc::downgrade(&dir);
        Ok(dir)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes socket directories left by ferroserve processes that no longer exist (killed with
/// SIGKILL, so no destructor ran). Best effort.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ferroserve-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = entry
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == current_uid())
            .unwrap_or(false);
        if mine && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX)
}

/// Unlinks a socket file when dropped, whichever way start-up ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reply to one request.
enum Reply {
    Result(
        Option<crate::frame::WireResponse>,
        Option<serde_json::Value>,
        Bytes,
    ),
    Error(String, String),
    Health(bool),
    Reconfigured(Option<String>),
    /// A method's answer, serialised by the worker.
    MethodResult(Bytes),
    /// The worker dropped the request after its caller left.
    Cancelled,
    /// A batch's answers, one per request, and the payload their tensors lie in.
    Batch(Vec<crate::frame::WireAnswer>, Bytes),
}

struct Pending {
    tx: oneshot::Sender<Result<Reply, String>>,
    /// When the frame was handed to the writer.
    sent: Instant,
    /// An inference request's slot on this replica, given back with the worker's answer (or
    /// its death). Health checks and reconfigure hold none and do not count for the watchdog.
    permit: Option<Permit>,
    /// The request's deadline, inherited by the calls the model makes for it.
    deadline: Option<Instant>,
    /// The request's inputs in the arena, which the worker reads (and may modify) until it
    /// answers.
    _inputs: InputBlocks,
}

/// State shared by the replica and its tasks.
struct Shared {
    id: String,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    /// Marked the moment the worker is known dead, before its requests are failed.
    liveness: Arc<Liveness>,
    /// Whether the model runs requests concurrently (an `async` model); a sync one runs them
    /// one after another, in the order they were sent.
    concurrent: AtomicBool,
    /// When the worker last finished an inference request (result or error): for a sync
    /// model, the oldest pending request started then, if not later.
    last_done: Mutex<Instant>,
    /// Why the worker died, once it has.
    died_tx: watch::Sender<Option<String>>,
    /// Asks the supervisor to kill the worker.
    kill: Notify,
    /// Asks the writer to close the socket, which tells the worker to exit.
    close: Notify,
    stderr_tail: Mutex<VecDeque<String>>,
    /// Calls the model is making to other deployments.
    calls: Arc<Calls>,
    /// The latest health answer (`HEALTH_*`), for checks made while a sync model computes.
    last_health: AtomicU8,
    /// A health check sent while busy has not been answered yet.
    health_in_flight: AtomicBool,
}

/// No health answer yet.
const HEALTH_UNKNOWN: u8 = 0;
/// The model's `healthy()` said yes.
const HEALTH_OK: u8 = 1;
/// The model's `healthy()` said no (or raised).
const HEALTH_BAD: u8 = 2;

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Marks the worker dead and fails every request it held. The mark comes first: a caller
    /// registers its request and then checks the mark, so no request is left behind.
    fn die(&self, reason: String) {
        self.liveness.mark_dead();
        self.died_tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(reason.clone());
                true
            } else {
                false
            }
        });
        self.calls.cancel_all();
        let pending: Vec<Pending> = self.lock_pending().drain().map(|(_, p)| p).collect();
        for p in pending {
            drop(p.permit);
            let _ = p.tx.send(Err(reason.clone()));
        }
    }

    /// Since when the oldest inference request has been in the worker's hands (`None` when it
    /// holds none): a sync model starts a request only when the previous one is done.
    fn oldest_in_progress(&self) -> Option<Instant> {
        let oldest = self
            .lock_pending()
            .values()
            .filter(|p| p.permit.is_some())
            .map(|p| p.sent)
            .min()?;
        if self.concurrent.load(Ordering::Relaxed) {
            return Some(oldest);
        }
        let last_done = *self.last_done.lock().unwrap_or_else(|p| p.into_inner());
        Some(oldest.max(last_done))
    }
}

/// A running Python replica.
pub(crate) struct WorkerReplica {
    shared: Arc<Shared>,
    out: Outbox,
    info: ModelInfo,
    died: watch::Receiver<Option<String>>,
    exited: watch::Receiver<bool>,
    /// Keeps the socket directory while the worker lives.
    _dir: Arc<SocketDir>,
    /// Where tensors travel: inline, or through the worker's arena.
    placement: Placement,
}

/// Kills the worker when dropped, unless disarmed: a start abandoned half-way (scale-down,
/// rolling update, shutdown while loading) must not leave a worker running `load()`.
struct KillOnDrop {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.shared.kill.notify_one();
        }
    }
}

/// Starts a worker and waits until it has loaded the model.
pub(crate) async fn start(
    spec: Arc<PythonSpec>,
    start: ReplicaStart,
) -> Result<Arc<dyn Replica>, String> {
    let dir = SocketDir::shared()?;
    let safe_id: String = start
        .replica_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let socket = dir
        .path()
        .join(format!("{safe_id}-{:06x}.sock", fastrand::u32(..0xff_ffff)));
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    let socket_file = SocketFile(socket.clone());
    let mut placement = Placement::new(spec.shared_memory, &start.replica_id);

    let mut cmd = Command::new(&spec.py_executable);
    cmd.arg("-u")
        .args(["-m", "ferroserve.worker", "--socket"])
        .arg(&socket)
        .args(["--target", &spec.target, "--name", &start.deployment])
        .env("FERROSERVE_PARENT_PID", std::process::id().to_string())
        .env("FERROSERVE_REPLICA", &start.replica_id)
        .envs(&spec.env_vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(arena) = placement.worker_arg() {
        cmd.arg("--arena").arg(arena);
    }
    if let Some(uc) = &start.user_config {
        cmd.arg("--user-config").arg(uc.to_string());
    }
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", spec.py_executable.display()))?;

    let (died_tx, died) = watch::channel(None);
    let shared = Arc::new(Shared {
        id: start.replica_id.clone(),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        liveness: start.liveness(),
        concurrent: AtomicBool::new(false),
        last_done: Mutex::new(Instant::now()),
        died_tx,
        kill: Notify::new(),
        close: Notify::new(),
        stderr_tail: Mutex::new(VecDeque::new()),
        calls: Arc::default(),
        last_health: AtomicU8::new(HEALTH_UNKNOWN),
        health_in_flight: AtomicBool::new(false),
    });
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(out, start.clone(), "stdout", None));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(
            err,
            start.clone(),
            "stderr",
            Some(shared.clone()),
        ));
    }
    // Until start-up succeeds, dropping this future kills the worker.
    let mut guard = KillOnDrop {
        shared: shared.clone(),
        armed: true,
    };
    // The supervisor owns the child: it reports the exit, and kills on request.
    let (exited_tx, exited) = watch::channel(false);
    let (status_tx, status_rx) = oneshot::channel::<String>();
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                () = shared.kill.notified() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let description = match status {
                Ok(s) => describe_exit(s),
                Err(e) => format!("cannot wait for the worker: {e}"),
            };
            let _ = status_tx.send(description);
            let _ = exited_tx.send(true);
        });
    }

    // Wait for the worker to connect, or to die trying.
    let mut status_rx = status_rx;
    let stream = tokio::select! {
        accepted = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()) => match accepted {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => {
                shared.kill.notify_one();
                return Err(format!("cannot accept the worker's connection: {e}"));
            }
            Err(_) => {
                shared.kill.notify_one();
                return Err(format!("the worker did not connect within {CONNECT_TIMEOUT:?}"));
            }
        },
        status = &mut status_rx => {
            let status = status.unwrap_or_else(|_| "exited".into());
            tokio::time::sleep(Duration::from_millis(50)).await; // let the log tasks catch up
            return Err(format!("the worker {status} before connecting; its stderr:\n{}", shared.stderr_tail()));
        }
    };
    drop(socket_file);
    drop(listener);
    if let Err(e) = placement.send_fd(&stream) {
        shared.kill.notify_one();
        return Err(format!("cannot hand the worker its shared memory: {e}"));
    }
    start.loading();

    let (read_half, write_half) = match socket::split(stream) {
        Ok(halves) => halves,
        Err(e) => {
            shared.kill.notify_one();
            return Err(format!("cannot set up the worker's socket: {e}"));
        }
    };
    let mut reader = BufReader::with_capacity(1 << 16, read_half);
    // The first frame says whether load() worked.
    let (info, concurrent) = match read_frame(&mut reader).await {
        Ok(Some((header, _))) => match serde_json::from_slice::<FromWorker>(&header) {
            Ok(FromWorker::Ready {
                info,
                concurrent,
                arena,
                client_memory,
            }) => {
                if placement.worker_arg().is_some() && !arena {
                    // A worker of an older package: it ignored --arena, and the descriptor's
                    // byte sits in its stream ahead of every frame.
                    shared.kill.notify_one();
                    return Err(format!(
                        "the worker's ferroserve package ({}) does not take shared memory: install the ferroserve version of this server in that interpreter",
                        spec.py_executable.display()
                    ));
                }
                placement.set_client_memory(client_memory);
                (info, concurrent)
            }
            Ok(FromWorker::LoadFailed { error }) => {
                shared.kill.notify_one();
                return Err(load_failure(&error));
            }
            Ok(other) => {
                shared.kill.notify_one();
                return Err(format!("the worker sent {other:?} before ready"));
            }
            Err(e) => {
                shared.kill.notify_one();
                return Err(format!("the worker sent an unreadable frame: {e}"));
            }
        },
        Ok(None) | Err(_) => {
            let status = tokio::time::timeout(EXIT_GRACE, status_rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| "closed its socket".into());
            shared.kill.notify_one();
            return Err(format!(
                "the worker {status} while loading; its stderr:\n{}",
                shared.stderr_tail()
            ));
        }
    };

    shared.concurrent.store(concurrent, Ordering::Relaxed);
    if let Some(b) = &info.batch {
        // The model's predict is a `@serve.batch` handler: batches cross as lists.
        match BatchConfig::from_options(
            Some(b.max_batch_size),
            Some(b.batch_wait_timeout_s),
            None,
            None,
        ) {
            Ok(Some(config)) => start.batching().set_list(config),
            Ok(None) => {}
            Err(e) => {
                shared.kill.notify_one();
                return Err(format!("the model's @serve.batch options are invalid: {e}"));
            }
        }
    }
    let info = model_info(info, &start.replica_id);
    guard.armed = false;
    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(write_half, out_rx, shared.clone()));
    tokio::spawn(read_loop(
        reader,
        shared.clone(),
        status_rx,
        out.clone(),
        start.clone(),
    ));
    if let Some(timeout) = start.request_timeout {
        tokio::spawn(watchdog(shared.clone(), timeout));
    }
    tracing::info!(deployment = %start.deployment, replica = %start.replica_id, "python worker ready");
    Ok(Arc::new(WorkerReplica {
        shared,
        out,
        info,
        died,
        exited,
        _dir: dir,
        placement,
    }))
}

/// The error of a failed `load()`: one line for clients (`load() raised Error: message`), then
/// the traceback for the log and `ferroserve status`.
fn load_failure(traceback: &str) -> String {
    let traceback = traceback.trim_end();
    let last = traceback
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("an exception");
    format!("load() raised {}\n{traceback}", last.trim())
}

/// The model's metadata. Signatures are optional: ones the server cannot read (an unknown
/// datatype, say) are left out with a warning instead of keeping the model from starting.
fn model_info(info: WireInfo, replica: &str) -> ModelInfo {
    let signatures = |values: Vec<serde_json::Value>, what: &str| -> Vec<TensorMetadata> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match serde_json::from_value::<TensorMetadata>(v) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::warn!(%replica, "the model's {what} metadata is unreadable ({e}); serving it without");
                    return Vec::new();
                }
            }
        }
        out
    };
    ModelInfo {
        platform: if info.platform.is_empty() {
            "python".into()
        } else {
            info.platform
        },
        inputs: signatures(info.inputs, "input"),
        outputs: signatures(info.outputs, "output"),
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".to_owned(),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "exited".to_owned(),
    }
}

/// Longest line forwarded to the log; longer ones are cut (the rest is still read).
const MAX_LOG_LINE: usize = 16 * 1024;

/// Reads one line (without its newline) into `buf`, keeping at most `MAX_LOG_LINE` bytes;
/// `false` at the end of the stream.
async fn read_log_line(
    r: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.clear();
    let mut read_any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LOG_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        if done {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            return Ok(true);
        }
    }
}

/// Forwards a worker's output lines to the log; keeps stderr's tail for error messages.
/// Bytes that are not UTF-8 are forwarded lossily: the pipe is read to its end whatever the
/// model prints, so a `print()` in the model never fails.
async fn log_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    start: ReplicaStart,
    name: &'static str,
    tail: Option<Arc<Shared>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(true) = read_log_line(&mut reader, &mut buf).await {
        let line = String::from_utf8_lossy(&buf).into_owned();
        tracing::info!(target: "ferroserve::worker", deployment = %start.deployment, replica = %start.replica_id, stream = name, "{line}");
        if let Some(shared) = &tail {
            let mut t = shared.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

async fn write_loop(
    write_half: socket::WriteHalf,
    mut frames: mpsc::UnboundedReceiver<(Vec<u8>, Vec<Bytes>)>,
    shared: Arc<Shared>,
) {
    let mut w = BufWriter::with_capacity(1 << 16, write_half);
    loop {
        let frame = tokio::select! {
            f = frames.recv() => f,
            () = shared.close.notified() => None,
        };
        let Some((header, parts)) = frame else { break };
        if write_frame(&mut w, &header, &parts).await.is_err() {
            // The worker is gone: nothing more may be sent to it. The reader sees the end of
            // the stream and fails what it held.
            shared.liveness.mark_dead();
            break;
        }
    }
    // Dropping the write half tells the worker to exit.
}

/// The id and type of a header that did not parse as a message, to fail just that request.
#[derive(serde::Deserialize)]
struct HeaderId {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
}

async fn read_loop(
    mut reader: BufReader<socket::ReadHalf>,
    shared: Arc<Shared>,
    status: oneshot::Receiver<String>,
    out: Outbox,
    start: ReplicaStart,
) {
    let why = loop {
        let (header, payload) = match read_frame(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            // A frame that is not one is the worker's fault; anything else is the socket
            // going away with the process, and its exit status says more.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                break Some(format!("broke the protocol: {e}"));
            }
            Err(_) => break None,
        };
        let (id, reply) = match serde_json::from_slice::<FromWorker>(&header) {
            Ok(FromWorker::Result { id, response, body }) => {
                (id, Reply::Result(response, body, payload))
            }
            Ok(FromWorker::Error { id, kind, message }) => (id, Reply::Error(kind, message)),
            Ok(FromWorker::Health { id, ok }) => {
                shared
                    .last_health
                    .store(if ok { HEALTH_OK } else { HEALTH_BAD }, Ordering::Release);
                shared.health_in_flight.store(false, Ordering::Release);
                (id, Reply::Health(ok))
            }
            Ok(FromWorker::Reconfigured { id, error }) => (id, Reply::Reconfigured(error)),
            Ok(FromWorker::Cancelled { id }) => (id, Reply::Cancelled),
            Ok(FromWorker::MethodResult { id }) => (id, Reply::MethodResult(payload)),
            Ok(FromWorker::BatchResult { id, results }) => (id, Reply::Batch(results, payload)),
            Ok(FromWorker::BatchConfig {
                max_batch_size,
                batch_wait_timeout_s,
            }) => {
                let wait = batch_wait_timeout_s
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64);
                start.batching().adjust(max_batch_size, wait);
                continue;
            }
            Ok(FromWorker::Call {
                id,
                target,
                protocol,
                method,
                request,
                body,
                parent,
            }) => {
                let deadline =
                    parent.and_then(|p| shared.lock_pending().get(&p).and_then(|p| p.deadline));
                let call = Call {
                    id,
                    target,
                    protocol,
                    method,
                    request,
                    body,
                    deadline,
                };
                shared
                    .calls
                    .start(start.handle(), out.clone(), call, payload);
                continue;
            }
            Ok(FromWorker::CallCancel { id }) => {
                shared.calls.cancel(id);
                continue;
            }
            Ok(FromWorker::Ready { .. } | FromWorker::LoadFailed { .. }) => continue,
            // An answer the server cannot read fails that request alone; the worker is fine.
            Err(e) => match serde_json::from_slice::<HeaderId>(&header) {
                Ok(h) => (
                    h.id,
                    Reply::Error(
                        "internal".into(),
                        format!(
                            "the model's {} could not be read by the server: {e}",
                            h.kind
                        ),
                    ),
                ),
                Err(_) => break Some(format!("sent an unreadable frame: {e}")),
            },
        };
        let done = matches!(
            reply,
            Reply::Result(..) | Reply::Error(..) | Reply::MethodResult(_) | Reply::Batch(..)
        );
        let pending = shared.lock_pending().remove(&id);
        if let Some(p) = pending {
            if done && p.permit.is_some() {
                *shared.last_done.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
            // The permit goes back with the answer, even when the caller has left; before the
            // answer reaches the caller, so that its next request finds the capacity free.
            drop(p.permit);
            let _ = p.tx.send(Ok(reply));
        }
    };
    // The worker is gone (or misbehaving): nothing more may reach it.
    shared.liveness.mark_dead();
    if why.is_some() {
        shared.kill.notify_one();
    }
    let status = match tokio::time::timeout(EXIT_GRACE, status).await {
        Ok(Ok(s)) => s,
        _ => {
            shared.kill.notify_one();
            "stopped answering".to_owned()
        }
    };
    let reason = match why {
        Some(w) => format!("python worker {} {w}", shared.id),
        None => format!("python worker {} {status}", shared.id),
    };
    shared.die(reason);
}

/// Kills a worker that has worked on one request for longer than the request timeout (plus a
/// grace second): its caller has already been answered 408, and only a new worker can serve.
/// Only work in progress is timed: with a sync model, a request waiting behind others in the
/// worker starts when the one before it is done.
async fn watchdog(shared: Arc<Shared>, timeout: Duration) {
    let limit = timeout + Duration::from_secs(1);
    let period = Duration::from_millis(100)
        .min(timeout)
        .max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if shared.died_tx.borrow().is_some() {
            return;
        }
        let stuck = shared
            .oldest_in_progress()
            .is_some_and(|since| since.elapsed() > limit);
        if stuck {
            tracing::error!(replica = %shared.id, ?timeout, "python worker stuck in a request; killing it");
            shared.die(format!(
                "python worker {} was stuck in a request for over {timeout:?} and was killed",
                shared.id
            ));
            shared.kill.notify_one();
            return;
        }
    }
}

/// Runs when a caller goes away before its answer: an inference request is cancelled in the
/// worker (its pending entry and permit stay until the worker answers `cancelled` or finishes);
/// a health check or reconfigure simply forgets its entry.
struct CancelOnDrop<'a> {
    replica: &'a WorkerReplica,
    id: u64,
    is_infer: bool,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if !self.is_infer {
            self.replica.shared.lock_pending().remove(&self.id);
        } else if let Ok(h) = serde_json::to_vec(&ToWorker::Cancel { id: self.id }) {
            let _ = self.replica.out.send((h, Vec::new()));
        }
    }
}

impl WorkerReplica {
    fn crashed(&self, reason: String) -> InferError {
        InferError::Internal(format!("replica crashed: {reason}"))
    }

    /// Why the worker died, once the reader has found out (its socket closed under a request
    /// that was about to be sent).
    async fn death_reason(&self) -> String {
        let mut died = self.died.clone();
        match tokio::time::timeout(EXIT_GRACE * 2, died.wait_for(Option::is_some)).await {
            Ok(Ok(reason)) => reason.clone().unwrap_or_default(),
            _ => "its socket is closed".into(),
        }
    }

    /// Sends a message and waits for its reply. An inference request brings its permit,
    /// which stays with the request until the worker answers it.
    async fn call(
        &self,
        id: u64,
        header: Vec<u8>,
        parts: Vec<Bytes>,
        inputs: InputBlocks,
        permit: Option<Permit>,
        deadline: Option<Instant>,
    ) -> Result<Reply, InferError> {
        let (tx, rx) = oneshot::channel();
        let is_infer = permit.is_some();
        self.shared.lock_pending().insert(
            id,
            Pending {
                tx,
                sent: Instant::now(),
                permit,
                deadline,
                _inputs: inputs,
            },
        );
        // After registering: if the worker died meanwhile, `die` may have missed this request.
        if let Some(reason) = self.died.borrow().clone() {
            self.shared.lock_pending().remove(&id);
            return Err(self.crashed(reason));
        }
        if self.out.send((header, parts)).is_err() {
            self.shared.lock_pending().remove(&id);
            return Err(self.crashed(self.death_reason().await));
        }
        let mut guard = CancelOnDrop {
            replica: self,
            id,
            is_infer,
            armed: true,
        };
        let reply = rx.await;
        guard.armed = false;
        match reply {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(reason)) => Err(self.crashed(reason)),
            Err(_) => Err(self.crashed("the worker went away".into())),
        }
    }
}

/// The error a worker reported, by its kind.
fn error_of(kind: &str, message: String) -> InferError {
    match kind {
        "invalid_input" => InferError::InvalidInput(message),
        "unavailable" => InferError::Unavailable(message),
        _ => InferError::Internal(message),
    }
}

fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, InferError> {
    serde_json::to_vec(msg).map_err(|e| InferError::Internal(format!("cannot encode a frame: {e}")))
}

#[async_trait]
impl Replica for WorkerReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = ctx.deadline;
        let headers = ctx
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut blocks = InputBlocks::default();
        let (header, parts, v2) = match &payload {
            Payload::V2(req) => {
                let mut parts = Vec::with_capacity(req.inputs.len());
                let msg = ToWorker::Infer {
                    id,
                    protocol: "v2",
                    request: Some(self.placement.wire_request(req, &mut parts, &mut blocks)?),
                    body: None,
                    headers,
                };
                (encode(&msg)?, parts, true)
            }
            Payload::V1(body) => {
                let msg = ToWorker::Infer {
                    id,
                    protocol: "v1",
                    request: None,
                    body: Some(body),
                    headers,
                };
                (encode(&msg)?, Vec::new(), false)
            }
        };
        drop(payload);
        match self
            .call(id, header, parts, blocks.clone(), Some(permit), deadline)
            .await?
        {
            Reply::Result(Some(resp), _, payload) if v2 => self
                .placement
                .response_from(resp, &payload, &blocks, &self.out)
                .map(Prediction::V2),
            Reply::Result(_, Some(body), _) if !v2 => Ok(Prediction::V1(body)),
            Reply::Result(..) => Err(invalid_response(
                "the answer does not match the request's protocol",
            )),
            Reply::Error(kind, message) => Err(error_of(&kind, message)),
            Reply::Cancelled => Err(InferError::Unavailable("the request was cancelled".into())),
            Reply::Health(_)
            | Reply::Reconfigured(_)
            | Reply::MethodResult(_)
            | Reply::Batch(..) => Err(invalid_response("a reply of the wrong kind")),
        }
    }

    async fn infer_batch(
        &self,
        payloads: Vec<Payload>,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Vec<Result<Prediction, InferError>>, InferError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let headers: HashMap<&str, &str> = ctx
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let n = payloads.len();
        let v2 = matches!(payloads.first(), Some(Payload::V2(_)));
        let mut parts = Vec::new();
        let mut blocks = InputBlocks::default();
        let mut requests = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        for p in &payloads {
            match p {
                Payload::V2(req) if v2 => {
                    requests.push(self.placement.wire_request(req, &mut parts, &mut blocks)?);
                }
                Payload::V1(body) if !v2 => bodies.push(body),
                _ => {
                    return Err(InferError::Internal(
                        "a batch mixed V1 and V2 requests".into(),
                    ));
                }
            }
        }
        let msg = ToWorker::Batch {
            id,
            protocol: if v2 { "v2" } else { "v1" },
            requests: v2.then_some(requests),
            bodies: (!v2).then_some(bodies),
            headers,
        };
        let header = encode(&msg)?;
        drop(payloads);
        match self
            .call(
                id,
                header,
                parts,
                blocks.clone(),
                Some(permit),
                ctx.deadline,
            )
            .await?
        {
            Reply::Batch(answers, payload) => Ok(answers
                .into_iter()
                .map(|a| match a {
                    crate::frame::WireAnswer { error: Some(e), .. } => {
                        Err(error_of(&e.kind, e.message))
                    }
                    crate::frame::WireAnswer {
                        response: Some(r), ..
                    } if v2 => self
                        .placement
                        .response_from(r, &payload, &blocks, &self.out)
                        .map(Prediction::V2),
                    crate::frame::WireAnswer { body: Some(b), .. } if !v2 => Ok(Prediction::V1(b)),
                    _ => Err(invalid_response(
                        "an answer in the batch does not match its request's protocol",
                    )),
                })
                .collect()),
            Reply::Error(kind, message) => Err(error_of(&kind, message)),
            Reply::Cancelled => Err(InferError::Unavailable("the batch was cancelled".into())),
            _ => Err(invalid_response("a reply of the wrong kind")),
        }
    }

    async fn call_method(
        &self,
        method: &str,
        args: Bytes,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Bytes, InferError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = encode(&ToWorker::Method { id, method })?;
        match self
            .call(
                id,
                header,
                vec![args],
                InputBlocks::default(),
                Some(permit),
                ctx.deadline,
            )
            .await?
        {
            Reply::MethodResult(answer) => Ok(answer),
            Reply::Error(kind, message) => Err(error_of(&kind, message)),
            Reply::Cancelled => Err(InferError::Unavailable("the request was cancelled".into())),
            _ => Err(invalid_response("a reply of the wrong kind")),
        }
    }

    async fn check_health(&self) -> Result<(), String> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = encode(&ToWorker::Health { id }).map_err(|e| e.to_string())?;
        // A sync model answers between requests: while one computes, the worker is busy, not
        // ill (its process is alive, or `died` would have said so; a request stuck past
        // `request_timeout_s` is the watchdog's). The check is sent without waiting, and its
        // answer judges the next check made while the worker is still busy.
        if !self.shared.concurrent.load(Ordering::Relaxed)
            && self.shared.oldest_in_progress().is_some()
        {
            if !self.shared.health_in_flight.swap(true, Ordering::AcqRel)
                && self.out.send((header, Vec::new())).is_err()
            {
                return Err(self.death_reason().await);
            }
            return match self.shared.last_health.load(Ordering::Acquire) {
                HEALTH_BAD => Err("the model's healthy() returned false".into()),
                _ => Ok(()),
            };
        }
        match self
            .call(id, header, Vec::new(), InputBlocks::default(), None, None)
            .await
        {
            Ok(Reply::Health(true)) => Ok(()),
            Ok(Reply::Health(false)) => Err("the model's healthy() returned false".into()),
            Ok(_) => Err("a reply of the wrong kind".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn reconfigure(&self, user_config: serde_json::Value) -> Result<(), String> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = encode(&ToWorker::Reconfigure {
            id,
            user_config: &user_config,
        })
        .map_err(|e| e.to_string())?;
        match self
            .call(id, header, Vec::new(), InputBlocks::default(), None, None)
            .await
        {
            Ok(Reply::Reconfigured(None)) => Ok(()),
            Ok(Reply::Reconfigured(Some(e))) => Err(e),
            Ok(_) => Err("a reply of the wrong kind".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn stop(&self) {
        // Closing the socket asks the worker to exit; it gets a moment, then SIGKILL.
        self.shared.close.notify_one();
        let mut exited = self.exited.clone();
        if tokio::time::timeout(EXIT_GRACE, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            tracing::warn!(replica = %self.shared.id, "python worker did not exit; killing it");
            self.shared.kill.notify_one();
        }
    }

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.died.clone()
    }
}

impl Drop for WorkerReplica {
    fn drop(&mut self) {
        // The last user of this replica is gone: make sure its process is too (after `stop`
        // it already is).
        self.shared.kill.notify_one();
    }
}
