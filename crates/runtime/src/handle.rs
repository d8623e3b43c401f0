//! The [`Handle`]: how ingresses reach deployments. Cheap to clone; never waits on the
//! controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::Instant;

use bytes::Bytes;

use ferroserve_protocol::v2::{InferResponse, ModelMetadata, RequestedOutput};

use crate::router::{Availability, Router};
use crate::stats::ModelStatistics;
use crate::status::DeploymentStatus;
use crate::{InferError, Payload, Prediction, RequestContext};

/// A deployment as the handle sees it: its router and its status snapshot.
pub(crate) struct DeploymentEntry {
    name: String,
    /// Reached by clients; internal deployments only through [`DeploymentHandle`]s.
    exposed: bool,
    router: Router,
    status: Arc<Mutex<DeploymentStatus>>,
    /// The version served, if versioned; changed by an update.
    version: arc_swap::ArcSwapOption<String>,
}

impl DeploymentEntry {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn new(
        name: String,
        exposed: bool,
        router: Router,
        status: Arc<Mutex<DeploymentStatus>>,
        version: Option<String>,
    ) -> Self {
        DeploymentEntry {
            name,
            exposed,
            router,
            status,
            version: arc_swap::ArcSwapOption::from_pointee(version),
        }
    }

    pub(crate) fn set_version(&self, version: Option<String>) {
        self.version.store(version.map(Arc::new));
    }

    fn version(&self) -> Option<String> {
        self.version.load().as_deref().cloned()
    }
}

/// A deployment reached from inside another (Ray Serve's `DeploymentHandle`). Calls go through
/// the deployment's router, as a client's do (backpressure, `max_ongoing_requests`, queue,
/// timeouts, metrics), inherit the deadline of the request they are made for, and are
/// cancelled by dropping their future. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeploymentHandle {
    handle: Handle,
    name: String,
    pub(crate) deadline: Option<Instant>,
}

impl DeploymentHandle {
    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same handle, its calls bounded by `deadline` (that of the request they are made
    /// for).
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Calls method `method` of the deployment's model (Python's `handle.method.remote(...)`)
    /// with arguments serialised by the caller; the answer comes back serialised the same way.
    pub async fn call_method(&self, method: &str, args: Bytes) -> Result<Bytes, InferError> {
        let entry = self.handle.any_entry(&self.name)?;
        let ctx = RequestContext {
            headers: Vec::new(),
            deadline: self.deadline,
            handle: Some(self.handle.clone()),
        };
        entry
            .router
            .call_method(method, args, ctx)
            .await
            .map_err(|e| e.in_deployment(&self.name))
    }

    /// Runs preprocess → predict → postprocess on a replica of the deployment. An error names
    /// this deployment and keeps its kind (an inner 503 is a 503 for the caller too).
    pub async fn infer(&self, payload: Payload) -> Result<Prediction, InferError> {
        let ctx = RequestContext {
            headers: Vec::new(),
            deadline: self.deadline,
            handle: Some(self.handle.clone()),
        };
        self.handle
            .call(&self.name, payload, ctx)
            .await
            .map_err(|e| e.in_deployment(&self.name))
    }
}

/// A model's state as the outside world sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Not serving yet (first start, or replacing a failed replica).
    Loading,
    /// Serving (or scaled to zero, and will start a replica on demand).
    Ready,
    /// Replicas fail to start; the message says why.
    Failed(String),
    /// Shutting down.
    Stopped,
}

/// The entry point of every ingress into the runtime.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    /// The deployments, replaced whole (by the controller) when one is added or removed, so
    /// the request path reads it without a lock.
    table: ArcSwap<Table>,
}

/// The deployments at one moment.
#[derive(Default)]
struct Table {
    /// Deployments in registration order.
    deployments: Vec<Arc<DeploymentEntry>>,
    /// Index into `deployments` by name.
    by_name: HashMap<String, usize>,
}

impl Table {
    fn new(deployments: Vec<Arc<DeploymentEntry>>) -> Self {
        let by_name = deployments
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Table {
            deployments,
            by_name,
        }
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("models", &self.model_names())
            .finish()
    }
}

/// A [`Handle`] that does not keep the deployments alive: what replicas hold, since the
/// deployments' routers hold the replicas.
#[derive(Debug, Clone, Default)]
pub struct WeakHandle(std::sync::Weak<Inner>);

impl WeakHandle {
    /// The handle, while the server runs.
    pub fn upgrade(&self) -> Option<Handle> {
        self.0.upgrade().map(|inner| Handle { inner })
    }
}

impl Handle {
    /// A weak reference to this handle.
    pub fn downgrade(&self) -> WeakHandle {
        WeakHandle(Arc::downgrade(&self.inner))
    }

    pub(crate) fn new(deployments: Vec<Arc<DeploymentEntry>>) -> Self {
        Handle {
            inner: Arc::new(Inner {
                table: ArcSwap::from_pointee(Table::new(deployments)),
            }),
        }
    }

    /// Replaces the table with `change` applied to a copy of its deployments. Only the
    /// controller calls this, one change at a time.
    pub(crate) fn publish(&self, change: impl FnOnce(&mut Vec<Arc<DeploymentEntry>>)) {
        let mut deployments = self.inner.table.load().deployments.clone();
        change(&mut deployments);
        self.inner.table.store(Arc::new(Table::new(deployments)));
    }

    /// Records the version a deployment serves after an update (the controller's).
    pub(crate) fn set_version(&self, name: &str, version: Option<String>) {
        if let Ok(entry) = self.any_entry(name) {
            entry.set_version(version);
        }
    }

    /// Checks a version asked for (Triton's `model_version`, `/versions/{v}`): empty means the
    /// one served; anything else must be a number and the version served.
    pub fn check_version(&self, name: &str, version: &str) -> Result<(), InferError> {
        if version.is_empty() {
            // Every unversioned request: no lookup here (the call itself finds the model).
            return Ok(());
        }
        let entry = self.entry(name)?;
        if version.parse::<i64>().is_err() {
            return Err(InferError::InvalidInput(format!(
                "failed to get model version from specified version string '{version}'"
            )));
        }
        if entry.version().as_deref() == Some(version) {
            Ok(())
        } else {
            Err(InferError::VersionNotFound {
                name: name.to_owned(),
                version: version.to_owned(),
            })
        }
    }

    /// Any deployment, internal ones included.
    fn any_entry(&self, name: &str) -> Result<Arc<DeploymentEntry>, InferError> {
        let table = self.inner.table.load();
        table
            .by_name
            .get(name)
            .map(|&i| table.deployments[i].clone())
            .ok_or_else(|| InferError::ModelNotFound(name.to_owned()))
    }

    /// A deployment clients may reach: internal ones are not found.
    fn entry(&self, name: &str) -> Result<Arc<DeploymentEntry>, InferError> {
        self.any_entry(name)
            .ok()
            .filter(|e| e.exposed)
            .ok_or_else(|| InferError::ModelNotFound(name.to_owned()))
    }

    /// Whether clients can reach a deployment of this name (a map lookup, for metric labels).
    pub fn has_model(&self, name: &str) -> bool {
        self.entry(name).is_ok()
    }

    /// Whether a request to `name` may carry input bytes mapped from a client's shared memory
    /// (its backend hands them on by reference and nothing stacks them); `false` for an
    /// unknown name.
    pub fn takes_mapped_inputs(&self, name: &str) -> bool {
        self.entry(name)
            .is_ok_and(|e| e.router.takes_mapped_inputs())
    }

    /// Names of the deployments clients reach, ready or not, in registration order.
    pub fn model_names(&self) -> Vec<String> {
        self.inner
            .table
            .load()
            .deployments
            .iter()
            .filter(|d| d.exposed)
            .map(|d| d.name.clone())
            .collect()
    }

    /// A handle to any deployment of this server, internal ones included, for calls from
    /// inside another deployment (Ray Serve's `serve.get_deployment_handle`).
    pub fn deployment(&self, name: &str) -> Result<DeploymentHandle, InferError> {
        self.any_entry(name)?;
        Ok(DeploymentHandle {
            handle: self.clone(),
            name: name.to_owned(),
            deadline: None,
        })
    }

    /// The state of a model.
    pub fn status(&self, name: &str) -> Result<ModelStatus, InferError> {
        Ok(entry_status(&*self.entry(name)?))
    }

    /// Whether a model can serve: it has a running replica, or is scaled to zero and starts
    /// one on demand.
    pub async fn model_ready(&self, name: &str) -> Result<bool, InferError> {
        Ok(self.status(name)? == ModelStatus::Ready)
    }

    /// Whether every deployment, internal ones included, is ready.
    pub async fn server_ready(&self) -> bool {
        self.inner
            .table
            .load()
            .deployments
            .iter()
            .all(|d| entry_status(d) == ModelStatus::Ready)
    }

    /// Metadata of a model that has started at least once.
    pub fn metadata(&self, name: &str) -> Result<ModelMetadata, InferError> {
        let entry = self.entry(name)?;
        let set = entry.router.replica_set();
        let info = set.info.clone().ok_or_else(|| InferError::ModelNotReady {
            name: name.to_owned(),
            detail: None,
        })?;
        Ok(ModelMetadata {
            name: entry.name.clone(),
            versions: entry.version().map(|v| vec![v]),
            platform: info.platform,
            inputs: info.inputs,
            outputs: info.outputs,
        })
    }

    /// Cumulative statistics of a model (Triton's `ModelStatistics`).
    pub fn statistics(&self, name: &str) -> Result<ModelStatistics, InferError> {
        Ok(self.entry(name)?.router.statistics())
    }

    /// Status snapshot of one deployment (internal ones too), with live request counts.
    pub fn deployment_status(&self, name: &str) -> Result<DeploymentStatus, InferError> {
        let d = self.any_entry(name)?;
        let mut s = d.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.queued_requests = d.router.queued();
        Ok(s)
    }

    /// Status snapshots of every deployment, with live request counts.
    pub fn deployment_statuses(&self) -> Vec<DeploymentStatus> {
        self.inner
            .table
            .load()
            .deployments
            .iter()
            .map(|d| {
                let mut s = d.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                s.queued_requests = d.router.queued();
                s
            })
            .collect()
    }

    /// Runs a request on a replica of deployment `name`: preprocess → predict → postprocess.
    ///
    /// For V2 the response gets the model name and the request id when the model left them
    /// unset, and only the requested outputs (an unknown requested output is invalid input).
    pub async fn infer(
        &self,
        name: &str,
        payload: Payload,
        ctx: RequestContext,
    ) -> Result<Prediction, InferError> {
        let entry = self.entry(name)?;
        self.call_entry(&entry, name, payload, ctx).await
    }

    /// [`infer`](Handle::infer) on any deployment, internal ones included: the path of calls
    /// between deployments. The model's handlers can reach the other deployments through
    /// `ctx` ([`RequestContext::deployment`]).
    pub(crate) async fn call(
        &self,
        name: &str,
        payload: Payload,
        ctx: RequestContext,
    ) -> Result<Prediction, InferError> {
        let entry = self.any_entry(name)?;
        self.call_entry(&entry, name, payload, ctx).await
    }

    async fn call_entry(
        &self,
        entry: &DeploymentEntry,
        name: &str,
        payload: Payload,
        mut ctx: RequestContext,
    ) -> Result<Prediction, InferError> {
        if ctx.handle.is_none() {
            ctx.handle = Some(self.clone());
        }
        let v2_request = match &payload {
            Payload::V2(req) => {
                req.validate()?;
                Some((req.id.clone(), req.outputs.clone()))
            }
            Payload::V1(_) => None,
        };
        let started = std::time::Instant::now();
        let called = entry.router.call(payload, ctx).await;
        entry.router.record(called.is_ok(), started.elapsed());
        let prediction = called?;
        match (v2_request, prediction) {
            (Some((id, requested)), Prediction::V2(mut resp)) => {
                if resp.model_version.is_none() {
                    resp.model_version = entry.version();
                }
                finish_v2(resp, name, id, &requested).map(Prediction::V2)
            }
            (None, Prediction::V1(body)) => Ok(Prediction::V1(body)),
            (Some(_), Prediction::V1(_)) => Err(InferError::Internal(format!(
                "model '{name}' returned a V1 prediction for a V2 request"
            ))),
            (None, Prediction::V2(_)) => Err(InferError::Internal(format!(
                "model '{name}' returned a V2 response for a V1 request"
            ))),
        }
    }
}

/// A deployment's state as the outside world sees it.
fn entry_status(entry: &DeploymentEntry) -> ModelStatus {
    match &entry.router.replica_set().availability {
        Availability::Ready | Availability::ScaledToZero => ModelStatus::Ready,
        Availability::NotStarted | Availability::Recovering => ModelStatus::Loading,
        Availability::Failed(why) => ModelStatus::Failed(why.clone()),
        Availability::Stopped => ModelStatus::Stopped,
    }
}

fn finish_v2(
    mut resp: InferResponse,
    name: &str,
    id: Option<String>,
    requested: &[RequestedOutput],
) -> Result<InferResponse, InferError> {
    if resp.model_name.is_empty() {
        name.clone_into(&mut resp.model_name);
    }
    if resp.id.is_none() {
        resp.id = id;
    }
    resp.select_outputs(requested, name)?;
    Ok(resp)
}
