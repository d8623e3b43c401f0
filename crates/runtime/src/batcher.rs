//! Dynamic batching, between the router and a replica.
//!
//! A [`BatchingReplica`] stands in front of one replica. Requests reach it as they reach any
//! replica: with a permit, so each request in a batch counts against `max_ongoing_requests`.
//! A task per replica groups the requests that can share a batch (same protocol, and for
//! tensor batching the same input names, datatypes and dimensions after the first, the same
//! parameters and requested outputs), and sends a group when it holds `max_batch_size` rows,
//! reaches a preferred size, or its oldest request has waited `batch_wait_timeout_s`; at most
//! `max_concurrent_batches` run at once. Two kinds:
//!
//! - **tensor batching** (Triton's): the requests' inputs are stacked along dimension 0 into
//!   one request (one copy per input), the model runs once, every output is split back by the
//!   requests' row counts (zero-copy slices). V1 bodies of `{"instances": [...]}` batch the
//!   same way, their `predictions` split by count.
//! - **list batching** (Ray's `@serve.batch`, Python): the requests cross to the replica as one
//!   list ([`Replica::infer_batch`]) and one answer comes back per request.
//!
//! A caller that leaves takes its request out of a forming batch; from a running batch its rows
//! are dropped from the results, and only when every caller of a batch has left is the batch
//! itself cancelled. A failing batch fails exactly its requests. The permits of a batch travel
//! together ([`Permit::join`]) with the batch into the replica, which keeps them until it has
//! really finished, as for a single request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use ferroserve_protocol::v2::{InferRequest, InferResponse};
use ferroserve_protocol::{DataType, Parameter, Parameters, Tensor};
use futures_util::future::join_all;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};

use crate::config::BatchConfig;
use crate::replica::Replica;
use crate::router::Permit;
use crate::stats::BatchCounters;
use crate::{InferError, ModelInfo, Payload, Prediction, RequestContext};

/// The batching options of one replica, changeable while it runs (a deployment update, or a
/// Python model's `set_max_batch_size`).
#[derive(Debug, Default)]
pub struct BatchSettings {
    config: ArcSwapOption<BatchConfig>,
    list: AtomicBool,
}

impl BatchSettings {
    pub(crate) fn new(config: Option<BatchConfig>) -> Self {
        BatchSettings {
            config: ArcSwapOption::from(config.map(Arc::new)),
            list: AtomicBool::new(false),
        }
    }

    /// The options in force; `None` when batching is off.
    pub fn current(&self) -> Option<Arc<BatchConfig>> {
        self.config.load_full()
    }

    /// Whether requests cross as a list (a Python `@serve.batch` handler) rather than stacked.
    pub fn is_list(&self) -> bool {
        self.list.load(Ordering::Relaxed)
    }

    /// Declares that the model batches lists itself (Ray's `@serve.batch`), with the options
    /// its decorator gave; the deployment's own batching options, when set, win.
    pub fn set_list(&self, declared: BatchConfig) {
        self.list.store(true, Ordering::Relaxed);
        if self.config.load().is_none() {
            self.config.store(Some(Arc::new(declared)));
        }
    }

    /// Changes the batch size or wait at run time (Ray's `set_max_batch_size` /
    /// `set_batch_wait_timeout_s`); ignored while batching is off.
    pub fn adjust(&self, max_batch_size: Option<usize>, batch_wait_timeout: Option<Duration>) {
        if let Some(current) = self.config.load_full() {
            let mut c = (*current).clone();
            if let Some(n) = max_batch_size.filter(|&n| n > 0) {
                c.max_batch_size = n;
                c.preferred_batch_sizes.retain(|&p| p <= n);
            }
            if let Some(t) = batch_wait_timeout {
                c.batch_wait_timeout = t;
            }
            self.config.store(Some(Arc::new(c)));
        }
    }

    pub(crate) fn replace(&self, config: Option<BatchConfig>) {
        if self.is_list() && config.is_none() {
            return; // the model's own declaration stays
        }
        self.config.store(config.map(Arc::new));
    }
}

/// The batching metrics of one deployment.
#[derive(Clone)]
pub(crate) struct BatchMetrics {
    pub(crate) size: Histogram,
    pub(crate) wait: Histogram,
    pub(crate) batches: Counter,
    pub(crate) counters: Arc<BatchCounters>,
}

/// One request waiting in the batcher.
struct Item {
    payload: Payload,
    rows: usize,
    key: String,
    ctx: RequestContext,
    permit: Permit,
    reply: oneshot::Sender<Result<Prediction, InferError>>,
    arrived: Instant,
}

/// Requests that can share a batch, oldest first.
struct Group {
    key: String,
    items: VecDeque<Item>,
}

impl Group {
    fn rows(&self) -> usize {
        self.items.iter().map(|i| i.rows).sum()
    }
}

/// A replica with a batcher in front (see the module's doc).
pub(crate) struct BatchingReplica {
    inner: Arc<dyn Replica>,
    settings: Arc<BatchSettings>,
    queue: mpsc::UnboundedSender<Item>,
    /// Wakes the batcher when a caller leaves, so its waiting request (and permit) goes at once.
    left: Arc<Notify>,
}

/// Wakes the batcher if the caller leaves before its answer came.
struct LeaveGuard<'a> {
    left: &'a Notify,
    answered: bool,
}

impl Drop for LeaveGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.left.notify_one();
        }
    }
}

impl BatchingReplica {
    /// Puts a batcher in front of `inner`; its task ends when the returned replica is dropped
    /// and the batches it holds are done.
    pub(crate) fn wrap(
        inner: Arc<dyn Replica>,
        settings: Arc<BatchSettings>,
        metrics: BatchMetrics,
    ) -> Arc<dyn Replica> {
        let (queue, rx) = mpsc::unbounded_channel();
        let left = Arc::new(Notify::new());
        tokio::spawn(batch_loop(
            inner.clone(),
            settings.clone(),
            rx,
            left.clone(),
            metrics,
        ));
        Arc::new(BatchingReplica {
            inner,
            settings,
            queue,
            left,
        })
    }
}

#[async_trait]
impl Replica for BatchingReplica {
    async fn infer(
        &self,
        payload: Payload,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Prediction, InferError> {
        // Alone: batching off, nothing to batch on (no rows, inputs that disagree on them),
        // or more rows than a batch holds.
        let batchable = self.settings.current().and_then(|config| {
            let (key, rows) = batch_key(&payload, self.settings.is_list())?;
            (rows <= config.max_batch_size).then_some((key, rows))
        });
        let Some((key, rows)) = batchable else {
            return self.inner.infer(payload, ctx, permit).await;
        };
        let (reply, answer) = oneshot::channel();
        let item = Item {
            payload,
            rows,
            key,
            ctx,
            permit,
            reply,
            arrived: Instant::now(),
        };
        if self.queue.send(item).is_err() {
            return Err(InferError::Internal("the replica's batcher stopped".into()));
        }
        let mut guard = LeaveGuard {
            left: &self.left,
            answered: false,
        };
        let answer = answer.await;
        guard.answered = true;
        answer.unwrap_or_else(|_| {
            Err(InferError::Internal(
                "the batcher dropped the request".into(),
            ))
        })
    }

    async fn call_method(
        &self,
        method: &str,
        args: Bytes,
        ctx: RequestContext,
        permit: Permit,
    ) -> Result<Bytes, InferError> {
        self.inner.call_method(method, args, ctx, permit).await
    }

    async fn check_health(&self) -> Result<(), String> {
        self.inner.check_health().await
    }

    async fn reconfigure(&self, user_config: serde_json::Value) -> Result<(), String> {
        self.inner.reconfigure(user_config).await
    }

    fn info(&self) -> ModelInfo {
        self.inner.info()
    }

    async fn stop(&self) {
        self.inner.stop().await;
    }

    fn died(&self) -> watch::Receiver<Option<String>> {
        self.inner.died()
    }
}

/// What a request batches with, and its rows; `None` if it cannot be batched.
fn batch_key(payload: &Payload, list: bool) -> Option<(String, usize)> {
    match payload {
        Payload::V1(_) if list => Some(("v1".into(), 1)),
        Payload::V2(_) if list => Some(("v2".into(), 1)),
        Payload::V1(body) => {
            let obj = body.as_object()?;
            let instances = obj.get("instances")?.as_array()?;
            (obj.len() == 1 && !instances.is_empty()).then(|| ("v1".into(), instances.len()))
        }
        Payload::V2(req) => {
            let rows = *req.inputs.first()?.shape.first()?;
            let mut inputs: Vec<&Tensor> = req.inputs.iter().collect();
            inputs.sort_by(|a, b| a.name.cmp(&b.name));
            let mut key = String::from("v2");
            for t in inputs {
                if t.shape.first() != Some(&rows) {
                    return None;
                }
                key.push_str(&format!(
                    "|{}:{}:{:?}:{:?}",
                    t.name,
                    t.datatype.as_str(),
                    &t.shape[1..],
                    model_parameters(&t.parameters)
                ));
            }
            let outputs: Vec<_> = req
                .outputs
                .iter()
                .map(|o| (&o.name, model_parameters(&o.parameters)))
                .collect();
            key.push_str(&format!(
                "|p={:?}|o={outputs:?}",
                model_parameters(&req.parameters)
            ));
            let rows = usize::try_from(rows).ok().filter(|&r| r > 0)?;
            Some((key, rows))
        }
    }
}

/// The granularity of Tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Parameters of the binary tensor extension say how the client's bytes travel, which each
/// request's own ingress handles; they do not change what the model computes.
fn is_transport(name: &str) -> bool {
    matches!(
        name,
        "binary_data_size" | "binary_data" | "binary_data_output"
    )
}

/// The parameters that matter to the model: those of two requests must agree to share a batch.
fn model_parameters(p: &Parameters) -> Vec<(&String, &Parameter)> {
    p.iter().filter(|(k, _)| !is_transport(k)).collect()
}

/// The batcher of one replica: forms batches and runs them (see the module's doc).
async fn batch_loop(
    replica: Arc<dyn Replica>,
    settings: Arc<BatchSettings>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    left: Arc<Notify>,
    metrics: BatchMetrics,
) {
    let mut groups: Vec<Group> = Vec::new();
    let mut running = JoinSet::new();
    let mut open = true;
    loop {
        // Requests whose caller left leave the forming batches (their permits go back).
        for g in &mut groups {
            g.items.retain(|i| !i.reply.is_closed());
        }
        groups.retain(|g| !g.items.is_empty());
        let config = settings.current();
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        loop {
            let limit = config.as_ref().map_or(1, |c| c.max_concurrent_batches);
            if running.len() >= limit {
                break;
            }
            // The oldest group that is ready to leave.
            let mut ready = None;
            for (index, g) in groups.iter().enumerate() {
                let Some(first) = g.items.front() else {
                    continue;
                };
                // Tokio's timer fires on the first whole-millisecond tick at or after its
                // deadline, and the runtime parks for whole milliseconds too: up to two ticks
                // late. A batch is due that much early (at most half its wait), so that it
                // leaves before its wait ends rather than after.
                let wait = config
                    .as_ref()
                    .map_or(Duration::ZERO, |c| c.batch_wait_timeout);
                let due = first.arrived + wait - (2 * TIMER_TICK).min(wait / 2);
                let rows = g.rows();
                let full = config.as_ref().is_none_or(|c| {
                    rows >= c.max_batch_size || c.preferred_batch_sizes.contains(&rows)
                });
                if full || due <= now || !open {
                    if ready.is_none_or(|(_, at)| first.arrived < at) {
                        ready = Some((index, first.arrived));
                    }
                } else {
                    next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
                }
            }
            let Some((index, _)) = ready else { break };
            let max = config.as_ref().map_or(1, |c| c.max_batch_size);
            let group = &mut groups[index];
            let mut batch = Vec::new();
            let mut rows = 0;
            while let Some(item) = group.items.front() {
                if !batch.is_empty() && rows + item.rows > max {
                    break;
                }
                rows += item.rows;
                batch.extend(group.items.pop_front());
            }
            if group.items.is_empty() {
                groups.remove(index);
            }
            let list = settings.is_list();
            running.spawn(run_batch(
                replica.clone(),
                batch,
                rows,
                list,
                metrics.clone(),
            ));
        }
        if !open && groups.is_empty() && running.is_empty() {
            return;
        }
        let sleep = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(item) => {
                    add(&mut groups, item);
                    // Take in everything that has arrived, so a batch fills before it leaves.
                    while let Ok(item) = rx.try_recv() {
                        add(&mut groups, item);
                    }
                }
                None => open = false,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = left.notified() => {}
            () = sleep => {}
        }
    }
}

fn add(groups: &mut Vec<Group>, item: Item) {
    match groups.iter_mut().find(|g| g.key == item.key) {
        Some(g) => g.items.push_back(item),
        None => groups.push(Group {
            key: item.key.clone(),
            items: VecDeque::from([item]),
        }),
    }
}

/// Runs one batch on the replica and answers each of its requests.
async fn run_batch(
    replica: Arc<dyn Replica>,
    items: Vec<Item>,
    rows: usize,
    list: bool,
    metrics: BatchMetrics,
) {
    let started = Instant::now();
    metrics.batches.inc();
    metrics.size.observe(rows as f64);
    if items.len() > 1 {
        metrics.counters.batch(items.len());
    }
    let mut replies = Vec::with_capacity(items.len());
    let mut payloads = Vec::with_capacity(items.len());
    let mut counts = Vec::with_capacity(items.len());
    let mut permit: Option<Permit> = None;
    let mut ctx: Option<RequestContext> = None;
    // The batch runs until its last caller's deadline (none if a caller has none).
    let mut unbounded = false;
    let mut latest: Option<std::time::Instant> = None;
    for item in items {
        metrics
            .wait
            .observe(started.duration_since(item.arrived).as_secs_f64());
        match item.ctx.deadline {
            Some(d) => latest = Some(latest.map_or(d, |l| l.max(d))),
            None => unbounded = true,
        }
        match &mut permit {
            Some(p) => p.join(item.permit),
            None => permit = Some(item.permit),
        }
        ctx.get_or_insert(item.ctx);
        replies.push(item.reply);
        payloads.push(item.payload);
        counts.push(item.rows);
    }
    let (Some(permit), Some(mut ctx)) = (permit, ctx) else {
        return;
    };
    ctx.deadline = if unbounded { None } else { latest };
    let work = async move {
        if payloads.len() == 1 {
            let payload = payloads.pop().expect("one payload");
            return vec![replica.infer(payload, ctx, permit).await];
        }
        let n = payloads.len();
        if list {
            return match replica.infer_batch(payloads, ctx, permit).await {
                Ok(answers) if answers.len() == n => answers,
                Ok(answers) => fan_out(
                    &InferError::Internal(format!(
                        "the batch handler returned {} results for a batch of {n} requests; it must return one per request",
                        answers.len()
                    )),
                    n,
                ),
                Err(e) => fan_out(&e, n),
            };
        }
        let ids: Vec<Option<String>> = payloads
            .iter()
            .map(|p| match p {
                Payload::V2(r) => r.id.clone(),
                Payload::V1(_) => None,
            })
            .collect();
        let stacked = match stack(payloads, rows) {
            Ok(p) => p,
            Err(e) => return fan_out(&e, n),
        };
        match replica.infer(stacked, ctx, permit).await {
            Ok(prediction) => match split(prediction, &counts, rows, ids) {
                Ok(parts) => parts.into_iter().map(Ok).collect(),
                Err(e) => fan_out(&e, n),
            },
            Err(e) => fan_out(&e, n),
        }
    };
    // Rows whose caller left are dropped from the answer; when every caller has left, the batch
    // is dropped, which cancels it on the replica.
    let all_left = join_all(replies.iter_mut().map(oneshot::Sender::closed));
    let answers = tokio::select! {
        answers = work => answers,
        _ = all_left => return,
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// The same error for each of `n` requests.
fn fan_out(e: &InferError, n: usize) -> Vec<Result<Prediction, InferError>> {
    (0..n).map(|_| Err(e.clone())).collect()
}

/// One request holding every request's rows, in order.
fn stack(payloads: Vec<Payload>, rows: usize) -> Result<Payload, InferError> {
    let mixed = || InferError::Internal("a batch mixed request kinds".into());
    let mut payloads = payloads.into_iter().peekable();
    match payloads.peek() {
        None => Err(InferError::Internal("an empty batch".into())),
        Some(Payload::V1(_)) => {
            let mut all = Vec::with_capacity(rows);
            for p in payloads {
                let Payload::V1(serde_json::Value::Object(mut obj)) = p else {
                    return Err(mixed());
                };
                let Some(serde_json::Value::Array(instances)) = obj.remove("instances") else {
                    return Err(mixed());
                };
                all.extend(instances);
            }
            Ok(Payload::V1(serde_json::json!({ "instances": all })))
        }
        Some(Payload::V2(_)) => {
            let mut requests = payloads.map(|p| match p {
                Payload::V2(r) => Ok(r),
                Payload::V1(_) => Err(mixed()),
            });
            let mut template = requests.next().ok_or_else(mixed)??;
            let others: Vec<InferRequest> = requests.collect::<Result<_, _>>()?;
            for input in &mut template.inputs {
                let rest: Vec<&Bytes> = others
                    .iter()
                    .map(|r| r.input(&input.name).map(|t| &t.data))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        InferError::Internal(format!("input '{}' missing from a batch", input.name))
                    })?;
                let size = input.data.len() + rest.iter().map(|b| b.len()).sum::<usize>();
                let mut data = BytesMut::with_capacity(size);
                data.extend_from_slice(&input.data);
                for b in rest {
                    data.extend_from_slice(b);
                }
                input.data = data.freeze();
                input.parameters.retain(|k, _| !is_transport(k));
                if let Some(d0) = input.shape.first_mut() {
                    *d0 = rows as u64;
                }
            }
            template.id = None;
            Ok(Payload::V2(template))
        }
    }
}

/// The batch's answer cut back into one answer per request (`counts` rows each).
fn split(
    prediction: Prediction,
    counts: &[usize],
    rows: usize,
    ids: Vec<Option<String>>,
) -> Result<Vec<Prediction>, InferError> {
    match prediction {
        Prediction::V1(body) => split_v1(body, counts, rows),
        Prediction::V2(response) => split_v2(response, counts, rows, ids),
    }
}

fn split_v1(
    body: serde_json::Value,
    counts: &[usize],
    rows: usize,
) -> Result<Vec<Prediction>, InferError> {
    let unsplittable = || {
        InferError::Internal(
            "a batched V1 model must answer {\"predictions\": [...]}, one per instance".into(),
        )
    };
    let serde_json::Value::Object(mut obj) = body else {
        return Err(unsplittable());
    };
    let Some(serde_json::Value::Array(predictions)) = obj.remove("predictions") else {
        return Err(unsplittable());
    };
    if predictions.len() != rows {
        return Err(InferError::Internal(format!(
            "the batch's answer has {} predictions for its {rows} instances",
            predictions.len()
        )));
    }
    let mut predictions = predictions.into_iter();
    Ok(counts
        .iter()
        .map(|&n| {
            let mut part = obj.clone();
            part.insert(
                "predictions".into(),
                serde_json::Value::Array(predictions.by_ref().take(n).collect()),
            );
            Prediction::V1(serde_json::Value::Object(part))
        })
        .collect())
}

fn split_v2(
    response: InferResponse,
    counts: &[usize],
    rows: usize,
    ids: Vec<Option<String>>,
) -> Result<Vec<Prediction>, InferError> {
    // Each output's row boundaries, in bytes.
    let mut cuts: Vec<Vec<usize>> = Vec::with_capacity(response.outputs.len());
    for out in &response.outputs {
        if out.shape.first().copied() != Some(rows as u64) {
            return Err(InferError::Internal(format!(
                "output '{}' has shape {:?}, but a batch of {rows} rows needs {rows} in its first dimension (one row of output per row of input)",
                out.name, out.shape
            )));
        }
        cuts.push(row_offsets(out, counts)?);
    }
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(k, id)| {
            let outputs = response
                .outputs
                .iter()
                .zip(&cuts)
                .map(|(out, cut)| {
                    let mut shape = out.shape.clone();
                    shape[0] = counts[k] as u64;
                    Tensor {
                        name: out.name.clone(),
                        datatype: out.datatype,
                        shape,
                        data: out.data.slice(cut[k]..cut[k + 1]),
                        parameters: out.parameters.clone(),
                    }
                })
                .collect();
            Prediction::V2(InferResponse {
                model_name: response.model_name.clone(),
                model_version: response.model_version.clone(),
                id,
                parameters: response.parameters.clone(),
                outputs,
            })
        })
        .collect())
}

/// Byte offsets where each request's rows of `out` start (and where the last ends).
fn row_offsets(out: &Tensor, counts: &[usize]) -> Result<Vec<usize>, InferError> {
    let per_row: u64 = out.shape[1..].iter().product();
    let bad = || {
        InferError::Internal(format!(
            "output '{}' holds fewer bytes than its shape {:?} says",
            out.name, out.shape
        ))
    };
    let mut cuts = Vec::with_capacity(counts.len() + 1);
    cuts.push(0);
    if out.datatype == DataType::Bytes {
        // Length-prefixed elements: walk them to find the row boundaries.
        let data = &out.data;
        let mut at = 0usize;
        for &n in counts {
            for _ in 0..(n as u64).saturating_mul(per_row) {
                let len = data.get(at..at + 4).ok_or_else(bad)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                at = at
                    .checked_add(4 + len)
                    .filter(|&e| e <= data.len())
                    .ok_or_else(bad)?;
            }
            cuts.push(at);
        }
        return Ok(cuts);
    }
    let size = out.datatype.element_size().unwrap_or(1) as u64;
    let row_bytes = usize::try_from(per_row.saturating_mul(size)).map_err(|_| bad())?;
    let mut at = 0usize;
    for &n in counts {
        at = at
            .checked_add(n.saturating_mul(row_bytes))
            .ok_or_else(bad)?;
        if at > out.data.len() {
            return Err(bad());
        }
        cuts.push(at);
    }
    Ok(cuts)
}
