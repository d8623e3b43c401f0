//! One Python replica: a worker process, the socket to it, and the requests it holds.
//!
//! Tasks per worker: a *writer* (frames from an mpsc to the socket, so writes never
//! interleave), a *reader* (frames to the waiting callers by id), a *supervisor* (owns the child
//! process, kills it on request, reports its exit), two *log* tasks (stdout/stderr lines into
//! ferroserve's log, tagged with deployment and replica) and, with `request_timeout_s`, a
//! *watchdog* that kills a worker stuck in a request. When the worker dies, every request it held
//! fails at once with the reason, and the controller is told through `died`.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ferroserve_protocol::Tensor;
use ferroserve_protocol::v2::InferResponse;
use ferroserve_runtime::{
    InferError, ModelInfo, Payload, Prediction, Replica, ReplicaStart, RequestContext,
};
use tokio::io::{AsyncBufReadExt, BufReader, BufWriter};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::PythonSpec;
use crate::frame::{
    FromWorker, ToWorker, WireInfo, WireRequest, WireTensor, read_frame, write_frame,
};

/// How long a new worker may take to connect (interpreter start-up and imports).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping worker gets to exit after its socket closes.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Lines of a worker's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 20;

/// A private (0700) directory for this process's sockets.
fn socket_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "ferroserve-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
        Ok(dir)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
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
}

struct Pending {
    tx: oneshot::Sender<Result<Reply, String>>,
    started: Instant,
    /// Only inference requests count for the stuck-worker watchdog.
    is_infer: bool,
}

/// State shared by the replica and its tasks.
struct Shared {
    id: String,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    /// Why the worker died, once it has.
    died_tx: watch::Sender<Option<String>>,
    /// Asks the supervisor to kill the worker.
    kill: Notify,
    /// Asks the writer to close the socket, which tells the worker to exit.
    close: Notify,
    stderr_tail: Mutex<VecDeque<String>>,
}

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
        self.died_tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(reason.clone());
                true
            } else {
                false
            }
        });
        let pending: Vec<Pending> = self.lock_pending().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.tx.send(Err(reason.clone()));
        }
    }
}

/// A running Python replica.
pub(crate) struct WorkerReplica {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<(Vec<u8>, Vec<Bytes>)>,
    info: ModelInfo,
    died: watch::Receiver<Option<String>>,
    exited: watch::Receiver<bool>,
}

/// Starts a worker and waits until it has loaded the model.
pub(crate) async fn start(
    spec: Arc<PythonSpec>,
    start: ReplicaStart,
) -> Result<Arc<dyn Replica>, String> {
    let dir = socket_dir()?;
    let safe_id: String = start
        .replica_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let socket = dir.join(format!("{safe_id}-{:06x}.sock", fastrand::u32(..0xff_ffff)));
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;

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
        died_tx,
        kill: Notify::new(),
        close: Notify::new(),
        stderr_tail: Mutex::new(VecDeque::new()),
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
    let _ = std::fs::remove_file(&socket);
    drop(listener);
    start.loading();

    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::with_capacity(1 << 16, read_half);
    // The first frame says whether load() worked.
    let info = match read_frame(&mut reader).await {
        Ok(Some((header, _))) => match serde_json::from_slice::<FromWorker>(&header) {
            Ok(FromWorker::Ready { info }) => info,
            Ok(FromWorker::LoadFailed { error }) => {
                shared.kill.notify_one();
                return Err(format!("load() raised:\n{}", error.trim_end()));
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

    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(write_half, out_rx, shared.clone()));
    tokio::spawn(read_loop(reader, shared.clone(), status_rx));
    if let Some(timeout) = start.request_timeout {
        tokio::spawn(watchdog(shared.clone(), timeout));
    }
    tracing::info!(deployment = %start.deployment, replica = %start.replica_id, "python worker ready");
    Ok(Arc::new(WorkerReplica {
        shared,
        out,
        info: model_info(info),
        died,
        exited,
    }))
}

fn model_info(info: WireInfo) -> ModelInfo {
    ModelInfo {
        platform: if info.platform.is_empty() {
            "python".into()
        } else {
            info.platform
        },
        inputs: info.inputs,
        outputs: info.outputs,
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

/// Forwards a worker's output lines to the log; keeps stderr's tail for error messages.
async fn log_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    start: ReplicaStart,
    name: &'static str,
    tail: Option<Arc<Shared>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
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
    write_half: OwnedWriteHalf,
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
            break;
        }
    }
    // Dropping the write half tells the worker to exit.
}

async fn read_loop(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    shared: Arc<Shared>,
    status: oneshot::Receiver<String>,
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
        let msg = match serde_json::from_slice::<FromWorker>(&header) {
            Ok(m) => m,
            Err(e) => break Some(format!("sent an unreadable frame: {e}")),
        };
        let (id, reply) = match msg {
            FromWorker::Result { id, response, body } => {
                (id, Reply::Result(response, body, payload))
            }
            FromWorker::Error { id, kind, message } => (id, Reply::Error(kind, message)),
            FromWorker::Health { id, ok } => (id, Reply::Health(ok)),
            FromWorker::Reconfigured { id, error } => (id, Reply::Reconfigured(error)),
            FromWorker::Ready { .. } | FromWorker::LoadFailed { .. } => continue,
        };
        if let Some(p) = shared.lock_pending().remove(&id) {
            let _ = p.tx.send(Ok(reply));
        }
    };
    // The worker is gone (or misbehaving): make sure it is dead and say why.
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

/// Kills a worker that has held one request for longer than the request timeout (plus a
/// grace second): its caller has already been answered 408, and only a new worker can serve.
async fn watchdog(shared: Arc<Shared>, timeout: Duration) {
    let limit = timeout + Duration::from_secs(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100).min(timeout));
    loop {
        tick.tick().await;
        if shared.died_tx.borrow().is_some() {
            return;
        }
        let stuck = shared
            .lock_pending()
            .values()
            .any(|p| p.is_infer && p.started.elapsed() > limit);
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

/// Sends `cancel` for a request whose caller went away before the answer.
struct CancelOnDrop<'a> {
    replica: &'a WorkerReplica,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Ok(h) = serde_json::to_vec(&ToWorker::Cancel { id: self.id })
        {
            let _ = self.replica.out.send((h, Vec::new()));
        }
    }
}

impl WorkerReplica {
    fn crashed(&self, reason: String) -> InferError {
        InferError::Internal(format!("replica crashed: {reason}"))
    }

    /// Sends a message and waits for its reply.
    async fn call(
        &self,
        id: u64,
        header: Vec<u8>,
        parts: Vec<Bytes>,
        is_infer: bool,
    ) -> Result<Reply, InferError> {
        let (tx, rx) = oneshot::channel();
        self.shared.lock_pending().insert(
            id,
            Pending {
                tx,
                started: Instant::now(),
                is_infer,
            },
        );
        // After registering: if the worker died meanwhile, `die` may have missed this request.
        if let Some(reason) = self.died.borrow().clone() {
            self.shared.lock_pending().remove(&id);
            return Err(self.crashed(reason));
        }
        if self.out.send((header, parts)).is_err() {
            self.shared.lock_pending().remove(&id);
            return Err(self.crashed("its socket is closed".into()));
        }
        let mut guard = CancelOnDrop {
            replica: self,
            id,
            armed: is_infer,
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

fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, InferError> {
    serde_json::to_vec(msg).map_err(|e| InferError::Internal(format!("cannot encode a frame: {e}")))
}

fn invalid_response(e: impl std::fmt::Display) -> InferError {
    InferError::Internal(format!("the python worker sent an invalid response: {e}"))
}

/// Builds the response tensors from their places in the payload (no copy).
fn response_from(
    wire: crate::frame::WireResponse,
    payload: &Bytes,
) -> Result<InferResponse, InferError> {
    let mut outputs = Vec::with_capacity(wire.outputs.len());
    for t in wire.outputs {
        let start = usize::try_from(t.offset).map_err(invalid_response)?;
        let len = usize::try_from(t.length).map_err(invalid_response)?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| {
                invalid_response(format!("output '{}' lies outside the payload", t.name))
            })?;
        let mut tensor = Tensor::new(t.name, t.datatype, t.shape, payload.slice(start..end))
            .map_err(invalid_response)?;
        tensor.parameters = t.parameters;
        outputs.push(tensor);
    }
    Ok(InferResponse {
        model_name: wire.model_name,
        model_version: None,
        id: wire.id,
        parameters: wire.parameters,
        outputs,
    })
}

#[async_trait]
impl Replica for WorkerReplica {
    async fn infer(&self, payload: Payload, ctx: RequestContext) -> Result<Prediction, InferError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let headers = ctx
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (header, parts, v2) = match &payload {
            Payload::V2(req) => {
                let mut offset = 0u64;
                let mut inputs = Vec::with_capacity(req.inputs.len());
                let mut parts = Vec::with_capacity(req.inputs.len());
                for t in &req.inputs {
                    inputs.push(WireTensor {
                        name: t.name.clone(),
                        datatype: t.datatype,
                        shape: t.shape.clone(),
                        parameters: t.parameters.clone(),
                        offset,
                        length: t.data.len() as u64,
                    });
                    offset += t.data.len() as u64;
                    parts.push(t.data.clone());
                }
                let request = WireRequest {
                    id: req.id.clone(),
                    parameters: req.parameters.clone(),
                    inputs,
                    outputs: req.outputs.clone(),
                };
                let msg = ToWorker::Infer {
                    id,
                    protocol: "v2",
                    request: Some(request),
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
        match self.call(id, header, parts, true).await? {
            Reply::Result(Some(resp), _, payload) if v2 => {
                response_from(resp, &payload).map(Prediction::V2)
            }
            Reply::Result(_, Some(body), _) if !v2 => Ok(Prediction::V1(body)),
            Reply::Result(..) => Err(invalid_response(
                "the answer does not match the request's protocol",
            )),
            Reply::Error(kind, message) => Err(match kind.as_str() {
                "invalid_input" => InferError::InvalidInput(message),
                "unavailable" => InferError::Unavailable(message),
                _ => InferError::Internal(message),
            }),
            Reply::Health(_) | Reply::Reconfigured(_) => {
                Err(invalid_response("a reply of the wrong kind"))
            }
        }
    }

    async fn check_health(&self) -> Result<(), String> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = encode(&ToWorker::Health { id }).map_err(|e| e.to_string())?;
        match self.call(id, header, Vec::new(), false).await {
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
        match self.call(id, header, Vec::new(), false).await {
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
