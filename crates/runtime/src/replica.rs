//! Replicas: one running instance of a model, as the router and controller see it.
//!
//! [`Replica`] and [`ReplicaBackend`] are the abstraction that an in-process Rust model
//! ([`LocalBackend`]) and a Python worker process (the `ferroserve-python` crate) both fill. A
//! local replica runs on an OS thread of its own with a single-threaded Tokio runtime: a
//! CPU-bound `predict` blocks only its replica, N replicas use N cores, and an `async` predict
//! still overlaps requests. Requests reach the thread as commands carrying a `oneshot` for the
//! reply; each runs in its own task, which sends its reply itself, so that a panic fails only
//! that request (and marks the replica dead until the controller replaces it). A model that
//! says it never blocks ([`Model::may_block`]) skips the thread: its replicas run requests as
//! tasks on the caller's runtime, saving a thread hop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use crate::batcher::BatchSettings;
use crate::handle::{Handle, WeakHandle};
use crate::metrics::StageHistograms;
use crate::router::Permit;
use crate::{InferError, Model, ModelError, ModelInfo, Payload, Prediction, RequestContext};

/// One running, loaded instance of a model.
#[async_trait]
pub trait Replica: Send + Sync + 'static {
    /// Runs preprocess → predict → postprocess.
    ///
    /// `permit` is the request's slot of `max_ongoing_requests` on this replica: the replica
    /// keeps it until it has really finished or dropped the request, not merely until this
    /// future is dropped. Dropping the future (the caller left, or timed out) asks the replica
    /// to cancel the request; the capacity comes back with the replica's answer to that.
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError>;
    /// Calls method `method` of the model with `args` serialised by the caller (pickle, between
    /// Python deployments); the answer is serialised the same way. Holds `permit` as
    /// [`infer`](Replica::infer) does. Models without methods refuse it.
    async fn call_method(
        &self,
        method: &str,
        _args: bytes::Bytes,
        _ctx: RequestContext,
        _permit: Permit,
    ) -> Result<bytes::Bytes, InferError> {
        Err(InferError::InvalidInput(format!(
            "this deployment has no method '{method}' to call: method calls are between Python deployments"
        )))
    }

    /// Runs a batch of requests as one list (Ray's `@serve.batch`): one answer per payload, in
    /// order. Holds `permit` (the batch's joined permits) as [`infer`](Replica::infer) does.
    /// Only replicas that declare list batching ([`BatchSettings::set_list`]) receive it.
    async fn infer_batch(
        &self,
        _payloads: Vec<Payload>,
        _ctx: RequestContext,
        _permit: Permit,
    ) -> Result<Vec<Result<Prediction, InferError>>, InferError> {
        Err(InferError::Internal(
            "this replica cannot take a batch as a list".into(),
        ))
    }

    /// Checks the replica's health; `Err` says why it is unhealthy.
    async fn check_health(&self) -> Result<(), String>;
    /// Hands a new `user_config` to the model without restarting it.
    async fn reconfigure(&self, user_config: serde_json::Value) -> Result<(), String>;
    /// What the model says about itself.
    fn info(&self) -> ModelInfo;
    /// Stops the replica. Called after its requests drained (or the drain timed out).
    async fn stop(&self);
    /// `Some(reason)` once the replica has died on its own (crash, panic). A replica also marks
    /// its [`Liveness`] dead at the moment it knows, so that the router stops at once.
    fn died(&self) -> watch::Receiver<Option<String>>;
}

/// A replica's load and liveness, shared by the router (which counts the permits on it), the
/// controller and the replica itself. The replica marks itself dead the moment it learns of its
/// death (a worker's socket closing, a panic), so that no new request reaches it, without
/// waiting for the controller to publish a new replica set.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Requests holding a permit on the replica.
    ongoing: AtomicUsize,
    dead: AtomicBool,
    /// Out of rotation for now (a remote endpoint that does not answer), unlike `dead` not for
    /// good: it gets no new request until it is put back.
    ejected: AtomicBool,
    /// `ongoing` at the moment the replica was marked dead: the requests its death cost.
    held_at_death: AtomicUsize,
}

impl Liveness {
    /// Marks the replica dead; returns how many requests it held then, or `None` if it was
    /// already dead.
    pub fn mark_dead(&self) -> Option<usize> {
        if self.dead.swap(true, Ordering::AcqRel) {
            return None;
        }
        let held = self.ongoing.load(Ordering::Acquire);
        self.held_at_death.store(held, Ordering::Release);
        Some(held)
    }

    /// Whether the replica has died.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Takes the replica out of rotation (`true`) or puts it back (`false`); returns whether
    /// that changed anything. Requests it holds go on.
    pub fn set_ejected(&self, ejected: bool) -> bool {
        self.ejected.swap(ejected, Ordering::AcqRel) != ejected
    }

    /// Whether the replica is out of rotation for now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Requests holding a permit on the replica now.
    pub fn ongoing(&self) -> usize {
        self.ongoing.load(Ordering::Relaxed)
    }

    /// Requests the replica held when it was marked dead.
    pub(crate) fn held_at_death(&self) -> usize {
        self.held_at_death.load(Ordering::Acquire)
    }

    /// Takes one unit of capacity if the replica is alive, in rotation and below `max`.
    pub(crate) fn try_take(&self, max: usize) -> bool {
        !self.is_dead()
            && !self.is_ejected()
            && self
                .ongoing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok()
    }

    /// Gives one unit of capacity back.
    pub(crate) fn release(&self) {
        self.ongoing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a backend needs to start a replica.
#[derive(Clone)]
pub struct ReplicaStart {
    /// Deployment name.
    pub deployment: String,
    /// Replica id, unique within the deployment's lifetime (e.g. `iris#3`).
    pub replica_id: String,
    /// Handed to the model's `reconfigure` before it is marked running.
    pub user_config: Option<serde_json::Value>,
    /// The deployment's `request_timeout_s`: a backend may replace a replica stuck past it.
    pub request_timeout: Option<std::time::Duration>,
    pub(crate) stages: StageHistograms,
    pub(crate) on_loading: Arc<dyn Fn() + Send + Sync>,
    pub(crate) liveness: Arc<Liveness>,
    /// The server's deployments, set once they all exist.
    pub(crate) handle: Arc<std::sync::OnceLock<WeakHandle>>,
    /// The replica's batching options, which its backend may declare or change.
    pub(crate) batching: Arc<BatchSettings>,
}

impl std::fmt::Debug for ReplicaStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaStart")
            .field("deployment", &self.deployment)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

impl ReplicaStart {
    /// Tells the controller that construction is done and `load` is running.
    pub fn loading(&self) {
        (self.on_loading)();
    }

    /// The server's deployments, for calls the replica makes to other deployments
    /// (composition); `None` while the server starts or once it has stopped.
    pub fn handle(&self) -> Option<Handle> {
        self.handle.get().and_then(WeakHandle::upgrade)
    }

    /// The replica's liveness: mark it dead the moment the replica is known to have died.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// The replica's batching options: a backend whose model batches lists itself declares it
    /// here ([`BatchSettings::set_list`]) before the replica is running, and may change the
    /// size and wait later ([`BatchSettings::adjust`]).
    pub fn batching(&self) -> Arc<BatchSettings> {
        self.batching.clone()
    }
}

/// Starts replicas of one kind.
#[async_trait]
pub trait ReplicaBackend: Send + Sync + 'static {
    /// Makes and loads a replica; returns once it can serve, or why it could not start.
    async fn start(&self, start: ReplicaStart) -> Result<Arc<dyn Replica>, String>;

    /// How many replicas the backend itself has, when it decides (one per endpoint of a
    /// remote deployment, as DNS answers): the controller then aims for this count instead of
    /// `num_replicas` or autoscaling. `None` (the default): the deployment's options decide.
    fn replica_count(&self) -> Option<watch::Receiver<usize>> {
        None
    }

    /// Whether a replica may refuse a request before sending it anywhere
    /// ([`InferError::NotSent`](crate::InferError::NotSent)): the router then keeps a copy of
    /// each request to retry it once on another replica.
    fn may_refuse_unsent(&self) -> bool {
        false
    }

    /// Whether requests may carry input bytes that are a mapping of a client's shared memory
    /// (`ferroserve_shm::ClientRegion::map`): only a backend that never reads them in this
    /// process (it hands them on by reference), since a client that shrinks its object would
    /// make such a read crash the server. The default: no; inputs are read with `pread`.
    fn takes_mapped_inputs(&self) -> bool {
        false
    }
}

/// Makes a fresh, unloaded instance of a model: called once per replica the controller
/// starts, so replicas can be (re)started without the user's help.
pub type ModelFactory = Arc<dyn Fn() -> Result<Box<dyn Model>, ModelError> + Send + Sync>;

/// Replicas of an in-process Rust model, each on its own thread.
pub struct LocalBackend {
    factory: ModelFactory,
}

impl LocalBackend {
    /// A backend making models with `factory`.
    pub fn new(factory: ModelFactory) -> Self {
        LocalBackend { factory }
    }
}

enum Command {
    Infer {
        payload: Payload,
        ctx: RequestContext,
        reply: oneshot::Sender<Result<Prediction, InferError>>,
        /// Resolves when the caller goes away: the request is abandoned.
        cancel: oneshot::Receiver<()>,
        /// Held until the work has finished or been dropped.
        permit: Permit,
    },
    Health {
        reply: oneshot::Sender<bool>,
    },
    Reconfigure {
        user_config: serde_json::Value,
        reply: oneshot::Sender<Result<(), ModelError>>,
    },
}

/// A replica running on its own thread; commands go over `commands`.
struct LocalReplica {
    id: String,
    commands: mpsc::UnboundedSender<Command>,
    info: ModelInfo,
    died: watch::Receiver<Option<String>>,
}

#[async_trait]
impl ReplicaBackend for LocalBackend {
    async fn start(&self, start: ReplicaStart) -> Result<Arc<dyn Replica>, String> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let factory = self.factory.clone();
        let start_stages = start.stages.clone();
        let liveness = start.liveness.clone();
        let thread_name = format!("replica-{}", start.replica_id);
        let id = start.replica_id.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || replica_thread(factory, start, ready_tx))
            .map_err(|e| format!("cannot spawn the replica thread: {e}"))?;
        let loaded = ready_rx
            .await
            .map_err(|_| "the replica thread exited during start-up".to_owned())??;
        Ok(match loaded {
            Loaded::Threaded(commands, info, died) => Arc::new(LocalReplica {
                id,
                commands,
                info,
                died,
            }),
            Loaded::Inline(model) => {
                Arc::new(InlineReplica::new(id, model, start_stages, liveness))
            }
        })
    }
}

/// What a replica thread reports once the model is loaded.
enum Loaded {
    /// The thread serves the model's requests.
    Threaded(
        mpsc::UnboundedSender<Command>,
        ModelInfo,
        watch::Receiver<Option<String>>,
    ),
    /// The model never blocks: it is handed back to run on the caller's runtime.
    Inline(Arc<dyn Model>),
}

type Ready = Result<Loaded, String>;

/// The body of a replica thread: make and load the model, then serve commands until every
/// sender is gone.
fn replica_thread(factory: ModelFactory, start: ReplicaStart, ready: oneshot::Sender<Ready>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the replica runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let loaded = tokio::spawn({
            let start = start.clone();
            async move {
                let mut model = factory()?;
                start.loading();
                model.load().await?;
                if let Some(uc) = &start.user_config {
                    model.reconfigure(uc).await?;
                }
                Ok::<_, ModelError>(Arc::<dyn Model>::from(model))
            }
        })
        .await;
        let model = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
            Err(join) => {
                let _ = ready.send(Err(format!("panicked: {}", panic_message(join))));
                return;
            }
        };
        if !model.may_block() {
            let _ = ready.send(Ok(Loaded::Inline(model)));
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (died_tx, died_rx) = watch::channel(None);
        let died_tx = Arc::new(died_tx);
        if ready.send(Ok(Loaded::Threaded(tx, model.info(), died_rx))).is_err() {
            return;
        }
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Infer {
                    payload,
                    ctx,
                    reply,
                    cancel,
                    permit,
                } => {
                    // The task running the pipeline sends the reply itself, so an answer never
                    // waits behind other requests' work; a watcher task turns a panic into an
                    // error reply (and a dead replica) and abandons work whose caller left.
                    let reply = Arc::new(Mutex::new(Some(reply)));
                    let mut work = tokio::spawn({
                        let (model, stages, reply) = (model.clone(), start.stages.clone(), reply.clone());
                        let liveness = start.liveness.clone();
                        async move {
                            // Dropped when the work ends or is aborted: only then is the
                            // replica's capacity free again; and before the reply, so that a
                            // caller's next request finds the capacity free.
                            let result = guarded(pipeline(model, payload, ctx, stages), permit, &liveness).await;
                            if let Some(tx) = take(&reply) {
                                let _ = tx.send(result);
                            }
                        }
                    });
                    let died = died_tx.clone();
                    let id = start.replica_id.clone();
                    let liveness = start.liveness.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            outcome = &mut work => {
                                if let Err(join) = outcome {
                                    let msg = format!("replica {id} panicked in predict: {}", panic_message(join));
                                    tracing::error!(replica = %id, error = %msg, "replica panicked");
                                    liveness.mark_dead();
                                    died.send_replace(Some(msg.clone()));
                                    if let Some(tx) = take(&reply) {
                                        let _ = tx.send(Err(InferError::Internal(msg)));
                                    }
                                }
                            }
                            _ = cancel => work.abort(),
                        }
                    });
                }
                Command::Health { reply } => {
                    let model = model.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(model.healthy().await);
                    });
                }
                Command::Reconfigure { user_config, reply } => {
                    let model = model.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(model.reconfigure(&user_config).await);
                    });
                }
            }
        }
    });
}

type ReplySlot = Arc<Mutex<Option<oneshot::Sender<Result<Prediction, InferError>>>>>;

/// Takes the reply sender, whoever comes first (the work or its watcher).
fn take(slot: &ReplySlot) -> Option<oneshot::Sender<Result<Prediction, InferError>>> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Runs a request's work holding its permit. If the work panics, the replica is marked dead
/// while the permit is still held (so the panicking request counts among those its death
/// cost, and no new request reaches the replica), then the panic goes on to the task's
/// watcher.
async fn guarded<F>(work: F, permit: Permit, liveness: &Liveness) -> F::Output
where
    F: std::future::Future,
{
    use futures_util::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
    if outcome.is_err() {
        liveness.mark_dead();
    }
    drop(permit);
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// preprocess → predict → postprocess, timed per stage.
async fn pipeline(
    model: Arc<dyn Model>,
    payload: Payload,
    ctx: RequestContext,
    stages: StageHistograms,
) -> Result<Prediction, InferError> {
    let t0 = Instant::now();
    let payload = model.preprocess(payload, &ctx).await?;
    let t1 = Instant::now();
    let prediction = model.predict(payload, &ctx).await?;
    let t2 = Instant::now();
    let prediction = model.postprocess(prediction, &ctx).await?;
    let t3 = Instant::now();
    stages.preprocess.observe((t1 - t0).as_secs_f64());
    stages.predict.observe((t2 - t1).as_secs_f64());
    stages.postprocess.observe((t3 - t2).as_secs_f64());
    Ok(prediction)
}

/// A replica of a model that never blocks: each request runs in the caller's task (a panic
/// fails only that request and marks the replica dead).
struct InlineReplica {
    id: String,
    model: Arc<dyn Model>,
    stages: StageHistograms,
    died_tx: watch::Sender<Option<String>>,
    liveness: Arc<Liveness>,
}

impl InlineReplica {
    fn new(
        id: String,
        model: Arc<dyn Model>,
        stages: StageHistograms,
        liveness: Arc<Liveness>,
    ) -> Self {
        InlineReplica {
            id,
            model,
            stages,
            died_tx: watch::channel(None).0,
            liveness,
        }
    }
}

#[async_trait]
impl Replica for InlineReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        use futures_util::FutureExt;
        // Run in the caller's task, not a task of its own: a spawn per request costs a
        // scheduler round trip that, with many streams on one HTTP/2 connection, halves the
        // throughput (the connection's responses stop going out together). Dropping this
        // future (the caller left) drops the work and the permit together, as an aborted task
        // did; a panic is caught here and fails only this request.
        let work = pipeline(self.model.clone(), payload, ctx, self.stages.clone());
        let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
        let panic = match outcome {
            Ok(result) => {
                drop(permit);
                return result;
            }
            Err(panic) => panic,
        };
        // Dead before the permit frees, so no request is routed to it after.
        self.liveness.mark_dead();
        drop(permit);
        let msg = format!(
            "replica {} panicked in predict: {}",
            self.id,
            panic_payload_message(&*panic)
        );
        tracing::error!(replica = %self.id, error = %msg, "replica panicked");
        self.died_tx.send_replace(Some(msg.clone()));
        Err(InferError::Internal(msg))
    }

    async fn check_health(&self) -> Result<(), String> {
        if self.model.healthy().await {
            Ok(())
        } else {
            Err("the model's health check returned false".to_owned())
        }
    }

    async fn reconfigure(&self, user_config: serde_json::Value) -> Result<(), String> {
        self.model
            .reconfigure(&user_config)
            .await
            .map_err(|e| e.to_string())
    }

    fn info(&self) -> ModelInfo {
        self.model.info()
    }

    async fn stop(&self) {}

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.died_tx.subscribe()
    }
}

impl LocalReplica {
    fn gone(&self) -> InferError {
        InferError::Internal(format!(
            "replica {} stopped while handling the request",
            self.id
        ))
    }
}

#[async_trait]
impl Replica for LocalReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        let (reply, rx) = oneshot::channel();
        // Dropped with this future: tells the replica the caller went away.
        let (_cancel, cancel) = oneshot::channel();
        self.commands
            .send(Command::Infer {
                payload,
                ctx,
                reply,
                cancel,
                permit,
            })
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    async fn check_health(&self) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Health { reply })
            .map_err(|_| "replica thread is gone".to_owned())?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the model's health check returned false".to_owned()),
            Err(_) => Err("the health check panicked or the replica is gone".to_owned()),
        }
    }

    async fn reconfigure(&self, user_config: serde_json::Value) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Reconfigure { user_config, reply })
            .map_err(|_| "replica thread is gone".to_owned())?;
        match rx.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("reconfigure panicked or the replica is gone".to_owned()),
        }
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn stop(&self) {
        // The thread ends when its command channel closes, that is when this replica (the last
        // sender) is dropped; nothing to wait for here.
    }

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.died.clone()
    }
}

/// The message of a panicked task, if it had one.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => panic_payload_message(&*payload),
        Err(e) => e.to_string(),
    }
}

/// The message a panic carried (`panic!("...")`), or "unknown panic".
fn panic_payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
