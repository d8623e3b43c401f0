//! The autoscaling policy, Ray Serve's default: the load (ongoing + queued requests, averaged
//! over the look-back window) divided by `target_ongoing_requests` is the desired replica
//! count; the step towards it is scaled by the up/down factor, clamped to
//! `[min_replicas, max_replicas]`, and applied only once the decision has held for the up or
//! down delay. From zero replicas, a waiting request starts one at once.
//!
//! Pure: time is passed in, so tests drive it with synthetic instants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::AutoscalingConfig;

/// Decides the replica count of one deployment from its load.
#[derive(Debug)]
pub(crate) struct Autoscaler {
    config: AutoscalingConfig,
    /// (time, ongoing + queued) samples within the look-back window.
    samples: VecDeque<(Instant, f64)>,
    /// Since when the policy has wanted more replicas.
    up_since: Option<Instant>,
    /// Since when the policy has wanted fewer replicas.
    down_since: Option<Instant>,
}

impl Autoscaler {
    pub(crate) fn new(config: AutoscalingConfig) -> Self {
        Autoscaler {
            config,
            samples: VecDeque::new(),
            up_since: None,
            down_since: None,
        }
    }

    pub(crate) fn config(&self) -> &AutoscalingConfig {
        &self.config
    }

    /// Replaces the options, keeping the load history.
    pub(crate) fn reconfigure(&mut self, config: AutoscalingConfig) {
        self.config = config;
    }

    /// Records the deployment's load (ongoing + queued requests) at `now`.
    pub(crate) fn record(&mut self, now: Instant, load: f64) {
        self.samples.push_back((now, load));
        while let Some(&(t, _)) = self.samples.front() {
            if now.duration_since(t) > self.config.look_back_period {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The average load over the look-back window.
    pub(crate) fn average_load(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|(_, l)| l).sum::<f64>() / self.samples.len() as f64
    }

    /// The replica count to run now, given `current` (the current target) and the number of
    /// requests waiting right now.
    pub(crate) fn decide(&mut self, now: Instant, current: usize, queued_now: usize) -> usize {
        let c = &self.config;
        if current == 0 {
            // Cold start: a waiting request must not wait for the upscale delay.
            self.up_since = None;
            self.down_since = None;
            return if queued_now > 0 {
                (c.upscaling_factor.ceil() as usize).clamp(c.min_replicas.max(1), c.max_replicas)
            } else {
                c.min_replicas
            };
        }
        let desired = self.average_load() / c.target_ongoing_requests;
        let cur = current as f64;
        let mut scaled = if desired > cur {
            (cur + c.upscaling_factor * (desired - cur)).ceil() as usize
        } else if desired < cur {
            let s = (cur + c.downscaling_factor * (desired - cur)).ceil() as usize;
            if s >= current { current - 1 } else { s }
        } else {
            current
        };
        scaled = scaled.clamp(c.min_replicas, c.max_replicas);
        if scaled > current {
            self.down_since = None;
            let since = *self.up_since.get_or_insert(now);
            if now.duration_since(since) >= c.upscale_delay {
                self.up_since = None;
                return scaled;
            }
        } else if scaled < current {
            self.up_since = None;
            let since = *self.down_since.get_or_insert(now);
            if now.duration_since(since) >= c.downscale_delay {
                self.down_since = None;
                // Zero is reached only by a separate 1 → 0 step.
                return if scaled == 0 && current > 1 {
                    1
                } else {
                    scaled
                };
            }
        } else {
            self.up_since = None;
            self.down_since = None;
        }
        current
    }
}

/// Delay before restarting a replica after `failures` consecutive failures: 0.5 s doubling
/// up to 30 s.
pub(crate) fn restart_backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_millis(500)
        .saturating_mul(1 << exp)
        .min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min: usize, max: usize) -> AutoscalingConfig {
        AutoscalingConfig {
            min_replicas: min,
            max_replicas: max,
            initial_replicas: min,
            target_ongoing_requests: 2.0,
            upscale_delay: Duration::from_secs(3),
            downscale_delay: Duration::from_secs(10),
            upscaling_factor: 1.0,
            downscaling_factor: 1.0,
            metrics_interval: Duration::from_secs(1),
            look_back_period: Duration::from_secs(5),
        }
    }

    /// Feeds a constant load for `secs` seconds, one sample a second, deciding each time.
    fn run(
        a: &mut Autoscaler,
        t: &mut Instant,
        secs: u64,
        load: f64,
        current: &mut usize,
    ) -> Vec<usize> {
        let mut seen = vec![];
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            a.record(*t, load);
            *current = a.decide(*t, *current, 0);
            seen.push(*current);
        }
        seen
    }

    #[test]
    fn scales_up_after_the_upscale_delay_and_down_after_the_downscale_delay() {
        let mut a = Autoscaler::new(config(1, 4));
        let mut t = Instant::now();
        let mut n = 1;
        // Load 8 with target 2 wants 4 replicas, but only once it has held for 3 s.
        let seen = run(&mut a, &mut t, 5, 8.0, &mut n);
        assert_eq!(seen, vec![1, 1, 1, 4, 4]);
        // Idle: the average starts to fall at once, so the wish to scale down starts at once,
        // but it must hold for the 10 s downscale delay; by then the window is idle.
        let seen = run(&mut a, &mut t, 20, 0.0, &mut n);
        assert_eq!(seen.iter().position(|&n| n < 4), Some(10), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), 1);
    }

    #[test]
    fn never_leaves_the_bounds() {
        let mut a = Autoscaler::new(config(2, 3));
        let mut t = Instant::now();
        let mut n = 2;
        assert!(
            run(&mut a, &mut t, 10, 100.0, &mut n)
                .iter()
                .all(|&n| (2..=3).contains(&n))
        );
        assert!(
            run(&mut a, &mut t, 30, 0.0, &mut n)
                .iter()
                .all(|&n| (2..=3).contains(&n))
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn a_flip_of_direction_resets_the_delay() {
        let mut a = Autoscaler::new(config(1, 4));
        let mut t = Instant::now();
        let mut n = 1;
        run(&mut a, &mut t, 2, 8.0, &mut n);
        // Load vanishes before the 3 s upscale delay: no scale-up at all.
        a.samples.clear();
        let seen = run(&mut a, &mut t, 5, 1.0, &mut n);
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn from_zero_a_waiting_request_starts_a_replica_at_once() {
        let mut a = Autoscaler::new(config(0, 2));
        let t = Instant::now();
        assert_eq!(a.decide(t, 0, 0), 0);
        assert_eq!(a.decide(t, 0, 1), 1);
    }

    #[test]
    fn scale_to_zero_goes_through_one() {
        let mut a = Autoscaler::new(config(0, 4));
        let mut t = Instant::now();
        let mut n = 4;
        let seen = run(&mut a, &mut t, 40, 0.0, &mut n);
        let first_one = seen.iter().position(|&n| n == 1).unwrap();
        let first_zero = seen.iter().position(|&n| n == 0).unwrap();
        assert!(first_zero >= first_one + 10, "{seen:?}");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(restart_backoff(1), Duration::from_millis(500));
        assert_eq!(restart_backoff(2), Duration::from_secs(1));
        assert_eq!(restart_backoff(3), Duration::from_secs(2));
        assert_eq!(restart_backoff(100), Duration::from_secs(30));
    }
}
