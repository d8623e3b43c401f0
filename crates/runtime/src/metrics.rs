//! Metrics of the runtime: latency of each model stage, under KServe's metric names so that
//! existing dashboards keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
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

/// Histograms of the preprocess, predict and postprocess stages per model.
#[derive(Clone)]
pub struct RuntimeMetrics {
    preprocess: Family<ModelLabel, Histogram>,
    predict: Family<ModelLabel, Histogram>,
    postprocess: Family<ModelLabel, Histogram>,
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
