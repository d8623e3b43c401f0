#!/usr/bin/env bash
# HTTP benchmark: ferroserve against a floor server (bench/floor), side by side, in one run.
#
#   bench/http.sh                      # DURATION=10 s per run, REPEATS=3
#   QUICK=1 bench/http.sh              # DURATION=2, REPEATS=1: checks the pipeline only
#   DURATION=30 REPEATS=5 bench/http.sh
#
# Other knobs: CONCURRENCY (default "1 64"), WARMUP seconds per server and workload (default 2;
# 0 to skip), FERROSERVE_PORT (18080), FLOOR_PORT (18090), WRK_CPU (1, the load generators' CPU),
# CLIENTS ("wrk oha": the load generators; oha, a Rust load generator on hyper, is installed
# with `cargo install oha` into target/oha on first use, which takes a few minutes).
# See bench/README.md for the method. Exits non-zero if any run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${QUICK:-0}" == "1" ]]; then
    DURATION="${DURATION:-2}"
    REPEATS="${REPEATS:-1}"
    WARMUP="${WARMUP:-1}"
fi
DURATION="${DURATION:-10}"
REPEATS="${REPEATS:-3}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1 64}"
FERROSERVE_PORT="${FERROSERVE_PORT:-18080}"
FLOOR_PORT="${FLOOR_PORT:-18090}"
WRK_CPU="${WRK_CPU:-1}"
CLIENTS="${CLIENTS:-wrk oha}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"
command -v taskset >/dev/null || die "taskset is required (util-linux)"
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
OHA="$(command -v oha || echo "$ROOT/target/oha/bin/oha")"
if [[ " $CLIENTS " == *" oha "* && ! -x "$OHA" ]]; then
    log "installing oha (cargo install oha --locked --root target/oha)"
    cargo install oha --locked --root "$ROOT/target/oha" >&2 || die "could not install oha"
fi
for port in "$FERROSERVE_PORT" "$FLOOR_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (a server left over from an earlier run?)"
    fi
done

log "building (release)"
cargo build --release -p ferroserve -p ferroserve-bench-floor

# --- servers -------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-bench.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

target/release/ferroserve serve --http-port "$FERROSERVE_PORT" 2>"$WORK/ferroserve.log" &
PIDS+=($!)
target/release/ferroserve-bench-floor --port "$FLOOR_PORT" 2>"$WORK/floor.log" &
PIDS+=($!)

FERROSERVE="http://127.0.0.1:$FERROSERVE_PORT"
FLOOR="http://127.0.0.1:$FLOOR_PORT"

log "waiting for the servers"
for _ in $(seq 100); do
    if curl -fsS -o /dev/null "$FERROSERVE/v2/health/ready" 2>/dev/null \
        && (exec 3<>"/dev/tcp/127.0.0.1/$FLOOR_PORT") 2>/dev/null; then
        ready=1
        break
    fi
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK"/*.log >&2; die "a server exited at start"; }
    done
    sleep 0.1
done
[[ "${ready:-0}" == 1 ]] || { cat "$WORK"/*.log >&2; die "servers not ready after 10 s"; }

# --- request bodies and the wrk script -----------------------------------------------------------
python3 - "$WORK" <<'EOF'
import json, random, struct, sys
work = sys.argv[1]
random.seed(0)
# (a) V2 JSON, [1,16] FP32.
body = {"id": "bench", "inputs": [{"name": "input-0", "shape": [1, 16], "datatype": "FP32",
        "data": [round(random.uniform(-1, 1), 6) for _ in range(16)]}]}
with open(f"{work}/json16.body", "wb") as f:
    f.write(json.dumps(body, separators=(",", ":")).encode())
# (b) binary tensor extension, [1,1048576] FP32 = 4 MiB, answered as binary too.
n = 1 << 20
header = json.dumps({"inputs": [{"name": "input-0", "shape": [1, n], "datatype": "FP32",
                     "parameters": {"binary_data_size": 4 * n}}],
                     "parameters": {"binary_data_output": True}}, separators=(",", ":")).encode()
with open(f"{work}/bin4m.body", "wb") as f:
    f.write(header)
    f.write(struct.pack(f"<{n}f", *(float(i % 1000) for i in range(n))))
with open(f"{work}/bin4m.hlen", "w") as f:
    f.write(str(len(header)))
EOF
BIN_HLEN="$(cat "$WORK/bin4m.hlen")"

# One script for every run: the body file and headers come from the environment.
cat >"$WORK/post.lua" <<'EOF'
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local hlen = os.getenv("BENCH_HLEN")
if hlen and hlen ~= "" then
    wrk.headers["Inference-Header-Content-Length"] = hlen
end
EOF

# Workloads: name|body|content type|Inference-Header-Content-Length|ferroserve path|floor path
WORKLOADS=(
    "json-1x16|$WORK/json16.body|application/json||/v2/models/identity/infer|/v2/models/identity/infer"
    "binary-4MiB|$WORK/bin4m.body|application/octet-stream|$BIN_HLEN|/v2/models/identity/infer|/echo"
)

# --- sanity: one request each, must be 200 -------------------------------------------------------
check() { # url body ctype hlen
    local extra=() code
    [[ -n "$4" ]] && extra=(-H "Inference-Header-Content-Length: $4")
    code="$(curl -sS -o "$WORK/check.out" -w '%{http_code}' -X POST -H "Content-Type: $3" \
        "${extra[@]}" --data-binary "@$2" "$1")"
    if [[ "$code" != 200 ]]; then
        head -c 2000 "$WORK/check.out" >&2; echo >&2
        die "POST $1 answered $code"
    fi
}
for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name body ctype hlen fpath lpath <<<"$w"
    check "$FERROSERVE$fpath" "$body" "$ctype" "$hlen"
    check "$FLOOR$lpath" "$body" "$ctype" "$hlen"
done

# --- runs ----------------------------------------------------------------------------------------
OUT="$WORK/out"
mkdir -p "$OUT"
FAILED=0

run_wrk() { # outfile duration conc url body ctype hlen
    BENCH_BODY="$5" BENCH_CONTENT_TYPE="$6" BENCH_HLEN="$7" \
        taskset -c "$WRK_CPU" wrk -t1 -c"$3" -d"$2"s --latency -s "$WORK/post.lua" "$4" >"$1" 2>&1 \
        || { echo "wrk exited with status $?" >>"$1"; return 1; }
}

run_oha() { # outfile duration conc url body ctype hlen
    local headers=(-H "Content-Type: $6")
    [[ -n "$7" ]] && headers+=(-H "Inference-Header-Content-Length: $7")
    taskset -c "$WRK_CPU" "$OHA" -z "$2"s -c "$3" --no-tui -m POST "${headers[@]}" -D "$5" \
        --output-format json "$4" >"$1" 2>/dev/null \
        || { echo "oha exited with status $?" >>"$1.err"; return 1; }
}

log "DURATION=${DURATION}s REPEATS=$REPEATS CONCURRENCY='$CONCURRENCY' WARMUP=${WARMUP}s, $CLIENTS on CPU $WRK_CPU"
for w in "${WORKLOADS[@]}"; do
    IFS='|' read -r name body ctype hlen fpath lpath <<<"$w"
    if (( WARMUP > 0 )); then
        log "$name: warm-up"
        run_wrk "$WORK/warmup" "$WARMUP" 64 "$FERROSERVE$fpath" "$body" "$ctype" "$hlen" || true
        run_wrk "$WORK/warmup" "$WARMUP" 64 "$FLOOR$lpath" "$body" "$ctype" "$hlen" || true
    fi
    for c in $CONCURRENCY; do
        for r in $(seq "$REPEATS"); do
            # Alternate, and flip the order every repeat (ABBA) so neither server always goes first.
            if (( r % 2 == 1 )); then order="ferroserve floor"; else order="floor ferroserve"; fi
            for server in $order; do
                if [[ "$server" == ferroserve ]]; then url="$FERROSERVE$fpath"; else url="$FLOOR$lpath"; fi
                if [[ " $CLIENTS " == *" oha "* ]]; then
                    file="$OUT/${name}+oha__c${c}__${server}__r${r}.json"
                    run_oha "$file" "$DURATION" "$c" "$url" "$body" "$ctype" "$hlen" || true
                    rps="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"]))' "$file" 2>/dev/null || true)"
                    printf '  %-16s c=%-3s %-10s r%s  %10s req/s\n' "$name+oha" "$c" "$server" "$r" "${rps:-?}" >&2
                    if [[ -z "$rps" ]]; then
                        FAILED=1
                        printf '\033[1;31m  !!! RUN FAILED: %s+oha c=%s %s r%s\033[0m\n' "$name" "$c" "$server" "$r" >&2
                    fi
                fi
                [[ " $CLIENTS " == *" wrk "* ]] || continue
                file="$OUT/${name}__c${c}__${server}__r${r}.txt"
                run_wrk "$file" "$DURATION" "$c" "$url" "$body" "$ctype" "$hlen" || true
                rps="$(awk '/^Requests\/sec:/ {print $2}' "$file")"
                bad="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$file")"
                sock="$(grep -E '^ *Socket errors' "$file" || true)"
                printf '  %-16s c=%-3s %-10s r%s  %10s req/s\n' "$name" "$c" "$server" "$r" "${rps:-?}" >&2
                if [[ -n "$bad" || -z "$rps" ]] || grep -q '^wrk exited' "$file"; then
                    FAILED=1
                    printf '\033[1;31m  !!! RUN FAILED: %s c=%s %s r%s: %s non-2xx responses\033[0m\n' \
                        "$name" "$c" "$server" "$r" "${bad:-?}" >&2
                    sed 's/^/  !!! /' "$file" >&2
                fi
                if [[ -n "$sock" ]]; then
                    printf '\033[1;33m  !!! %s c=%s %s r%s:%s\033[0m\n' "$name" "$c" "$server" "$r" "$sock" >&2
                fi
            done
        done
    done
done

# --- report --------------------------------------------------------------------------------------
for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || { FAILED=1; log "a server died during the runs"; }
done
if grep -qE 'WARN|ERROR' "$WORK/ferroserve.log"; then
    log "ferroserve logged warnings or errors (first 20 lines):"
    grep -E 'WARN|ERROR' "$WORK/ferroserve.log" | head -20 >&2
fi
python3 bench/report.py --duration "$DURATION" --repeats "$REPEATS" "$OUT"
if (( FAILED )); then
    die "some runs failed (see '!!!' lines above); their numbers are left out of the table"
fi
