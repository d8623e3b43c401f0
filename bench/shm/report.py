"""Prints the table of a bench/shm/run.sh run (its JSON lines): per tensor size, concurrency and
protocol, each target's payload MB/s and p50 (medians over repeats), then the ratios the issue
sets targets on, and the memcpy rate. Standard library only.

    python3 bench/shm/report.py bench/results/shm-<timestamp>.jsonl
"""

import collections
import json
import statistics
import sys

TARGETS = ["identity", "echo", "echo_inline", "identity+shm", "echo+shm", "triton"]


def main(path):
    runs = collections.defaultdict(list)
    memcpy = None
    failed = 0
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if "gb_s" in r:
            memcpy = r["gb_s"]
            continue
        if r.get("errors"):
            failed += 1
            continue
        key = (r["tensor_bytes"], r["concurrency"], r["mode"], r["label"])
        runs[key].append(r)
    cells = sorted({k[:3] for k in runs}, key=lambda k: (k[0], k[1], k[2]))
    labels = [t for t in TARGETS if any(k[3] == t for k in runs)]
    med = {}
    for key, rs in runs.items():
        med[key] = (
            statistics.median(r["payload_mb_s"] for r in rs),
            statistics.median(r["latency_us"]["p50"] for r in rs),
            len(rs),
        )
    print(f"payload MB/s (p50 ms), medians of repeats; memcpy on the load generator's CPU: "
          f"{memcpy:.1f} GB/s\n" if memcpy else "payload MB/s (p50 ms), medians of repeats\n")
    print("| size | c | protocol | " + " | ".join(labels) + " | echo/identity | echo+shm/echo | echo/triton |")
    print("|---|---|---|" + "---|" * len(labels) + "---|---|---|")
    for size, c, mode in cells:
        row = []
        for t in labels:
            m = med.get((size, c, mode, t))
            row.append("—" if m is None else f"{m[0]:.0f} ({m[1] / 1000:.2f})")

        def ratio(a, b):
            x, y = med.get((size, c, mode, a)), med.get((size, c, mode, b))
            return f"{x[0] / y[0]:.2f}×" if x and y else "—"

        human = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        print(f"| {human} | {c} | {mode} | " + " | ".join(row)
              + f" | {ratio('echo', 'identity')} | {ratio('echo+shm', 'echo')} | {ratio('echo', 'triton')} |")
    if failed:
        print(f"\n!!! {failed} runs had errors and are left out")
    print("\nTargets: echo/identity ≥ 0.8 at 16 MiB; echo+shm/echo ≥ 2 (shared-memory extension "
          "over the binary REST rate); echo/triton ≥ 1 at every size.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
