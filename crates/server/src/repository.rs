//! Triton's model-repository extension (index, load, unload) over REST and gRPC.
//!
//! A server started from a model repository has a [`ModelRepository`] that loads and unloads
//! models while it runs. A server started from a config file has none: its index lists the
//! configured deployments, loading one reports whether it is ready, and unloading is refused.
//! Load and unload (and the index) are admin operations: a [`Restriction`] makes them answer
//! 403 (gRPC: PERMISSION_DENIED) unless the request carries its header and value.

use async_trait::async_trait;
use ferroserve_runtime::ModelStatus;
use serde::Serialize;

use crate::AppState;

/// One model of the repository, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryModel {
    /// The model's name.
    pub name: String,
    /// The version served (or that would be), empty when unversioned.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `READY`, `LOADING`, `UNLOADING`, `UNAVAILABLE`, or empty when never loaded (Triton's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Why it is unavailable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A load or unload that did not happen; the message says why (Triton's wording: `failed to
/// load 'name', ...`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RepositoryError(pub String);

/// A model repository that can change what the server serves while it runs.
#[async_trait]
pub trait ModelRepository: Send + Sync + 'static {
    /// Every model in the repository, loaded or not, with its state.
    async fn index(&self) -> Vec<RepositoryModel>;
    /// Loads a model, or its newest version, or reloads it with `config` (Triton's config
    /// override: a JSON model configuration); returns once it serves or failed.
    async fn load(&self, name: &str, config: Option<&str>) -> Result<(), RepositoryError>;
    /// Unloads a model: it is gone from the server at once, its requests in flight finish.
    async fn unload(&self, name: &str) -> Result<(), RepositoryError>;
}

/// A header a request must carry, with this value, for the restricted APIs (Triton's
/// `--http-restricted-api=model-repository:KEY=VALUE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// Header name, lower case.
    pub header: String,
    /// The value it must have.
    pub value: String,
}

impl Restriction {
    /// Parses Triton's `model-repository:KEY=VALUE` (the only category restricted here).
    pub fn parse(spec: &str) -> Result<Restriction, String> {
        let (category, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("'{spec}' must be 'model-repository:KEY=VALUE'"))?;
        if category != "model-repository" {
            return Err(format!(
                "'{category}' cannot be restricted: only 'model-repository' (index, load, unload) can"
            ));
        }
        let (header, value) = rest
            .split_once('=')
            .filter(|(h, v)| !h.is_empty() && !v.is_empty())
            .ok_or_else(|| format!("'{spec}' must be 'model-repository:KEY=VALUE'"))?;
        Ok(Restriction {
            header: header.to_ascii_lowercase(),
            value: value.to_owned(),
        })
    }

    /// `Ok` when `value` (the request's header of this name) matches; else the refusal.
    pub fn check(&self, value: Option<&str>) -> Result<(), String> {
        if value == Some(self.value.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "This API is restricted, expecting header '{}'",
                self.header
            ))
        }
    }
}

/// The index: the repository's, or the configured deployments.
pub(crate) async fn index(state: &AppState, ready_only: bool) -> Vec<RepositoryModel> {
    let models = match &state.repository {
        Some(repo) => repo.index().await,
        None => state
            .handle
            .model_names()
            .into_iter()
            .filter_map(|name| {
                let (state, reason) = match state.handle.status(&name).ok()? {
                    ModelStatus::Ready => ("READY", String::new()),
                    ModelStatus::Loading => ("LOADING", String::new()),
                    ModelStatus::Failed(why) => ("UNAVAILABLE", why),
                    ModelStatus::Stopped => ("UNAVAILABLE", "shutting down".to_owned()),
                };
                Some(RepositoryModel {
                    name,
                    version: String::new(),
                    state: state.to_owned(),
                    reason,
                })
            })
            .collect(),
    };
    models
        .into_iter()
        .filter(|m| !ready_only || m.state == "READY")
        .collect()
}

/// Loads a model (with a repository), or reports a configured one's readiness.
pub(crate) async fn load(
    state: &AppState,
    name: &str,
    config: Option<&str>,
) -> Result<(), RepositoryError> {
    if let Some(repo) = &state.repository {
        return repo.load(name, config).await;
    }
    match state.handle.status(name) {
        Ok(ModelStatus::Ready) => Ok(()),
        Ok(ModelStatus::Failed(why)) => {
            Err(RepositoryError(format!("failed to load '{name}': {why}")))
        }
        Ok(_) => Err(RepositoryError(format!(
            "failed to load '{name}': it is not ready yet"
        ))),
        Err(_) => Err(RepositoryError(format!(
            "failed to load '{name}': the server serves a configuration file, not a model repository, and it has no deployment '{name}'"
        ))),
    }
}

/// Triton's load may carry model files (`file:<path>` parameters); ferroserve loads models
/// only from the repository, so such a load is refused, naming the parameter.
pub(crate) fn refuse_files<'a>(
    name: &str,
    mut parameters: impl Iterator<Item = &'a str>,
) -> Result<(), RepositoryError> {
    match parameters.find(|p| p.starts_with("file:")) {
        Some(p) => Err(RepositoryError(format!(
            "failed to load '{name}': Invalid file path '{}': models load from the repository only, not from files sent with the request",
            p.chars().take(80).collect::<String>()
        ))),
        None => Ok(()),
    }
}

/// Unloads a model (with a repository); a configured deployment cannot be.
pub(crate) async fn unload(state: &AppState, name: &str) -> Result<(), RepositoryError> {
    if let Some(repo) = &state.repository {
        return repo.unload(name).await;
    }
    Err(RepositoryError(format!(
        "failed to unload '{name}': the server serves a configuration file, not a model repository; its deployments are not unloaded at run time"
    )))
}
