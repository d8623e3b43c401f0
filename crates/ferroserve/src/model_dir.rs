//! What KServe's `--model_dir` holds (where its storage initializer puts a model, `/mnt/models`):
//! one model — a Python file with a model class or an ONNX file, the latter possibly in
//! version directories — or a model repository of several.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

/// What to serve from a model directory.
#[derive(Debug, PartialEq, Eq)]
pub enum ModelDir {
    /// One model file (`.py` or `.onnx`), served under `--model_name`.
    File(PathBuf),
    /// A model repository (`<name>/<version>/model.onnx`, `<name>/model.py`), each model under
    /// its directory's name.
    Repository(PathBuf),
}

/// Reads `path` to decide what it serves, in this order: a file is the model; `model.py` or
/// `model.onnx` in it is; the one `.py` or `.onnx` file in it is; the newest
/// `<version>/model.onnx` is; otherwise its subdirectories make a model repository.
pub fn classify(path: &Path) -> anyhow::Result<ModelDir> {
    if path.is_file() {
        return Ok(ModelDir::File(path.to_path_buf()));
    }
    if !path.is_dir() {
        bail!("--model_dir {}: no such file or directory", path.display());
    }
    for name in ["model.py", "model.onnx"] {
        if path.join(name).is_file() {
            return Ok(ModelDir::File(path.join(name)));
        }
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow!("--model_dir {}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    let mut model_files: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.is_file())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("py" | "onnx")))
        .collect();
    model_files.sort();
    match model_files.as_slice() {
        [one] => return Ok(ModelDir::File(one.to_path_buf())),
        [] => {}
        several => {
            let names: Vec<String> = several.iter().map(|p| file_name(p)).collect();
            bail!(
                "--model_dir {}: several model files ({}); name the model file model.py or model.onnx",
                path.display(),
                names.join(", ")
            );
        }
    }
    let newest_version = entries
        .iter()
        .filter(|p| p.join("model.onnx").is_file())
        .filter_map(|p| Some((file_name(p).parse::<u64>().ok()?, p)))
        .max_by_key(|(version, _)| *version);
    if let Some((_, dir)) = newest_version {
        return Ok(ModelDir::File(dir.join("model.onnx")));
    }
    if entries.iter().any(|p| p.is_dir()) {
        return Ok(ModelDir::Repository(path.to_path_buf()));
    }
    bail!(
        "--model_dir {}: no model in it (expected model.py, a .onnx file, <version>/model.onnx, \
         or a model repository of <name>/ directories)",
        path.display()
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, b"x").expect("write");
        }
        dir
    }

    #[test]
    fn a_named_model_file_wins() {
        let d = dir_with(&["model.py", "helpers.py", "other.onnx"]);
        assert_eq!(
            classify(d.path()).unwrap(),
            ModelDir::File(d.path().join("model.py"))
        );
    }

    #[test]
    fn the_only_model_file_is_the_model() {
        let d = dir_with(&["clf.onnx", "README.md"]);
        assert_eq!(
            classify(d.path()).unwrap(),
            ModelDir::File(d.path().join("clf.onnx"))
        );
    }

    #[test]
    fn several_model_files_are_an_error_naming_them() {
        let d = dir_with(&["a.onnx", "b.py"]);
        let e = classify(d.path()).unwrap_err().to_string();
        assert!(e.contains("a.onnx, b.py"), "{e}");
    }

    #[test]
    fn version_directories_serve_the_newest() {
        let d = dir_with(&["1/model.onnx", "10/model.onnx", "9/model.onnx"]);
        assert_eq!(
            classify(d.path()).unwrap(),
            ModelDir::File(d.path().join("10/model.onnx"))
        );
    }

    #[test]
    fn model_directories_make_a_repository() {
        let d = dir_with(&["a/1/model.onnx", "b/model.py"]);
        assert_eq!(
            classify(d.path()).unwrap(),
            ModelDir::Repository(d.path().to_path_buf())
        );
    }

    #[test]
    fn an_empty_or_missing_directory_is_an_error() {
        let d = dir_with(&["notes.txt"]);
        assert!(classify(d.path()).is_err());
        assert!(classify(&d.path().join("missing")).is_err());
    }
}
