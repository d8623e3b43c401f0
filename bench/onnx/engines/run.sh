#!/usr/bin/env bash
# Builds and runs the engines bench: models+data, correctness checks, then REPS sequential rounds
# of (Rust: ort, tract, tract-fixed) and (Python onnxruntime), and the medians over rounds.
#   bench/onnx/engines/run.sh [OUT=/tmp/engines] [REPS=3] [SECS=3]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-/tmp/engines}"; reps="${2:-3}"; secs="${3:-3}"
py="$root/.venv/bin/python"
lib="$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$out/target}"
cargo build --release --manifest-path "$here/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/onnx-engines-bench"
"$py" "$here/prepare.py" "$out"
"$bin" --data "$out/data" --ort-lib "$lib" --engines ort,tract,tract-fixed --check-only | tee "$out/checks.tsv"
: >"$out/runs.tsv"
for r in $(seq "$reps"); do
    echo "== round $r ($(uptime))" >&2
    "$bin" --data "$out/data" --ort-lib "$lib" --engines ort,tract,tract-fixed --secs "$secs" | grep '^bench' | sed "s/^/$r\t/" | tee -a "$out/runs.tsv"
    "$py" "$here/py_ort.py" "$out/data" "$secs" | sed "s/^/$r\t/" | tee -a "$out/runs.tsv"
done
"$py" - "$out/runs.tsv" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, _, eng, model, th, b, us, n = line.split("\t")
    rows[(model, int(b), int(th), eng)].append(float(us))
engs = ["ort", "ort-python", "tract", "tract-fixed"]
print("model batch threads | " + " | ".join(f"{e} µs (runs)" for e in engs))
for (model, b, th) in sorted({k[:3] for k in rows}, key=lambda k: (k[0] != "mlp", k[1], k[2])):
    cells = []
    for e in engs:
        v = rows.get((model, b, th, e), [])
        cells.append(f"{statistics.median(v):.0f} ({'/'.join(f'{x:.0f}' for x in v)})" if v else "-")
    print(f"{model} {b} {th} | " + " | ".join(cells))
PY
