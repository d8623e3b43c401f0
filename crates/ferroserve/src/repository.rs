//! A model repository in Triton's and KServe's layout, served live:
//!
//! ```text
//! DIR/<name>/<version>/model.onnx   an ONNX model; the newest version serves unless config.yaml
//!                                   pins one (`version: 2`)
//! DIR/<name>/model.py               a Python model: the class named by `python_class`, else the
//!                                   one class in the file with a `predict` method
//! DIR/<name>/config.yaml            optional: deployment options (num_replicas,
//!                                   max_ongoing_requests, batching, autoscaling...),
//!                                   `intra_op_threads`, `intra_op_spinning`, `version`,
//!                                   `python_class`, `runtime_env`
//! ```
//!
//! Models are loaded at start (control mode `none` and `poll`) or on request (`explicit`), and
//! through the repository API (index, load, unload) while the server runs. Loading a model that
//! serves already replaces it: its deployment rolls to the new version (one new replica starts
//! before an old one drains, so no request in flight fails). One broken model fails alone,
//! with its reason in the index and the log.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use ferroserve_onnx::{OnnxModel, OnnxOptions, default_intra_op_threads};
use ferroserve_python::PythonSpec;
use ferroserve_runtime::{Controller, DeploymentOptions, Model, ModelStatus};
use ferroserve_server::repository::{ModelRepository, RepositoryError, RepositoryModel};

use crate::config::{
    ControlMode, DeploymentConfig, ModelKind, RepositoryOptions, deployment_options, take_spinning,
    take_threads,
};
use crate::models::deployment;

/// How long a load may take before it is reported as failed (the model keeps loading).
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// What a model's directory holds, read from disk.
#[derive(Debug, Clone)]
struct ModelSource {
    config: DeploymentConfig,
    /// The version that serves, empty for Python models.
    version: String,
    /// Changes whenever anything the deployment is built from changes (poll mode).
    fingerprint: String,
}

impl ModelSource {
    /// The runtime deployment, with its version.
    fn deployment(&self) -> ferroserve_runtime::Deployment {
        let d = deployment(&self.config);
        if self.version.is_empty() {
            d
        } else {
            d.version(self.version.clone())
        }
    }
}

/// A model the repository has tried to load.
#[derive(Debug, Clone)]
struct Record {
    /// Deployed: the source it was built from.
    deployed: Option<ModelSource>,
    /// The latest outcome when not serving: `UNAVAILABLE` with why.
    reason: String,
    /// The fingerprint of the model's files when it was last loaded or unloaded (`poll`).
    seen: Option<String>,
}

/// A live model repository (see the module's doc).
#[derive(Debug)]
pub struct Repository {
    options: RepositoryOptions,
    controller: Controller,
    /// What was loaded; the request path never takes this lock.
    records: std::sync::Mutex<HashMap<String, Record>>,
    /// One load or unload of a model at a time (different models load concurrently).
    operations: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Repository {
    /// A repository whose models `controller` will serve; nothing is loaded yet.
    pub fn new(options: RepositoryOptions, controller: Controller) -> Arc<Self> {
        Arc::new(Repository {
            options,
            controller,
            records: std::sync::Mutex::new(HashMap::new()),
            operations: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_record(&self, name: &str, record: Record) {
        self.records().insert(name.to_owned(), record);
    }

    /// The lock that serialises loads and unloads of `name`.
    fn operation(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The models to load at start: every model directory, or the `explicit` list.
    pub fn startup_models(&self) -> anyhow::Result<Vec<String>> {
        let all = self.model_names()?;
        Ok(match self.options.mode {
            ControlMode::Explicit if !self.options.startup_models.iter().any(|m| m == "*") => {
                self.options.startup_models.clone()
            }
            _ => all,
        })
    }

    /// Loads the start-up models concurrently and logs each one as loaded or why not.
    pub async fn load_startup(self: &Arc<Self>) -> anyhow::Result<()> {
        let names = self.startup_models()?;
        if names.is_empty() {
            tracing::warn!(repository = %self.options.root.display(), "no model to load at start");
        }
        let loads = names.into_iter().map(|name| {
            let repo = self.clone();
            tokio::spawn(async move {
                let result = repo.load(&name, None).await;
                (name, result)
            })
        });
        let (mut loaded, mut failed) = (0, 0);
        for load in loads.collect::<Vec<_>>() {
            // Each load logs its model as loaded or why not.
            match load.await {
                Ok((_, Ok(()))) => loaded += 1,
                _ => failed += 1,
            }
        }
        tracing::info!(loaded, failed, repository = %self.options.root.display(), "model repository read");
        Ok(())
    }

    /// With `poll`: re-reads the repository every interval until the server stops.
    pub async fn poll(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.options.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.poll_once().await {
                tracing::warn!(error = %e, "cannot read the model repository");
            }
        }
    }

    async fn poll_once(&self) -> anyhow::Result<()> {
        let names = self.model_names()?;
        // A model is loaded again when its files changed since it was last loaded or
        // unloaded (so a broken one is not retried every interval, and one unloaded through
        // the API stays unloaded until its files change); a new directory is loaded once.
        let changed: Vec<String> = {
            let records = self.records();
            names
                .iter()
                .filter(|name| match records.get(*name) {
                    None => true,
                    Some(r) => {
                        let now = self.files_fingerprint(name);
                        now.is_some() && now != r.seen
                    }
                })
                .cloned()
                .collect()
        };
        let gone: Vec<String> = {
            let records = self.records();
            records
                .iter()
                .filter(|(n, r)| r.deployed.is_some() && !names.contains(n))
                .map(|(n, _)| n.clone())
                .collect()
        };
        for name in changed {
            // Logged by `load`.
            let _ = self.load(&name, None).await;
        }
        for name in gone {
            if let Err(e) = self.unload(&name).await {
                tracing::error!(model = %name, error = %e, "model not unloaded");
            }
        }
        Ok(())
    }

    /// The fingerprint of a model's files as they are now, if they make a model.
    fn files_fingerprint(&self, name: &str) -> Option<String> {
        self.read_source(name, None).ok().map(|s| s.fingerprint)
    }

    /// Notes the files a load or unload saw, for `poll`.
    fn mark_seen(&self, name: &str) {
        let seen = self.files_fingerprint(name);
        if let Some(r) = self.records().get_mut(name) {
            r.seen = seen;
        }
    }

    /// The model directories, sorted.
    fn model_names(&self) -> anyhow::Result<Vec<String>> {
        let root = &self.options.root;
        let entries = std::fs::read_dir(root)
            .map_err(|e| anyhow!("cannot read model repository {}: {e}", root.display()))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads a model's directory: what to deploy and how. `overrides`: Triton's config
    /// override of a load request.
    fn read_source(
        &self,
        name: &str,
        overrides: Option<&serde_json::Value>,
    ) -> Result<ModelSource, String> {
        let dir = self.options.root.join(name);
        if !dir.is_dir() {
            return Err(format!(
                "no model directory '{name}' in the repository {}",
                self.options.root.display()
            ));
        }
        let at = format!("{}", dir.join("config.yaml").display());
        let (mut fields, config_text) = read_config(&dir)?;
        if let Some(o) = overrides {
            apply_triton_config(&mut fields, o)?;
        }
        let pinned = match fields.remove("version") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| format!("{at}: version: {v} must be a whole number"))?,
            ),
        };
        let python_class = fields.remove("python_class");
        let runtime_env = fields.remove("runtime_env");
        let threads = take_threads(&at, &mut fields).map_err(|e| e.to_string())?;
        let spinning = take_spinning(&at, &mut fields).map_err(|e| e.to_string())?;
        let options = deployment_options(&at, fields).map_err(|e| format!("{e:#}"))?;
        let python_file = dir.join("model.py");
        let (model, version, files) = if python_file.is_file() {
            let class = match python_class {
                None => "*".to_owned(),
                Some(serde_json::Value::String(c)) => c,
                Some(v) => return Err(format!("{at}: python_class: {v} must be a class name")),
            };
            let spec = self.python_spec(&at, &python_file, &class, runtime_env)?;
            (ModelKind::Python(spec), String::new(), vec![python_file])
        } else {
            let (version, path) = onnx_version(&dir, pinned)?;
            (
                ModelKind::Onnx {
                    path: path.clone(),
                    intra_op_threads: threads,
                    intra_op_spinning: spinning,
                },
                version.to_string(),
                vec![path],
            )
        };
        let fingerprint = fingerprint(&files, &config_text, overrides);
        Ok(ModelSource {
            config: DeploymentConfig {
                name: name.to_owned(),
                model,
                options,
                exposed: true,
            },
            version,
            fingerprint,
        })
    }

    fn python_spec(
        &self,
        at: &str,
        file: &Path,
        class: &str,
        runtime_env: Option<serde_json::Value>,
    ) -> Result<PythonSpec, String> {
        let mut spec = PythonSpec::new(format!("{}:{class}", file.display()));
        if let Some(py) = &self.options.python {
            spec.py_executable = py.clone();
        }
        if let Some(env) = runtime_env {
            let env: BTreeMap<String, serde_json::Value> =
                serde_json::from_value(env).map_err(|e| format!("{at}: runtime_env: {e}"))?;
            for (k, v) in env {
                match (k.as_str(), v) {
                    ("py_executable", serde_json::Value::String(p)) => {
                        spec.py_executable = PathBuf::from(p);
                    }
                    ("env_vars", serde_json::Value::Object(vars)) => {
                        for (name, value) in vars {
                            let value = value
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| value.to_string());
                            spec.env_vars.insert(name, value);
                        }
                    }
                    (other, _) => {
                        return Err(format!(
                            "{at}: runtime_env.{other}: expected py_executable (a path) or env_vars (a map)"
                        ));
                    }
                }
            }
        }
        Ok(spec)
    }

    async fn load_model(&self, name: &str, config: Option<&str>) -> Result<String, String> {
        let overrides = match config {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| format!("the config override is not valid JSON: {e}"))?,
            ),
        };
        let operation = self.operation(name);
        let _one_at_a_time = operation.lock().await;
        let source = self.read_source(name, overrides.as_ref())?;
        let previous = self.records().get(name).and_then(|r| r.deployed.clone());
        let handle = self.controller.handle().clone();
        if let Some(previous) = previous.filter(|_| handle.status(name).is_ok()) {
            // A new version or configuration of a serving model: check that it loads before
            // the deployment rolls to it, so a broken file never replaces a working model.
            precheck(&source.config).await?;
            self.controller
                .deploy(source.deployment())
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = wait_settled(&handle, name, true).await {
                // Roll back to what served.
                let _ = self.controller.deploy(previous.deployment()).await;
                return Err(e);
            }
        } else {
            self.controller
                .add(source.deployment())
                .await
                .map_err(|e| e.to_string())?;
            if let Err(e) = wait_settled(&handle, name, false).await {
                let _ = self.controller.remove(name).await;
                self.set_record(
                    name,
                    Record {
                        deployed: None,
                        reason: e.clone(),
                        seen: None,
                    },
                );
                return Err(e);
            }
        }
        let version = source.version.clone();
        self.set_record(
            name,
            Record {
                deployed: Some(source),
                reason: String::new(),
                seen: None,
            },
        );
        Ok(version)
    }
}

#[async_trait]
impl ModelRepository for Repository {
    async fn index(&self) -> Vec<RepositoryModel> {
        let names = self.model_names().unwrap_or_default();
        let records = self.records().clone();
        let handle = self.controller.handle();
        names
            .into_iter()
            .map(|name| {
                let record = records.get(&name);
                let deployed = record.and_then(|r| r.deployed.as_ref());
                let version = deployed
                    .map(|s| s.version.clone())
                    .or_else(|| self.read_source(&name, None).ok().map(|s| s.version))
                    .unwrap_or_default();
                let (state, reason) = match (deployed, handle.status(&name)) {
                    (Some(_), Ok(ModelStatus::Ready)) => ("READY", String::new()),
                    (Some(_), Ok(ModelStatus::Loading)) => ("LOADING", String::new()),
                    (Some(_), Ok(ModelStatus::Failed(why))) => ("UNAVAILABLE", why),
                    (Some(_), Ok(ModelStatus::Stopped)) => ("UNLOADING", String::new()),
                    (_, Err(_)) | (None, Ok(_)) => match record {
                        Some(r) => ("UNAVAILABLE", r.reason.clone()),
                        None => ("", String::new()),
                    },
                };
                RepositoryModel {
                    name,
                    version,
                    state: state.to_owned(),
                    reason,
                }
            })
            .collect()
    }

    async fn load(&self, name: &str, config: Option<&str>) -> Result<(), RepositoryError> {
        let result = self.load_model(name, config).await;
        if let Err(e) = &result {
            tracing::error!(model = %name, error = %e, "model not loaded");
            let mut records = self.records();
            let record = records.entry(name.to_owned()).or_insert(Record {
                deployed: None,
                reason: String::new(),
                seen: None,
            });
            if record.deployed.is_none() {
                record.reason = e.clone();
            }
        }
        self.mark_seen(name);
        match result {
            Ok(version) => {
                tracing::info!(model = %name, version = %version, "model loaded");
                Ok(())
            }
            Err(e) => Err(RepositoryError(format!("failed to load '{name}': {e}"))),
        }
    }

    async fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        let operation = self.operation(name);
        let _one_at_a_time = operation.lock().await;
        let served = self
            .records()
            .get(name)
            .is_some_and(|r| r.deployed.is_some());
        if !served {
            // Triton: unloading a model that is not loaded succeeds.
            return Ok(());
        }
        self.controller
            .remove(name)
            .await
            .map_err(|e| RepositoryError(format!("failed to unload '{name}': {e}")))?;
        self.set_record(
            name,
            Record {
                deployed: None,
                reason: "unloaded".to_owned(),
                seen: None,
            },
        );
        self.mark_seen(name);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }
}

/// `config.yaml` of a model directory as deployment fields, and its text (for the
/// fingerprint); empty when there is none.
fn read_config(dir: &Path) -> Result<(serde_json::Map<String, serde_json::Value>, String), String> {
    let path = dir.join("config.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok((serde_json::Map::new(), text));
    }
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if fields.contains_key("name") {
        return Err(format!(
            "{}: name: a repository model is named by its directory",
            path.display()
        ));
    }
    Ok((fields, text))
}

/// Applies the parts of a Triton model configuration (a load's config override) that have a
/// deployment option: `max_batch_size` (batching, forming batches only from requests already
/// waiting unless `dynamic_batching` gives a delay), `dynamic_batching`
/// (`max_queue_delay_microseconds`, `preferred_batch_size`) and `instance_group[].count`
/// (replicas). Anything else is ignored, as ferroserve has no such setting.
fn apply_triton_config(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    config: &serde_json::Value,
) -> Result<(), String> {
    let serde_json::Value::Object(config) = config else {
        return Err(
            "the config override must be a JSON object (a Triton model configuration)".into(),
        );
    };
    let number = |key: &str, v: &serde_json::Value| -> Result<u64, String> {
        // Triton's JSON writes 64-bit numbers as strings ("16").
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("the config override's {key} must be a whole number, not {v}"))
    };
    if let Some(v) = config.get("max_batch_size") {
        let n = number("max_batch_size", v)?;
        if n > 0 {
            fields.insert("max_batch_size".into(), n.into());
            fields
                .entry("batch_wait_timeout_s")
                .or_insert(serde_json::json!(0.0));
        } else {
            fields.remove("max_batch_size");
            fields.remove("batch_wait_timeout_s");
        }
    }
    if let Some(db) = config.get("dynamic_batching") {
        if let Some(us) = db.get("max_queue_delay_microseconds") {
            let us = number("dynamic_batching.max_queue_delay_microseconds", us)?;
            fields.insert(
                "batch_wait_timeout_s".into(),
                serde_json::json!(us as f64 / 1e6),
            );
        }
        if let Some(sizes) = db.get("preferred_batch_size").and_then(|s| s.as_array()) {
            let sizes = sizes
                .iter()
                .map(|s| number("dynamic_batching.preferred_batch_size", s))
                .collect::<Result<Vec<_>, _>>()?;
            fields.insert("preferred_batch_sizes".into(), sizes.into());
        }
    }
    if let Some(groups) = config.get("instance_group").and_then(|g| g.as_array()) {
        let mut count = 0;
        for g in groups {
            count += g
                .get("count")
                .map(|c| number("instance_group.count", c))
                .transpose()?
                .unwrap_or(1);
        }
        if count > 0 {
            fields.remove("autoscaling_config");
            fields.insert("num_replicas".into(), count.into());
        }
    }
    Ok(())
}

/// The version directory to serve (`pinned`, else the highest number) and its model file.
fn onnx_version(dir: &Path, pinned: Option<u64>) -> Result<(u64, PathBuf), String> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    versions.sort_unstable();
    let version = match pinned {
        Some(v) if versions.contains(&v) => v,
        Some(v) => {
            return Err(format!(
                "version {v} (config.yaml) is not in {}",
                dir.display()
            ));
        }
        None => *versions.last().ok_or_else(|| {
            format!(
                "{} holds neither model.py nor a version directory (<version>/model.onnx)",
                dir.display()
            )
        })?,
    };
    let path = dir.join(version.to_string()).join("model.onnx");
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    Ok((version, path))
}

/// What a deployment is built from, as one string that changes when any of it changes.
fn fingerprint(
    files: &[PathBuf],
    config_text: &str,
    overrides: Option<&serde_json::Value>,
) -> String {
    let mut out = String::new();
    for f in files {
        let meta = std::fs::metadata(f).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let len = meta.map_or(0, |m| m.len());
        out.push_str(&format!("{}:{len}:{modified};", f.display()));
    }
    out.push_str(config_text);
    if let Some(o) = overrides {
        out.push_str(&o.to_string());
    }
    out
}

/// Loads an ONNX model once, off the runtime, to find a broken file before it replaces a
/// serving version. Python models are checked by their first replica instead.
async fn precheck(config: &DeploymentConfig) -> Result<(), String> {
    let ModelKind::Onnx {
        path,
        intra_op_threads,
        intra_op_spinning,
    } = &config.model
    else {
        return Ok(());
    };
    let mut model = OnnxModel::new(OnnxOptions {
        path: path.clone(),
        intra_op_threads: intra_op_threads.unwrap_or_else(|| default_intra_op_threads(1)),
        intra_op_spinning: *intra_op_spinning,
    });
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(async move { model.load().await })
    })
    .await
    .map_err(|e| format!("the load check failed: {e}"))?
    .map_err(|e| e.to_string())
}

/// Waits until a deployment serves (after an update: every replica of the new version), or
/// its replicas fail to start.
async fn wait_settled(
    handle: &ferroserve_runtime::Handle,
    name: &str,
    update: bool,
) -> Result<(), String> {
    let started = Instant::now();
    // `Controller::deploy` returns once the status shows the update, so no wait is needed
    // before the first look.
    loop {
        let status = handle.deployment_status(name).map_err(|e| e.to_string())?;
        match handle.status(name).map_err(|e| e.to_string())? {
            ModelStatus::Failed(why) => return Err(why),
            ModelStatus::Ready if status.status != "UPDATING" && status.status != "STARTING" => {
                return Ok(());
            }
            _ if update && status.status == "UNHEALTHY" => {
                return Err(status
                    .last_error
                    .unwrap_or_else(|| "the new version's replicas fail to start".to_owned()));
            }
            _ => {}
        }
        if started.elapsed() > LOAD_TIMEOUT {
            return Err(format!(
                "not ready after {}s; see `ferroserve status`",
                LOAD_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The deployment of one ONNX or Python file (`ferroserve serve --model FILE --name NAME`).
pub fn single_model(
    file: &Path,
    name: &str,
    python: Option<PathBuf>,
    options: DeploymentOptions,
) -> anyhow::Result<DeploymentConfig> {
    let model = match file.extension().and_then(|e| e.to_str()) {
        Some("onnx") => ModelKind::Onnx {
            path: file.to_path_buf(),
            intra_op_threads: None,
            intra_op_spinning: true,
        },
        Some("py") => {
            let mut spec = PythonSpec::new(format!("{}:*", file.display()));
            if let Some(py) = python {
                spec.py_executable = py;
            }
            ModelKind::Python(spec)
        }
        _ => anyhow::bail!("--model {}: expected a .onnx or a .py file", file.display()),
    };
    if !file.is_file() {
        anyhow::bail!("--model {}: no such file", file.display());
    }
    Ok(DeploymentConfig {
        name: name.to_owned(),
        model,
        options,
        exposed: true,
    })
}
