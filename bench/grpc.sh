#!/usr/bin/env bash
# gRPC benchmark: ferroserve's gRPC and HTTP ingresses under perf_analyzer's method, and KServe
# 0.21's gRPC on the same workloads, in one run (bench/grpc, binary ferroserve-bench-grpc).
#
#   bench/grpc.sh                  # 2 s windows, up to 10 per row until the last 3 agree within 10 %
#   QUICK=1 bench/grpc.sh          # 1 s windows, up to 4: checks the pipeline, numbers are rough
#   WINDOW=5 bench/grpc.sh
#
# Other knobs: MAX_WINDOWS (10; 4 with QUICK=1), STABILITY percent (10), CONCURRENCY ("1 16"),
# LOAD_CPU (1, the CPU the load generator is pinned to), KSERVE (auto; 0 skips KServe), the
# ports FERROSERVE_HTTP_PORT (18080), FERROSERVE_GRPC_PORT (18081), KSERVE_HTTP_PORT (28080),
# KSERVE_GRPC_PORT (28081). See bench/README.md for the method. Exits non-zero if any run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${QUICK:-0}" == "1" ]]; then
    WINDOW="${WINDOW:-1}"
    MAX_WINDOWS="${MAX_WINDOWS:-4}"
fi
WINDOW="${WINDOW:-2}"
MAX_WINDOWS="${MAX_WINDOWS:-10}"
STABILITY="${STABILITY:-10}"
CONCURRENCY="${CONCURRENCY:-1 16}"
LOAD_CPU="${LOAD_CPU:-1}"
KSERVE="${KSERVE:-auto}"
FERROSERVE_HTTP_PORT="${FERROSERVE_HTTP_PORT:-18080}"
FERROSERVE_GRPC_PORT="${FERROSERVE_GRPC_PORT:-18081}"
KSERVE_HTTP_PORT="${KSERVE_HTTP_PORT:-28080}"
KSERVE_GRPC_PORT="${KSERVE_GRPC_PORT:-28081}"
SMALL=16          # [1,16] FP32: 64 bytes, serving overhead
LARGE=4194304     # [1,4194304] FP32: 16 MiB, data movement
MODEL=identity    # ferroserve's built-in identity; bench/grpc/kserve_echo.py registers the same name

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"
command -v taskset >/dev/null || die "taskset is required (util-linux)"
if (( $(nproc) <= LOAD_CPU )); then
    die "the load generator is pinned to CPU $LOAD_CPU but this machine has $(nproc) CPU(s); set LOAD_CPU"
fi
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$FERROSERVE_HTTP_PORT" "$FERROSERVE_GRPC_PORT"; do
    port_busy "$port" && die "port $port is already in use (a server left over from an earlier run?)"
done

WITH_KSERVE=0
if [[ "$KSERVE" != 0 ]]; then
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import kserve' 2>/dev/null; then
        WITH_KSERVE=1
        for port in "$KSERVE_HTTP_PORT" "$KSERVE_GRPC_PORT"; do
            port_busy "$port" && die "port $port is already in use (a server left over from an earlier run?)"
        done
    else
        warn "no kserve in .venv (.venv/bin/python -c 'import kserve' failed): KServe rows skipped"
    fi
fi

log "building (release)"
cargo build --release -p ferroserve -p ferroserve-bench-grpc
BENCH=target/release/ferroserve-bench-grpc

# --- servers -------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-bench-grpc.XXXXXX")"
OUT="$WORK/out"
mkdir -p "$OUT"
PIDS=()
stop_pid() { # pid: SIGTERM, then SIGKILL after 15 s
    local pid="$1"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    warn "process $pid did not stop on SIGTERM within 15 s; SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # name pid http-base grpc-port timeout-s log
    local i
    for i in $(seq $(( $5 * 10 ))); do
        if curl -fsS -o /dev/null "$3/v2/models/$MODEL/ready" 2>/dev/null && port_busy "$4"; then
            log "$1 ready after $(( i / 10 )).$(( i % 10 )) s"
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { cat "$6" >&2; die "$1 exited at start"; }
        sleep 0.1
    done
    cat "$6" >&2
    die "$1 not ready after $5 s"
}

# --- runs ----------------------------------------------------------------------------------------
FAILED=0
printf 'server\tmode\telements\tconcurrency\trc\tjson\tstderr\n' >"$OUT/runs.tsv"

run() { # server pid base-url mode elements concurrency
    local name="$1__$4__$5__c$6" rc=0
    taskset -c "$LOAD_CPU" "$BENCH" load --mode "$4" --url "$3" --model "$MODEL" \
        --elements "$5" --concurrency "$6" --window "$WINDOW" --max-windows "$MAX_WINDOWS" \
        --stability "$STABILITY" --threads 1 --label "$1" --server-pid "$2" \
        >"$OUT/$name.json" 2> >(tee "$OUT/$name.err" >&2) || rc=$?
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$4" "$5" "$6" "$rc" "$name.json" "$name.err" \
        >>"$OUT/runs.tsv"
    if (( rc != 0 )); then
        FAILED=1
        printf '\033[1;31m  !!! RUN FAILED: %s %s [1,%s] c=%s (exit status %s)\033[0m\n' \
            "$1" "$4" "$5" "$6" "$rc" >&2
    fi
    kill -0 "$2" 2>/dev/null || { FAILED=1; warn "$1 died during the runs"; }
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "memcpy (1 thread, CPU $LOAD_CPU)"
taskset -c "$LOAD_CPU" "$BENCH" memcpy >"$OUT/memcpy.json"

target/release/ferroserve serve --http-port "$FERROSERVE_HTTP_PORT" --grpc-port "$FERROSERVE_GRPC_PORT" \
    2>"$WORK/ferroserve.log" &
FS_PID=$!
PIDS+=("$FS_PID")
wait_ready ferroserve "$FS_PID" "http://127.0.0.1:$FERROSERVE_HTTP_PORT" "$FERROSERVE_GRPC_PORT" 30 "$WORK/ferroserve.log"

FS_GRPC="http://127.0.0.1:$FERROSERVE_GRPC_PORT"
FS_HTTP="http://127.0.0.1:$FERROSERVE_HTTP_PORT"
log "WINDOW=${WINDOW}s MAX_WINDOWS=$MAX_WINDOWS STABILITY=$STABILITY% CONCURRENCY='$CONCURRENCY', load generator on CPU $LOAD_CPU"
for n in "$SMALL" "$LARGE"; do
    modes="grpc http-binary"
    [[ "$n" == "$SMALL" ]] && modes="grpc http-binary http-json"
    for mode in $modes; do
        url="$FS_HTTP"
        [[ "$mode" == grpc ]] && url="$FS_GRPC"
        for c in $CONCURRENCY; do
            run ferroserve "$FS_PID" "$url" "$mode" "$n" "$c"
        done
    done
done
if grep -qE 'WARN|ERROR' "$WORK/ferroserve.log"; then
    warn "ferroserve logged warnings or errors (first 20 lines):"
    grep -E 'WARN|ERROR' "$WORK/ferroserve.log" | head -20 >&2
fi

if (( WITH_KSERVE )); then
    log "starting KServe (bench/grpc/kserve_echo.py)"
    .venv/bin/python bench/grpc/kserve_echo.py --model_name "$MODEL" \
        --http_port "$KSERVE_HTTP_PORT" --grpc_port "$KSERVE_GRPC_PORT" \
        --grpc_max_send_message_length $(( 64 << 20 )) \
        --grpc_max_receive_message_length $(( 64 << 20 )) \
        >"$WORK/kserve.log" 2>&1 &
    KS_PID=$!
    PIDS+=("$KS_PID")
    wait_ready KServe "$KS_PID" "http://127.0.0.1:$KSERVE_HTTP_PORT" "$KSERVE_GRPC_PORT" 60 "$WORK/kserve.log"
    for n in "$SMALL" "$LARGE"; do
        for c in $CONCURRENCY; do
            run kserve "$KS_PID" "http://127.0.0.1:$KSERVE_GRPC_PORT" grpc "$n" "$c"
        done
    done
    stop_pid "$KS_PID"
fi

# --- report --------------------------------------------------------------------------------------
mkdir -p bench/results
RESULT="bench/results/grpc-$(date +%Y%m%d-%H%M%S).json"
python3 bench/grpc/report.py "$OUT" --result "$RESULT" --window "$WINDOW" \
    --max-windows "$MAX_WINDOWS" --stability "$STABILITY" --load-cpu "$LOAD_CPU" \
    --load-start "$LOAD_START" --load-end "$(cut -d' ' -f1-3 /proc/loadavg)" || FAILED=1
log "raw numbers: $RESULT"
if (( FAILED )); then
    die "some runs failed (see '!!!' lines above)"
fi
