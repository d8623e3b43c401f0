#!/usr/bin/env bash
# End-to-end tests: real Python clients (tritonclient, kserve, raw HTTP) against the real
# ferroserve binary. The binary must already be built (cargo build -p ferroserve); set
# FERROSERVE_BIN to test another one. Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export FERROSERVE_BIN="${FERROSERVE_BIN:-$root/target/debug/ferroserve}"
scripts/python-venv.sh
exec .venv/bin/python -m pytest tests/python -q "$@"
