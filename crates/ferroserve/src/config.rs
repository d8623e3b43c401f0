//! Configuration in two stages: [`ConfigFile`] mirrors the YAML file, [`Config`] is the
//! validated form the rest of the code uses. A validation error names the field.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ferroserve_runtime::DeploymentOptions;
use serde::Deserialize;

/// Default HTTP port, as KServe's.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default gRPC port, as KServe's.
pub const DEFAULT_GRPC_PORT: u16 = 8081;
/// Default request body limit: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The config file, as written. Each deployment has a `name`, a `model` (and `weights` for
/// models that take them) and Ray Serve's deployment options beside them:
///
/// ```yaml
/// http_port: 8080
/// deployments:
///   - name: identity
///     model: identity
///     num_replicas: 2
///   - name: iris
///     model: iris
///     weights: examples/iris/weights.json   # relative to this file
///     max_ongoing_requests: 8
///     autoscaling_config: {min_replicas: 1, max_replicas: 4}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// HTTP port.
    pub http_port: Option<u16>,
    /// gRPC port (reserved for the gRPC ingress).
    pub grpc_port: Option<u16>,
    /// Largest request body, in bytes.
    pub max_request_bytes: Option<usize>,
    /// The deployments to serve, each a map of its fields.
    pub deployments: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Deployments, in file order.
    pub deployments: Vec<DeploymentConfig>,
}

/// A deployment: what to serve, and how.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// Model name.
    pub name: String,
    /// What to serve.
    pub model: ModelKind,
    /// Replicas, limits, autoscaling... (validated when the controller starts).
    pub options: DeploymentOptions,
}

/// The models this binary can build.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelKind {
    /// The built-in identity model.
    Identity,
    /// The iris example, with weights from a file or embedded.
    Iris {
        /// Weights file; `None` uses the embedded copy.
        weights: Option<PathBuf>,
    },
}

impl Config {
    /// What `ferroserve serve` serves without a config file: the iris example and `identity`.
    pub fn default_example() -> Self {
        Config {
            http_port: DEFAULT_HTTP_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            deployments: vec![
                DeploymentConfig {
                    name: "iris".into(),
                    model: ModelKind::Iris { weights: None },
                    options: DeploymentOptions::default(),
                },
                DeploymentConfig {
                    name: "identity".into(),
                    model: ModelKind::Identity,
                    // Pure serving overhead: let one replica take every request at once.
                    options: DeploymentOptions {
                        max_ongoing_requests: Some(1024),
                        ..DeploymentOptions::default()
                    },
                },
            ],
        }
    }

    /// Reads and validates a YAML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base)
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates YAML; relative paths are taken from `base`.
    pub fn from_yaml(text: &str, base: &Path) -> anyhow::Result<Self> {
        let file: ConfigFile = serde_saphyr::from_str(text)?;
        Self::validate(file, base)
    }

    fn validate(file: ConfigFile, base: &Path) -> anyhow::Result<Self> {
        if file.deployments.is_empty() {
            bail!("deployments: at least one deployment is needed");
        }
        let mut deployments: Vec<DeploymentConfig> = Vec::with_capacity(file.deployments.len());
        for (i, mut fields) in file.deployments.into_iter().enumerate() {
            let name = match fields.remove("name") {
                Some(serde_json::Value::String(n)) => n,
                _ => bail!("deployments[{i}].name: a string is required"),
            };
            let at = format!("deployments[{i}] ({name})");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                bail!("{at}.name: '{name}' must be letters, digits, '-', '_' or '.'");
            }
            if deployments.iter().any(|x| x.name == name) {
                bail!("{at}.name: '{name}' is used by an earlier deployment");
            }
            let weights = match fields.remove("weights") {
                None => None,
                Some(serde_json::Value::String(w)) => Some(base.join(w)),
                Some(_) => bail!("{at}.weights: a path is required"),
            };
            let model = match fields.remove("model") {
                Some(serde_json::Value::String(m)) => m,
                _ => bail!("{at}.model: a model name is required ('identity' or 'iris')"),
            };
            let model = match model.as_str() {
                "identity" => {
                    if weights.is_some() {
                        bail!("{at}.weights: the identity model takes no weights");
                    }
                    ModelKind::Identity
                }
                "iris" => ModelKind::Iris { weights },
                other => {
                    bail!("{at}.model: unknown model '{other}' (expected 'identity' or 'iris')")
                }
            };
            let options: DeploymentOptions =
                serde_json::from_value(serde_json::Value::Object(fields))
                    .map_err(|e| anyhow!("{at}: {e}"))?;
            options.validate().map_err(|e| anyhow!("{at}.{e}"))?;
            deployments.push(DeploymentConfig {
                name,
                model,
                options,
            });
        }
        if file.max_request_bytes == Some(0) {
            bail!("max_request_bytes: must be above 0");
        }
        Ok(Config {
            http_port: file.http_port.unwrap_or(DEFAULT_HTTP_PORT),
            grpc_port: file.grpc_port.unwrap_or(DEFAULT_GRPC_PORT),
            max_request_bytes: file.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            deployments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_config_with_options_and_resolves_paths() {
        let c = Config::from_yaml(
            "http_port: 9000\ndeployments:\n  - name: a\n    model: identity\n    num_replicas: 3\n    max_ongoing_requests: 8\n  - name: b\n    model: iris\n    weights: w.json\n    autoscaling_config:\n      min_replicas: 0\n      max_replicas: 4\n    user_config: {threshold: 0.5}\n",
            Path::new("/etc/fs"),
        )
        .unwrap();
        assert_eq!(c.http_port, 9000);
        assert_eq!(c.deployments[0].options.num_replicas, Some(3));
        assert_eq!(c.deployments[0].options.max_ongoing_requests, Some(8));
        assert_eq!(
            c.deployments[1].model,
            ModelKind::Iris {
                weights: Some("/etc/fs/w.json".into())
            }
        );
        let a = c.deployments[1]
            .options
            .autoscaling_config
            .as_ref()
            .unwrap();
        assert_eq!((a.min_replicas, a.max_replicas), (Some(0), Some(4)));
        assert_eq!(
            c.deployments[1].options.user_config,
            Some(serde_json::json!({"threshold": 0.5}))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = |y: &str| format!("{:#}", Config::from_yaml(y, Path::new(".")).unwrap_err());
        assert!(
            err("deployments:\n  - name: a\n    model: nope\n")
                .contains("deployments[0] (a).model")
        );
        assert!(
            err(
                "deployments:\n  - name: a\n    model: identity\n  - name: a\n    model: identity\n"
            )
            .contains("deployments[1] (a).name")
        );
        let e = err("deployments:\n  - name: a\n    model: identity\n    num_replica: 2\n");
        assert!(
            e.contains("deployments[0] (a)") && e.contains("num_replica"),
            "{e}"
        );
        let e =
            err("deployments:\n  - name: a\n    model: identity\n    max_ongoing_requests: 0\n");
        assert!(e.contains("deployments[0] (a).max_ongoing_requests"), "{e}");
        let e = err(
            "deployments:\n  - name: a\n    model: identity\n    autoscaling_config: {min_replicas: 5, max_replicas: 2}\n",
        );
        assert!(
            e.contains("deployments[0] (a).autoscaling_config.min_replicas"),
            "{e}"
        );
        let e = err(
            "deployments:\n  - name: a\n    model: identity\n    autoscaling_config: {min_replica: 1}\n",
        );
        assert!(e.contains("min_replica"), "{e}");
        assert!(err("deployments: []\n").contains("deployments"));
    }
}
