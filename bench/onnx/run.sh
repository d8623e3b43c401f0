#!/usr/bin/env bash
# ONNX side by side (issue 10): the benchmark MLP (FP32 [1,784] → 512 → 512 → 10, V2 JSON) and
# CNN (FP32 [1,3,224,224], four strided 3×3 convolutions, binary extension), made by
# tests/python/onnx_models.py, served by ferroserve's built-in ONNX runtime (a model repository,
# no code) and by the peer a KServe user writes (a kserve.Model calling onnxruntime,
# kserve_onnx.py), driven by wrk at c=1 and c=16. Floors in the same run: onnxruntime called
# directly in a Python loop (direct.py) and the bare floor server (bench/floor) answering the
# same body (MLP: parse and echo the JSON; CNN: echo the binary body). Medians of REPEATS runs.
#
#   bench/onnx/run.sh                    # DURATION=10 s per cell, REPEATS=3
#   DURATION=3 REPEATS=1 bench/onnx/run.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"; REPEATS="${REPEATS:-3}"; PORT="${PORT:-18580}"
CONCURRENCY="${CONCURRENCY:-1 16}"; THREADS="${THREADS:-$(nproc)}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p ferroserve -p ferroserve-bench-floor
scripts/python-venv.sh >/dev/null
py="$ROOT/.venv/bin/python"
work="$(mktemp -d)"; pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
"$py" tests/python/onnx_models.py "$work/models" --bench >/dev/null
"$py" "$HERE/bodies.py" "$work"
# Two ferroserve configurations: THREADS intra-op threads per replica (the default: the cores),
# and one thread (no ONNX Runtime thread pool: no spinning threads taking the cores from the
# HTTP ingress and the load generator).
cp -r "$work/models" "$work/models-1t"
for m in mlp cnn; do
  printf 'intra_op_threads: %s\n' "$THREADS" >"$work/models/$m/config.yaml"
  printf 'intra_op_threads: 1\n' >"$work/models-1t/$m/config.yaml"
done

FS=$PORT; KS=$((PORT + 2)); FLOOR=$((PORT + 4)); FS1=$((PORT + 6))
target/release/ferroserve serve --model-repository "$work/models" --http-port $FS --grpc-port $((FS + 1)) \
  --python "$py" >"$work/ferroserve.log" 2>&1 & pids+=($!)
target/release/ferroserve serve --model-repository "$work/models-1t" --http-port $FS1 --grpc-port $((FS1 + 1)) \
  --python "$py" >"$work/ferroserve-1t.log" 2>&1 & pids+=($!)
target/release/ferroserve-bench-floor --port $FLOOR >"$work/floor.log" 2>&1 & pids+=($!)
"$py" "$HERE/kserve_onnx.py" --model_dir "$work/models" --http_port $KS --grpc_port $((KS + 1)) \
  --threads "$THREADS" >"$work/kserve.log" 2>&1 & pids+=($!)
for port in $FS $FS1 $KS; do
  for _ in $(seq 150); do curl -sf "localhost:$port/v2/models/cnn/ready" >/dev/null && break; sleep 0.2; done
  curl -sf "localhost:$port/v2/models/cnn/ready" >/dev/null || { echo "server on $port not ready" >&2; cat "$work"/*.log >&2; exit 1; }
done

us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1e6 }'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'; }
declare -A RPS P50 P99
cell() { # name url lua c
  local rps=() p50=() p99=() out
  for _ in $(seq "$REPEATS"); do
    out="$(wrk -t1 -c"$4" -d"${DURATION}s" --latency -s "$3" "$2")"
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "!!! errors in $1" >&2; grep "Non-2xx\|Socket errors" <<<"$out" >&2; fi
    rps+=("$(awk '/Requests\/sec/{print $2}' <<<"$out")")
    p50+=("$(us "$(awk '$1=="50%"{print $2}' <<<"$out")")")
    p99+=("$(us "$(awk '$1=="99%"{print $2}' <<<"$out")")")
  done
  RPS[$1]="$(med "${rps[@]}")"; P50[$1]="$(med "${p50[@]}")"; P99[$1]="$(med "${p99[@]}")"
}
direct=()
for _ in $(seq "$REPEATS"); do direct+=("$("$py" "$HERE/direct.py" "$work/models" 3 "$THREADS")"); done
for m in mlp cnn; do
  body="$work/$m.lua"
  floor_url="http://127.0.0.1:$FLOOR/v2/models/$m/infer"; [[ $m == cnn ]] && floor_url="http://127.0.0.1:$FLOOR/echo"
  for c in $CONCURRENCY; do
    cell "ferroserve $m $c" "http://127.0.0.1:$FS/v2/models/$m/infer" "$body" "$c"
    cell "ferroserve-1t $m $c" "http://127.0.0.1:$FS1/v2/models/$m/infer" "$body" "$c"
    cell "kserve $m $c" "http://127.0.0.1:$KS/v2/models/$m/infer" "$body" "$c"
    cell "floor $m $c" "$floor_url" "$body" "$c"
  done
done
printf '\nonnxruntime direct (Python loop, batch 1, %s intra-op threads), medians of %s runs:\n' "$THREADS" "$REPEATS"
for m in mlp cnn; do
  calls=(); usec=()
  for line in "${direct[@]}"; do
    calls+=("$(grep "^$m " <<<"$line" | awk '{print $2}')"); usec+=("$(grep "^$m " <<<"$line" | awk '{print $3}')")
  done
  printf '  %s: %s calls/s, %s µs a call\n' "$m" "$(med "${calls[@]}")" "$(med "${usec[@]}")"
done
printf '\n| model | c | server | req/s | × KServe | p50 / p99 |\n|---|--:|---|--:|--:|--:|\n'
for m in mlp cnn; do
  for c in $CONCURRENCY; do
    k="kserve $m $c"
    for s in ferroserve ferroserve-1t kserve floor; do
      x="$s $m $c"
      label="$s"; [[ $s == ferroserve ]] && label="ferroserve ($THREADS threads)"; [[ $s == ferroserve-1t ]] && label="ferroserve (1 thread)"
      [[ $s == kserve ]] && label="KServe peer"; [[ $s == floor ]] && label="floor server (same body)"
      printf '| %s | %s | %s | %s | %.1f× | %s / %s µs |\n' "$m" "$c" "$label" "${RPS[$x]}" \
        "$(awk -v a="${RPS[$x]}" -v b="${RPS[$k]}" 'BEGIN{print a/b}')" "${P50[$x]}" "${P99[$x]}"
    done
  done
done
