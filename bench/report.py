#!/usr/bin/env python3
"""Summarises the wrk and oha outputs of bench/http.sh: a markdown table on stdout, raw numbers
as JSON.

Usage: report.py [--duration S] [--repeats N] DIR

DIR holds one output per run, named WORKLOAD__cCONCURRENCY__SERVER__rREPEAT.txt (wrk's text) or
.json (oha's JSON); oha's runs are workloads of their own (`json-1x16/oha`). Runs with
non-2xx responses (or no parsable result) are failed: they are kept in the JSON but left out of
the medians. The JSON goes to bench/results/http-<timestamp>.json.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

SERVERS = ("ferroserve", "floor")
UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
NAME = re.compile(r"^(?P<workload>.+)__c(?P<c>\d+)__(?P<server>[a-z]+)__r(?P<r>\d+)\.(?P<ext>txt|json)$")
DURATION_US = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")


def to_us(text):
    m = DURATION_US.match(text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(text):
    """Requests/sec, p50 and p99 in µs, non-2xx count and socket errors of one wrk output."""
    run = {"rps": None, "p50_us": None, "p99_us": None, "non_2xx": 0, "socket_errors": None}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            run["rps"] = float(s.split()[1])
        elif s.startswith("50%"):
            run["p50_us"] = to_us(s.split()[1])
        elif s.startswith("99%"):
            run["p99_us"] = to_us(s.split()[1])
        elif s.startswith("Non-2xx or 3xx responses:"):
            run["non_2xx"] = int(s.split(":")[1])
        elif s.startswith("Socket errors:"):
            run["socket_errors"] = {
                k: int(v) for k, v in re.findall(r"(\w+) (\d+)", s.split(":", 1)[1])
            }
    run["ok"] = (
        run["non_2xx"] == 0
        and None not in (run["rps"], run["p50_us"], run["p99_us"])
        and "wrk exited" not in text
    )
    return run


def parse_oha(text):
    """The same figures from one oha `--output-format json` output. Requests cut off at the end
    of the run (oha's "aborted due to deadline") are not errors."""
    run = {"rps": None, "p50_us": None, "p99_us": None, "non_2xx": 0, "socket_errors": None}
    try:
        d = json.loads(text)
    except ValueError:
        run["ok"] = False
        return run
    run["rps"] = d.get("summary", {}).get("requestsPerSec")
    pct = d.get("latencyPercentiles") or {}
    if pct.get("p50") is not None and pct.get("p99") is not None:
        run["p50_us"] = pct["p50"] * 1e6
        run["p99_us"] = pct["p99"] * 1e6
    codes = d.get("statusCodeDistribution") or {}
    run["non_2xx"] = sum(n for code, n in codes.items() if not code.startswith("2"))
    errors = {k: v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k}
    run["socket_errors"] = errors or None
    run["ok"] = run["non_2xx"] == 0 and not errors and None not in (run["rps"], run["p50_us"])
    return run


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "unknown"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": sh("uname", "-r"), "loadavg": load}


def median(runs, key):
    values = [r[key] for r in runs if r["ok"]]
    return statistics.median(values) if values else None


def fmt(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--duration", type=float)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()

    runs = []
    # In the order they were run, so the table follows http.sh's order of workloads.
    for fname in sorted(os.listdir(args.dir),
                        key=lambda n: os.path.getmtime(os.path.join(args.dir, n))):
        m = NAME.match(fname)
        if not m:
            continue
        with open(os.path.join(args.dir, fname)) as f:
            raw = f.read()
        run = {"workload": m["workload"], "concurrency": int(m["c"]), "server": m["server"],
               "repeat": int(m["r"])}
        run.update(parse_oha(raw) if m["ext"] == "json" else parse_wrk(raw))
        run["raw"] = raw
        runs.append(run)
    if not runs:
        sys.exit(f"no wrk outputs in {args.dir}")

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = sh("git", "-C", root, "describe", "--always", "--dirty", "--abbrev=12")
    mach = machine()
    print(f"machine: {mach['nproc']} CPUs, {mach['cpu']}, kernel {mach['kernel']}, "
          f"load average {mach['loadavg']}")
    print(f"commit:  {commit}")
    print(f"runs:    {args.duration:g} s each, {args.repeats} repeat(s); medians over successful runs")
    print()

    # (workload, concurrency): workloads in the order run, concurrencies ascending.
    order = list(dict.fromkeys(r["workload"] for r in runs))
    groups = sorted({(r["workload"], r["concurrency"]) for r in runs},
                    key=lambda k: (order.index(k[0]), k[1]))

    print("| workload | c | ferroserve req/s | p50 µs | p99 µs | floor req/s | p50 µs | p99 µs "
          "| req/s ratio | p50 added µs |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    summary = []
    for workload, c in groups:
        row = {"workload": workload, "concurrency": c}
        cells = []
        for server in SERVERS:
            rs = [r for r in runs
                  if r["workload"] == workload and r["concurrency"] == c and r["server"] == server]
            ok = sum(r["ok"] for r in rs)
            stats = {k: median(rs, k) for k in ("rps", "p50_us", "p99_us")}
            stats.update(runs=len(rs), ok=ok)
            row[server] = stats
            flag = "" if ok == len(rs) else f" ({len(rs) - ok}/{len(rs)} FAILED)"
            cells += [fmt(stats["rps"]) + flag, fmt(stats["p50_us"]), fmt(stats["p99_us"])]
        fs, fl = row["ferroserve"], row["floor"]
        ratio = fs["rps"] / fl["rps"] if fs["rps"] and fl["rps"] else None
        added = fs["p50_us"] - fl["p50_us"] if None not in (fs["p50_us"], fl["p50_us"]) else None
        row.update(rps_ratio=ratio, p50_added_us=added)
        summary.append(row)
        print(f"| {workload} | {c} | " + " | ".join(cells)
              + f" | {fmt(ratio, 2)} | {fmt(added, 0)} |")

    json_rows = {(r["workload"], r["concurrency"]): r for r in summary}
    j64, j1 = json_rows.get(("json-1x16", 64)), json_rows.get(("json-1x16", 1))
    if j64:
        print()
        print(f"targets (json-1x16): req/s ratio at c=64 {fmt(j64['rps_ratio'], 2)} (target >= 0.80); "
              f"p50 added {fmt(j1['p50_added_us'] if j1 else None)} µs at c=1, "
              f"{fmt(j64['p50_added_us'])} µs at c=64 (target < 50)")

    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"http-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"timestamp": stamp, "commit": commit, "machine": mach,
                   "duration_s": args.duration, "repeats": args.repeats,
                   "summary": summary, "runs": runs}, f, indent=1)
        f.write("\n")
    print()
    print(f"raw numbers: {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
