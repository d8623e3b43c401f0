//! Configuration in two stages: [`ConfigFile`] mirrors the YAML file, [`Config`] is the
//! validated form the rest of the code uses. A validation error names the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ferroserve_python::PythonSpec;

use crate::applications::{self, ApplicationFile};
use ferroserve_runtime::DeploymentOptions;
use ferroserve_runtime::graph::GraphSpec;
use ferroserve_server::repository::Restriction;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// Default listening address: all interfaces, as KServe's.
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default HTTP port, as KServe's.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default gRPC port, as KServe's.
pub const DEFAULT_GRPC_PORT: u16 = 8081;
/// Default request body limit: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Default gRPC message size limit: 64 MiB.
pub const DEFAULT_MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Default bound on open connections, per port.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time to send a request head: hyper's and Go's usual 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT_S: f64 = 30.0;
/// Default idle keep-alive time: nginx's 75 s, above the 60 s idle timeout of common load
/// balancers, so that they (not the server) close idle connections and never send a request
/// on one the server is closing (Ray Serve's 5 s answers those with 502s behind an ALB).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_S: f64 = 75.0;
/// Default time to send a request body: 60 s (a 64 MiB body then needs ~1.1 MB/s).
pub const DEFAULT_BODY_READ_TIMEOUT_S: f64 = 60.0;
/// Default concurrent HTTP/2 streams per connection (Go's 250, hyper's 200).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default HTTP/2 header list limit: 16 KiB, gRPC core's and uvicorn's head limit.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// The config file, as written. Each deployment has a `name`, what to serve — a built-in
/// `model` (and `weights` for models that take them) or a `python` class (with an optional
/// `runtime_env`: `py_executable`, `env_vars`, `working_dir`) — and Ray Serve's deployment
/// options beside them:
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
///   - name: custom
///     python: model.py:MyModel               # or package.module:MyModel
///     runtime_env: {py_executable: .venv/bin/python, env_vars: {OMP_NUM_THREADS: "1"}}
///     shared_memory: {arena_mib: 256, min_tensor_bytes: 8192}  # the defaults
///     num_replicas: 4
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The address both ports listen on (default: all interfaces).
    pub host: Option<String>,
    /// HTTP port.
    pub http_port: Option<u16>,
    /// gRPC port.
    pub grpc_port: Option<u16>,
    /// Whether the gRPC port is served (default: yes).
    pub enable_grpc: Option<bool>,
    /// Largest request body, in bytes.
    pub max_request_bytes: Option<usize>,
    /// Largest gRPC message, in bytes.
    pub max_grpc_message_bytes: Option<usize>,
    /// Most open connections per port.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request head.
    pub header_read_timeout_s: Option<f64>,
    /// Seconds a connection may stay idle.
    pub keep_alive_timeout_s: Option<f64>,
    /// Seconds a client has to send a request body.
    pub body_read_timeout_s: Option<f64>,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: Option<u32>,
    /// Largest HTTP/2 header list, in bytes.
    pub max_header_list_bytes: Option<u32>,
    /// Whether `GET /-/status` is served.
    pub status_route: Option<bool>,
    /// The deployments to serve, each a map of its fields.
    #[serde(default)]
    pub deployments: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Python applications (Ray Serve's `applications:`), each a graph of deployments.
    #[serde(default)]
    pub applications: Vec<ApplicationFile>,
    /// Inference graphs (KServe's `InferenceGraph`), each served as a model of its own.
    #[serde(default)]
    pub graphs: Vec<GraphSpec>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address both ports listen on: an IP address or a host name (default `0.0.0.0`,
    /// all interfaces, as KServe).
    pub host: String,
    /// HTTP port.
    pub http_port: u16,
    /// gRPC port.
    pub grpc_port: u16,
    /// Whether the gRPC port is served (KServe's `--enable_grpc`).
    pub grpc_enabled: bool,
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Largest gRPC message, in bytes.
    pub max_grpc_message_bytes: usize,
    /// Most open connections per port (HTTP: 503 beyond it; gRPC: the accept backlog).
    pub max_connections: usize,
    /// Time a client has to send a request head.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub keep_alive_timeout: Duration,
    /// Time a client has to send a request body.
    pub body_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest HTTP/2 header list, in bytes.
    pub max_header_list_bytes: u32,
    /// Whether `GET /-/status` is served (404 when not).
    pub status_route: bool,
    /// Deployments, in file order.
    pub deployments: Vec<DeploymentConfig>,
    /// A model repository served beside them (`--model-repository`).
    pub repository: Option<RepositoryOptions>,
    /// The header the model-repository API needs over HTTP (`--http-restricted-api`).
    pub http_restricted: Option<Restriction>,
    /// The metadata key the repository RPCs need over gRPC (`--grpc-restricted-protocol`).
    pub grpc_restricted: Option<Restriction>,
    /// Whether clients may register system shared-memory regions (`--allow-client-shm`).
    pub allow_client_shm: bool,
}

/// Triton's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlMode {
    /// Every model is loaded at start; load and unload still work through the API.
    None,
    /// Only the models named at start (`--load-model`) are loaded; the rest on request.
    Explicit,
    /// As `none`, and the repository is re-read every `--repository-poll-secs`: new and changed
    /// models are loaded, removed ones unloaded.
    Poll,
}

/// How a repository is served.
#[derive(Debug, Clone)]
pub struct RepositoryOptions {
    /// The repository's directory.
    pub root: PathBuf,
    /// When models are loaded.
    pub mode: ControlMode,
    /// With `explicit`: the models loaded at start (`*`: all).
    pub startup_models: Vec<String>,
    /// With `poll`: how often the repository is re-read.
    pub poll_interval: Duration,
    /// The Python interpreter of Python models without a `runtime_env`.
    pub python: Option<PathBuf>,
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
    /// Whether clients reach it (`exposed: false`: only other deployments, through handles).
    pub exposed: bool,
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
    /// A Python class run in worker processes.
    Python(PythonSpec),
    /// An inference graph over other deployments.
    Graph(Arc<GraphSpec>),
    /// Other V2 servers, one replica per endpoint, over gRPC.
    Remote(ferroserve_remote::RemoteSpec),
    /// An ONNX model run by the built-in ONNX Runtime backend.
    Onnx {
        /// The `.onnx` file.
        path: PathBuf,
        /// Intra-op threads per replica; `None`: the cores shared among the replicas.
        intra_op_threads: Option<usize>,
        /// Whether idle intra-op threads spin (ONNX Runtime's default: yes).
        intra_op_spinning: bool,
    },
}

/// `runtime_env` of a Python deployment, as written (Ray Serve's names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeEnv {
    /// The interpreter, or a virtualenv directory (its `bin/python` is used).
    py_executable: Option<PathBuf>,
    /// Environment variables of the workers.
    #[serde(default)]
    env_vars: std::collections::BTreeMap<String, String>,
    /// The workers' working directory.
    working_dir: Option<PathBuf>,
}

/// `shared_memory` of a Python deployment, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedMemoryEntry {
    /// Size of each worker's arena in MiB (0: tensors travel inline).
    arena_mib: Option<usize>,
    /// Tensors smaller than this travel inline.
    min_tensor_bytes: Option<usize>,
}

/// The shared-memory options of a Python deployment: `{arena_mib, min_tensor_bytes}`.
fn shared_memory_options(
    at: &str,
    value: serde_json::Value,
) -> anyhow::Result<ferroserve_python::SharedMemory> {
    let entry: SharedMemoryEntry =
        serde_json::from_value(value).map_err(|e| anyhow!("{at}.shared_memory: {e}"))?;
    let mut options = ferroserve_python::SharedMemory::default();
    if let Some(mib) = entry.arena_mib {
        if mib > 64 << 10 {
            bail!("{at}.shared_memory.arena_mib: {mib} is over 64 GiB");
        }
        options.arena_bytes = mib << 20;
    }
    if let Some(min) = entry.min_tensor_bytes {
        options.min_tensor_bytes = min;
    }
    Ok(options)
}

/// Builds the spec of a `python:` deployment; relative paths are taken from `base`.
fn python_spec(
    at: &str,
    target: &str,
    runtime_env: Option<serde_json::Value>,
    base: &Path,
) -> anyhow::Result<PythonSpec> {
    let Some((module, class)) = target.rsplit_once(':') else {
        bail!("{at}.python: '{target}' must be 'file.py:Class' or 'module:Class'");
    };
    if module.is_empty() || class.is_empty() {
        bail!("{at}.python: '{target}' must be 'file.py:Class' or 'module:Class'");
    }
    let target = if module.ends_with(".py") || module.contains('/') {
        let path = base.join(module);
        if !path.is_file() {
            bail!("{at}.python: {} is not a file", path.display());
        }
        format!("{}:{class}", path.display())
    } else {
        target.to_owned()
    };
    let env: RuntimeEnv = match runtime_env {
        None => RuntimeEnv::default(),
        Some(v) => serde_json::from_value(v).map_err(|e| anyhow!("{at}.runtime_env: {e}"))?,
    };
    let mut spec = PythonSpec::new(target);
    if let Some(py) = env.py_executable {
        let py = if py.components().count() > 1 {
            base.join(py)
        } else {
            py
        };
        spec.py_executable = if py.is_dir() {
            py.join("bin").join("python")
        } else {
            py
        };
    }
    spec.env_vars = env.env_vars;
    spec.working_dir = env.working_dir.map(|w| base.join(w));
    Ok(spec)
}

impl Config {
    /// What `ferroserve serve` serves without a config file: the iris example and `identity`.
    pub fn default_example() -> Self {
        Config {
            host: DEFAULT_HOST.to_owned(),
            http_port: DEFAULT_HTTP_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            grpc_enabled: true,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_grpc_message_bytes: DEFAULT_MAX_GRPC_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs_f64(DEFAULT_HEADER_READ_TIMEOUT_S),
            keep_alive_timeout: Duration::from_secs_f64(DEFAULT_KEEP_ALIVE_TIMEOUT_S),
            body_read_timeout: Duration::from_secs_f64(DEFAULT_BODY_READ_TIMEOUT_S),
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_bytes: DEFAULT_MAX_HEADER_LIST_BYTES,
            status_route: true,
            repository: None,
            http_restricted: None,
            grpc_restricted: None,
            allow_client_shm: false,
            deployments: vec![
                DeploymentConfig {
                    name: "iris".into(),
                    model: ModelKind::Iris { weights: None },
                    options: DeploymentOptions::default(),
                    exposed: true,
                },
                DeploymentConfig {
                    name: "identity".into(),
                    model: ModelKind::Identity,
                    // Pure serving overhead: let one replica take every request at once.
                    options: DeploymentOptions {
                        max_ongoing_requests: Some(1024),
                        ..DeploymentOptions::default()
                    },
                    exposed: true,
                },
            ],
        }
    }

    /// No deployments, the default settings: what a model repository (or `--model`) fills.
    pub fn empty() -> Self {
        Config {
            deployments: Vec::new(),
            ..Self::default_example()
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
        if file.deployments.is_empty() && file.applications.is_empty() {
            bail!("deployments: at least one deployment (or application) is needed");
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
            let exposed = match fields.remove("exposed") {
                None => true,
                Some(serde_json::Value::Bool(b)) => b,
                Some(_) => bail!("{at}.exposed: true or false"),
            };
            if let Some(remote) = fields.remove("remote") {
                if fields.contains_key("model")
                    || fields.contains_key("python")
                    || fields.contains_key("onnx")
                    || weights.is_some()
                {
                    bail!("{at}: set one of 'model', 'python', 'onnx' or 'remote'");
                }
                for owned in ["num_replicas", "autoscaling_config"] {
                    if fields.contains_key(owned) {
                        bail!("{at}.{owned}: a remote deployment has one replica per endpoint");
                    }
                }
                let spec = remote_spec(&format!("{at}.remote"), remote, &name)?;
                deployments.push(DeploymentConfig {
                    options: deployment_options(&at, fields)?,
                    name,
                    model: ModelKind::Remote(spec),
                    exposed,
                });
                continue;
            }
            if let Some(onnx) = fields.remove("onnx") {
                let serde_json::Value::String(path) = onnx else {
                    bail!("{at}.onnx: the path of a .onnx file is required");
                };
                if fields.contains_key("model")
                    || fields.contains_key("python")
                    || weights.is_some()
                {
                    bail!("{at}: set one of 'model', 'python' or 'onnx'");
                }
                let intra_op_threads = take_threads(&at, &mut fields)?;
                let intra_op_spinning = take_spinning(&at, &mut fields)?;
                deployments.push(DeploymentConfig {
                    options: deployment_options(&at, fields)?,
                    name,
                    model: ModelKind::Onnx {
                        path: base.join(path),
                        intra_op_threads,
                        intra_op_spinning,
                    },
                    exposed,
                });
                continue;
            }
            let python = fields.remove("python");
            let runtime_env = fields.remove("runtime_env");
            let shared_memory = fields.remove("shared_memory");
            let model = match (fields.remove("model"), python) {
                (Some(_), Some(_)) => bail!("{at}: set either 'model' or 'python', not both"),
                (None, Some(serde_json::Value::String(target))) => {
                    if weights.is_some() {
                        bail!("{at}.weights: only for built-in models");
                    }
                    let mut spec = python_spec(&at, &target, runtime_env, base)?;
                    if let Some(v) = shared_memory {
                        spec.shared_memory = shared_memory_options(&at, v)?;
                    }
                    deployments.push(DeploymentConfig {
                        options: deployment_options(&at, fields)?,
                        name,
                        model: ModelKind::Python(spec),
                        exposed,
                    });
                    continue;
                }
                (None, Some(_)) => {
                    bail!("{at}.python: a 'file.py:Class' or 'module:Class' string is required")
                }
                (Some(serde_json::Value::String(m)), None) => m,
                _ => bail!(
                    "{at}.model: a model name ('identity' or 'iris') or a 'python' class is required"
                ),
            };
            if runtime_env.is_some() {
                bail!("{at}.runtime_env: only for python deployments");
            }
            if shared_memory.is_some() {
                bail!("{at}.shared_memory: only for python deployments");
            }
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
            deployments.push(DeploymentConfig {
                options: deployment_options(&at, fields)?,
                name,
                model,
                exposed,
            });
        }
        let graphs = file.graphs;
        for (i, app) in file.applications.into_iter().enumerate() {
            let at = format!("applications[{i}] ({})", app.name);
            let spec = python_spec(&at, &app.import_path, app.runtime_env, base)
                .map_err(|e| anyhow!("{}", e.to_string().replace(".python:", ".import_path:")))?;
            for d in applications::resolve(&at, &spec, app.deployments)? {
                if deployments.iter().any(|x| x.name == d.name) {
                    bail!(
                        "{at}: deployment name '{}' is used by another deployment",
                        d.name
                    );
                }
                deployments.push(DeploymentConfig {
                    options: deployment_options(
                        &format!("{at}.deployments ({})", d.name),
                        d.fields,
                    )?,
                    name: d.name,
                    model: ModelKind::Python(spec.clone()),
                    exposed: d.exposed,
                });
            }
        }
        // Graphs call deployments (not other graphs, so no cycle can run through them).
        let names: HashSet<String> = deployments.iter().map(|d| d.name.clone()).collect();
        for (i, graph) in graphs.into_iter().enumerate() {
            if names.contains(&graph.name) || deployments.iter().any(|d| d.name == graph.name) {
                bail!(
                    "graphs[{i}].name: '{}' is used by another deployment or graph",
                    graph.name
                );
            }
            graph
                .validate(&names)
                .map_err(|e| anyhow!("graphs[{i}]: {e}"))?;
            deployments.push(DeploymentConfig {
                name: graph.name.clone(),
                model: ModelKind::Graph(Arc::new(graph)),
                // The graph's own work is small; each step has its deployment's limits.
                options: DeploymentOptions {
                    max_ongoing_requests: Some(1024),
                    ..DeploymentOptions::default()
                },
                exposed: true,
            });
        }
        if file.max_request_bytes == Some(0) {
            bail!("max_request_bytes: must be above 0");
        }
        if file.max_grpc_message_bytes == Some(0) {
            bail!("max_grpc_message_bytes: must be above 0");
        }
        let at_least_one = |field: &str, v: Option<u64>| match v {
            Some(0) => Err(anyhow!("{field}: must be at least 1")),
            _ => Ok(()),
        };
        at_least_one("max_connections", file.max_connections.map(|v| v as u64))?;
        at_least_one(
            "max_concurrent_streams",
            file.max_concurrent_streams.map(u64::from),
        )?;
        at_least_one(
            "max_header_list_bytes",
            file.max_header_list_bytes.map(u64::from),
        )?;
        let timeout = |field: &str, v: Option<f64>, default: f64| {
            seconds(field, v.unwrap_or(default)).map_err(|e| anyhow!("{e}"))
        };
        Ok(Config {
            max_connections: file.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            header_read_timeout: timeout(
                "header_read_timeout_s",
                file.header_read_timeout_s,
                DEFAULT_HEADER_READ_TIMEOUT_S,
            )?,
            keep_alive_timeout: timeout(
                "keep_alive_timeout_s",
                file.keep_alive_timeout_s,
                DEFAULT_KEEP_ALIVE_TIMEOUT_S,
            )?,
            body_read_timeout: timeout(
                "body_read_timeout_s",
                file.body_read_timeout_s,
                DEFAULT_BODY_READ_TIMEOUT_S,
            )?,
            max_concurrent_streams: file
                .max_concurrent_streams
                .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS),
            max_header_list_bytes: file
                .max_header_list_bytes
                .unwrap_or(DEFAULT_MAX_HEADER_LIST_BYTES),
            status_route: file.status_route.unwrap_or(true),
            repository: None,
            http_restricted: None,
            grpc_restricted: None,
            allow_client_shm: false,
            host: file.host.unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            http_port: file.http_port.unwrap_or(DEFAULT_HTTP_PORT),
            grpc_port: file.grpc_port.unwrap_or(DEFAULT_GRPC_PORT),
            grpc_enabled: file.enable_grpc.unwrap_or(true),
            max_request_bytes: file.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            max_grpc_message_bytes: file
                .max_grpc_message_bytes
                .unwrap_or(DEFAULT_MAX_GRPC_MESSAGE_BYTES),
            deployments,
        })
    }
}

/// A timeout in seconds as a [`Duration`]: above 0, at most a day; the error names `field`.
pub fn seconds(field: &str, secs: f64) -> anyhow::Result<Duration> {
    if !(secs > 0.0 && secs <= 86_400.0) {
        bail!("{field}: {secs} must be above 0 and at most 86400 seconds");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `intra_op_threads` of an ONNX deployment: a whole number from 1 to 256.
pub(crate) fn take_threads(
    at: &str,
    fields: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Option<usize>> {
    match fields.remove("intra_op_threads") {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=256) => Ok(Some(n as usize)),
            _ => bail!("{at}.intra_op_threads: {v} must be a whole number from 1 to 256"),
        },
    }
}

/// `intra_op_spinning` of an ONNX deployment (default true, ONNX Runtime's own default).
pub(crate) fn take_spinning(
    at: &str,
    fields: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<bool> {
    match fields.remove("intra_op_spinning") {
        None => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(v) => bail!("{at}.intra_op_spinning: {v} must be true or false"),
    }
}

/// The remaining fields of a deployment: Ray Serve's options.
/// A deployment's `remote:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteFile {
    /// `host:port` of each server.
    endpoints: Option<Vec<String>>,
    /// `host:port` whose addresses are the servers (a headless Service).
    dns: Option<String>,
    /// The model's name on the servers (default: the deployment's name).
    model: Option<String>,
    /// `grpc` (the default) or `http`.
    protocol: Option<String>,
    /// HTTP/2 connections per endpoint (default 1).
    connections: Option<usize>,
    /// Seconds between DNS lookups (default 5).
    dns_refresh_s: Option<f64>,
    /// Seconds between probes of each endpoint (default 1).
    health_period_s: Option<f64>,
}

fn remote_spec(
    at: &str,
    value: serde_json::Value,
    name: &str,
) -> anyhow::Result<ferroserve_remote::RemoteSpec> {
    use ferroserve_remote::{DEFAULT_DNS_REFRESH, DEFAULT_HEALTH_PERIOD, EndpointSource};
    let file: RemoteFile = serde_json::from_value(value).map_err(|e| anyhow!("{at}: {e}"))?;
    let host_port = |field: &str, e: &str| -> anyhow::Result<()> {
        match e.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => bail!("{at}.{field}: '{e}' must be host:port"),
        }
    };
    let source = match (file.endpoints, file.dns) {
        (Some(list), None) => {
            if list.is_empty() {
                bail!("{at}.endpoints: at least one host:port is needed");
            }
            for e in &list {
                host_port("endpoints", e)?;
            }
            EndpointSource::List(list)
        }
        (None, Some(dns)) => {
            host_port("dns", &dns)?;
            let refresh = match file.dns_refresh_s {
                Some(s) => seconds(&format!("{at}.dns_refresh_s"), s)?,
                None => DEFAULT_DNS_REFRESH,
            };
            EndpointSource::Dns { name: dns, refresh }
        }
        _ => bail!("{at}: set one of 'endpoints' (a list of host:port) or 'dns' (host:port)"),
    };
    let protocol = match file.protocol.as_deref() {
        None | Some("grpc") => ferroserve_remote::RemoteProtocol::Grpc,
        Some("http") => ferroserve_remote::RemoteProtocol::Http,
        Some(other) => bail!("{at}.protocol: '{other}' must be grpc or http"),
    };
    let connections = file.connections.unwrap_or(1);
    if connections == 0 || connections > 64 {
        bail!("{at}.connections: {connections} must be 1 to 64");
    }
    let health_period = match file.health_period_s {
        Some(s) => seconds(&format!("{at}.health_period_s"), s)?,
        None => DEFAULT_HEALTH_PERIOD,
    };
    Ok(ferroserve_remote::RemoteSpec {
        source,
        model: file.model.unwrap_or_else(|| name.to_owned()),
        protocol,
        connections,
        health_period,
    })
}

pub(crate) fn deployment_options(
    at: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<DeploymentOptions> {
    let options: DeploymentOptions = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| anyhow!("{at}: {e}"))?;
    options.validate().map_err(|e| anyhow!("{at}.{e}"))?;
    Ok(options)
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
        let e = err("keep_alive_timeout_s: 0\ndeployments:\n  - name: a\n    model: identity\n");
        assert!(e.contains("keep_alive_timeout_s: 0 must be above 0"), "{e}");
        let e = err("header_read_timeout_s: -1\ndeployments:\n  - name: a\n    model: identity\n");
        assert!(e.contains("header_read_timeout_s"), "{e}");
        let e = err("max_connections: 0\ndeployments:\n  - name: a\n    model: identity\n");
        assert!(e.contains("max_connections: must be at least 1"), "{e}");
        let e = err("max_concurrent_streams: 0\ndeployments:\n  - name: a\n    model: identity\n");
        assert!(e.contains("max_concurrent_streams"), "{e}");
        let e = err("status_route: maybe\ndeployments:\n  - name: a\n    model: identity\n");
        assert!(e.contains("status_route"), "{e}");
    }

    #[test]
    fn connection_limits_have_defaults_and_can_be_set() {
        let one = "deployments:\n  - name: a\n    model: identity\n";
        let c = Config::from_yaml(one, Path::new(".")).unwrap();
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(75));
        assert_eq!(c.body_read_timeout, Duration::from_secs(60));
        assert!(c.status_route);
        let c = Config::from_yaml(
            &format!(
                "max_connections: 10\nheader_read_timeout_s: 2.5\nkeep_alive_timeout_s: 5\nbody_read_timeout_s: 7\nmax_concurrent_streams: 8\nmax_header_list_bytes: 4096\nstatus_route: false\n{one}"
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(c.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(c.body_read_timeout, Duration::from_secs(7));
        assert_eq!(c.max_concurrent_streams, 8);
        assert_eq!(c.max_header_list_bytes, 4096);
        assert!(!c.status_route);
    }
}
