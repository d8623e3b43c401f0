//! The fuzz corpus as regression tests: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the target's `check`, none may panic; the seeds
//! named `valid-*` must be accepted and those named `broken-*` refused.
//!
//! Shared by the corpus tests in `crates/*/tests/fuzz_corpus.rs`. With `FERROSERVE_WRITE_SEEDS=1`
//! the tests write their seeds (built in code) to `fuzz/corpus/<target>/` first.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/` (none when it does not exist), by name.
fn files(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = format!(
                "{kind}/{target}/{}",
                p.file_name().expect("a name").display()
            );
            (name, std::fs::read(&p).expect("a readable corpus file"))
        })
        .collect();
    out.sort();
    out
}

/// Writes `seeds` to `fuzz/corpus/<target>/` when `FERROSERVE_WRITE_SEEDS` is set, then checks
/// every corpus and regression file: no panic, `valid-*` accepted, `broken-*` refused.
pub fn check_corpus(target: &str, seeds: &[(&str, Vec<u8>)], check: fn(&[u8]) -> bool) {
    if std::env::var_os("FERROSERVE_WRITE_SEEDS").is_some() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("a written seed");
        }
    }
    let corpus = files("corpus", target);
    for (name, _) in seeds {
        assert!(
            corpus.iter().any(|(n, _)| n.ends_with(&format!("/{name}"))),
            "seed {name} is missing from fuzz/corpus/{target}/: run the tests with FERROSERVE_WRITE_SEEDS=1"
        );
    }
    let mut failures = Vec::new();
    for (name, input) in corpus.iter().chain(&files("regressions", target)) {
        let file = name.rsplit('/').next().unwrap_or_default();
        match std::panic::catch_unwind(|| check(input)) {
            Err(_) => failures.push(format!("{name}: panicked")),
            Ok(false) if file.starts_with("valid-") => failures.push(format!("{name}: refused")),
            Ok(true) if file.starts_with("broken-") => failures.push(format!("{name}: accepted")),
            Ok(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
