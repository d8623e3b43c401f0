//! The controller: owns each deployment's desired state and reconciles the replicas towards it.
//!
//! One task per deployment runs a control loop (every 100 ms, and on every event): it starts
//! replicas up to the target (start-up is a diff from empty), restarts failed ones with
//! exponential back-off, health-checks running ones, drains replicas it removes (scale-down,
//! rolling update, shutdown), and computes the target from load when autoscaling. It publishes
//! the running replicas to the deployment's router and a status snapshot for `ferroserve
//! status`.
//!
//! *Invariant:* the controller is the only writer of a deployment's replica set; the request
//! path only reads it and never waits on the controller.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::autoscale::{Autoscaler, restart_backoff};
use crate::batcher::{BatchMetrics, BatchSettings, BatchingReplica};
use crate::config::{ConfigError, DeploymentConfig};
use crate::deployment::Deployment;
use crate::handle::{DeploymentEntry, Handle, WeakHandle};
use crate::metrics::{DeploymentMetrics, StageHistograms};
use crate::replica::{Liveness, Replica, ReplicaBackend, ReplicaStart};
use crate::router::{Availability, Limits, ReplicaSet, ReplicaSlot, Router};
use crate::status::{
    AutoscalingStatus, BatchingStatus, DeploymentStatus, ReplicaState, ReplicaStatus,
};
use crate::{ModelInfo, RuntimeMetrics};

/// How often each control loop runs.
const CONTROL_INTERVAL: Duration = Duration::from_millis(100);
/// Consecutive failed health checks that make a replica unhealthy (as Ray Serve).
const HEALTH_CHECK_FAILURES: u32 = 3;
/// A replica running this long clears the failure count (and so the back-off).
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// A replica that dies after running this long is replaced at once, without back-off: it was
/// serving, so this is a crash (or a kill), not a model that cannot start.
const RESTART_AT_ONCE_AFTER: Duration = Duration::from_secs(1);

/// The deployment list or an update could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Two deployments have the same name.
    #[error("deployment name '{0}' is used twice")]
    DuplicateName(String),
    /// A deployment name cannot be used in URLs.
    #[error("deployment name '{0}' is invalid: use letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    /// An option is invalid.
    #[error("deployment '{deployment}': {error}")]
    Config {
        /// Deployment name.
        deployment: String,
        /// The option and why.
        error: ConfigError,
    },
    /// No deployment has this name.
    #[error("no deployment named '{0}'")]
    UnknownDeployment(String),
    /// The controller has stopped.
    #[error("the controller has stopped")]
    Stopped,
}

enum ControlMsg {
    Deploy(Box<(Deployment, DeploymentConfig)>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Starts, watches, scales, updates and stops the deployments. Cheap to clone; deployments
/// can be added and removed while the server runs ([`add`](Controller::add),
/// [`remove`](Controller::remove)): the request path sees the change through the handle's
/// table, published atomically, never through a lock.
#[derive(Debug, Clone)]
pub struct Controller {
    inner: Arc<ControllerInner>,
}

#[derive(Debug)]
struct ControllerInner {
    metrics: RuntimeMetrics,
    /// The handle's table; changed only here, under `actors`' lock.
    handle: Handle,
    /// Replicas reach the other deployments through this.
    weak: Arc<std::sync::OnceLock<WeakHandle>>,
    actors: tokio::sync::Mutex<Actors>,
}

#[derive(Debug, Default)]
struct Actors {
    running: Vec<ActorHandle>,
    /// Actors of removed deployments, still draining; awaited at shutdown.
    draining: Vec<JoinHandle<()>>,
    graceful_shutdown_timeout: Duration,
}

#[derive(Debug)]
struct ActorHandle {
    name: String,
    control: mpsc::UnboundedSender<ControlMsg>,
    task: JoinHandle<()>,
}

fn validate_name(name: &str) -> Result<(), ControllerError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ControllerError::InvalidName(name.to_owned()))
    }
}

fn validate(d: &Deployment) -> Result<DeploymentConfig, ControllerError> {
    validate_name(&d.name)?;
    d.options
        .validate()
        .map_err(|error| ControllerError::Config {
            deployment: d.name.clone(),
            error,
        })
}

impl Controller {
    /// Validates the deployments, then starts their replicas in the background. Must be called
    /// inside a Tokio runtime. Returns at once; readiness shows on the handle.
    pub fn start(
        deployments: Vec<Deployment>,
        metrics: RuntimeMetrics,
    ) -> Result<(Controller, Handle), ControllerError> {
        let mut seen = HashSet::new();
        let mut configs = Vec::with_capacity(deployments.len());
        for d in &deployments {
            configs.push(validate(d)?);
            if !seen.insert(d.name.clone()) {
                return Err(ControllerError::DuplicateName(d.name.clone()));
            }
        }
        let handle = Handle::new(Vec::new());
        let weak = Arc::new(std::sync::OnceLock::new());
        let _ = weak.set(handle.downgrade());
        let mut actors = Actors::default();
        let mut entries = Vec::new();
        for (d, config) in deployments.into_iter().zip(configs) {
            let (entry, actor) = spawn_actor(d, config, &metrics, &weak);
            entries.push(entry);
            actors.graceful_shutdown_timeout = actors.graceful_shutdown_timeout.max(actor.1);
            actors.running.push(actor.0);
        }
        handle.publish(|table| table.extend(entries));
        let controller = Controller {
            inner: Arc::new(ControllerInner {
                metrics,
                handle: handle.clone(),
                weak,
                actors: tokio::sync::Mutex::new(actors),
            }),
        };
        Ok((controller, handle))
    }

    /// Adds a deployment while the server runs: its replicas start in the background and
    /// clients reach it at once (503 until it is ready, as at start-up).
    pub async fn add(&self, deployment: Deployment) -> Result<(), ControllerError> {
        let config = validate(&deployment)?;
        let mut actors = self.inner.actors.lock().await;
        if actors.running.iter().any(|a| a.name == deployment.name) {
            return Err(ControllerError::DuplicateName(deployment.name));
        }
        let (entry, (actor, grace)) =
            spawn_actor(deployment, config, &self.inner.metrics, &self.inner.weak);
        actors.graceful_shutdown_timeout = actors.graceful_shutdown_timeout.max(grace);
        actors.running.push(actor);
        self.inner.handle.publish(|table| table.push(entry));
        Ok(())
    }

    /// Removes a deployment while the server runs: it is gone from the handle at once (new
    /// requests are not found), and its replicas drain (requests in flight finish within its
    /// `graceful_shutdown_timeout_s`) in the background.
    pub async fn remove(&self, name: &str) -> Result<(), ControllerError> {
        let mut actors = self.inner.actors.lock().await;
        let i = actors
            .running
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| ControllerError::UnknownDeployment(name.to_owned()))?;
        let actor = actors.running.remove(i);
        self.inner
            .handle
            .publish(|table| table.retain(|e| e.name() != name));
        let (done, _) = oneshot::channel();
        let _ = actor.control.send(ControlMsg::Shutdown(done));
        actors.draining.retain(|t| !t.is_finished());
        actors.draining.push(actor.task);
        Ok(())
    }

    /// Applies a new definition of an existing deployment. Options that need no restart
    /// (replica count, limits, autoscaling, `user_config`) apply in place; a new model or
    /// backend replaces replicas one at a time, keeping capacity. Returns once accepted and
    /// reflected in the deployment's status (`UPDATING` while replicas roll).
    pub async fn deploy(&self, deployment: Deployment) -> Result<(), ControllerError> {
        let config = validate(&deployment)?;
        let actors = self.inner.actors.lock().await;
        let actor = actors
            .running
            .iter()
            .find(|a| a.name == deployment.name)
            .ok_or_else(|| ControllerError::UnknownDeployment(deployment.name.clone()))?;
        let version = deployment.version.clone();
        let name = deployment.name.clone();
        let (done, accepted) = oneshot::channel();
        actor
            .control
            .send(ControlMsg::Deploy(Box::new((deployment, config)), done))
            .map_err(|_| ControllerError::Stopped)?;
        drop(actors);
        accepted.await.map_err(|_| ControllerError::Stopped)?;
        self.inner.handle.set_version(&name, version);
        Ok(())
    }

    /// The handle clients reach the deployments through.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// The longest `graceful_shutdown_timeout_s` of the deployments.
    pub async fn graceful_shutdown_timeout(&self) -> Duration {
        self.inner.actors.lock().await.graceful_shutdown_timeout
    }

    /// Stops every deployment: refuses new requests, lets running ones finish within each
    /// deployment's `graceful_shutdown_timeout_s`, then stops the replicas.
    pub async fn shutdown(&self) {
        let mut actors = self.inner.actors.lock().await;
        let mut waits = Vec::new();
        for a in &actors.running {
            let (done, wait) = oneshot::channel();
            if a.control.send(ControlMsg::Shutdown(done)).is_ok() {
                waits.push(wait);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        let running = std::mem::take(&mut actors.running);
        for t in running
            .into_iter()
            .map(|a| a.task)
            .chain(actors.draining.drain(..))
        {
            let _ = t.await;
        }
    }
}

/// The router's limits for a deployment of this backend and configuration.
fn limits(d: &Deployment, config: &DeploymentConfig) -> Limits {
    Limits {
        max_queued: config.max_queued_requests,
        request_timeout: config.request_timeout,
        retry_unsent: d.backend.may_refuse_unsent(),
        // A configured batcher stacks tensors, which reads them.
        mapped_inputs: d.backend.takes_mapped_inputs() && config.batching.is_none(),
    }
}

/// Creates a deployment's router, status and control loop; returns its handle entry, the
/// loop's handle and its graceful shutdown timeout.
fn spawn_actor(
    d: Deployment,
    config: DeploymentConfig,
    metrics: &RuntimeMetrics,
    weak: &Arc<std::sync::OnceLock<WeakHandle>>,
) -> (Arc<DeploymentEntry>, (ActorHandle, Duration)) {
    let dm = metrics.deployment(&d.name);
    let router = Router::new(d.name.clone(), limits(&d, &config), dm.clone());
    let status = Arc::new(Mutex::new(DeploymentStatus::new(&d.name)));
    let entry = Arc::new(DeploymentEntry::new(
        d.name.clone(),
        d.exposed,
        router.clone(),
        status.clone(),
        d.version.clone(),
    ));
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let grace = config.graceful_shutdown_timeout;
    let replica_count = d.backend.replica_count();
    let target = replica_count
        .as_ref()
        .map_or_else(|| config.initial_replicas(), |count| *count.borrow());
    let actor = Actor {
        replica_count,
        stages: metrics.stages(&d.name),
        name: d.name.clone(),
        backend: d.backend,
        target,
        autoscaler: config.autoscaling.clone().map(Autoscaler::new),
        config,
        version: 1,
        router,
        status,
        metrics: dm,
        replicas: Vec::new(),
        next_no: 0,
        failures: 0,
        last_start_failed: false,
        next_start: Instant::now(),
        restarts: 0,
        last_error: None,
        start_error: None,
        ever_ready: false,
        info: None,
        stopping: false,
        published: None,
        stopping_replicas: Vec::new(),
        events: ev_tx,
        handle: weak.clone(),
    };
    let task = tokio::spawn(actor.run(ctl_rx, ev_rx));
    (
        entry,
        (
            ActorHandle {
                name: d.name,
                control: ctl_tx,
                task,
            },
            grace,
        ),
    )
}

enum Event {
    Loading {
        id: String,
    },
    Started {
        id: String,
        result: Result<Arc<dyn Replica>, String>,
    },
    Died {
        id: String,
        reason: String,
    },
    Health {
        id: String,
        result: Result<(), String>,
    },
}

struct ReplicaRecord {
    id: String,
    version: u64,
    state: ReplicaState,
    reason: String,
    /// Shared with the replica (which marks itself dead) and its router slot.
    liveness: Arc<Liveness>,
    /// Shared with the replica's backend and its batcher.
    batching: Arc<BatchSettings>,
    slot: Option<Arc<ReplicaSlot>>,
    since: Instant,
    drain_deadline: Instant,
    health_failures: u32,
    next_health: Instant,
    health_pending: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl ReplicaRecord {
    fn ongoing(&self) -> usize {
        self.liveness.ongoing()
    }
    fn is_starting(&self) -> bool {
        matches!(self.state, ReplicaState::Starting | ReplicaState::Loading)
    }
    fn is_stopping(&self) -> bool {
        matches!(self.state, ReplicaState::Draining | ReplicaState::Unhealthy)
    }
}

impl Drop for ReplicaRecord {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The control loop of one deployment.
struct Actor {
    name: String,
    backend: Arc<dyn ReplicaBackend>,
    /// The backend's own replica count, when it has one (`ReplicaBackend::replica_count`).
    replica_count: Option<watch::Receiver<usize>>,
    config: DeploymentConfig,
    /// Bumped by each update that must replace replicas.
    version: u64,
    router: Router,
    status: Arc<Mutex<DeploymentStatus>>,
    metrics: DeploymentMetrics,
    stages: StageHistograms,
    replicas: Vec<ReplicaRecord>,
    next_no: u64,
    /// Replica count aimed for.
    target: usize,
    autoscaler: Option<Autoscaler>,
    /// Consecutive failures (start failures, deaths); drives the back-off.
    failures: u32,
    /// Whether the latest start attempt failed (then requests are refused, not queued).
    last_start_failed: bool,
    /// No replica is started before this (back-off).
    next_start: Instant,
    restarts: u64,
    last_error: Option<String>,
    /// The latest start failure in one line, for clients.
    start_error: Option<String>,
    ever_ready: bool,
    info: Option<ModelInfo>,
    stopping: bool,
    /// What was last published to the router: running replica ids and availability.
    published: Option<(Vec<String>, Availability)>,
    /// Replicas being stopped (awaited at shutdown).
    stopping_replicas: Vec<JoinHandle<()>>,
    events: mpsc::UnboundedSender<Event>,
    /// The server's deployments, handed to replicas for their calls.
    handle: Arc<std::sync::OnceLock<WeakHandle>>,
}

impl Actor {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<ControlMsg>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut tick = tokio::time::interval(CONTROL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // An update is acknowledged once this pass has reconciled and reported it, so the
            // status a caller reads next already shows it (e.g. UPDATING while replicas roll).
            let mut accepted = None;
            tokio::select! {
                msg = control.recv() => match msg {
                    Some(ControlMsg::Deploy(update, done)) => {
                        let (d, config) = *update;
                        self.update(d, config);
                        accepted = Some(done);
                    }
                    Some(ControlMsg::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(ev) = events.recv() => self.on_event(ev),
                _ = tick.tick() => self.on_tick(),
            }
            self.reconcile();
            self.report();
            if let Some(done) = accepted {
                let _ = done.send(());
            }
        }
    }

    fn record(&mut self, id: &str) -> Option<&mut ReplicaRecord> {
        self.replicas.iter_mut().find(|r| r.id == id)
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Loading { id } => {
                if let Some(r) = self.record(&id) {
                    r.state = ReplicaState::Loading;
                    r.reason = "load() is running".into();
                }
            }
            Event::Started {
                id,
                result: Ok(replica),
            } => {
                let max = self.config.max_ongoing_requests;
                let period = self.config.health_check_period;
                let events = self.events.clone();
                let batch_metrics = self.batch_metrics();
                let Some(r) = self.replicas.iter_mut().find(|r| r.id == id) else {
                    // Cancelled while starting: the replica is dropped (and so stopped) here.
                    return;
                };
                tracing::info!(deployment = %self.name, replica = %id, "replica running");
                self.info = Some(replica.info());
                let replica = if r.batching.current().is_some() {
                    BatchingReplica::wrap(replica, r.batching.clone(), batch_metrics)
                } else {
                    replica
                };
                let max = slot_capacity(max, &r.batching, &self.name, Some(&id));
                self.ever_ready = true;
                self.last_start_failed = false;
                let mut died = replica.died();
                let died_id = id.clone();
                r.tasks.push(tokio::spawn(async move {
                    let reason = match died.wait_for(Option::is_some).await {
                        Ok(v) => v.clone().unwrap_or_default(),
                        Err(_) => "the replica exited".to_owned(),
                    };
                    let _ = events.send(Event::Died {
                        id: died_id,
                        reason,
                    });
                }));
                r.slot = Some(Arc::new(ReplicaSlot::new(
                    id,
                    replica,
                    r.liveness.clone(),
                    max,
                )));
                r.state = ReplicaState::Running;
                r.reason = String::new();
                r.since = now;
                r.next_health = now + period;
            }
            Event::Started { id, result: Err(e) } => {
                let msg = format!("replica {id} failed to start: {e}");
                // Clients get the reason in one line; the whole error (a Python traceback,
                // say) goes to the log and to `ferroserve status`.
                self.start_error = Some(summary(&e));
                tracing::error!(deployment = %self.name, replica = %id, error = %e, "replica failed to start");
                self.replicas.retain(|r| r.id != id);
                self.last_start_failed = true;
                self.fail(msg, now);
            }
            Event::Died { id, reason } => {
                let timeout = self.config.graceful_shutdown_timeout;
                let name = self.name.clone();
                let Some(r) = self.record(&id) else { return };
                // Usually the replica marked itself already; a backend that only reports
                // through `died` is marked here.
                r.liveness.mark_dead();
                let held = r.liveness.held_at_death();
                tracing::error!(deployment = %name, replica = %id, reason = %reason, held, "replica died; replacing it");
                if r.state != ReplicaState::Running {
                    return;
                }
                let uptime = now.duration_since(r.since);
                r.state = ReplicaState::Unhealthy;
                r.reason = reason.clone();
                r.drain_deadline = now + timeout;
                self.metrics.deaths.inc();
                self.metrics.held_at_death.inc_by(held as u64);
                self.fail(reason, now);
                if uptime >= RESTART_AT_ONCE_AFTER {
                    self.next_start = now;
                }
            }
            Event::Health { id, result } => {
                let timeout = self.config.graceful_shutdown_timeout;
                let period = self.config.health_check_period;
                let Some(r) = self.record(&id) else { return };
                r.health_pending = false;
                r.next_health = now + period;
                match result {
                    Ok(()) => r.health_failures = 0,
                    Err(e) if r.state == ReplicaState::Running => {
                        r.health_failures += 1;
                        tracing::warn!(replica = %id, error = %e, failures = r.health_failures, "health check failed");
                        if r.health_failures >= HEALTH_CHECK_FAILURES {
                            let reason =
                                format!("health check failed {HEALTH_CHECK_FAILURES} times: {e}");
                            r.state = ReplicaState::Unhealthy;
                            r.reason = reason.clone();
                            r.drain_deadline = now + timeout;
                            self.fail(reason, now);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Counts a failure: a restart is due after the back-off.
    fn fail(&mut self, reason: String, now: Instant) {
        self.failures += 1;
        self.restarts += 1;
        self.metrics.restarts.inc();
        self.next_start = now + restart_backoff(self.failures);
        self.last_error = Some(reason);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let running: Vec<&ReplicaRecord> = self
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Running)
            .collect();
        if let Some(count) = &self.replica_count {
            // The backend decides (a remote deployment: one replica per endpoint).
            self.target = *count.borrow();
        } else if let Some(a) = &mut self.autoscaler {
            let load = running.iter().map(|r| r.ongoing()).sum::<usize>() + self.router.queued();
            a.record(now, load as f64);
            self.target = a.decide(now, self.target, self.router.queued());
        }
        if self.router.queued() > 0 {
            // A replica back in rotation (an endpoint answering again) frees no permit, so
            // nothing else would hand it the waiting requests.
            self.router.dispatch();
        }
        if self.failures > 0
            && running
                .iter()
                .any(|r| now.duration_since(r.since) >= STABLE_AFTER)
        {
            self.failures = 0;
        }
        let timeout = self.config.health_check_timeout;
        for r in &mut self.replicas {
            if r.state != ReplicaState::Running || r.health_pending || now < r.next_health {
                continue;
            }
            let Some(slot) = &r.slot else { continue };
            r.health_pending = true;
            let replica = slot.replica.clone();
            let events = self.events.clone();
            let id = r.id.clone();
            r.tasks.push(tokio::spawn(async move {
                let result = tokio::time::timeout(timeout, replica.check_health())
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                let _ = events.send(Event::Health { id, result });
            }));
        }
        // Keep the task lists short: drop finished helper tasks.
        for r in &mut self.replicas {
            r.tasks.retain(|t| !t.is_finished());
        }
    }

    fn start_replica(&mut self) {
        let id = format!("{}#{}", self.name, self.next_no);
        self.next_no += 1;
        let now = Instant::now();
        let liveness = Arc::new(Liveness::default());
        let batching = Arc::new(BatchSettings::new(self.config.batching.clone()));
        let events = self.events.clone();
        let loading_id = id.clone();
        let start = ReplicaStart {
            deployment: self.name.clone(),
            replica_id: id.clone(),
            user_config: self.config.user_config.clone(),
            request_timeout: self.config.request_timeout,
            stages: self.stages.clone(),
            on_loading: Arc::new(move || {
                let _ = events.send(Event::Loading {
                    id: loading_id.clone(),
                });
            }),
            liveness: liveness.clone(),
            handle: self.handle.clone(),
            batching: batching.clone(),
        };
        let backend = self.backend.clone();
        let events = self.events.clone();
        let task_id = id.clone();
        tracing::info!(deployment = %self.name, replica = %id, "starting replica");
        let task = tokio::spawn(async move {
            let result = backend.start(start).await;
            let _ = events.send(Event::Started {
                id: task_id,
                result,
            });
        });
        self.replicas.push(ReplicaRecord {
            id,
            version: self.version,
            state: ReplicaState::Starting,
            reason: "constructing the model".into(),
            liveness,
            batching,
            slot: None,
            since: now,
            drain_deadline: now,
            health_failures: 0,
            next_health: now,
            health_pending: false,
            tasks: vec![task],
        });
    }

    fn drain(&mut self, index: usize, reason: &str) {
        let timeout = self.config.graceful_shutdown_timeout;
        let r = &mut self.replicas[index];
        tracing::info!(deployment = %self.name, replica = %r.id, reason, "draining replica");
        r.state = ReplicaState::Draining;
        r.reason = reason.to_owned();
        r.drain_deadline = Instant::now() + timeout;
    }

    /// Moves the replicas towards the target.
    fn reconcile(&mut self) {
        let now = Instant::now();
        // Replicas that finished draining (or ran out of time) stop.
        self.stopping_replicas.retain(|t| !t.is_finished());
        for r in &mut self.replicas {
            if r.is_stopping() && (r.ongoing() == 0 || now >= r.drain_deadline) {
                if let Some(slot) = r.slot.take() {
                    self.stopping_replicas
                        .push(tokio::spawn(async move { slot.replica.stop().await }));
                }
                r.state = ReplicaState::Stopped;
            }
        }
        self.replicas.retain(|r| r.state != ReplicaState::Stopped);
        if self.stopping {
            self.publish();
            return;
        }

        let v = self.version;
        // Replicas of an older version that have not started yet are of no use.
        self.replicas
            .retain(|r| !(r.is_starting() && r.version != v));
        let count = |s: &Self, f: &dyn Fn(&ReplicaRecord) -> bool| {
            s.replicas.iter().filter(|r| f(r)).count()
        };
        let running_cur = count(self, &|r| {
            r.state == ReplicaState::Running && r.version == v
        });
        let mut starting = count(self, &|r| r.is_starting());
        let mut running_old = count(self, &|r| {
            r.state == ReplicaState::Running && r.version != v
        });

        // Too many on the way: cancel the newest starting replicas.
        while running_cur + starting > self.target && starting > 0 {
            if let Some(pos) = self.replicas.iter().rposition(|r| r.is_starting()) {
                self.replicas.remove(pos);
            }
            starting -= 1;
        }
        // Too few: start more, one at a time while updating or backing off.
        let missing = self.target.saturating_sub(running_cur + starting);
        let cautious = running_old > 0 || self.failures > 0;
        let allowed = if cautious {
            1usize.saturating_sub(starting)
        } else {
            missing
        };
        if now >= self.next_start {
            for _ in 0..missing.min(allowed) {
                self.start_replica();
            }
        }
        // Old replicas go once new ones carry the load.
        while running_cur + running_old > self.target && running_old > 0 {
            if let Some(i) = self
                .replicas
                .iter()
                .position(|r| r.state == ReplicaState::Running && r.version != v)
            {
                self.drain(i, "replaced by a new version");
            }
            running_old -= 1;
        }
        // Scale down: drain those out of rotation first (a remote endpoint that left DNS),
        // then the least busy.
        let mut running = running_cur;
        while running > self.target {
            let idle = self
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| r.state == ReplicaState::Running)
                .min_by_key(|(_, r)| (!r.liveness.is_ejected(), r.ongoing()))
                .map(|(i, _)| i);
            if let Some(i) = idle {
                self.drain(i, "scaling down");
            }
            running -= 1;
        }
        self.publish();
    }

    fn availability(&self, any_running: bool) -> Availability {
        if self.stopping {
            Availability::Stopped
        } else if any_running {
            Availability::Ready
        } else if self.target == 0 {
            Availability::ScaledToZero
        } else if self.last_start_failed {
            Availability::Failed(self.start_error.clone().unwrap_or_default())
        } else if !self.ever_ready {
            Availability::NotStarted
        } else {
            Availability::Recovering
        }
    }

    /// Publishes the running replicas to the router if they changed.
    fn publish(&mut self) {
        let slots: Vec<Arc<ReplicaSlot>> = self
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Running)
            .filter_map(|r| r.slot.clone())
            .collect();
        let ids: Vec<String> = slots.iter().map(|s| s.id.clone()).collect();
        let availability = self.availability(!slots.is_empty());
        if availability == Availability::ScaledToZero {
            // From now on a deployment without replicas is coming back, not starting for
            // the first time: requests wait for it.
            self.ever_ready = true;
        }
        let next = (ids, availability.clone());
        if self.published.as_ref() == Some(&next) {
            return;
        }
        self.published = Some(next);
        self.router.publish(ReplicaSet {
            replicas: slots,
            availability,
            info: self.info.clone(),
        });
    }

    fn batch_metrics(&self) -> BatchMetrics {
        BatchMetrics {
            size: self.metrics.batch_size.clone(),
            wait: self.metrics.batch_wait.clone(),
            batches: self.metrics.batches.clone(),
            counters: self.router.batch_counters(),
        }
    }

    /// Applies a new definition.
    fn update(&mut self, d: Deployment, config: DeploymentConfig) {
        // Turning batching on needs a batcher in front of each replica: new replicas. Other
        // batching changes apply in place.
        let restart = !Arc::ptr_eq(&self.backend, &d.backend)
            || (config.batching.is_some() && self.config.batching.is_none());
        for r in &self.replicas {
            r.batching.replace(config.batching.clone());
        }
        tracing::info!(deployment = %self.name, restart, "deployment updated");
        self.router.set_limits(limits(&d, &config));
        for r in &self.replicas {
            if let Some(s) = &r.slot {
                s.max_ongoing.store(
                    slot_capacity(config.max_ongoing_requests, &r.batching, &self.name, None),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        match (&mut self.autoscaler, &config.autoscaling) {
            (Some(a), Some(c)) => a.reconfigure(c.clone()),
            (None, Some(c)) => self.autoscaler = Some(Autoscaler::new(c.clone())),
            (_, None) => {
                self.autoscaler = None;
                self.target = config.num_replicas;
            }
        }
        if let Some(a) = &self.autoscaler {
            let c = a.config();
            self.target = self.target.clamp(c.min_replicas, c.max_replicas);
        }
        if restart {
            self.version += 1;
            self.replica_count = d.backend.replica_count();
            self.backend = d.backend;
        }
        if let Some(count) = &self.replica_count {
            // The backend's count, not num_replicas, even for the pass right after an update.
            self.target = *count.borrow();
        }
        if !restart
            && config.user_config != self.config.user_config
            && let Some(uc) = config.user_config.clone()
        {
            for r in &mut self.replicas {
                let Some(s) = &r.slot else { continue };
                let replica = s.replica.clone();
                let uc = uc.clone();
                let id = r.id.clone();
                r.tasks.push(tokio::spawn(async move {
                    if let Err(e) = replica.reconfigure(uc).await {
                        tracing::error!(replica = %id, error = %e, "reconfigure failed");
                    }
                }));
            }
        }
        self.config = config;
    }

    async fn shutdown(&mut self) {
        self.stopping = true;
        for i in 0..self.replicas.len() {
            if self.replicas[i].state == ReplicaState::Running {
                self.drain(i, "shutting down");
            }
        }
        self.replicas.retain(|r| !r.is_starting());
        loop {
            self.reconcile();
            self.report();
            if self.replicas.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let replicas finish stopping (a worker process exits, its model's stop() runs).
        for t in std::mem::take(&mut self.stopping_replicas) {
            let _ = t.await;
        }
        tracing::info!(deployment = %self.name, "deployment stopped");
    }

    /// Updates the status snapshot and the metrics.
    fn report(&self) {
        let running = self
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Running)
            .count();
        let updating = self.replicas.iter().any(|r| r.version != self.version);
        let (status, message) = if self.stopping {
            ("STOPPED", "shutting down".to_owned())
        } else if running == 0 && self.target == 0 {
            (
                "SCALED_TO_ZERO",
                "no replica until a request comes".to_owned(),
            )
        } else if running == 0 && self.failures > 0 {
            (
                "UNHEALTHY",
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "replicas keep failing".into()),
            )
        } else if running == 0 {
            ("STARTING", "replicas are starting".to_owned())
        } else if updating || running != self.target {
            (
                "UPDATING",
                format!("{running} of {} replicas running", self.target),
            )
        } else {
            ("HEALTHY", String::new())
        };
        let replicas: Vec<ReplicaStatus> = self
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                id: r.id.clone(),
                state: r.state,
                reason: r.reason.clone(),
                ongoing_requests: r.ongoing(),
                version: r.version,
            })
            .collect();
        let ongoing = replicas.iter().map(|r| r.ongoing_requests).sum::<usize>();
        for state in ReplicaState::ALL {
            self.metrics.set_replicas(
                state.as_str(),
                replicas.iter().filter(|r| r.state == state).count(),
            );
        }
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.ongoing.set(as_i64(ongoing));
        self.metrics.queued.set(as_i64(self.router.queued()));
        self.metrics.target.set(as_i64(self.target));
        let snapshot = DeploymentStatus {
            name: self.name.clone(),
            status: status.to_owned(),
            message,
            target_replicas: self.target,
            autoscaling: self.autoscaler.as_ref().map(|a| AutoscalingStatus {
                min_replicas: a.config().min_replicas,
                max_replicas: a.config().max_replicas,
                target_ongoing_requests: a.config().target_ongoing_requests,
                average_load: a.average_load(),
            }),
            batching: self
                .replicas
                .iter()
                .find(|r| r.state == ReplicaState::Running)
                .and_then(|r| Some((r.batching.current()?, r.batching.is_list())))
                .or_else(|| Some((Arc::new(self.config.batching.clone()?), false)))
                .map(|(c, list)| BatchingStatus {
                    kind: if list { "list" } else { "tensor" }.to_owned(),
                    max_batch_size: c.max_batch_size,
                    batch_wait_timeout_s: c.batch_wait_timeout.as_secs_f64(),
                    preferred_batch_sizes: c.preferred_batch_sizes.clone(),
                    max_concurrent_batches: c.max_concurrent_batches,
                }),
            ongoing_requests: ongoing,
            queued_requests: self.router.queued(),
            restarts: self.restarts,
            last_error: self.last_error.clone(),
            replicas,
        };
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

/// A replica's `max_ongoing_requests`: the deployment's, raised to fit full batches when the
/// model declared list batching itself (`@serve.batch`), which the deployment's options could
/// not check (they refuse a limit below `max_batch_size` set beside them).
fn slot_capacity(
    max_ongoing: usize,
    batching: &BatchSettings,
    deployment: &str,
    replica: Option<&str>,
) -> usize {
    match batching.current() {
        Some(c) if batching.is_list() && max_ongoing < c.max_batch_size => {
            if let Some(replica) = replica {
                tracing::warn!(
                    deployment,
                    replica,
                    max_ongoing_requests = max_ongoing,
                    max_batch_size = c.max_batch_size,
                    "max_ongoing_requests is below the model's @serve.batch max_batch_size: raised to {} so that batches can fill",
                    c.capacity()
                );
            }
            c.capacity()
        }
        _ => max_ongoing,
    }
}

/// The first line of an error: backends put a one-line reason first and details (a
/// traceback) after it.
fn summary(error: &str) -> String {
    error
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_owned()
}
