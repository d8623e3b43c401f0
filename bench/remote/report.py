"""The report of bench/remote.sh: per concurrency, the median over rounds of throughput and
p50/p99 for the gRPC floor, the model pod served directly, and the same pod through an
ingress's remote deployment; the p50 the remote hop adds and the throughput ratio. A second
table gives each process's CPU per request (load generator, pod, ingress) and the throughput
ratio those costs allow on saturated cores: (client + pod) direct over (client + pod +
ingress) remote.

    python3 bench/remote/report.py WORK_DIR "1 16 64"
"""

import glob
import json
import os
import statistics
import sys


def runs(work: str, name: str, c: str) -> list:
    """Each round's result, with the servers' CPU ticks under "ticks" where recorded."""
    out = []
    for path in sorted(glob.glob(os.path.join(work, f"{name}-{c}-*.json"))):
        with open(path) as f:
            result = json.load(f)
        ticks = path[: -len(".json")] + ".ticks"
        if os.path.exists(ticks):
            with open(ticks) as f:
                result["ticks"] = json.load(f)
        out.append(result)
    return out


def cpu_ms(result: dict, process: str) -> float:
    """A server process's CPU milliseconds per request in one run."""
    t = result["ticks"]
    return t[process] * 1000 / t["hz"] / max(result["total_requests"], 1)


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

    print("\nCPU per request (ms, medians over rounds):\n")
    print("| c | direct: client | direct: pod | remote: client | remote: pod | remote: ingress | ratio the CPU allows |")
    print("|---|---|---|---|---|---|---|")
    for c in concurrencies:
        direct, remote = runs(work, "direct", c), runs(work, "remote", c)
        if not direct or not remote or not all("ticks" in x for x in direct + remote):
            continue
        client = lambda x: x["client_cpu"]["ms_per_request"]
        d_client, d_pod = median(direct, client), median(direct, lambda x: cpu_ms(x, "pod"))
        r_client, r_pod = median(remote, client), median(remote, lambda x: cpu_ms(x, "pod"))
        r_ingress = median(remote, lambda x: cpu_ms(x, "ingress"))
        bound = (d_client + d_pod) / (r_client + r_pod + r_ingress)
        print(
            f"| {c} | {d_client:.3f} | {d_pod:.3f} | {r_client:.3f} | {r_pod:.3f} | "
            f"{r_ingress:.3f} | {bound:.2f} |"
        )


if __name__ == "__main__":
    main()
