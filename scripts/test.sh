#!/usr/bin/env bash
# Runs every test: Rust (unit, integration, property) and the Python client suite.
# Creates the Python venv (.venv) on first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/python-venv.sh
export FERROSERVE_TEST_PYTHON="$PWD/.venv/bin/python"
cargo build --locked --workspace
cargo test --locked --workspace
FERROSERVE_BIN="${FERROSERVE_BIN:-$PWD/target/debug/ferroserve}" scripts/test-python.sh "$@"
