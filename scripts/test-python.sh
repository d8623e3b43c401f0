#!/usr/bin/env bash
# End-to-end tests: real Python clients (tritonclient, kserve, raw HTTP) against the real
# ferroserve binary. The binary must already be built (cargo build -p ferroserve); set
# FERROSERVE_BIN to test another one. Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export FERROSERVE_BIN="${FERROSERVE_BIN:-$root/target/debug/ferroserve}"
scripts/python-venv.sh
# tritonclient.grpc and the kserve package both register the `inference.*` protobuf messages,
# so they cannot share a process: the suites that use tritonclient.grpc in-process (the ONNX
# and repository ones) run in a pytest of their own. Arguments naming test files run as given.
grpc_own=(tests/python/test_onnx.py tests/python/test_repository.py)
for arg in "$@"; do
    if [[ "$arg" == tests/* || "$arg" == *.py* ]]; then
        exec .venv/bin/python -m pytest -q "$@"
    fi
done
.venv/bin/python -m pytest tests/python -q "${grpc_own[@]/#/--ignore=}" "$@"
exec .venv/bin/python -m pytest "${grpc_own[@]}" -q "$@"
