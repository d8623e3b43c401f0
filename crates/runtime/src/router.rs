//! The router of one deployment: picks a replica for each request by the power of two choices
//! on in-flight counts, never above a replica's `max_ongoing_requests`; otherwise the request
//! waits in a bounded FIFO queue, and beyond `max_queued_requests` it is refused at once.
//!
//! The replica set is published by the controller (an [`ArcSwap`] read per request, so the
//! request path never waits on the controller). A replica marked dead (its [`Liveness`]) gets
//! no new request from any path, from the moment it is marked, before the controller publishes
//! a set without it. A request holds a [`Permit`] on its replica until the replica has really
//! finished or dropped it (the replica owns the permit while it works, see [`Replica::infer`]);
//! releasing it hands the freed capacity to the oldest waiter. A waiter whose caller went away
//! (client disconnect, timeout) leaves the queue when its future is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::metrics::DeploymentMetrics;
use crate::replica::{Liveness, Replica};
use crate::stats::{BatchCounters, ModelStatistics, StatsRecorder};
use crate::{InferError, ModelInfo, Payload, Prediction, RequestContext};

/// A replica as the router sees it: the replica, its in-flight count and liveness.
pub(crate) struct ReplicaSlot {
    pub(crate) id: String,
    pub(crate) replica: Arc<dyn Replica>,
    /// Permits held on this replica, and whether it has died.
    pub(crate) liveness: Arc<Liveness>,
    /// Its `max_ongoing_requests` (updatable without restart).
    pub(crate) max_ongoing: AtomicUsize,
}

impl ReplicaSlot {
    pub(crate) fn new(
        id: String,
        replica: Arc<dyn Replica>,
        liveness: Arc<Liveness>,
        max_ongoing: usize,
    ) -> Self {
        ReplicaSlot {
            id,
            replica,
            liveness,
            max_ongoing: AtomicUsize::new(max_ongoing),
        }
    }

    /// Takes one unit of capacity if the replica is alive and has some.
    fn try_take(&self) -> bool {
        self.liveness
            .try_take(self.max_ongoing.load(Ordering::Relaxed))
    }

    pub(crate) fn ongoing(&self) -> usize {
        self.liveness.ongoing()
    }
}

/// Whether a deployment with no running replica should queue requests or refuse them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Availability {
    /// First start-up: not ready yet (503, as KServe answers).
    NotStarted,
    /// Has running replicas.
    Ready,
    /// Replacing a replica that died; requests wait.
    Recovering,
    /// Scaled to zero; a request waits while one starts.
    ScaledToZero,
    /// Replicas cannot start: requests are refused with the reason.
    Failed(String),
    /// Shutting down.
    Stopped,
}

/// What the controller publishes to the router.
pub(crate) struct ReplicaSet {
    pub(crate) replicas: Vec<Arc<ReplicaSlot>>,
    pub(crate) availability: Availability,
    /// The model's metadata, from the latest replica that started.
    pub(crate) info: Option<ModelInfo>,
}

/// Per-request limits, updatable without restart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_queued: Option<usize>,
    pub(crate) request_timeout: Option<Duration>,
    /// Replicas may refuse a request before sending it ([`InferError::NotSent`]): keep a copy
    /// and retry it once on another replica.
    pub(crate) retry_unsent: bool,
    /// Requests may carry mapped client memory: the backend takes it by reference and no
    /// batcher stacks (reads) it ([`ReplicaBackend::takes_mapped_inputs`]).
    ///
    /// [`ReplicaBackend::takes_mapped_inputs`]: crate::ReplicaBackend::takes_mapped_inputs
    pub(crate) mapped_inputs: bool,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Result<Permit, InferError>>,
}

pub(crate) struct RouterInner {
    name: String,
    set: ArcSwap<ReplicaSet>,
    limits: ArcSwap<Limits>,
    queue: Mutex<VecDeque<Waiter>>,
    /// Length of `queue`, readable without the lock.
    queued: AtomicUsize,
    next_waiter: AtomicU64,
    metrics: DeploymentMetrics,
    pub(crate) stats: StatsRecorder,
}

/// The router of one deployment. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Router {
    inner: Arc<RouterInner>,
}

/// The right to run one request on one replica: one unit of its `max_ongoing_requests`. The
/// router hands it to the replica with the request ([`Replica::infer`]); the replica drops it
/// when it has finished or dropped the request, which gives the capacity back to the oldest
/// waiting request.
pub struct Permit {
    slot: Option<Arc<ReplicaSlot>>,
    router: Arc<RouterInner>,
    /// The permits of the other requests of a batch, released with this one.
    joined: Vec<Permit>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("replica", &self.slot.as_ref().map(|s| s.id.as_str()))
            .finish()
    }
}

impl Permit {
    /// Makes `other` travel with this permit: both are released together (a batch's requests
    /// hold their slots until the batch is done).
    pub(crate) fn join(&mut self, other: Permit) {
        self.joined.push(other);
    }

    /// Gives the capacity back without waking the queue (used while the queue is locked).
    fn release_quietly(mut self) {
        if let Some(slot) = self.slot.take() {
            slot.liveness.release();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.liveness.release();
            if self.router.queued.load(Ordering::SeqCst) > 0 {
                self.router.dispatch();
            }
        }
    }
}

/// Removes its waiter from the queue if the request is dropped while waiting.
struct QueueGuard<'a> {
    router: &'a RouterInner,
    id: u64,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.router.lock_queue();
        if let Some(pos) = q.iter().position(|w| w.id == self.id) {
            q.remove(pos);
            self.router.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Router {
    pub(crate) fn new(name: String, limits: Limits, metrics: DeploymentMetrics) -> Self {
        Router {
            inner: Arc::new(RouterInner {
                name,
                set: ArcSwap::from_pointee(ReplicaSet {
                    replicas: Vec::new(),
                    availability: Availability::NotStarted,
                    info: None,
                }),
                limits: ArcSwap::from_pointee(limits),
                queue: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                next_waiter: AtomicU64::new(0),
                metrics,
                stats: StatsRecorder::default(),
            }),
        }
    }

    /// Publishes a new replica set and serves waiters that it can.
    pub(crate) fn publish(&self, set: ReplicaSet) {
        self.inner.set.store(Arc::new(set));
        self.inner.dispatch();
    }

    pub(crate) fn set_limits(&self, limits: Limits) {
        self.inner.limits.store(Arc::new(limits));
    }

    /// Whether requests may carry mapped client memory (see [`Limits::mapped_inputs`]).
    pub(crate) fn takes_mapped_inputs(&self) -> bool {
        self.inner.limits.load().mapped_inputs
    }

    pub(crate) fn replica_set(&self) -> Arc<ReplicaSet> {
        self.inner.set.load_full()
    }

    /// The model's cumulative statistics.
    pub(crate) fn statistics(&self) -> ModelStatistics {
        self.inner.stats.snapshot()
    }

    /// The batch counters behind the statistics' `execution_count`.
    pub(crate) fn batch_counters(&self) -> Arc<BatchCounters> {
        self.inner.stats.batches.clone()
    }

    /// Records a finished request in the statistics.
    pub(crate) fn record(&self, ok: bool, took: Duration) {
        self.inner.stats.request(ok, took);
    }

    /// Requests waiting for a replica.
    pub(crate) fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Hands waiting requests the capacity there is (a replica back in rotation frees none).
    pub(crate) fn dispatch(&self) {
        self.inner.dispatch();
    }

    /// Runs a request on a replica, waiting in the queue if all are busy. A request the
    /// replica could not send anywhere ([`InferError::NotSent`]: a remote endpoint refused the
    /// connection, and has been taken out of rotation) is retried once on another replica,
    /// within the same deadline; a request that was sent is never retried.
    pub(crate) async fn call(
        &self,
        mut payload: Payload,
        ctx: RequestContext,
    ) -> Result<Prediction, InferError> {
        if !self.inner.limits.load().mapped_inputs {
            copy_mapped_inputs(&mut payload)?;
        }
        let retry = self
            .inner
            .limits
            .load()
            .retry_unsent
            .then(|| (payload.clone(), ctx.clone()));
        let first = self
            .route(ctx, |replica, ctx, permit| async move {
                replica.infer(payload, ctx, permit).await
            })
            .await;
        match (first, retry) {
            (Err(InferError::NotSent { replica, reason }), Some((payload, ctx))) => {
                tracing::debug!(deployment = %self.inner.name, %replica, %reason, "retrying a request that was not sent");
                self.route(ctx, |replica, ctx, permit| async move {
                    replica.infer(payload, ctx, permit).await
                })
                .await
            }
            (result, _) => result,
        }
    }

    /// Calls a method of the deployment's model (between Python deployments) on a replica,
    /// with the same queueing, limits and deadline as [`call`](Router::call).
    pub(crate) async fn call_method(
        &self,
        method: &str,
        args: Bytes,
        ctx: RequestContext,
    ) -> Result<Bytes, InferError> {
        self.route(ctx, |replica, ctx, permit| async move {
            replica.call_method(method, args, ctx, permit).await
        })
        .await
    }

    /// Runs `work` on a replica: waits for a permit (in the queue if all are busy), within
    /// the deployment's `request_timeout_s` and the caller's deadline.
    async fn route<T, F, Fut>(&self, ctx: RequestContext, work: F) -> Result<T, InferError>
    where
        F: FnOnce(Arc<dyn Replica>, RequestContext, Permit) -> Fut,
        Fut: std::future::Future<Output = Result<T, InferError>>,
    {
        // The deployment's own limit, or the caller's deadline if that comes first; calls the
        // model makes for this request inherit the end of it.
        let now = Instant::now();
        let limit = self.inner.limits.load().request_timeout.map(|t| now + t);
        let end = match (ctx.deadline, limit) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        };
        let mut ctx = ctx;
        ctx.deadline = end;
        let work = async {
            let queued_at = Instant::now();
            // Only live replicas hand out permits (`ReplicaSlot::try_take`).
            let permit = self.acquire().await?;
            let Some(slot) = permit.slot.clone() else {
                return Err(InferError::Internal("permit without replica".into()));
            };
            let started = Instant::now();
            self.inner.stats.queued(started - queued_at);
            let result = work(slot.replica.clone(), ctx, permit).await;
            self.inner.stats.computed(started.elapsed());
            result
        };
        let Some(end) = end else {
            return work.await;
        };
        let timed_out = || InferError::Timeout {
            name: self.inner.name.clone(),
            after: end.saturating_duration_since(now),
        };
        match tokio::time::timeout_at(end.into(), work).await {
            Err(_) => Err(timed_out()),
            // A call made for this request ran out of the time it inherited: this request's
            // own timeout, whichever of the two fired first.
            Ok(Err(_)) if Instant::now() >= end => Err(timed_out()),
            Ok(result) => result,
        }
    }

    async fn acquire(&self) -> Result<Permit, InferError> {
        let inner = &self.inner;
        {
            let set = inner.set.load();
            // FIFO: with waiters queued, a newcomer goes behind them.
            if inner.queued.load(Ordering::SeqCst) == 0
                && let Some(p) = inner.try_acquire(&set.replicas)
            {
                return Ok(p);
            }
            if set.replicas.is_empty()
                && let Some(e) = inner.refusal(&set.availability)
            {
                return Err(e);
            }
            if !set.replicas.is_empty() && set.replicas.iter().all(|r| r.liveness.is_ejected()) {
                return Err(InferError::Unavailable(format!(
                    "deployment {}: none of its {} replicas is in rotation (every endpoint failed its last check)",
                    inner.name,
                    set.replicas.len()
                )));
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        {
            let mut q = inner.lock_queue();
            let max = inner.limits.load().max_queued;
            if let Some(max) = max
                && q.len() >= max
            {
                inner.metrics.rejected.inc();
                return Err(InferError::Overloaded {
                    name: inner.name.clone(),
                    queued: q.len(),
                });
            }
            q.push_back(Waiter { id, tx });
            inner.queued.fetch_add(1, Ordering::SeqCst);
        }
        let _guard = QueueGuard { router: inner, id };
        let started = Instant::now();
        inner.dispatch();
        let outcome = rx.await;
        inner
            .metrics
            .queue_wait
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(r) => r,
            Err(_) => Err(InferError::Internal(
                "the router dropped a waiting request".into(),
            )),
        }
    }
}

impl RouterInner {
    fn lock_queue(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // operation is a single push/pop/remove), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error for a request that cannot wait, if the deployment refuses requests.
    fn refusal(&self, availability: &Availability) -> Option<InferError> {
        match availability {
            Availability::Ready | Availability::Recovering | Availability::ScaledToZero => None,
            Availability::NotStarted => Some(InferError::ModelNotReady {
                name: self.name.clone(),
                detail: None,
            }),
            Availability::Failed(why) => Some(InferError::ModelNotReady {
                name: self.name.clone(),
                detail: Some(why.clone()),
            }),
            Availability::Stopped => Some(InferError::Unavailable(format!(
                "deployment {} is shutting down",
                self.name
            ))),
        }
    }

    /// Power of two choices: the less busy of two random replicas, else any with capacity.
    fn try_acquire(self: &Arc<Self>, replicas: &[Arc<ReplicaSlot>]) -> Option<Permit> {
        let n = replicas.len();
        let permit = |slot: &Arc<ReplicaSlot>| Permit {
            slot: Some(slot.clone()),
            router: self.clone(),
            joined: Vec::new(),
        };
        match n {
            0 => return None,
            1 => return replicas[0].try_take().then(|| permit(&replicas[0])),
            _ => {}
        }
        let i = fastrand::usize(..n);
        let j = (i + 1 + fastrand::usize(..n - 1)) % n;
        let (a, b) = if replicas[i].ongoing() <= replicas[j].ongoing() {
            (i, j)
        } else {
            (j, i)
        };
        for k in [a, b] {
            if replicas[k].try_take() {
                return Some(permit(&replicas[k]));
            }
        }
        (0..n)
            .map(|k| (i + k) % n)
            .find(|&k| replicas[k].try_take())
            .map(|k| permit(&replicas[k]))
    }

    /// Hands free capacity to waiters, oldest first; fails them all if the deployment now
    /// refuses requests.
    fn dispatch(self: &Arc<Self>) {
        let mut q = self.lock_queue();
        while let Some(front) = q.front() {
            if front.tx.is_closed() {
                q.pop_front();
                self.queued.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let set = self.set.load();
            if set.replicas.is_empty()
                && let Some(e) = self.refusal(&set.availability)
            {
                for w in q.drain(..) {
                    let _ = w.tx.send(Err(e.clone()));
                }
                self.queued.store(0, Ordering::SeqCst);
                return;
            }
            let Some(permit) = self.try_acquire(&set.replicas) else {
                return;
            };
            let Some(w) = q.pop_front() else {
                permit.release_quietly();
                return;
            };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            if let Err(Ok(permit)) = w.tx.send(Ok(permit)) {
                permit.release_quietly();
            }
        }
    }
}

/// Replaces inputs that are a client's mapped shared memory with copies read by `pread`, for
/// a deployment that does not take mapped inputs. Whether a request's inputs are mapped is
/// decided when it is decoded, from the deployment its name pointed to then; if that
/// deployment has since been replaced by one of another kind (a repository reload), this keeps
/// the server from reading a mapping the client may shrink (a crash), at the price of the copy
/// it would have made. One atomic load per input while no client region is mapped.
fn copy_mapped_inputs(payload: &mut Payload) -> Result<(), InferError> {
    let Payload::V2(request) = payload else {
        return Ok(());
    };
    for input in &mut request.inputs {
        if let Some(mapped) = ferroserve_shm::mapped::find(&input.data) {
            input.data = mapped.read().map_err(|e| {
                InferError::InvalidInput(format!(
                    "input '{}' in shared memory '{}': {e}",
                    input.name,
                    mapped.key()
                ))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferroserve_protocol::v2::InferRequest;
    use ferroserve_protocol::{DataType, Tensor};
    use ferroserve_shm::ClientRegion;
    use ferroserve_shm::testing::TestObject;

    use super::*;

    fn request(data: Bytes) -> Payload {
        let input = Tensor::new("x", DataType::Fp32, vec![2], data).expect("tensor");
        Payload::V2(InferRequest {
            inputs: vec![input],
            ..InferRequest::default()
        })
    }

    fn input(payload: &Payload) -> &Bytes {
        match payload {
            Payload::V2(r) => &r.inputs[0].data,
            Payload::V1(_) => unreachable!("a V2 request"),
        }
    }

    #[test]
    fn mapped_inputs_become_copies_and_a_shrunk_object_is_bad_input_not_a_crash() {
        let content = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let object = TestObject::with_bytes(&content);
        let region = Arc::new(ClientRegion::open(object.key(), 0, 8).expect("open"));

        let mut payload = request(region.map(0, 8).expect("map"));
        assert!(ferroserve_shm::mapped::find(input(&payload)).is_some());
        copy_mapped_inputs(&mut payload).expect("copied");
        assert_eq!(input(&payload).as_ref(), content);
        assert!(
            ferroserve_shm::mapped::find(input(&payload)).is_none(),
            "the input is a copy now, not the mapping"
        );

        let mut payload = request(region.map(0, 8).expect("map"));
        object.shrink(0);
        let error = copy_mapped_inputs(&mut payload).expect_err("the object shrank");
        assert!(matches!(error, InferError::InvalidInput(_)), "{error:?}");
        assert!(error.to_string().contains("input 'x'"), "{error}");
    }
}
