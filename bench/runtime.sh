#!/usr/bin/env bash
# In-process runtime benchmark (bench/runtime): router overhead, replica scaling of a CPU-bound
# and of a sleeping model. No HTTP; prints a markdown report on stdout.
#
#   bench/runtime.sh                     # DURATION=5 s per run, REPEATS=3: about 2 minutes
#   QUICK=1 bench/runtime.sh             # DURATION=1, REPEATS=1: checks the pipeline only
#   DURATION=10 REPEATS=5 bench/runtime.sh
#   ONLY=router bench/runtime.sh         # a subset of router,cpu,sleep
#
# Other knobs: WARMUP seconds before each run (default 1), CALLS sequential calls per path and
# repeat in the router measurement (default 100000; 20000 with QUICK). Arguments are passed to
# the binary (--quick, --duration S, --repeats N, --only LIST). The report is also written to
# bench/results/runtime-<timestamp>.md (git-ignored). See bench/README.md for the method.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

printf '\033[1m==> %s\033[0m\n' "building ferroserve-bench-runtime (release)" >&2
cargo build --release -p ferroserve-bench-runtime
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

mkdir -p bench/results
OUT="bench/results/runtime-$(date +%Y%m%d-%H%M%S).md"
"$TARGET_DIR/release/ferroserve-bench-runtime" "$@" | tee "$OUT"
printf '\033[1m==> %s\033[0m\n' "report written to $OUT" >&2
