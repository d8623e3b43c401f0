#!/usr/bin/env bash
# Tensors at memory speed (issue 13): a Python echo and the Rust identity, over binary REST and
# gRPC, with FP32 tensors of 64 KiB, 1 MiB and 16 MiB at concurrency 1 and 4, in one run:
#   identity        ferroserve's built-in Rust identity
#   echo            a Python echo (bench/shm/models.py), tensors through the worker's arena
#   echo_inline     the same echo with `shared_memory: {arena_mib: 0}` (tensors in the socket frames)
#   identity+shm, echo+shm   the same with input and output in the client's registered regions
#                   (Triton's system shared-memory extension, --shm true)
#   triton          Triton's Python backend on the same echo (bench/shm/triton_echo.py), when
#                   $PYTRITON_PY (default .venv-pytriton/bin/python) has nvidia-pytriton
# plus the machine's memcpy rate. The load generator is bench/grpc (ferroserve-bench-grpc),
# pinned to CPU $LOAD_CPU. Prints medians of REPEATS runs; see bench/README.md ("Shared memory").
#
#   bench/shm/run.sh                      # WINDOW=1 s, up to 6 windows per cell, REPEATS=3
#   QUICK=1 bench/shm/run.sh              # REPEATS=1, 4 windows: checks the pipeline
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
QUICK="${QUICK:-0}"
REPEATS="${REPEATS:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}"
WINDOW="${WINDOW:-1}"; MAX_WINDOWS="${MAX_WINDOWS:-$([[ $QUICK == 1 ]] && echo 4 || echo 6)}"
SIZES="${SIZES:-16384 262144 4194304}"; CONCURRENCY="${CONCURRENCY:-1 4}"
PORT="${PORT:-18370}"; TPORT=$((PORT + 10)); LOAD_CPU="${LOAD_CPU:-1}"
PYTRITON_PY="${PYTRITON_PY:-$ROOT/.venv-pytriton/bin/python}"
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p ferroserve -p ferroserve-bench-grpc >&2
scripts/python-venv.sh >/dev/null
work="$(mktemp -d)"; server=""; triton=""
trap 'kill $server $triton 2>/dev/null; rm -rf "$work"' EXIT
py="$ROOT/.venv/bin/python"
cat >"$work/ferroserve.yaml" <<YAML
http_port: $PORT
grpc_port: $((PORT + 1))
host: 127.0.0.1
deployments:
  - name: identity
    model: identity
  - name: echo
    python: $HERE/models.py:Echo
    runtime_env: {py_executable: $py}
  - name: echo_inline
    python: $HERE/models.py:Echo
    runtime_env: {py_executable: $py}
    shared_memory: {arena_mib: 0}
YAML
# PYTHONPATH: the workers use this checkout's Python package (the installed wheel's may be older).
PYTHONPATH="$ROOT/python" target/release/ferroserve serve --config "$work/ferroserve.yaml" --allow-client-shm >"$work/server.log" 2>&1 &
server=$!
targets="identity echo echo_inline identity+shm echo+shm"
if "$PYTRITON_PY" -c 'import pytriton' 2>/dev/null; then
  "$PYTRITON_PY" "$HERE/triton_echo.py" --port "$TPORT" >"$work/triton.log" 2>&1 &
  triton=$!
  targets="$targets triton"
else
  echo "no nvidia-pytriton at $PYTRITON_PY: Triton's rows are left out" >&2
fi
for m in identity echo echo_inline; do
  for _ in $(seq 150); do curl -sf "localhost:$PORT/v2/models/$m/ready" >/dev/null && break; sleep 0.2; done
done
if [[ -n "$triton" ]]; then
  for _ in $(seq 150); do curl -sf "localhost:$TPORT/v2/models/echo/ready" >/dev/null && break; sleep 0.2; done
  curl -sf "localhost:$TPORT/v2/models/echo/ready" >/dev/null || { echo "Triton did not get ready:" >&2; tail -20 "$work/triton.log" >&2; exit 1; }
fi
out="bench/results/shm-$(date +%Y%m%dT%H%M%S).jsonl"
mkdir -p bench/results
taskset -c "$LOAD_CPU" target/release/ferroserve-bench-grpc memcpy >>"$out"
for rep in $(seq "$REPEATS"); do
  for size in $SIZES; do
    for c in $CONCURRENCY; do
      for mode in http-binary grpc; do
        for t in $targets; do
          model="${t%+shm}"; shm=false; [[ "$t" == *+shm ]] && shm=true
          if [[ "$t" == triton ]]; then model=echo; base=$TPORT; else base=$PORT; fi
          port=$base; [[ "$mode" == grpc ]] && port=$((base + 1))
          taskset -c "$LOAD_CPU" target/release/ferroserve-bench-grpc load --mode "$mode" \
            --url "http://127.0.0.1:$port" --model "$model" --elements "$size" --concurrency "$c" \
            --window "$WINDOW" --max-windows "$MAX_WINDOWS" --shm "$shm" --label "$t" \
            2>>"$work/load.log" >>"$out" || echo "!!! RUN FAILED: $t $mode $size c=$c" >&2
        done
      done
    done
  done
done
python3 "$HERE/report.py" "$out"
