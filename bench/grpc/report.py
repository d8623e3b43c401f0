"""The report of bench/grpc.sh: one markdown table of every run, the targets, and the raw numbers.

    python3 bench/grpc/report.py OUT_DIR --result bench/results/grpc-<timestamp>.json [...]

OUT_DIR holds runs.tsv (one line per run: server, mode, elements, concurrency, exit status,
JSON file, stderr file), the load generator's JSON per run and memcpy.json. Standard library only.
Exits 1 if any run failed (a non-zero exit status, no JSON, or errors > 0).
"""

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys

GRPC_RATIO_TARGET = 10.0  # ferroserve / KServe, gRPC [1,16] throughput
LARGE_GBPS_TARGET = 1.0  # ferroserve gRPC payload GB/s on [1,4194304]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def fmt_rate(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_mb(x):
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def fmt_cpu(c):
    if not c or c.get("cores") is None:
        return "–"
    return f"{c['cores']:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--result", required=True)
    ap.add_argument("--window", type=float, required=True)
    ap.add_argument("--max-windows", type=int, required=True)
    ap.add_argument("--stability", type=float, required=True)
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--load-start", default="?")
    ap.add_argument("--load-end", default="?")
    args = ap.parse_args()

    runs = []
    failed = []
    with open(os.path.join(args.out, "runs.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rec = {"server": row["server"], "mode": row["mode"], "elements": int(row["elements"]),
                   "concurrency": int(row["concurrency"]), "exit_status": int(row["rc"])}
            try:
                with open(os.path.join(args.out, row["json"])) as j:
                    rec["result"] = json.load(j)
            except (OSError, ValueError):
                rec["result"] = None
            try:
                with open(os.path.join(args.out, row["stderr"])) as e:
                    rec["stderr"] = e.read()[-4000:]
            except OSError:
                rec["stderr"] = ""
            r = rec["result"]
            rec["failed"] = rec["exit_status"] != 0 or r is None or r.get("errors", 0) > 0
            if rec["failed"]:
                failed.append(rec)
            runs.append(rec)
    try:
        with open(os.path.join(args.out, "memcpy.json")) as f:
            memcpy = json.load(f)
    except (OSError, ValueError):
        memcpy = None

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "commit": git_commit(),
        "window_s": args.window,
        "max_windows": args.max_windows,
        "stability_pct": args.stability,
        "load_generator_cpu": args.load_cpu,
        "loadavg_start": args.load_start,
        "loadavg_end": args.load_end,
    }

    def find(server, mode, elements, c):
        for rec in runs:
            key = (rec["server"], rec["mode"], rec["elements"], rec["concurrency"])
            if key == (server, mode, elements, c) and not rec["failed"]:
                return rec["result"]
        return None

    lines = []
    p = lines.append
    p(f"gRPC benchmark · {meta['date']} · {meta['host']} · {meta['cpu']} × {meta['cpus']} · "
      f"commit {meta['commit']}")
    p(f"windows {args.window:g} s (up to {args.max_windows}, stable when the last 3 agree within "
      f"{args.stability:g} %) · load generator: 1 thread pinned to CPU {args.load_cpu} · "
      f"load average {args.load_start} → {args.load_end}")
    p("")
    p("| server | protocol | shape | c | req/s | payload MB/s | p50 ms | p95 ms | p99 ms "
      "| server CPU | client CPU | windows | errors |")
    p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rec in runs:
        r = rec["result"]
        shape = f"[1,{rec['elements']}]"
        if r is None:
            p(f"| {rec['server']} | {rec['mode']} | {shape} | {rec['concurrency']} | FAILED (exit "
              f"{rec['exit_status']}, no result) | | | | | | | | |")
            continue
        lat = r["latency_us"]
        windows = f"{r['windows']}" + ("" if r["stable"] else " unstable")
        errors = f"**{r['errors']}**" if r["errors"] else "0"
        p(f"| {rec['server']} | {rec['mode']} | {shape} | {rec['concurrency']} "
          f"| {fmt_rate(r['throughput_rps'])} | {fmt_mb(r['payload_mb_s'])} "
          f"| {fmt_ms(lat['p50'])} | {fmt_ms(lat['p95'])} | {fmt_ms(lat['p99'])} "
          f"| {fmt_cpu(r.get('server_cpu'))} | {fmt_cpu(r.get('client_cpu'))} | {windows} "
          f"| {errors} |")
    p("")
    p("server / client CPU: cores busy over the measured windows (the client is one thread, so "
      "1.00 means the load generator was the limit).")
    p("")

    summary = {}
    concs = sorted({rec["concurrency"] for rec in runs})
    small = min((rec["elements"] for rec in runs), default=16)
    large = max((rec["elements"] for rec in runs), default=4194304)
    ratios = []
    for c in concs:
        fs, ks = find("ferroserve", "grpc", small, c), find("kserve", "grpc", small, c)
        if fs and ks and ks["throughput_rps"] > 0:
            ratio = fs["throughput_rps"] / ks["throughput_rps"]
            ratios.append(f"c={c}: {ratio:.1f}×" if ratio >= 1 else f"c={c}: {ratio:.2g}×")
            summary[f"grpc_small_ratio_c{c}"] = ratio
    if ratios:
        ok = all(summary[k] >= GRPC_RATIO_TARGET for k in summary if k.startswith("grpc_small"))
        p(f"- ferroserve / KServe, gRPC [1,{small}] throughput: {' · '.join(ratios)} "
          f"(target ≥ {GRPC_RATIO_TARGET:g}×: {'met' if ok else '**not met**'})")
    else:
        p(f"- ferroserve / KServe, gRPC [1,{small}] throughput: no KServe rows")
    mem = memcpy["gb_s"] if memcpy else None
    parts = []
    for c in concs:
        fs = find("ferroserve", "grpc", large, c)
        hb = find("ferroserve", "http-binary", large, c)
        if fs:
            gb = fs["payload_mb_s"] / 1e3
            summary[f"grpc_large_gb_s_c{c}"] = gb
            s = f"c={c}: {gb:.2f} GB/s"
            if hb and hb["payload_mb_s"] > 0:
                s += f" (http-binary {hb['payload_mb_s'] / 1e3:.2f})"
            parts.append(s)
    if parts:
        best = max(v for k, v in summary.items() if k.startswith("grpc_large"))
        p(f"- ferroserve gRPC payload on [1,{large}]: {' · '.join(parts)} (target ≥ "
          f"{LARGE_GBPS_TARGET:g} GB/s: {'met' if best >= LARGE_GBPS_TARGET else '**not met**'})"
          + (f" · memcpy on this machine (1 thread, 64 MiB): {mem:.1f} GB/s" if mem else ""))
    for rec in runs:
        r = rec["result"]
        if r is not None and not r["stable"] and not r.get("errors"):
            p(f"- {rec['server']} {rec['mode']} [1,{rec['elements']}] c={rec['concurrency']}: not "
              f"stable within {args.stability:g} % after {r['windows']} windows "
              f"(window req/s: {', '.join(f'{x:.0f}' for x in r['window_rps'])})")
    for rec in failed:
        r = rec["result"] or {}
        why = r.get("first_error") or rec["stderr"].strip().splitlines()[-1:] or ["?"]
        p(f"- **FAILED** {rec['server']} {rec['mode']} [1,{rec['elements']}] "
          f"c={rec['concurrency']}: {r.get('errors', '?')} errors, exit status "
          f"{rec['exit_status']}: {why if isinstance(why, str) else why[0]}")
    text = "\n".join(lines)
    print(text)

    with open(args.result, "w") as f:
        json.dump({"meta": meta, "memcpy": memcpy, "summary": summary, "runs": runs,
                   "table_md": text}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
