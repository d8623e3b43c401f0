#!/usr/bin/env bash
# Chaos benchmark (bench/chaos, binary ferroserve-bench-chaos): under load at c=64, a replica
# dies every INTERVAL seconds for DURATION seconds; per death, the requests failed against the
# requests the replica held, and the time until its replacement serves. Scenarios: kill -9 of a
# Python worker with 2 and with 4 replicas, and a Rust model that panics on a marked request
# with 2 replicas.
#
#   bench/chaos.sh                         # 60 s per scenario, a death every 5 s: about 4 minutes
#   QUICK=1 bench/chaos.sh                 # 10 s, a death every 3 s: checks the pipeline
#   SCENARIOS="python-2 rust-panic-2" DURATION=30 bench/chaos.sh
#
# Other knobs: CONCURRENCY (64), SCENARIOS (python-2 python-4 rust-panic-2; any python-N or
# rust-panic-N), REPLACEMENT_TARGET_MS (1000, Python), SKIP_BUILD=1. One markdown table per
# scenario goes to stdout and to bench/results/chaos-<timestamp>.md, the raw numbers to
# bench/results/chaos-<timestamp>-<scenario>.json and the server logs beside them (git-ignored).
# Exits non-zero if a scenario missed a target. See bench/README.md for the method.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${QUICK:-0}" == "1" ]]; then
    DURATION="${DURATION:-10}"
    INTERVAL="${INTERVAL:-3}"
fi
DURATION="${DURATION:-60}"
INTERVAL="${INTERVAL:-5}"
CONCURRENCY="${CONCURRENCY:-64}"
SCENARIOS="${SCENARIOS:-python-2 python-4 rust-panic-2}"
REPLACEMENT_TARGET_MS="${REPLACEMENT_TARGET_MS:-1000}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

[[ -d /proc/self ]] || die "needs Linux (/proc)"
if [[ "$SCENARIOS" == *python* ]]; then
    PYTHON="${FERROSERVE_TEST_PYTHON:-$ROOT/.venv/bin/python}"
    if [[ ! -x "$PYTHON" ]]; then
        log "setting up .venv (scripts/python-venv.sh)"
        scripts/python-venv.sh
    fi
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building (release)"
    cargo build --release -p ferroserve -p ferroserve-bench-chaos
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET_DIR/release/ferroserve-bench-chaos"

mkdir -p bench/results
STAMP="$(date +%Y%m%d-%H%M%S)"
REPORT="bench/results/chaos-$STAMP.md"
{
    printf '## Chaos benchmark, %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf -- '- machine: %s, %s CPUs (%s)\n' "$(uname -sr)" "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    printf -- '- commit: %s%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes in the checkout)')"
    printf -- '- binaries built: %s (ferroserve), %s (ferroserve-bench-chaos)\n' \
        "$(date -u -r "$TARGET_DIR/release/ferroserve" '+%H:%M UTC' 2>/dev/null || echo '?')" \
        "$(date -u -r "$BENCH" '+%H:%M UTC' 2>/dev/null || echo '?')"
    printf -- '- load average at start: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf -- '- DURATION=%s s, INTERVAL=%s s, CONCURRENCY=%s\n\n' "$DURATION" "$INTERVAL" "$CONCURRENCY"
} | tee "$REPORT"

FAILED=0
for scenario in $SCENARIOS; do
    case "$scenario" in
        python-*) kind=python; replicas="${scenario#python-}"
                  extra=(--replacement-target-ms "$REPLACEMENT_TARGET_MS") ;;
        rust-panic-*) kind=rust-panic; replicas="${scenario#rust-panic-}"; extra=() ;;
        *) die "unknown scenario '$scenario' (python-N or rust-panic-N)" ;;
    esac
    log "$scenario: $DURATION s, a death every $INTERVAL s, c=$CONCURRENCY"
    rc=0
    "$BENCH" "$kind" --replicas "$replicas" --duration "$DURATION" --interval "$INTERVAL" \
        --concurrency "$CONCURRENCY" --json "bench/results/chaos-$STAMP-$scenario.json" \
        --log "bench/results/chaos-$STAMP-$scenario.log" "${extra[@]}" | tee -a "$REPORT" || rc=$?
    if (( rc != 0 )); then
        FAILED=1
        warn "$scenario: FAILED (exit status $rc); server log: bench/results/chaos-$STAMP-$scenario.log"
    fi
done
printf -- '- load average at end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$REPORT"
log "report: $REPORT"
if (( FAILED )); then
    die "some scenarios missed a target (see above)"
fi
