//! Deployment options, in two stages: [`DeploymentOptions`] mirrors what a user writes (YAML
//! or the Rust builder), every field optional; [`DeploymentConfig`] is the validated form with
//! defaults applied. Names, meanings and defaults are Ray Serve's unless noted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `max_ongoing_requests` (Ray Serve's since 2.32).
pub const DEFAULT_MAX_ONGOING_REQUESTS: usize = 5;
/// Default `max_queued_requests`. Ray's default is unbounded; ours is bounded so that overload
/// answers 503 quickly instead of growing memory.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 128;

/// Deployment options as written; `None` means "use the default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentOptions {
    /// Fixed number of replicas (default 1). Cannot be combined with `autoscaling_config`.
    pub num_replicas: Option<usize>,
    /// Most requests a replica works on at once (default 5).
    pub max_ongoing_requests: Option<usize>,
    /// Most requests waiting for a replica; beyond it the answer is 503 (default 128; `-1`
    /// means unbounded, as in Ray).
    pub max_queued_requests: Option<i64>,
    /// Scale the replica count with load.
    pub autoscaling_config: Option<AutoscalingOptions>,
    /// Seconds between health checks of a replica (default 10).
    pub health_check_period_s: Option<f64>,
    /// Seconds a health check may take (default 30).
    pub health_check_timeout_s: Option<f64>,
    /// Seconds a stopping replica gets to finish its requests (default 20).
    pub graceful_shutdown_timeout_s: Option<f64>,
    /// Seconds a request may take, queue included; then the caller gets a timeout error
    /// (default: none).
    pub request_timeout_s: Option<f64>,
    /// Free-form configuration handed to the model's `reconfigure`, changeable without restart.
    pub user_config: Option<serde_json::Value>,
    /// Dynamic batching: the most rows (tensor batching) or requests (a Python `@serve.batch`
    /// method) in one batch. Setting it (or `batch_wait_timeout_s`) turns batching on
    /// (default 10 when on, as Ray's `@serve.batch`).
    pub max_batch_size: Option<usize>,
    /// Seconds a batch waits for more requests after its first (default 0.01 when on).
    pub batch_wait_timeout_s: Option<f64>,
    /// Batch sizes to prefer (Triton's): a batch that reaches one leaves without waiting.
    pub preferred_batch_sizes: Option<Vec<usize>>,
    /// Batches one replica runs at once (default 1).
    pub max_concurrent_batches: Option<usize>,
}

/// Autoscaling options as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingOptions {
    /// Fewest replicas (default 1; 0 scales to zero).
    pub min_replicas: Option<usize>,
    /// Most replicas (default 1, as Ray).
    pub max_replicas: Option<usize>,
    /// Replicas at start (default `min_replicas`).
    pub initial_replicas: Option<usize>,
    /// Desired ongoing + queued requests per replica (default 2).
    pub target_ongoing_requests: Option<f64>,
    /// Seconds an upscale decision must hold (default 30).
    pub upscale_delay_s: Option<f64>,
    /// Seconds a downscale decision must hold (default 600).
    pub downscale_delay_s: Option<f64>,
    /// Gain on upscale steps (default 1).
    pub upscaling_factor: Option<f64>,
    /// Gain on downscale steps (default 1).
    pub downscaling_factor: Option<f64>,
    /// Seconds between load samples (default 10 in Ray; here the controller samples every
    /// control tick and this only bounds it from above).
    pub metrics_interval_s: Option<f64>,
    /// Seconds of load averaged for a decision (default 30).
    pub look_back_period_s: Option<f64>,
}

/// A deployment option that cannot be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The option, e.g. `autoscaling_config.max_replicas`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Validated deployment options.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentConfig {
    /// Replica count when not autoscaling.
    pub num_replicas: usize,
    /// Per-replica in-flight limit.
    pub max_ongoing_requests: usize,
    /// Queue bound; `None` is unbounded.
    pub max_queued_requests: Option<usize>,
    /// Autoscaling, when on.
    pub autoscaling: Option<AutoscalingConfig>,
    /// Health-check period.
    pub health_check_period: Duration,
    /// Health-check timeout.
    pub health_check_timeout: Duration,
    /// Drain time of a stopping replica.
    pub graceful_shutdown_timeout: Duration,
    /// Per-request time limit.
    pub request_timeout: Option<Duration>,
    /// Handed to `Model::reconfigure`.
    pub user_config: Option<serde_json::Value>,
    /// Dynamic batching, when on.
    pub batching: Option<BatchConfig>,
}

/// Validated batching options (see `batcher.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most rows (or requests, for list batching) in one batch.
    pub max_batch_size: usize,
    /// How long a forming batch waits after its first request.
    pub batch_wait_timeout: Duration,
    /// Sizes at which a batch leaves at once, ascending.
    pub preferred_batch_sizes: Vec<usize>,
    /// Batches one replica runs at once.
    pub max_concurrent_batches: usize,
}

/// Ray's `@serve.batch` defaults.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 10;
/// Ray's `@serve.batch` default wait, in seconds.
pub const DEFAULT_BATCH_WAIT_TIMEOUT_S: f64 = 0.01;

impl BatchConfig {
    /// Checks batching options; `None` when batching is off (neither `max_batch_size` nor
    /// `batch_wait_timeout_s` given).
    pub fn from_options(
        max_batch_size: Option<usize>,
        batch_wait_timeout_s: Option<f64>,
        preferred_batch_sizes: Option<&[usize]>,
        max_concurrent_batches: Option<usize>,
    ) -> Result<Option<Self>, ConfigError> {
        if max_batch_size.is_none() && batch_wait_timeout_s.is_none() {
            for (field, set) in [
                ("preferred_batch_sizes", preferred_batch_sizes.is_some()),
                ("max_concurrent_batches", max_concurrent_batches.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        field,
                        "applies only with batching on: set max_batch_size too",
                    ));
                }
            }
            return Ok(None);
        }
        let max_batch_size = max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE);
        if max_batch_size == 0 {
            return Err(invalid("max_batch_size", "must be at least 1"));
        }
        let batch_wait_timeout = seconds(
            "batch_wait_timeout_s",
            batch_wait_timeout_s,
            DEFAULT_BATCH_WAIT_TIMEOUT_S,
            true,
        )?;
        let mut preferred = preferred_batch_sizes.unwrap_or_default().to_vec();
        if let Some(&bad) = preferred.iter().find(|&&n| n == 0 || n > max_batch_size) {
            return Err(invalid(
                "preferred_batch_sizes",
                format!("{bad} is outside 1..={max_batch_size} (max_batch_size)"),
            ));
        }
        preferred.sort_unstable();
        preferred.dedup();
        let max_concurrent_batches = max_concurrent_batches.unwrap_or(1);
        if max_concurrent_batches == 0 {
            return Err(invalid("max_concurrent_batches", "must be at least 1"));
        }
        Ok(Some(BatchConfig {
            max_batch_size,
            batch_wait_timeout,
            preferred_batch_sizes: preferred,
            max_concurrent_batches,
        }))
    }

    /// The requests a replica must be allowed to hold to fill its batches.
    pub fn capacity(&self) -> usize {
        self.max_batch_size
            .saturating_mul(self.max_concurrent_batches)
    }
}

/// Validated autoscaling options.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalingConfig {
    /// Fewest replicas.
    pub min_replicas: usize,
    /// Most replicas.
    pub max_replicas: usize,
    /// Replicas at start.
    pub initial_replicas: usize,
    /// Desired load per replica.
    pub target_ongoing_requests: f64,
    /// Upscale hysteresis.
    pub upscale_delay: Duration,
    /// Downscale hysteresis.
    pub downscale_delay: Duration,
    /// Upscale gain.
    pub upscaling_factor: f64,
    /// Downscale gain.
    pub downscaling_factor: f64,
    /// Longest time between load samples.
    pub metrics_interval: Duration,
    /// Averaging window.
    pub look_back_period: Duration,
}

/// The shortest `request_timeout_s`: below a millisecond no request could finish.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(1);

fn seconds(
    field: &str,
    v: Option<f64>,
    default: f64,
    allow_zero: bool,
) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !s.is_finite() || s < 0.0 || (!allow_zero && s == 0.0) || s > 1e9 {
        return Err(invalid(
            field,
            format!(
                "{s} must be a number of seconds {}",
                if allow_zero { ">= 0" } else { "> 0" }
            ),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

impl DeploymentOptions {
    /// Applies defaults and checks every option; the error names the field.
    pub fn validate(&self) -> Result<DeploymentConfig, ConfigError> {
        let batching = BatchConfig::from_options(
            self.max_batch_size,
            self.batch_wait_timeout_s,
            self.preferred_batch_sizes.as_deref(),
            self.max_concurrent_batches,
        )?;
        // With batching on, the default lets a replica hold full batches.
        let max_ongoing_requests = self.max_ongoing_requests.unwrap_or_else(|| {
            batching
                .as_ref()
                .map_or(DEFAULT_MAX_ONGOING_REQUESTS, BatchConfig::capacity)
        });
        if max_ongoing_requests == 0 {
            return Err(invalid("max_ongoing_requests", "must be at least 1"));
        }
        if let Some(b) = &batching
            && max_ongoing_requests < b.max_batch_size
        {
            return Err(invalid(
                "max_ongoing_requests",
                format!(
                    "{max_ongoing_requests} is below max_batch_size ({}): a replica never holds more than {max_ongoing_requests} requests, so its batches could never fill; raise max_ongoing_requests to at least {} (max_batch_size x max_concurrent_batches) or leave it unset",
                    b.max_batch_size,
                    b.capacity()
                ),
            ));
        }
        let max_queued_requests = match self.max_queued_requests {
            None => Some(DEFAULT_MAX_QUEUED_REQUESTS),
            Some(-1) => None,
            Some(n) if n >= 0 => Some(n as usize),
            Some(n) => {
                return Err(invalid(
                    "max_queued_requests",
                    format!("{n} must be >= 0, or -1 for unbounded"),
                ));
            }
        };
        if self.num_replicas.is_some() && self.autoscaling_config.is_some() {
            return Err(invalid(
                "num_replicas",
                "cannot be set together with autoscaling_config (set autoscaling_config.initial_replicas instead)",
            ));
        }
        let num_replicas = self.num_replicas.unwrap_or(1);
        if num_replicas == 0 {
            return Err(invalid(
                "num_replicas",
                "must be at least 1 (use autoscaling_config.min_replicas: 0 to scale to zero)",
            ));
        }
        let autoscaling = self
            .autoscaling_config
            .as_ref()
            .map(AutoscalingOptions::validate)
            .transpose()?;
        let health_check_period = seconds(
            "health_check_period_s",
            self.health_check_period_s,
            10.0,
            false,
        )?;
        let health_check_timeout = seconds(
            "health_check_timeout_s",
            self.health_check_timeout_s,
            30.0,
            false,
        )?;
        let graceful_shutdown_timeout = seconds(
            "graceful_shutdown_timeout_s",
            self.graceful_shutdown_timeout_s,
            20.0,
            true,
        )?;
        let request_timeout = self
            .request_timeout_s
            .map(|s| seconds("request_timeout_s", Some(s), 0.0, false))
            .transpose()?;
        if let Some(t) = request_timeout
            && t < MIN_REQUEST_TIMEOUT
        {
            return Err(invalid(
                "request_timeout_s",
                format!("{} must be at least 0.001 seconds", t.as_secs_f64()),
            ));
        }
        Ok(DeploymentConfig {
            num_replicas,
            max_ongoing_requests,
            max_queued_requests,
            autoscaling,
            health_check_period,
            health_check_timeout,
            graceful_shutdown_timeout,
            request_timeout,
            user_config: self.user_config.clone(),
            batching,
        })
    }
}

impl AutoscalingOptions {
    fn validate(&self) -> Result<AutoscalingConfig, ConfigError> {
        let f = |name: &str| format!("autoscaling_config.{name}");
        let min_replicas = self.min_replicas.unwrap_or(1);
        let max_replicas = self.max_replicas.unwrap_or(1.max(min_replicas));
        if max_replicas == 0 {
            return Err(invalid(&f("max_replicas"), "must be at least 1"));
        }
        if min_replicas > max_replicas {
            return Err(invalid(
                &f("min_replicas"),
                format!("{min_replicas} is above max_replicas ({max_replicas})"),
            ));
        }
        let initial_replicas = self.initial_replicas.unwrap_or(min_replicas);
        if initial_replicas < min_replicas || initial_replicas > max_replicas {
            return Err(invalid(
                &f("initial_replicas"),
                format!(
                    "{initial_replicas} is outside [min_replicas, max_replicas] = [{min_replicas}, {max_replicas}]"
                ),
            ));
        }
        let positive = |name: &str, v: Option<f64>, default: f64| {
            let x = v.unwrap_or(default);
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(invalid(&f(name), format!("{x} must be a number > 0")))
            }
        };
        Ok(AutoscalingConfig {
            min_replicas,
            max_replicas,
            initial_replicas,
            target_ongoing_requests: positive(
                "target_ongoing_requests",
                self.target_ongoing_requests,
                2.0,
            )?,
            upscale_delay: seconds(&f("upscale_delay_s"), self.upscale_delay_s, 30.0, true)?,
            downscale_delay: seconds(&f("downscale_delay_s"), self.downscale_delay_s, 600.0, true)?,
            upscaling_factor: positive("upscaling_factor", self.upscaling_factor, 1.0)?,
            downscaling_factor: positive("downscaling_factor", self.downscaling_factor, 1.0)?,
            metrics_interval: seconds(
                &f("metrics_interval_s"),
                self.metrics_interval_s,
                10.0,
                false,
            )?,
            look_back_period: seconds(
                &f("look_back_period_s"),
                self.look_back_period_s,
                30.0,
                false,
            )?,
        })
    }
}

impl DeploymentConfig {
    /// The replica count to start with.
    pub fn initial_replicas(&self) -> usize {
        self.autoscaling
            .as_ref()
            .map_or(self.num_replicas, |a| a.initial_replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ray_serves_except_the_queue_bound() {
        let c = DeploymentOptions::default().validate().unwrap();
        assert_eq!(c.num_replicas, 1);
        assert_eq!(c.max_ongoing_requests, 5);
        assert_eq!(c.max_queued_requests, Some(DEFAULT_MAX_QUEUED_REQUESTS));
        assert_eq!(c.health_check_period, Duration::from_secs(10));
        assert_eq!(c.health_check_timeout, Duration::from_secs(30));
        assert_eq!(c.graceful_shutdown_timeout, Duration::from_secs(20));
        assert_eq!(c.request_timeout, None);
        assert_eq!(c.batching, None);
        let b = DeploymentOptions {
            batch_wait_timeout_s: Some(0.005),
            max_concurrent_batches: Some(2),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let batching = b.batching.unwrap();
        assert_eq!(batching.max_batch_size, 10);
        assert_eq!(batching.batch_wait_timeout, Duration::from_millis(5));
        // Unset, max_ongoing_requests makes room for full batches.
        assert_eq!(b.max_ongoing_requests, 20);
        let a = AutoscalingOptions::default().validate().unwrap();
        assert_eq!(
            (a.min_replicas, a.max_replicas, a.initial_replicas),
            (1, 1, 1)
        );
        assert_eq!(a.target_ongoing_requests, 2.0);
        assert_eq!(a.upscale_delay, Duration::from_secs(30));
        assert_eq!(a.downscale_delay, Duration::from_secs(600));
        assert_eq!(a.look_back_period, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |o: DeploymentOptions| o.validate().unwrap_err().field;
        assert_eq!(
            field(DeploymentOptions {
                max_ongoing_requests: Some(0),
                ..Default::default()
            }),
            "max_ongoing_requests"
        );
        assert_eq!(
            field(DeploymentOptions {
                max_queued_requests: Some(-5),
                ..Default::default()
            }),
            "max_queued_requests"
        );
        assert_eq!(
            field(DeploymentOptions {
                health_check_period_s: Some(-1.0),
                ..Default::default()
            }),
            "health_check_period_s"
        );
        assert_eq!(
            field(DeploymentOptions {
                num_replicas: Some(2),
                autoscaling_config: Some(AutoscalingOptions::default()),
                ..Default::default()
            }),
            "num_replicas"
        );
        assert_eq!(
            field(DeploymentOptions {
                autoscaling_config: Some(AutoscalingOptions {
                    min_replicas: Some(3),
                    max_replicas: Some(2),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "autoscaling_config.min_replicas"
        );
        assert_eq!(
            field(DeploymentOptions {
                autoscaling_config: Some(AutoscalingOptions {
                    target_ongoing_requests: Some(0.0),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "autoscaling_config.target_ongoing_requests"
        );
        assert_eq!(
            field(DeploymentOptions {
                max_batch_size: Some(32),
                max_ongoing_requests: Some(8),
                ..Default::default()
            }),
            "max_ongoing_requests"
        );
        assert_eq!(
            field(DeploymentOptions {
                max_batch_size: Some(8),
                preferred_batch_sizes: Some(vec![4, 16]),
                ..Default::default()
            }),
            "preferred_batch_sizes"
        );
        assert_eq!(
            field(DeploymentOptions {
                max_concurrent_batches: Some(2),
                ..Default::default()
            }),
            "max_concurrent_batches"
        );
        // Regression: a timeout below a nanosecond became a zero interval and panicked the
        // Python watchdog.
        assert_eq!(
            field(DeploymentOptions {
                request_timeout_s: Some(1e-12),
                ..Default::default()
            }),
            "request_timeout_s"
        );
    }
}
