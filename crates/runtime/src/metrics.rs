//! Metrics of the runtime: latency of each model stage, under KServe's metric names so that
//! existing dashboards keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set of the stage histograms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ModelLabel {
    model_name: String,
}

/// Buckets of every latency histogram, in seconds: 50 µs to 10 s, so that fast Rust models
/// are visible (KServe's defaults start at 5 ms).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The runtime's metrics: stage histograms per model (KServe's names) and the state of each
/// deployment (replicas by state, ongoing and queued requests, queue wait, restarts, rejected
/// requests, autoscaling target).
#[derive(Clone)]
pub struct RuntimeMetrics {
    preprocess: Family<ModelLabel, Histogram>,
    predict: Family<ModelLabel, Histogram>,
    postprocess: Family<ModelLabel, Histogram>,
    deployments: DeploymentFamilies,
}

impl std::fmt::Debug for RuntimeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeMetrics").finish_non_exhaustive()
    }
}

/// The stage histograms of one model, resolved once so the request path does no label lookup.
#[derive(Clone)]
pub(crate) struct StageHistograms {
    pub preprocess: Histogram,
    pub predict: Histogram,
    pub postprocess: Histogram,
}

impl RuntimeMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let new_family = || {
            Family::<ModelLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            })
        };
        let m = RuntimeMetrics {
            preprocess: new_family(),
            predict: new_family(),
            postprocess: new_family(),
            deployments: DeploymentFamilies::new(registry),
        };
        registry.register(
            "request_preprocess_seconds",
            "Time spent in a model's preprocess handler",
            m.preprocess.clone(),
        );
        registry.register(
            "request_predict_seconds",
            "Time spent in a model's predict handler",
            m.predict.clone(),
        );
        registry.register(
            "request_postprocess_seconds",
            "Time spent in a model's postprocess handler",
            m.postprocess.clone(),
        );
        m
    }

    /// Metrics that go nowhere, for tests and embedding without `/metrics`.
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }

    pub(crate) fn deployment(&self, name: &str) -> DeploymentMetrics {
        self.deployments.for_deployment(name)
    }

    pub(crate) fn stages(&self, model: &str) -> StageHistograms {
        let label = ModelLabel {
            model_name: model.to_owned(),
        };
        StageHistograms {
            preprocess: self.preprocess.get_or_create(&label).clone(),
            predict: self.predict.get_or_create(&label).clone(),
            postprocess: self.postprocess.get_or_create(&label).clone(),
        }
    }
}

/// Label set of per-deployment metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DeploymentLabel {
    deployment: String,
}

/// Label set of the replica-count gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReplicaStateLabels {
    deployment: String,
    state: &'static str,
}

/// Families of the per-deployment metrics, registered once.
#[derive(Clone)]
pub(crate) struct DeploymentFamilies {
    replicas: Family<ReplicaStateLabels, Gauge>,
    ongoing: Family<DeploymentLabel, Gauge>,
    queued: Family<DeploymentLabel, Gauge>,
    queue_wait: Family<DeploymentLabel, Histogram>,
    restarts: Family<DeploymentLabel, Counter>,
    rejected: Family<DeploymentLabel, Counter>,
    target: Family<DeploymentLabel, Gauge>,
    deaths: Family<DeploymentLabel, Counter>,
    held_at_death: Family<DeploymentLabel, Counter>,
    batch_size: Family<DeploymentLabel, Histogram>,
    batch_wait: Family<DeploymentLabel, Histogram>,
    batches: Family<DeploymentLabel, Counter>,
}

/// Buckets of the batch-size histogram: powers of two up to 1024.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The metrics of one deployment, resolved once.
#[derive(Clone)]
pub(crate) struct DeploymentMetrics {
    pub(crate) name: String,
    families: DeploymentFamilies,
    pub(crate) ongoing: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) queue_wait: Histogram,
    pub(crate) restarts: Counter,
    pub(crate) rejected: Counter,
    pub(crate) target: Gauge,
    pub(crate) deaths: Counter,
    pub(crate) held_at_death: Counter,
    /// Rows (or requests, list batching) per batch.
    pub(crate) batch_size: Histogram,
    /// Time each request waited for its batch to form.
    pub(crate) batch_wait: Histogram,
    /// Batches executed.
    pub(crate) batches: Counter,
}

impl DeploymentMetrics {
    /// Sets the number of replicas in `state`.
    pub(crate) fn set_replicas(&self, state: &'static str, n: usize) {
        self.families
            .replicas
            .get_or_create(&ReplicaStateLabels {
                deployment: self.name.clone(),
                state,
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

impl DeploymentFamilies {
    fn new(registry: &mut Registry) -> Self {
        let f = DeploymentFamilies {
            replicas: Family::default(),
            ongoing: Family::default(),
            queued: Family::default(),
            queue_wait: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            }),
            restarts: Family::default(),
            rejected: Family::default(),
            target: Family::default(),
            deaths: Family::default(),
            held_at_death: Family::default(),
            batch_size: Family::new_with_constructor(|| {
                Histogram::new(BATCH_SIZE_BUCKETS.iter().copied())
            }),
            batch_wait: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            }),
            batches: Family::default(),
        };
        registry.register(
            "ferroserve_deployment_batch_size",
            "Rows in each batch a deployment ran (requests, for a list-batching Python model)",
            f.batch_size.clone(),
        );
        registry.register(
            "ferroserve_deployment_batch_wait_seconds",
            "Time requests waited for their batch to form",
            f.batch_wait.clone(),
        );
        registry.register(
            "ferroserve_deployment_batches",
            "Batches a deployment ran",
            f.batches.clone(),
        );
        registry.register(
            "ferroserve_deployment_replicas",
            "Replicas of a deployment by state",
            f.replicas.clone(),
        );
        registry.register(
            "ferroserve_deployment_ongoing_requests",
            "Requests running on a deployment's replicas",
            f.ongoing.clone(),
        );
        registry.register(
            "ferroserve_deployment_queued_requests",
            "Requests waiting for a replica",
            f.queued.clone(),
        );
        registry.register(
            "ferroserve_deployment_queue_wait_seconds",
            "Time requests waited for a replica",
            f.queue_wait.clone(),
        );
        registry.register(
            "ferroserve_deployment_replica_restarts",
            "Replicas restarted after a failure",
            f.restarts.clone(),
        );
        registry.register(
            "ferroserve_deployment_rejected_requests",
            "Requests refused because the queue was full",
            f.rejected.clone(),
        );
        registry.register(
            "ferroserve_deployment_target_replicas",
            "The replica count the controller is aiming for (autoscaling target)",
            f.target.clone(),
        );
        registry.register(
            "ferroserve_deployment_replica_deaths",
            "Replicas that died while serving (crash, kill, panic)",
            f.deaths.clone(),
        );
        registry.register(
            "ferroserve_deployment_requests_held_at_death",
            "Requests that replicas held when they died (the most their deaths may fail)",
            f.held_at_death.clone(),
        );
        f
    }

    fn for_deployment(&self, name: &str) -> DeploymentMetrics {
        let label = DeploymentLabel {
            deployment: name.to_owned(),
        };
        DeploymentMetrics {
            name: name.to_owned(),
            families: self.clone(),
            ongoing: self.ongoing.get_or_create(&label).clone(),
            queued: self.queued.get_or_create(&label).clone(),
            queue_wait: self.queue_wait.get_or_create(&label).clone(),
            restarts: self.restarts.get_or_create(&label).clone(),
            rejected: self.rejected.get_or_create(&label).clone(),
            target: self.target.get_or_create(&label).clone(),
            deaths: self.deaths.get_or_create(&label).clone(),
            held_at_death: self.held_at_death.get_or_create(&label).clone(),
            batch_size: self.batch_size.get_or_create(&label).clone(),
            batch_wait: self.batch_wait.get_or_create(&label).clone(),
            batches: self.batches.get_or_create(&label).clone(),
        }
    }
}
