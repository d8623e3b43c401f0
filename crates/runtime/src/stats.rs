//! Cumulative per-model statistics in Triton's shape (`ModelStatistics`): counts and total
//! durations of successful and failed requests, of queueing and of model execution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count of events and their total duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DurationStat {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

/// A snapshot of one model's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStatistics {
    /// Milliseconds since the epoch of the latest request, 0 if none.
    pub last_inference_ms: u64,
    /// Successful inferences.
    pub inference_count: u64,
    /// Model executions: a batch is one execution of all its requests.
    pub execution_count: u64,
    /// Successful requests, end to end.
    pub success: DurationStat,
    /// Failed requests, end to end.
    pub fail: DurationStat,
    /// Time spent waiting for a replica.
    pub queue: DurationStat,
    /// Time spent in the replica (preprocess, predict, postprocess).
    pub compute_infer: DurationStat,
}

#[derive(Default)]
struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn get(&self) -> DurationStat {
        DurationStat {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

/// Batches of more than one request, counted by the batcher.
#[derive(Debug, Default)]
pub(crate) struct BatchCounters {
    batches: AtomicU64,
    requests: AtomicU64,
}

impl BatchCounters {
    /// One batch of `requests` (more than one) ran.
    pub(crate) fn batch(&self, requests: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

/// The live counters of one model.
#[derive(Default)]
pub(crate) struct StatsRecorder {
    pub(crate) batches: std::sync::Arc<BatchCounters>,
    last_ms: AtomicU64,
    success: Counter,
    fail: Counter,
    queue: Counter,
    compute: Counter,
}

impl StatsRecorder {
    pub(crate) fn request(&self, ok: bool, took: Duration) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_ms.store(now, Ordering::Relaxed);
        if ok {
            self.success.add(took);
        } else {
            self.fail.add(took);
        }
    }

    pub(crate) fn queued(&self, waited: Duration) {
        self.queue.add(waited);
    }

    pub(crate) fn computed(&self, took: Duration) {
        self.compute.add(took);
    }

    pub(crate) fn snapshot(&self) -> ModelStatistics {
        let success = self.success.get();
        ModelStatistics {
            last_inference_ms: self.last_ms.load(Ordering::Relaxed),
            inference_count: success.count,
            // Requests that ran in a batch count one execution per batch.
            execution_count: success
                .count
                .saturating_sub(self.batches.requests.load(Ordering::Relaxed))
                + self.batches.batches.load(Ordering::Relaxed),
            success,
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_infer: self.compute.get(),
        }
    }
}
