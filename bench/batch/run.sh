#!/usr/bin/env bash
# Dynamic batching side by side (issue 9): one model (5 ms + 0.05 ms per row) served unbatched and
# with max_batch_size 32, in Python (models.py, one ferroserve) and in Rust (src/main.rs, a
# ferroserve of its own), driven by wrk at c=1, 16 and 64 with V2 JSON [1,16] FP32. Prints the
# medians of REPEATS runs: req/s and p50/p99 per cell. See bench/README.md ("Batching").
#
#   bench/batch/run.sh                    # DURATION=10 s per cell, REPEATS=3
#   DURATION=3 REPEATS=1 bench/batch/run.sh
#   TRITON=1 bench/batch/run.sh           # also Triton's dynamic batcher (triton_peer.py, PyTriton) as
#                                         # rows triton_unbatched / triton_batched; PYTRITON_PY is a python
#                                         # with nvidia-pytriton (default .venv-pytriton: python3 -m venv .venv-pytriton && .venv-pytriton/bin/pip install nvidia-pytriton)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"; REPEATS="${REPEATS:-3}"; PORT="${PORT:-18480}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"; WAIT="${BATCH_WAIT_TIMEOUT_S:-0.005}"
TRITON="${TRITON:-0}"; PYTRITON_PY="${PYTRITON_PY:-$ROOT/.venv-pytriton/bin/python}"; TPORT=$((PORT + 10))
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p ferroserve -p ferroserve-bench-batch
scripts/python-venv.sh >/dev/null
work="$(mktemp -d)"; server=""; rust=""; triton=""; RPORT=$((PORT + 20))
trap 'kill $server $rust $triton 2>/dev/null; [[ -z "$triton" ]] || for _ in $(seq 100); do kill -0 "$triton" 2>/dev/null || break; sleep 0.1; done; rm -rf "$work"' EXIT
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
# The same model in Rust (src/main.rs), in a ferroserve of its own on $RPORT.
target/release/ferroserve-bench-batch "$RPORT" "$WAIT" >"$work/rust.log" 2>&1 &
rust=$!
models="unbatched batched rust_unbatched rust_batched"
if [[ "$TRITON" == 1 ]]; then
  # The same FixedCost logic behind Triton (HTTP $TPORT, gRPC +1, metrics +2); the token opens /stats.
  export PYTRITON_ACCESS_TOKEN="bench-$RANDOM$RANDOM"
  "$PYTRITON_PY" "$HERE/triton_peer.py" --port "$TPORT" --max-queue-delay-us "$(awk -v w="$WAIT" 'BEGIN{print int(w * 1e6)}')" >"$work/triton.log" 2>&1 &
  triton=$!
  models="$models triton_unbatched triton_batched"
fi
for _ in $(seq 100); do curl -sf "localhost:$PORT/v2/models/batched/ready" >/dev/null && curl -sf "localhost:$PORT/v2/models/unbatched/ready" >/dev/null && break; sleep 0.2; done
for _ in $(seq 100); do curl -sf "localhost:$RPORT/v2/models/rust_batched/ready" >/dev/null && break; sleep 0.2; done
if [[ "$TRITON" == 1 ]]; then
  for _ in $(seq 300); do curl -sf "localhost:$TPORT/v2/models/triton_batched/ready" >/dev/null && curl -sf "localhost:$TPORT/v2/models/triton_unbatched/ready" >/dev/null && break; sleep 0.2; done
  curl -sf "localhost:$TPORT/v2/models/triton_batched/ready" >/dev/null || { echo "Triton did not get ready:" >&2; tail -20 "$work/triton.log" >&2; exit 1; }
fi
tstats() { curl -s -H "triton-access-token: $PYTRITON_ACCESS_TOKEN" "localhost:$TPORT/v2/models/$1/stats" \
  | grep -o '"inference_count":[0-9]*,"execution_count":[0-9]*' | head -1 | tr -dc '0-9,' | tr , ' '; }
url() { case "$1" in
  triton_*) echo "http://127.0.0.1:$TPORT/v2/models/$1/infer" ;;
  rust_*) echo "http://127.0.0.1:$RPORT/v2/models/$1/infer" ;;
  *) echo "http://127.0.0.1:$PORT/v2/models/$1/infer" ;;
esac; }
cat >"$work/body.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input-0","shape":[1,16],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
LUA
# wrk's latencies (870.00us, 6.02ms, 1.20s) in µs; the median of several values.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1e6 }'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'; }
if [[ "$TRITON" == 1 ]]; then  # the same request answers 200 with the same outputs on both servers
  body='{"inputs":[{"name":"input-0","shape":[1,16],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
  for m in batched triton_batched; do
    curl -s -o "$work/$m.json" -w "$m: HTTP %{http_code}\n" -H 'Content-Type: application/json' -d "$body" "$(url "$m")" >&2
    grep -o '"outputs":.*' "$work/$m.json" >&2
  done
fi
stats=()
printf '| model | c | req/s | p50 | p99 |\n|---|--:|--:|--:|--:|\n'
for c in $CONCURRENCY; do
  for model in $models; do
    rps=(); p50=(); p99=()
    for _ in $(seq "$REPEATS"); do
      out="$(wrk -t1 -c"$c" -d"${DURATION}s" --latency -s "$work/body.lua" "$(url "$model")")"
      if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "!!! errors in $model c=$c" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
      rps+=("$(awk '/Requests\/sec/{print $2}' <<<"$out")")
      p50+=("$(us "$(awk '$1=="50%"{print $2}' <<<"$out")")")
      p99+=("$(us "$(awk '$1=="99%"{print $2}' <<<"$out")")")
    done
    printf '| %s | %s | %s | %s µs | %s µs |\n' "$model" "$c" "$(med "${rps[@]}")" "$(med "${p50[@]}")" "$(med "${p99[@]}")"
  done
  if [[ "$TRITON" == 1 ]]; then
    read -r inf exe <<<"$(tstats triton_batched)"
    stats+=("triton_batched after c=$c: inference_count $inf, execution_count $exe (cumulative)")
  fi
done
curl -s "localhost:$PORT/metrics" | grep -E "^ferroserve_deployment_batch(es_total|_size_(sum|count))" || true
# Triton's own count of batches (/stats): execution_count (model calls) vs inference_count (requests).
[[ "$TRITON" != 1 ]] || { printf '%s\n' "${stats[@]}"; read -r inf exe <<<"$(tstats triton_unbatched)"; echo "triton_unbatched: inference_count $inf, execution_count $exe"; }
