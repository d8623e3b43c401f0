#!/usr/bin/env bash
# Dynamic batching side by side (issue 9): the same Python model (5 ms + 0.05 ms per row) served
# unbatched and with max_batch_size 32 by one ferroserve, driven by wrk at c=1, 16 and 64 with
# V2 JSON [1,16] FP32. Prints the medians of REPEATS runs: req/s and p50/p99 per cell. See bench/README.md ("Batching").
#
#   bench/batch/run.sh                    # DURATION=10 s per cell, REPEATS=3
#   DURATION=3 REPEATS=1 bench/batch/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"; REPEATS="${REPEATS:-3}"; PORT="${PORT:-18480}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"; WAIT="${BATCH_WAIT_TIMEOUT_S:-0.005}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p ferroserve
scripts/python-venv.sh >/dev/null
work="$(mktemp -d)"; trap 'kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
py="$ROOT/.venv/bin/python"
cat >"$work/ferroserve.yaml" <<YAML
http_port: $PORT
grpc_port: $((PORT + 1))
deployments:
  - name: unbatched
    python: $HERE/models.py:FixedCost
    runtime_env: {py_executable: $py}
    max_queued_requests: 1024
  - name: batched
    python: $HERE/models.py:FixedCost
    runtime_env: {py_executable: $py}
    max_batch_size: 32
    batch_wait_timeout_s: $WAIT
    max_queued_requests: 1024
YAML
target/release/ferroserve serve --config "$work/ferroserve.yaml" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -sf "localhost:$PORT/v2/models/batched/ready" >/dev/null && curl -sf "localhost:$PORT/v2/models/unbatched/ready" >/dev/null && break; sleep 0.2; done
cat >"$work/body.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input-0","shape":[1,16],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
LUA
# wrk's latencies (870.00us, 6.02ms, 1.20s) in µs; the median of several values.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1e6 }'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'; }
printf '| model | c | req/s | p50 | p99 |\n|---|--:|--:|--:|--:|\n'
for c in $CONCURRENCY; do
  for model in unbatched batched; do
    rps=(); p50=(); p99=()
    for _ in $(seq "$REPEATS"); do
      out="$(wrk -t1 -c"$c" -d"${DURATION}s" --latency -s "$work/body.lua" "http://127.0.0.1:$PORT/v2/models/$model/infer")"
      if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "!!! errors in $model c=$c" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
      rps+=("$(awk '/Requests\/sec/{print $2}' <<<"$out")")
      p50+=("$(us "$(awk '$1=="50%"{print $2}' <<<"$out")")")
      p99+=("$(us "$(awk '$1=="99%"{print $2}' <<<"$out")")")
    done
    printf '| %s | %s | %s | %s µs | %s µs |\n' "$model" "$c" "$(med "${rps[@]}")" "$(med "${p50[@]}")" "$(med "${p99[@]}")"
  done
done
curl -s "localhost:$PORT/metrics" | grep -E "^ferroserve_deployment_batch(es_total|_size_(sum|count))" || true
