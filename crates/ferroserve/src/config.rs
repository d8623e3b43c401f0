//! Configuration in two stages: [`ConfigFile`] mirrors the YAML file, [`Config`] is the
//! validated form the rest of the code uses. A validation error names the field.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Default HTTP port, as KServe's.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default gRPC port, as KServe's.
pub const DEFAULT_GRPC_PORT: u16 = 8081;
/// Default request body limit: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The config file, as written.
///
/// ```yaml
/// http_port: 8080
/// deployments:
///   - name: identity
///     model: identity
///   - name: iris
///     model: iris
///     weights: examples/iris/weights.json   # relative to this file
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
    /// The deployments to serve.
    pub deployments: Vec<DeploymentFile>,
}

/// One deployment, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    /// Model name in URLs.
    pub name: String,
    /// A built-in or example model: `identity` or `iris`.
    pub model: String,
    /// Weights file for models that take one (`iris`), relative to the config file.
    pub weights: Option<PathBuf>,
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

/// A validated deployment.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// Model name.
    pub name: String,
    /// What to serve.
    pub model: ModelKind,
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
                },
                DeploymentConfig {
                    name: "identity".into(),
                    model: ModelKind::Identity,
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
        let mut deployments = Vec::with_capacity(file.deployments.len());
        for (i, d) in file.deployments.into_iter().enumerate() {
            let at = format!("deployments[{i}] ({})", d.name);
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                bail!(
                    "{at}.name: '{}' must be letters, digits, '-', '_' or '.'",
                    d.name
                );
            }
            if deployments
                .iter()
                .any(|x: &DeploymentConfig| x.name == d.name)
            {
                bail!("{at}.name: '{}' is used by an earlier deployment", d.name);
            }
            let model = match d.model.as_str() {
                "identity" => {
                    if d.weights.is_some() {
                        bail!("{at}.weights: the identity model takes no weights");
                    }
                    ModelKind::Identity
                }
                "iris" => ModelKind::Iris {
                    weights: d.weights.map(|w| base.join(w)),
                },
                other => {
                    bail!("{at}.model: unknown model '{other}' (expected 'identity' or 'iris')")
                }
            };
            deployments.push(DeploymentConfig {
                name: d.name,
                model,
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
    fn parses_a_config_and_resolves_paths() {
        let c = Config::from_yaml(
            "http_port: 9000\ndeployments:\n  - name: a\n    model: identity\n  - name: b\n    model: iris\n    weights: w.json\n",
            Path::new("/etc/fs"),
        )
        .unwrap();
        assert_eq!(c.http_port, 9000);
        assert_eq!(
            c.deployments[1].model,
            ModelKind::Iris {
                weights: Some("/etc/fs/w.json".into())
            }
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
        assert!(err("deployments:\n  - name: a\n    modle: identity\n").contains("modle"));
        assert!(err("deployments: []\n").contains("deployments"));
    }
}
