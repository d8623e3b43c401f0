//! The models the benchmark serves besides the built-in `Identity`: a CPU-bound one and one
//! that only sleeps.

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ferroserve_runtime::{Model, ModelError, Payload, Prediction, RequestContext};
use serde_json::json;

/// Pure computation: `iters` rounds of a serial integer/float dependency chain, so the time is
/// proportional to `iters` and the compiler can neither vectorise nor skip it.
pub fn spin(iters: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut f: f64 = 1.0;
    for i in 0..black_box(iters) {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        f = f * 0.999_999_9 + (x >> 40) as f64 * 1e-9;
    }
    black_box(x ^ f.to_bits())
}

/// How many [`spin`] rounds take `target` on this machine, and what one call of that size
/// then takes (median of several).
pub fn calibrate(target: Duration) -> (u64, Duration) {
    // Grow the probe until it runs long enough for the clock to be accurate.
    let mut iters: u64 = 10_000;
    loop {
        let t = Instant::now();
        spin(iters);
        if t.elapsed() >= Duration::from_millis(20) {
            break;
        }
        iters *= 2;
    }
    // The fastest of a few runs is the least disturbed by other processes.
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            spin(iters);
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(20));
    let per_iter = best.as_secs_f64() / iters as f64;
    let iters = ((target.as_secs_f64() / per_iter) as u64).max(1);
    let mut check: Vec<Duration> = (0..9)
        .map(|_| {
            let t = Instant::now();
            spin(iters);
            t.elapsed()
        })
        .collect();
    check.sort();
    (iters, check[check.len() / 2])
}

/// Spends a fixed amount of CPU per call, blocking its replica's thread meanwhile (as a real
/// CPU-bound model would).
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub iters: u64,
}

#[async_trait]
impl Model for Cpu {
    async fn predict(&self, _: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        let r = spin(self.iters);
        Ok(Prediction::V1(json!({ "predictions": [r] })))
    }
}

/// Awaits a timer, then answers: an I/O-bound model, where one replica overlaps requests.
#[derive(Debug, Clone, Copy)]
pub struct Sleep {
    pub delay: Duration,
}

#[async_trait]
impl Model for Sleep {
    async fn predict(&self, _: Payload, _: &RequestContext) -> Result<Prediction, ModelError> {
        tokio::time::sleep(self.delay).await;
        Ok(Prediction::V1(json!({ "predictions": [] })))
    }
}
