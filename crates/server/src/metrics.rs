//! Metrics of the ingress: request counts by model, protocol and status code, and end-to-end
//! latency by model and protocol. Stage latencies live in the runtime's metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use ferroserve_runtime::LATENCY_BUCKETS;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    model_name: String,
    protocol: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    model_name: String,
    protocol: &'static str,
}

/// Counters and histograms of inference requests at the ingress.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS.iter().copied())
            }),
        };
        registry.register(
            "ferroserve_requests",
            "Inference requests by model, protocol and status code",
            m.requests.clone(),
        );
        registry.register(
            "ferroserve_request_duration_seconds",
            "End-to-end inference request latency at the ingress",
            m.latency.clone(),
        );
        m
    }

    /// Records one finished inference request.
    pub fn record(&self, model: &str, protocol: &'static str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                model_name: model.to_owned(),
                protocol,
                code,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                model_name: model.to_owned(),
                protocol,
            })
            .observe(elapsed.as_secs_f64());
    }
}
