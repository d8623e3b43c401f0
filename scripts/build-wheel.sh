#!/usr/bin/env bash
# Builds the ferroserve wheel (the Python package and the release binary, by maturin) in a
# fresh build venv, and prints its path. The wheel goes to target/wheels/.
#
#   scripts/build-wheel.sh            # then: pip install target/wheels/ferroserve-*.whl
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/wheel-build-venv"
python="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

rm -rf "$venv" "$root/target/wheels"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q "maturin==1.16.0"
cd "$root/python"
"$venv/bin/maturin" build --locked --release --strip --out "$root/target/wheels" >&2
ls "$root"/target/wheels/ferroserve-*.whl
