#!/usr/bin/env bash
# Remote deployment benchmark: an ingress ferroserve whose deployment `clf` is remote (gRPC to a
# model pod), against the model pod served directly and against the bare gRPC floor server
# (ferroserve-bench-grpc floor), identity on [1,16] FP32, perf_analyzer's concurrency mode
# (bench/grpc), rounds interleaved, medians reported.
#
#   bench/remote.sh                 # CONCURRENCY="1 16 64", ROUNDS=3, WINDOW=2
#   QUICK=1 bench/remote.sh         # 1 s windows, 1 round: checks the pipeline
#
# LOAD_CPU (1) is the CPU the load generator is pinned to; CONNECTIONS (1) the ingress's HTTP/2
# connections to the pod. Ports 18300-18304. Servers share the machine's cores, so the report
# also gives each process's CPU per request (from /proc, around each run) and the throughput
# ratio those costs allow when the cores are saturated.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ "${QUICK:-0}" == 1 ]]; then WINDOW="${WINDOW:-1}"; ROUNDS="${ROUNDS:-1}"; fi
WINDOW="${WINDOW:-2}"
ROUNDS="${ROUNDS:-3}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
LOAD_CPU="${LOAD_CPU:-1}"
CONNECTIONS="${CONNECTIONS:-1}"

cargo build --release -q -p ferroserve -p ferroserve-bench-grpc
BENCH=target/release/ferroserve-bench-grpc
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-bench-remote.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat >"$WORK/pod.yaml" <<YAML
deployments:
  - {name: identity, model: identity, max_ongoing_requests: 1024}
YAML
cat >"$WORK/ingress.yaml" <<YAML
deployments:
  - name: clf
    remote: {endpoints: ["127.0.0.1:18302"], model: identity, connections: $CONNECTIONS}
    max_ongoing_requests: 1024
YAML
$BENCH floor --port 18300 2>"$WORK/floor.log" & PIDS+=($!)
FLOOR=$!
target/release/ferroserve serve --config "$WORK/pod.yaml" --http_port 18301 --grpc_port 18302 2>"$WORK/pod.log" & PIDS+=($!)
POD=$!
sleep 1
target/release/ferroserve serve --config "$WORK/ingress.yaml" --http_port 18303 --grpc_port 18304 2>"$WORK/ingress.log" & PIDS+=($!)
INGRESS=$!
# CPU time (clock ticks, user + system) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq 100); do
    curl -sf localhost:18303/v2/models/clf/ready >/dev/null && break
    sleep 0.1
done
curl -sf localhost:18303/v2/models/clf/ready >/dev/null || { cat "$WORK/ingress.log" >&2; exit 1; }

for round in $(seq "$ROUNDS"); do
    for c in $CONCURRENCY; do
        for target in floor:18300:identity direct:18302:identity remote:18304:clf; do
            IFS=: read -r name port model <<<"$target"
            echo "round $round, c=$c, $name" >&2
            before=("$(ticks $FLOOR)" "$(ticks $POD)" "$(ticks $INGRESS)")
            taskset -c "$LOAD_CPU" $BENCH load --mode grpc --url "http://127.0.0.1:$port" --model "$model" \
                --elements 16 --concurrency "$c" --window "$WINDOW" --max-windows 6 \
                >"$WORK/$name-$c-$round.json" 2>>"$WORK/load.log"
            echo "{\"floor\": $(($(ticks $FLOOR) - before[0])), \"pod\": $(($(ticks $POD) - before[1])), \"ingress\": $(($(ticks $INGRESS) - before[2])), \"hz\": $(getconf CLK_TCK)}" \
                >"$WORK/$name-$c-$round.ticks"
        done
    done
done
python3 bench/remote/report.py "$WORK" "$CONCURRENCY"
