#!/usr/bin/env python3
"""Markdown report of a bench/python/run.sh result (stdlib only).

Usage: report.py bench/results/python-<timestamp>.json

Prints the table (req/s · p50/p99 ms per target × model × concurrency, server CPU per request,
start-up, memory) and the lines checking the project's targets. Medians over repeats, over the
runs that succeeded; a cell whose runs all failed reads FAILED.
"""

import json
import statistics
import sys

MIB = 1024.0
ECHO_TARGET_RPS = 14000
CPU_SCALING = 1.5
SLEEP_FRACTION = 0.9
SLEEP_S = 0.020
OWN_RSS_MIB = 20
WORKER_RSS_MIB = 40
READY4_S = 1.0


def med(runs, key):
    values = [r[key] for r in runs if r["ok"] and r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=0, unit=""):
    return "n/a" if x is None else f"{x:,.{digits}f}{unit}"


def ms(us):
    if us is None:
        return "n/a"
    v = us / 1e3
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def mib(kib, digits=0):
    return "n/a" if kib is None else f"{kib / MIB:.{digits}f}"


def verdict(ok):
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


class Result:
    def __init__(self, data):
        self.data = data
        self.conc = data["settings"]["concurrency"]
        self.by_key = {(s["target"], s["model"]): s for s in data["servers"]}

    def cell(self, target, model, c):
        """(rps, p50 µs, p99 µs, server CPU ms/req, runs, ok runs) at concurrency c."""
        s = self.by_key.get((target, model))
        if not s:
            return None
        rs = [r for r in s["runs"] if r["concurrency"] == c]
        ok = [r for r in rs if r["ok"]]
        cpu = [r["server_cpu_s"] / r["requests"] * 1e3 for r in ok if r.get("requests")]
        return {
            "rps": med(rs, "rps"), "p50": med(rs, "p50_us"), "p99": med(rs, "p99_us"),
            "cpu_ms": statistics.median(cpu) if cpu else None,
            "root_cpu_ms": statistics.median(r["root_cpu_s"] / r["requests"] * 1e3 for r in ok) if ok else None,
            "worker_cpu_ms": statistics.median(r["worker_cpu_s"] / r["requests"] * 1e3 for r in ok) if ok else None,
            "runs": len(rs), "ok": len(ok),
        }

    def rps(self, target, model, c):
        cell = self.cell(target, model, c)
        return cell["rps"] if cell else None


def table(res):
    conc = res.conc
    cmax = max(conc)
    head = ["target", "model"] + [f"c={c}" for c in conc] + [
        f"CPU ms/req c={cmax}", "startup s", "peak RSS MiB (tree)", "ferroserve MiB", "worker MiB",
        "procs", "other CPU %"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---|" * len(conc) + "--:|" * 7]
    for s in res.data["servers"]:
        cells = []
        for c in conc:
            cell = res.cell(s["target"], s["model"], c)
            if not cell or cell["runs"] == 0:
                cells.append("FAILED" if not s["ok"] else "–")
            elif cell["ok"] == 0:
                cells.append("FAILED")
            else:
                flag = "" if cell["ok"] == cell["runs"] else f" ({cell['runs'] - cell['ok']} failed)"
                cells.append(f"{fmt(cell['rps'])} · {ms(cell['p50'])}/{ms(cell['p99'])}{flag}")
        top = res.cell(s["target"], s["model"], cmax)
        cpu = "n/a"
        if top and top["cpu_ms"] is not None:
            cpu = f"{top['cpu_ms']:.2f}"
            if s["kind"] == "ferroserve":
                cpu += f" ({top['root_cpu_ms']:.2f} + {top['worker_cpu_ms']:.2f})"
        m = s.get("memory") or {}
        fs = s["kind"] == "ferroserve"
        other = [r["other_cpu_pct"] for r in s["runs"]]
        lines.append("| " + " | ".join([
            s["target"], s["model"], *cells, cpu,
            fmt(s["startup_s"], 2),
            mib(m.get("peak_tree_rss_kib")),
            f"{mib(m.get('peak_root_rss_kib'), 1)} (HWM {mib(m.get('root_hwm_kib'), 1)})" if fs else "",
            f"{mib(m.get('mean_worker_rss_kib'), 1)} × {m.get('workers')} (HWM {mib(m.get('worker_hwm_kib'), 1)})"
            if fs and m.get("workers") else "",
            str(m.get("processes", "")),
            fmt(max(other), 0) if other else "n/a",
        ]) + " |")
    return lines


def checks(res):
    data = res.data
    fs_targets = sorted({s["target"] for s in data["servers"] if s["kind"] == "ferroserve"})
    peers = sorted({s["target"] for s in data["servers"] if s["kind"] != "ferroserve"})
    out = []
    c64 = 64 if 64 in res.conc else max(res.conc)

    # 1. echo throughput, best ferroserve configuration.
    best = [(res.rps(t, "echo", c64), t) for t in fs_targets if res.rps(t, "echo", c64) is not None]
    if best:
        rps, t = max(best)
        out.append(f"- {verdict(rps >= ECHO_TARGET_RPS)} echo at c={c64}: {rps:,.0f} req/s ({t}); "
                   f"target >= {ECHO_TARGET_RPS:,}")
    else:
        out.append(f"- n/a  echo at c={c64}: no ferroserve result")

    # 2. cpu scaling, 2 replicas against 1.
    for c in [c for c in res.conc if c > 1]:
        r1, r2 = res.rps("ferroserve-r1", "cpu", c), res.rps("ferroserve-r2", "cpu", c)
        if r1 and r2:
            out.append(f"- {verdict(r2 >= CPU_SCALING * r1)} cpu at c={c}: 2 replicas {r2:,.0f} req/s = "
                       f"{r2 / r1:.2f} × 1 replica ({r1:,.0f}); target >= {CPU_SCALING}×")
        else:
            out.append(f"- n/a  cpu at c={c}: needs ferroserve-r1 and ferroserve-r2")

    # 3. sleep throughput against the ideal.
    mo = data["settings"].get("sleep_max_ongoing_requests", 16)
    for t in fs_targets:
        s = res.by_key.get((t, "sleep"))
        if not s:
            continue
        rps = res.rps(t, "sleep", c64)
        ideal = min(c64, s["n"] * mo) / SLEEP_S
        if rps is None:
            out.append(f"- FAIL sleep {t} at c={c64}: no result")
        else:
            out.append(f"- {verdict(rps >= SLEEP_FRACTION * ideal)} sleep {t} at c={c64}: {rps:,.0f} req/s = "
                       f"{rps / ideal:.2f} of min({c64}, {s['n']}×{mo}) / 20 ms = {ideal:,.0f}; "
                       f"target >= {SLEEP_FRACTION}")

    # 4. p99 at c=64: every ferroserve configuration below every peer.
    for model in ("echo", "cpu", "sleep"):
        ours = [(res.cell(t, model, c64)["p99"], t) for t in fs_targets
                if (t, model) in res.by_key and res.cell(t, model, c64)["p99"] is not None]
        theirs = [(res.cell(t, model, c64)["p99"], t) for t in peers
                  if (t, model) in res.by_key and res.cell(t, model, c64)["p99"] is not None]
        if ours and theirs:
            worst, best_peer = max(ours), min(theirs)
            out.append(f"- {verdict(worst[0] < best_peer[0])} {model} p99 at c={c64}: ferroserve's worst "
                       f"{ms(worst[0])} ms ({worst[1]}) vs the best peer's {ms(best_peer[0])} ms ({best_peer[1]}); "
                       f"every ferroserve configuration must be below every peer")
            # Like for like: each ferroserve configuration against the peers with as many
            # Python processes serving (kserve / kserve-ray1 for 1 replica, and so on).
            pairs = []
            for t in fs_targets:
                n = res.by_key[(t, model)]["n"] if (t, model) in res.by_key else None
                p_ours = res.cell(t, model, c64)["p99"] if n else None
                for p in peers:
                    s = res.by_key.get((p, model))
                    if n and p_ours is not None and s and s["n"] == n and res.cell(p, model, c64)["p99"] is not None:
                        p_theirs = res.cell(p, model, c64)["p99"]
                        pairs.append(f"{t} {ms(p_ours)} {'<' if p_ours < p_theirs else '>='} {p} {ms(p_theirs)}")
            if pairs:
                out.append(f"  - like for like (as many Python processes): {'; '.join(pairs)}")
        elif ours or theirs:
            out.append(f"- n/a  {model} p99 at c={c64}: needs ferroserve and at least one peer")

    # 5. memory.
    fs = [s for s in data["servers"] if s["kind"] == "ferroserve" and s.get("memory")]
    if fs:
        own = max(s["memory"]["root_hwm_kib"] for s in fs) / MIB
        own_sampled = max(s["memory"]["peak_root_rss_kib"] for s in fs) / MIB
        out.append(f"- {verdict(own < OWN_RSS_MIB)} ferroserve's own RSS: peak {own:.1f} MiB (VmHWM; "
                   f"{own_sampled:.1f} sampled) over all its runs; target < {OWN_RSS_MIB} MiB")
        workers = [s["memory"]["worker_hwm_kib"] for s in fs if s["memory"].get("worker_hwm_kib")]
        sampled = [s["memory"]["peak_worker_rss_kib"] for s in fs if s["memory"].get("peak_worker_rss_kib")]
        if workers:
            out.append(f"- {verdict(max(workers) / MIB < WORKER_RSS_MIB)} RSS per Python replica: largest "
                       f"{max(workers) / MIB:.1f} MiB (VmHWM; {max(sampled) / MIB:.1f} sampled); "
                       f"target < {WORKER_RSS_MIB} MiB")
    r4 = data.get("ready4")
    if r4:
        if r4.get("ok"):
            times = ", ".join(f"{s['all_running_s']:.3f}" for s in r4["starts"])
            out.append(f"- {verdict(r4['median_all_running_s'] < READY4_S)} 4 Python replicas running "
                       f"{r4['median_all_running_s']:.3f} s after start (median of {times}; first replica "
                       f"{r4['median_first_running_s']:.3f} s); target < {READY4_S:g} s")
        else:
            out.append(f"- FAIL 4 Python replicas running: {r4.get('error')}")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    res = Result(data)
    m, st, cal, v = data["machine"], data["settings"], data["calibration"], data["versions"]
    print(f"machine:  {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, load average {m['loadavg']} at start")
    print(f"commit:   {data['commit']}")
    print(f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"runs:     {st['duration']} s each, {st['repeats']} repeat(s), warm-up {st['warmup']} s; "
          f"wrk -t1 pinned to CPU {st['wrk_cpu']}; medians over successful runs")
    print(f"cpu model: {cal['steps']} loop steps, {cal['call_ms']:.2f} ms per call; "
          f"sleep: max_ongoing_requests {st['sleep_max_ongoing_requests']} per replica")
    print()
    print("Cells: req/s · p50/p99 ms. CPU ms/req: the server's whole process tree per request "
          "(ferroserve: own + workers). Memory: peaks sampled every 0.5 s, HWM = the kernel's VmHWM. "
          "other CPU %: most CPU used by other processes during a run (% of one core).")
    print()
    for line in table(res):
        print(line)
    print()
    print("Targets:")
    print()
    for line in checks(res):
        print(line)
    failed = [f"{s['target']}/{s['model']}: {s['error'] or 'failed runs'}" for s in data["servers"] if not s["ok"]]
    if failed:
        print()
        print("Failures:")
        for f in failed:
            print(f"- {f}")


if __name__ == "__main__":
    main()
