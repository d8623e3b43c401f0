#!/usr/bin/env bash
# Runs every test: Rust (unit, integration, property), then the Python suite against the
# ferroserve wheel installed in the test venv, the container image run by Docker, and the
# Kubernetes manifest checks. Creates the Python venv (.venv) on first use. Extra arguments go
# to pytest. Needs root, debootstrap, umoci, skopeo and a running Docker Engine for the image
# (.ci/run installs and checks them).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests use what a user installs: the wheel (its binary, its Python package) in .venv. The
# Rust integration tests that run Python models use that venv's ferroserve package too.
scripts/python-venv.sh
wheel="$(scripts/build-wheel.sh)"
FERROSERVE_WHEEL="$wheel" scripts/python-venv.sh
export FERROSERVE_WHEEL="$wheel"
export FERROSERVE_TEST_PYTHON="$PWD/.venv/bin/python"
cargo build --locked --workspace
cargo test --locked --workspace

FERROSERVE_IMAGE="$(deploy/image/build.sh "$wheel")"
export FERROSERVE_IMAGE
unset FERROSERVE_BIN
scripts/test-python.sh "$@"
