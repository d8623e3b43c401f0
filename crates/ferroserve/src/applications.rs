//! Ray Serve's `applications:` in the config file: a Python application (a graph of
//! deployments made with `.bind()`) named by its import path. The application's deployments are
//! read by running its interpreter (`python -m ferroserve.describe file.py:app`), which
//! lists each deployment with the options of its decorator; the config's per-deployment entries
//! override them, as in Ray Serve. The ingress is exposed to clients, the others are internal
//! unless declared `exposed=True`.
//!
//! ```yaml
//! applications:
//!   - name: pipeline
//!     import_path: app.py:app          # relative to this file; or package.module:app
//!     runtime_env: {py_executable: .venv/bin/python}
//!     deployments:
//!       - name: Preprocess
//!         num_replicas: 2
//! ```

use std::process::Stdio;

use anyhow::{Context, bail};
use ferroserve_python::PythonSpec;
use serde::Deserialize;

/// An entry of `applications:`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationFile {
    /// The application's name (for messages).
    pub name: String,
    /// `file.py:variable` or `package.module:variable`, naming the bound application.
    pub import_path: String,
    /// The workers' interpreter, environment and working directory.
    #[serde(default)]
    pub runtime_env: Option<serde_json::Value>,
    /// Options overriding the decorators', by deployment name.
    #[serde(default)]
    pub deployments: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// One deployment as `ferroserve.describe` lists it.
#[derive(Debug, Deserialize)]
struct Described {
    name: String,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
    /// Whether clients reach it: the ingress, or a deployment declared `exposed=True`.
    exposed: bool,
}

/// One deployment of an application: its name, its options (the decorator's, overridden by
/// the config's entry) and whether clients reach it.
#[derive(Debug)]
pub struct AppDeployment {
    /// Deployment name.
    pub name: String,
    /// Ray Serve's options, as fields still to validate.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The ingress, or declared `exposed=True`.
    pub exposed: bool,
}

/// The deployments of the application `spec` runs (its target is the import path), each with
/// the options of `overrides` that name it; `at` names the entry in errors.
pub fn resolve(
    at: &str,
    spec: &PythonSpec,
    mut overrides: Vec<serde_json::Map<String, serde_json::Value>>,
) -> anyhow::Result<Vec<AppDeployment>> {
    let mut out = Vec::new();
    for d in describe(at, spec)? {
        let mut fields = d.options;
        if let Some(pos) = overrides
            .iter()
            .position(|o| o.get("name").and_then(|n| n.as_str()) == Some(d.name.as_str()))
        {
            let mut o = overrides.remove(pos);
            o.remove("name");
            fields.extend(o);
        }
        out.push(AppDeployment {
            name: d.name,
            fields,
            exposed: d.exposed,
        });
    }
    if let Some(o) = overrides.first() {
        let name = o.get("name").map(ToString::to_string).unwrap_or_default();
        bail!("{at}.deployments: the application has no deployment named {name}");
    }
    Ok(out)
}

/// Runs the application's interpreter to list its deployments.
fn describe(at: &str, spec: &PythonSpec) -> anyhow::Result<Vec<Described>> {
    let mut cmd = std::process::Command::new(&spec.py_executable);
    cmd.args(["-m", "ferroserve.describe", &spec.target])
        .envs(&spec.env_vars)
        .stdin(Stdio::null());
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let output = cmd
        .output()
        .with_context(|| format!("{at}: cannot run {}", spec.py_executable.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{at}.import_path: cannot load {}:\n{}",
            spec.target,
            stderr.trim_end()
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{at}: unreadable deployment list from {}",
            spec.py_executable.display()
        )
    })
}
