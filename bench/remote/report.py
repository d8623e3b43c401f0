"""The report of bench/remote.sh: per concurrency, the median over rounds of throughput and
p50/p99 for the gRPC floor, the model pod served directly, and the same pod through an
ingress's remote deployment; the p50 the remote hop adds and the throughput ratio.

    python3 bench/remote/report.py WORK_DIR "1 16 64"
"""

import glob
import json
import os
import statistics
import sys


def runs(work: str, name: str, c: str) -> list:
    out = []
    for path in sorted(glob.glob(os.path.join(work, f"{name}-{c}-*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def median(results: list, key) -> float:
    return statistics.median(key(r) for r in results)


def main() -> None:
    work, concurrencies = sys.argv[1], sys.argv[2].split()
    print("| c | floor req/s | direct req/s | remote req/s | remote / direct | floor p50 µs | direct p50 µs | remote p50 µs | added p50 µs (remote − direct) | remote p99 µs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in concurrencies:
        r = {n: runs(work, n, c) for n in ("floor", "direct", "remote")}
        if not all(r.values()):
            print(f"| {c} | (missing runs) |")
            continue
        rps = {n: median(v, lambda x: x["throughput_rps"]) for n, v in r.items()}
        p50 = {n: median(v, lambda x: x["latency_us"]["p50"]) for n, v in r.items()}
        p99 = median(r["remote"], lambda x: x["latency_us"]["p99"])
        errors = sum(x.get("errors", 0) for v in r.values() for x in v)
        print(
            f"| {c} | {rps['floor']:.0f} | {rps['direct']:.0f} | {rps['remote']:.0f} | "
            f"{rps['remote'] / rps['direct']:.2f} | {p50['floor']:.0f} | {p50['direct']:.0f} | "
            f"{p50['remote']:.0f} | {p50['remote'] - p50['direct']:.0f} | {p99:.0f} |"
            + (f" errors: {errors}" if errors else "")
        )
    print(f"\n({len(runs(work, 'remote', concurrencies[0]))} rounds; medians)")


if __name__ == "__main__":
    main()
