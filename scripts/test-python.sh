#!/usr/bin/env bash
# End-to-end tests: real Python clients (tritonclient, kserve, raw HTTP) against the real
# ferroserve binary: the one of the ferroserve wheel installed in .venv (scripts/test.sh builds
# and installs it), or FERROSERVE_BIN. Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/python-venv.sh
# tritonclient.grpc and the kserve package both register the `inference.*` protobuf messages,
# so they cannot share a process: the suites that use tritonclient.grpc in-process (the ONNX
# and repository ones) run in a pytest of their own. Arguments naming test files run as given.
grpc_own=(tests/python/test_onnx.py tests/python/test_repository.py tests/python/test_shared_memory.py)
for arg in "$@"; do
    if [[ "$arg" == tests/* || "$arg" == *.py* ]]; then
        exec .venv/bin/python -m pytest -q "$@"
    fi
done
.venv/bin/python -m pytest tests/python -q "${grpc_own[@]/#/--ignore=}" "$@"
exec .venv/bin/python -m pytest "${grpc_own[@]}" -q "$@"
