#!/usr/bin/env bash
# Composition side by side (issue 8): ferroserve pipelines (Python → Python, Python → Rust, a
# Rust graph) against their single-model baselines, KServe 0.21 (the same logic in one custom
# model) and, with RAY=1, Ray Serve (ingress → echo through a handle), in one run. See
# bench/README.md ("Composition").
#
#   bench/compose/run.sh                 # DURATION=10 s per run, REPEATS=3: about 12 minutes
#   QUICK=1 bench/compose/run.sh         # 2 s runs, 1 repeat: checks the pipeline, numbers noisy
#   RAY=1 bench/compose/run.sh           # adds Ray Serve (installs bench/python/.venv-ray)
#   SERVERS=ferroserve ENDPOINTS=fs-identity,fs-graph2 bench/compose/run.sh
#
# Knobs: DURATION, REPEATS, WARMUP (s of c=8 load per endpoint before measuring, 0 skips),
# CONCURRENCY ("1 8 64"), SERVERS (ferroserve,kserve,ray), ENDPOINTS (see bench_compose.py),
# BASE_PORT (18180: HTTP, +1 gRPC), WRK_CPU (1), BENCH_RAY_MAX_ONGOING (100), SKIP_BUILD=1,
# KEEP_LOGS=1. Exits non-zero if any run failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

if [[ "${QUICK:-0}" == "1" ]]; then
    DURATION="${DURATION:-2}"
    REPEATS="${REPEATS:-1}"
    WARMUP="${WARMUP:-1}"
fi
export DURATION="${DURATION:-10}"
export REPEATS="${REPEATS:-3}"
export WARMUP="${WARMUP:-2}"
export CONCURRENCY="${CONCURRENCY:-1 8 64}"
export BASE_PORT="${BASE_PORT:-18180}"
export WRK_CPU="${WRK_CPU:-1}"
export SERVERS="${SERVERS:-}"
export ENDPOINTS="${ENDPOINTS:-}"
export BENCH_RAY_MAX_ONGOING="${BENCH_RAY_MAX_ONGOING:-100}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
command -v taskset >/dev/null || die "taskset is required (util-linux)"
[[ -d /proc/self ]] || die "Linux /proc is required"
if (( $(nproc) <= WRK_CPU )); then
    die "wrk is pinned to CPU $WRK_CPU but this machine has $(nproc) CPU(s); set WRK_CPU"
fi
if ! command -v wrk >/dev/null; then
    SUDO=""
    [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    log "installing wrk"
    $SUDO apt-get install -y wrk || { $SUDO apt-get update && $SUDO apt-get install -y wrk; }
    command -v wrk >/dev/null || die "could not install wrk"
fi
for port in "$BASE_PORT" "$((BASE_PORT + 1))"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (a server left over from an earlier run?); set BASE_PORT"
    fi
done

if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    log "building ferroserve (release)"
    cargo build --release -p ferroserve
fi
export FERROSERVE_BIN="$ROOT/target/release/ferroserve"
[[ -x "$FERROSERVE_BIN" ]] || die "$FERROSERVE_BIN is missing (cargo build --release -p ferroserve)"

log "Python venv (.venv: ferroserve, kserve)"
scripts/python-venv.sh
export PY="$ROOT/.venv/bin/python"
"$PY" -c "import ferroserve, kserve, numpy" \
    || die "the .venv lacks ferroserve, kserve or numpy (scripts/python-venv.sh)"

# Ray Serve, only with RAY=1: bench/python's venv (kserve[ray], which brings ray[serve]).
export RAY_PY=""
if [[ "${RAY:-0}" == "1" ]]; then
    RAY_VENV="$ROOT/bench/python/.venv-ray"
    RAY_REQ='kserve[ray]==0.21.0'
    if [[ "$(cat "$RAY_VENV/.installed" 2>/dev/null || true)" == "$RAY_REQ" ]]; then
        RAY_PY="$RAY_VENV/bin/python"
    else
        log "creating $RAY_VENV with pip install \"$RAY_REQ\" (about 750 MiB)"
        rm -rf "$RAY_VENV"
        if python3 -m venv "$RAY_VENV" >"$RAY_VENV.log" 2>&1 \
            && PIP_DISABLE_PIP_VERSION_CHECK=1 "$RAY_VENV/bin/pip" install "$RAY_REQ" >>"$RAY_VENV.log" 2>&1 \
            && "$RAY_VENV/bin/python" -c "import ray, ray.serve, starlette" >>"$RAY_VENV.log" 2>&1; then
            echo "$RAY_REQ" >"$RAY_VENV/.installed"
            RAY_PY="$RAY_VENV/bin/python"
        else
            printf '\033[1;31m  !!! installing %s failed; going on without Ray. Last lines of %s:\033[0m\n' \
                "$RAY_REQ" "$RAY_VENV.log" >&2
            tail -15 "$RAY_VENV.log" | sed 's/^/  !!! /' >&2
        fi
    fi
fi
export RAY_PY

BENCH_WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-compose.XXXXXX")"
export BENCH_WORK
trap 'rm -rf "$BENCH_WORK"' EXIT
mkdir -p bench/results
OUT="bench/results/compose-$(date +%Y%m%d-%H%M%S).json"

log "DURATION=${DURATION}s REPEATS=$REPEATS WARMUP=${WARMUP}s CONCURRENCY='$CONCURRENCY' SERVERS='${SERVERS:-all}' ENDPOINTS='${ENDPOINTS:-all}'"
status=0
python3 "$HERE/bench_compose.py" --out "$OUT" || status=$?
[[ -f "$OUT" ]] || die "no results written (bench_compose.py exited with $status)"
python3 "$HERE/report.py" "$OUT" | tee "${OUT%.json}.md"
echo
echo "raw numbers: $OUT (report: ${OUT%.json}.md)"
if (( status )); then
    if [[ "${KEEP_LOGS:-0}" == "1" ]]; then trap - EXIT; echo "logs kept in $BENCH_WORK"; fi
    die "some runs failed (see '!!!' lines above)"
fi
