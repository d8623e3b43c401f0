#!/usr/bin/env python3
"""Markdown report of a bench/compose/run.sh result (stdlib only).

Usage: report.py bench/results/compose-<timestamp>.json

Prints the table (req/s · p50/p99 per endpoint × concurrency, medians over repeats of the runs
that succeeded), the per-hop costs (a pipeline's median p50 minus its single-model baseline's,
with the range of the same difference taken repeat by repeat) and the lines checking issue 8's
targets.
"""

import json
import re
import statistics
import sys

RUST_HOP_US = 50
PY_HOP_US = 150
RAY_RATIO = 10

# (pipeline, baseline, what the difference is, target µs or None)
HOPS = [
    ("fs-graph2", "fs-identity", "Rust → Rust: graph [identity, identity] − identity alone "
     "(two inner calls and the graph node)", RUST_HOP_US),
    ("fs-graph2", "fs-graph1", "Rust → Rust: graph of 2 steps − graph of 1 step (one inner call)", RUST_HOP_US),
    ("fs-py-py", "fs-py-echo", "Python → Rust → Python: Python ingress → echo − echo alone", PY_HOP_US),
    ("fs-py-rust", "fs-py-echo", "Python → Rust: Python ingress → identity − Python echo alone", None),
    ("fs-py-rust", "fs-identity", "Python ingress → identity − identity alone (the whole Python stage)", None),
    ("ray-compose", "ray-echo", "Ray Serve: ingress → echo − echo alone", None),
]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def us(v):
    if v is None:
        return "n/a"
    if abs(v) >= 10000:
        return f"{v / 1e3:,.1f} ms"
    if abs(v) >= 1000:
        return f"{v / 1e3:.2f} ms"
    return f"{v:.0f} µs"


def max_latency_us(raw):
    m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", raw or "", re.M)
    if not m:
        return None
    try:
        from_text = re.match(r"^([\d.]+)(us|ms|s|m)$", m.group(1))
        return float(from_text.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[from_text.group(2)]
    except (AttributeError, KeyError):
        return None


class Result:
    def __init__(self, data):
        self.data = data
        self.conc = data["settings"]["concurrency"]
        self.order = [e for _, eps in data["settings"]["plan"] for e in eps]

    def runs(self, ep, c, ok=True):
        return [r for r in self.data["runs"] if r["endpoint"] == ep and r["concurrency"] == c
                and (r["ok"] or not ok)]

    def cell(self, ep, c):
        rs = self.runs(ep, c)
        return {
            "rps": med(r["rps"] for r in rs), "p50": med(r["p50_us"] for r in rs),
            "p99": med(r["p99_us"] for r in rs), "max": max((max_latency_us(r["raw"]) or 0 for r in rs), default=None),
            "cpu_us": med(r["server_cpu_s"] / r["requests"] * 1e6 for r in rs if r.get("requests")),
            "other": max((r["other_cpu_pct"] for r in rs), default=None),
            "steal": max((r.get("steal_pct") or 0 for r in rs), default=None),
            "n": len(self.runs(ep, c, ok=False)), "ok": len(rs),
        }

    def paired(self, a, b, c, key="p50_us"):
        """Per-repeat differences a − b."""
        by_rep = lambda ep: {r["repeat"]: r[key] for r in self.runs(ep, c)}
        ra, rb = by_rep(a), by_rep(b)
        return [ra[k] - rb[k] for k in sorted(ra) if k in rb]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    res = Result(data)
    s = data["settings"]
    v = data["versions"]
    print(f"# Composition benchmark {data['timestamp']}\n")
    print(f"commit `{data['commit']}` · {data['machine']['nproc']} CPUs, {data['machine']['cpu']} · "
          f"kernel {data['machine']['kernel']} · load before {data['machine']['loadavg']}")
    print(f"{v.get('ferroserve')} · kserve {v.get('kserve')} · Python {v.get('python')}"
          + (f" · ray {v['ray']}" if v.get("ray") else " · **no Ray** (RAY=1 not set or its venv failed)")
          + f" · {v.get('wrk')}")
    print(f"\n{s['duration']} s per run, {s['repeats']} repeat(s), {s['warmup']} s warm-up per endpoint, wrk "
          f"pinned to CPU {s['wrk_cpu']} (`-t1`), V2 JSON [1,16] FP32. Cells: req/s · p50/p99; medians over "
          f"the repeats that succeeded. Ray deployments: max_ongoing_requests={s.get('ray_max_ongoing_requests')}; "
          f"everything else at each server's defaults.\n")

    head = ["endpoint", "what"] + [f"c={c}" for c in res.conc] + [f"server CPU µs/req c={max(res.conc)}",
                                                                   "worst max latency", "other CPU %", "steal %"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(res.conc) + "--:|--:|--:|--:|")
    for ep in res.order:
        cells, worst, other, steal = [], 0, 0, 0
        for c in res.conc:
            cell = res.cell(ep, c)
            if cell["n"] == 0:
                cells.append("–")
            elif cell["ok"] == 0:
                cells.append("FAILED")
            else:
                flag = "" if cell["ok"] == cell["n"] else f" ({cell['n'] - cell['ok']} failed)"
                cells.append(f"{cell['rps']:,.0f} · {us(cell['p50'])}/{us(cell['p99'])}{flag}")
                worst = max(worst, cell["max"] or 0)
                other = max(other, cell["other"] or 0)
                steal = max(steal, cell["steal"] or 0)
        top = res.cell(ep, max(res.conc))
        print("| " + " | ".join([ep, data["endpoints"][ep]["what"], *cells,
                                 f"{top['cpu_us']:.0f}" if top["cpu_us"] is not None else "n/a",
                                 us(worst) if worst else "n/a", f"{other:.0f}", f"{steal:.0f}"]) + " |")
    failed_servers = [x for x in data["servers"] if not x["ok"]]
    for x in failed_servers:
        print(f"\n**{x['server']} FAILED**: {x['error'] or 'some runs failed'}")

    print("\nother CPU % and steal %: the worst run's CPU used by other processes and taken by the hypervisor "
          "(% of one core); a run with much of either is disturbed.")
    print("\n## Per-hop cost (pipeline p50 − single model p50)\n")
    print("| difference | " + " | ".join(f"c={c}" for c in res.conc) + " | target |")
    print("|---|" + "--:|" * len(res.conc) + "---|")
    for a, b, what, target in HOPS:
        if a not in res.order or b not in res.order:
            continue
        cells = []
        for c in res.conc:
            ca, cb = res.cell(a, c), res.cell(b, c)
            if ca["p50"] is None or cb["p50"] is None:
                cells.append("n/a")
                continue
            pairs = res.paired(a, b, c)
            rng = f" ({us(min(pairs))}…{us(max(pairs))})" if len(pairs) > 1 else ""
            cells.append(f"{us(ca['p50'] - cb['p50'])}{rng}")
        print(f"| {what} (`{a}` − `{b}`) | " + " | ".join(cells) + f" | {'< ' + str(target) + ' µs' if target else ''} |")
    print("\nIn parentheses: the range of the same difference repeat by repeat (each repeat measures the "
          "endpoints of one server back to back).")

    print("\n## Targets\n")
    c1 = min(res.conc)
    for a, b, what, target in HOPS:
        if target is None or a not in res.order or b not in res.order:
            continue
        pa, pb = res.cell(a, c1)["p50"], res.cell(b, c1)["p50"]
        if pa is None or pb is None:
            print(f"- n/a  {what}: no result")
            continue
        d = pa - pb
        print(f"- {'PASS' if d < target else 'FAIL'} {what} at c={c1}: {d:.0f} µs "
              f"({us(pa)} − {us(pb)}); target < {target} µs")
    ray = [c for c in res.conc if res.cell("ray-compose", c)["rps"]]
    if not ray:
        print(f"- n/a  pipeline throughput ≥ {RAY_RATIO}× Ray Serve's: no Ray result")
    for c in ray:
        r = res.cell("ray-compose", c)["rps"]
        for ep in ("fs-py-py", "fs-py-rust"):
            f = res.cell(ep, c)["rps"]
            if f:
                print(f"- {'PASS' if f >= RAY_RATIO * r else 'FAIL'} `{ep}` at c={c}: {f:,.0f} req/s = "
                      f"{f / r:.1f}× Ray Serve's composition ({r:,.0f}); target ≥ {RAY_RATIO}×")
    k = [c for c in res.conc if res.cell("kserve-compose", c)["rps"] and res.cell("fs-py-py", c)["rps"]]
    for c in k:
        f, kk = res.cell("fs-py-py", c), res.cell("kserve-compose", c)
        print(f"- info `fs-py-py` against KServe's in-process pipeline at c={c}: {f['rps'] / kk['rps']:.2f}× the "
              f"throughput, p50 {us(f['p50'])} vs {us(kk['p50'])}, p99 {us(f['p99'])} vs {us(kk['p99'])}")

    warned = [(r["endpoint"], r["concurrency"], r["repeat"], r["log_warnings"]) for r in data["runs"]
              if r.get("log_warnings")]
    bad = [r for r in data["runs"] if not r["ok"] or r.get("socket_errors")]
    print("\n## Errors\n")
    if not warned and not bad and not failed_servers:
        print("No failed run, no non-2xx answer, no socket error, no WARN/ERROR line in ferroserve's log.")
    for r in bad:
        print(f"- `{r['endpoint']}` c={r['concurrency']} r{r['repeat']}: {'; '.join(r['problems']) or 'ok'}"
              + (f"; socket errors {r['socket_errors']}" if r.get("socket_errors") else ""))
    for ep, c, rep, lines in warned:
        print(f"- `{ep}` c={c} r{rep}: ferroserve logged {len(lines)} WARN/ERROR line(s), first: `{lines[0][:300]}`")


if __name__ == "__main__":
    main()
