//! What `ferroserve status` shows: each deployment and its replicas, as a serializable
//! snapshot the controller keeps up to date.

use serde::{Deserialize, Serialize};

/// The lifecycle state of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Being constructed.
    Starting,
    /// `load` is running.
    Loading,
    /// Serving.
    Running,
    /// Failed (crash, panic, health checks); finishing its requests before it is replaced.
    Unhealthy,
    /// Being removed (scale-down, update); finishing its requests.
    Draining,
    /// Gone.
    Stopped,
}

impl ReplicaState {
    /// Every state, for metrics.
    pub const ALL: [ReplicaState; 6] = [
        ReplicaState::Starting,
        ReplicaState::Loading,
        ReplicaState::Running,
        ReplicaState::Unhealthy,
        ReplicaState::Draining,
        ReplicaState::Stopped,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Loading => "loading",
            ReplicaState::Running => "running",
            ReplicaState::Unhealthy => "unhealthy",
            ReplicaState::Draining => "draining",
            ReplicaState::Stopped => "stopped",
        }
    }
}

/// One replica in a status snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Replica id, e.g. `iris#3`.
    pub id: String,
    /// Lifecycle state.
    pub state: ReplicaState,
    /// Why it is in that state.
    pub reason: String,
    /// Requests running on it.
    pub ongoing_requests: usize,
    /// Deployment version it runs (bumped by each update that restarts replicas).
    pub version: u64,
}

/// Autoscaling part of a status snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscalingStatus {
    /// Fewest replicas.
    pub min_replicas: usize,
    /// Most replicas.
    pub max_replicas: usize,
    /// Desired load per replica.
    pub target_ongoing_requests: f64,
    /// Ongoing + queued requests averaged over the look-back window.
    pub average_load: f64,
}

/// A deployment's batching options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchingStatus {
    /// `tensor` (stacked by the server) or `list` (a Python `@serve.batch` handler).
    pub kind: String,
    /// Most rows (or requests) per batch.
    pub max_batch_size: usize,
    /// Seconds a forming batch waits after its first request.
    pub batch_wait_timeout_s: f64,
    /// Sizes at which a batch leaves at once.
    pub preferred_batch_sizes: Vec<usize>,
    /// Batches one replica runs at once.
    pub max_concurrent_batches: usize,
}

/// One deployment in a status snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Deployment name.
    pub name: String,
    /// `STARTING`, `HEALTHY`, `UPDATING`, `UNHEALTHY`, `SCALED_TO_ZERO` or `STOPPED`.
    pub status: String,
    /// A sentence on the status (e.g. the error that keeps replicas from starting).
    pub message: String,
    /// Replica count the controller aims for.
    pub target_replicas: usize,
    /// Autoscaling, when on.
    pub autoscaling: Option<AutoscalingStatus>,
    /// Batching options in force, when batching is on.
    #[serde(default)]
    pub batching: Option<BatchingStatus>,
    /// Requests running on replicas.
    pub ongoing_requests: usize,
    /// Requests waiting for a replica.
    pub queued_requests: usize,
    /// Replicas replaced after a failure.
    pub restarts: u64,
    /// The latest replica failure, if any.
    pub last_error: Option<String>,
    /// Replicas, not yet stopped.
    pub replicas: Vec<ReplicaStatus>,
}

impl DeploymentStatus {
    pub(crate) fn new(name: &str) -> Self {
        DeploymentStatus {
            name: name.to_owned(),
            status: "STARTING".to_owned(),
            message: String::new(),
            target_replicas: 0,
            autoscaling: None,
            batching: None,
            ongoing_requests: 0,
            queued_requests: 0,
            restarts: 0,
            last_error: None,
            replicas: Vec::new(),
        }
    }
}
