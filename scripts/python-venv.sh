#!/usr/bin/env bash
# Creates (idempotently) the Python venv at .venv in the repo root and installs
# tests/python/requirements.txt into it; with FERROSERVE_WHEEL=PATH, also that ferroserve wheel
# (scripts/build-wheel.sh makes it). Re-runs are cheap: pip runs again only when the
# requirements file changed since the last successful install.
#
#   PYTHON=python3.11 scripts/python-venv.sh   # choose the interpreter (default: python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/tests/python/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-venv.sh: '$python' not found; install Python 3 (3.9 or newer)" >&2
    exit 1
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >/dev/null 2>"$root/.venv-create.log"; then
        # Debian's python3 without the python3-venv package has no ensurepip: make the venv
        # without pip and bootstrap pip with the system's own pip, if there is one.
        rm -rf "$venv"
        if "$python" -m venv --without-pip "$venv" >/dev/null 2>>"$root/.venv-create.log" \
            && "$python" -m pip --version >/dev/null 2>&1 \
            && "$python" -m pip --python "$venv/bin/python" install -q pip \
                >/dev/null 2>>"$root/.venv-create.log"; then
            :
        else
            rm -rf "$venv"
            echo "python-venv.sh: cannot create a venv with pip at $venv:" >&2
            cat "$root/.venv-create.log" >&2
            echo "(on Debian/Ubuntu: apt-get install python3-venv)" >&2
            rm -f "$root/.venv-create.log"
            exit 1
        fi
    fi
    rm -f "$root/.venv-create.log"
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    rm -f "$stamp"
    "$venv/bin/python" -m pip install -q -r "$req"
    echo "$want" >"$stamp"
fi
if [[ -n "${FERROSERVE_WHEEL:-}" ]]; then
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$FERROSERVE_WHEEL"
fi
