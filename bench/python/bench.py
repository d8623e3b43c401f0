#!/usr/bin/env python3
"""Driver of bench/python/run.sh (stdlib only): starts each target × model, times its start-up,
samples its process tree's memory, drives it with wrk and writes every number to one JSON file.
run.sh checks the prerequisites, builds and sets the environment; run it rather than this.

Settings come from the environment (run.sh documents them): DURATION, REPEATS, WARMUP,
CONCURRENCY, TARGETS, MODELS, BASE_PORT, WRK_CPU, PY, RAY_PY, FERROSERVE_BIN, BENCH_WORK.
Exit status 1 if any run failed (non-2xx answers, a server that did not start or died).
"""

import argparse
import datetime
import http.client
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ALL_MODELS = ("echo", "cpu", "sleep")
HZ = os.sysconf("SC_CLK_TCK")

# Per-replica max_ongoing_requests of the sleep deployment; every other option is the default.
SLEEP_MAX_ONGOING = 16

# name → (kind, models it serves, replicas or uvicorn workers). Ray targets run only with RAY=1.
TARGETS = {
    "kserve": ("kserve", ALL_MODELS, 1),
    "kserve-w2": ("kserve", ALL_MODELS, 2),
    "kserve-ray1": ("ray", ALL_MODELS, 1),
    "kserve-ray2": ("ray", ALL_MODELS, 2),
    "kserve-ray4": ("ray", ("sleep",), 4),
    "ferroserve-r1": ("ferroserve", ALL_MODELS, 1),
    "ferroserve-r2": ("ferroserve", ALL_MODELS, 2),
    "ferroserve-r4": ("ferroserve", ("sleep",), 4),
    # Not a load test: time until 4 echo replicas run, median of 3 starts.
    "ferroserve-ready4": ("ready", ("echo",), 4),
}
READY4_STARTS = 3


def log(msg):
    print(f"\033[1m==> {msg}\033[0m", file=sys.stderr, flush=True)


def warn(msg):
    print(f"\033[1;31m  !!! {msg}\033[0m", file=sys.stderr, flush=True)


# --- /proc ---------------------------------------------------------------------------------------


def proc_stat(pid):
    """(ppid, utime+stime ticks, starttime, state) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]), fields[0].decode()


def proc_tree(root):
    """{pid: (ppid, cpu ticks, starttime, state)} of `root` and all its descendants."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                stats[int(name)] = st
    if root not in stats:
        return {}
    children = {}
    for pid, st in stats.items():
        children.setdefault(st[0], []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = stats[pid]
        todo.extend(children.get(pid, ()))
    return tree


def proc_mem(pid):
    """(VmRSS KiB, VmHWM KiB, Pss KiB) of a process; None when it is gone."""
    rss = hwm = pss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except OSError:
        pass
    return rss or 0, hwm or 0, pss or 0


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_worker(cmdline):
    return "ferroserve.worker" in cmdline


def machine_ticks():
    """(busy ticks, steal ticks) of the whole machine: busy = user nice system irq softirq;
    steal = time the hypervisor gave our vCPUs to someone else."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]


class Sampler(threading.Thread):
    """Samples the memory of a process tree every `interval` s, from start until stop(): the
    peak of the summed VmRSS (and Pss), the root's own peak, and every ferroserve worker's peak
    and last VmHWM. Remembers every (pid, starttime) seen so leftovers can be killed."""

    def __init__(self, root, interval=0.5):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.seen = {}  # pid → starttime
        self.cmdlines = {}
        self.peak_rss = self.peak_pss = self.peak_root = self.root_hwm = 0
        self.max_procs = 0
        self.workers = {}  # pid → {"peak_rss_kib", "hwm_kib"}
        self.samples = 0

    def run(self):
        while True:
            self.sample()
            if self.halt.wait(self.interval):
                return

    def sample(self):
        tree = proc_tree(self.root)
        total = total_pss = 0
        with self.lock:
            for pid, (_, _, start, _) in tree.items():
                if pid not in self.cmdlines or self.seen.get(pid) != start:
                    self.cmdlines[pid] = proc_cmdline(pid)
                self.seen[pid] = start
                mem = proc_mem(pid)
                if not mem:
                    continue
                rss, hwm, pss = mem
                total += rss
                total_pss += pss
                if pid == self.root:
                    self.peak_root = max(self.peak_root, rss)
                    self.root_hwm = max(self.root_hwm, hwm)
                elif is_worker(self.cmdlines[pid]):
                    w = self.workers.setdefault(pid, {"peak_rss_kib": 0, "hwm_kib": 0})
                    w["peak_rss_kib"] = max(w["peak_rss_kib"], rss)
                    w["hwm_kib"] = max(w["hwm_kib"], hwm)
            if tree:
                self.samples += 1
                self.peak_rss = max(self.peak_rss, total)
                self.peak_pss = max(self.peak_pss, total_pss)
                self.max_procs = max(self.max_procs, len(tree))

    def stop(self):
        self.halt.set()
        self.join()

    def summary(self):
        with self.lock:
            workers = list(self.workers.values())
            return {
                "samples": self.samples,
                "processes": self.max_procs,
                "peak_tree_rss_kib": self.peak_rss,
                "peak_tree_pss_kib": self.peak_pss,
                "peak_root_rss_kib": self.peak_root,
                "root_hwm_kib": self.root_hwm,
                "workers": len(workers),
                "peak_worker_rss_kib": max((w["peak_rss_kib"] for w in workers), default=None),
                "mean_worker_rss_kib": (
                    statistics.mean(w["peak_rss_kib"] for w in workers) if workers else None
                ),
                "worker_hwm_kib": max((w["hwm_kib"] for w in workers), default=None),
                "cmdlines": sorted(set(self.cmdlines.values())),
            }


def tree_cpu(root):
    """CPU ticks of the tree, of its root alone and of its ferroserve workers."""
    tree = proc_tree(root)
    total = sum(st[1] for st in tree.values())
    own = tree[root][1] if root in tree else 0
    workers = sum(st[1] for pid, st in tree.items() if pid != root and is_worker(proc_cmdline(pid)))
    return total, own, workers


# --- HTTP ----------------------------------------------------------------------------------------


def request(port, method, path, body=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_free(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- servers -------------------------------------------------------------------------------------


class Server:
    """One server process, in its own session; stop() ends it and anything it left behind."""

    def __init__(self, label, cmd, env, log_path, cwd=None):
        self.label, self.cmd, self.env, self.log_path, self.cwd = label, cmd, env, log_path, cwd
        self.proc = self.sampler = None

    def start(self):
        self.log = open(self.log_path, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        self.sampler = Sampler(self.proc.pid)
        self.sampler.start()

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, port, path, timeout):
        """Seconds from process start until GET path answers 200; raises on exit or timeout."""
        deadline = self.t0 + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before it was ready")
            try:
                status, _ = request(port, "GET", path, timeout=1.0)
                if status == 200:
                    return time.monotonic() - self.t0
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.label}: {path} not 200 after {timeout:.0f} s")

    def stop(self, grace=30.0):
        if self.proc is None:
            return
        if self.sampler:
            self.sampler.sample()
            self.sampler.stop()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                warn(f"{self.label} did not stop within {grace:.0f} s of SIGTERM: SIGKILL")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        # Anything of this server's tree still running (same pid *and* start time, not a zombie
        # waiting for init to reap it) after 3 s: kill it.
        seen = dict(self.sampler.seen) if self.sampler else {}

        def running():
            out = []
            for pid, start in seen.items():
                st = proc_stat(pid)
                if st and st[2] == start and st[3] != "Z":
                    out.append(pid)
            return out

        deadline = time.monotonic() + 3.0
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = running()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            warn(f"{self.label}: killed {len(left)} process(es) left after it stopped: {left}")
        self.log.close()


def server_cmd(kind, model, n, cfg):
    """(command, environment, cwd) of a target's server for one model."""
    env = dict(os.environ, BENCH_CPU_ITERS=str(cfg["cpu_steps"]))
    http_port, grpc_port = cfg["port"], cfg["port"] + 1
    if kind in ("kserve", "ray"):
        py = cfg["py"] if kind == "kserve" else cfg["ray_py"]
        cmd = [py, os.path.join(HERE, "kserve_server.py"), "--model_name", model,
               "--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        if kind == "kserve" and n > 1:
            cmd += ["--workers", str(n)]
        if kind == "ray":
            env["BENCH_RAY_REPLICAS"] = str(n)
            env["BENCH_RAY_SERVE_PORT"] = str(cfg["port"] + 2)
            env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        return cmd, env, cfg["work"]
    # ferroserve: a config file with one Python deployment.
    lines = [
        f"http_port: {http_port}",
        f"grpc_port: {grpc_port}",
        "deployments:",
        f"  - name: {model}",
        f"    python: {os.path.join(HERE, 'models.py')}:Ferro{model.capitalize()}",
        f"    runtime_env: {{py_executable: {cfg['py']}, env_vars: {{BENCH_CPU_ITERS: \"{cfg['cpu_steps']}\"}}}}",
        f"    num_replicas: {n}",
    ]
    if model == "sleep":
        lines.append(f"    max_ongoing_requests: {SLEEP_MAX_ONGOING}")
    path = os.path.join(cfg["work"], f"ferroserve-{model}-r{n}.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [cfg["ferroserve"], "serve", "--config", path], env, cfg["work"]


# --- wrk -----------------------------------------------------------------------------------------

UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.match(r"^([\d.]+)(us|ms|s|m|h)$", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(text):
    run = {"rps": None, "p50_us": None, "p99_us": None, "requests": None, "non_2xx": 0,
           "socket_errors": None}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            run["rps"] = float(s.split()[1])
        elif s.startswith("50%"):
            run["p50_us"] = to_us(s.split()[1])
        elif s.startswith("99%"):
            run["p99_us"] = to_us(s.split()[1])
        elif re.match(r"^\d+ requests in ", s):
            run["requests"] = int(s.split()[0])
        elif s.startswith("Non-2xx or 3xx responses:"):
            run["non_2xx"] = int(s.split(":")[1])
        elif s.startswith("Socket errors:"):
            run["socket_errors"] = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", s.split(":", 1)[1])}
    return run


def wrk(cfg, url, conc, duration):
    """Runs wrk pinned to WRK_CPU; returns (output text, exit status, wrk CPU seconds)."""
    cmd = ["taskset", "-c", str(cfg["wrk_cpu"]), "wrk", "-t1", f"-c{conc}", f"-d{duration}s",
           "--latency", "--timeout", "30s", "-s", cfg["lua"], url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                           env=dict(os.environ, BENCH_BODY=cfg["body_path"]))
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"{e.stdout or ''}\nwrk timed out", -1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return out, rc, cpu


def measure(cfg, server, url, conc, repeat):
    """One measured wrk run, with the CPU the server tree, wrk and everything else used."""
    t_cpu0, own0, work0 = tree_cpu(server.proc.pid)
    (busy0, steal0), self0, t0 = machine_ticks(), sum(os.times()[:2]), time.monotonic()
    raw, rc, wrk_cpu = wrk(cfg, url, conc, cfg["duration"])
    elapsed = time.monotonic() - t0
    t_cpu1, own1, work1 = tree_cpu(server.proc.pid)
    (busy1, steal1), self1 = machine_ticks(), sum(os.times()[:2])
    run = {"concurrency": conc, "repeat": repeat}
    run.update(parse_wrk(raw))
    server_cpu = (t_cpu1 - t_cpu0) / HZ
    foreign = (busy1 - busy0) / HZ - server_cpu - wrk_cpu - (self1 - self0)
    run.update(
        server_cpu_s=server_cpu,
        root_cpu_s=(own1 - own0) / HZ,
        worker_cpu_s=(work1 - work0) / HZ,
        wrk_cpu_s=wrk_cpu,
        other_cpu_pct=max(0.0, 100.0 * foreign / elapsed),
        steal_pct=100.0 * (steal1 - steal0) / HZ / elapsed,
        wall_s=elapsed,
        wrk_status=rc,
    )
    problems = []
    if rc != 0:
        problems.append(f"wrk exited with status {rc}")
    if run["non_2xx"]:
        problems.append(f"{run['non_2xx']} non-2xx responses")
    if None in (run["rps"], run["p50_us"], run["p99_us"]) or not run["requests"]:
        problems.append("no result")
    if not server.alive():
        problems.append("the server died")
    run["ok"] = not problems
    run["problems"] = problems
    run["raw"] = raw
    return run


def check_answer(port, model, body, expected):
    status, out = request(port, "POST", f"/v2/models/{model}/infer", body=body, timeout=30)
    if status != 200:
        raise RuntimeError(f"POST /v2/models/{model}/infer answered {status}: {out[:500]!r}")
    outputs = json.loads(out).get("outputs") or []
    data = outputs[0].get("data") if outputs else None  # FP32: equal to the sent values to ~1e-7
    if (not outputs or outputs[0].get("name") != "output-0" or data is None or len(data) != len(expected)
            or any(abs(float(a) - b) > 1e-6 for a, b in zip(data, expected))):
        raise RuntimeError(f"unexpected answer from {model}: {out[:500]!r}")


# --- one target × model ------------------------------------------------------------------------


def run_target(cfg, target, model):
    kind, _, n = TARGETS[target]
    label = f"{target}/{model}"
    entry = {"target": target, "model": model, "kind": kind, "n": n, "ok": False, "error": None,
             "startup_s": None, "memory": None, "runs": []}
    log_offset = 0
    port = cfg["port"]
    for p in (port, port + 1):
        for _ in range(100):
            if port_free(p):
                break
            time.sleep(0.1)
        else:
            entry["error"] = f"port {p} still in use"
            warn(f"{label}: {entry['error']}")
            return entry
    cmd, env, cwd = server_cmd(kind, model, n, cfg)
    server = Server(label, cmd, env, os.path.join(cfg["work"], f"{target}-{model}.log"), cwd)
    log(f"{label}: starting ({' '.join(cmd[:4])} ...)")
    server.start()
    try:
        entry["startup_s"] = server.wait_ready(port, f"/v2/models/{model}/ready",
                                               180 if kind == "ray" else 60)
        log(f"{label}: ready after {entry['startup_s']:.2f} s")
        log_offset = os.path.getsize(server.log_path)  # readiness polls before this log 503s
        check_answer(port, model, cfg["body"], cfg["expected"])
        url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
        if cfg["warmup"] > 0:
            wrk(cfg, url, 8, cfg["warmup"])
            time.sleep(0.5)
        for r in range(1, cfg["repeats"] + 1):
            for c in cfg["concurrency"]:
                run = measure(cfg, server, url, c, r)
                entry["runs"].append(run)
                per_req = (run["server_cpu_s"] / run["requests"] * 1e3) if run["requests"] else None
                print(f"  {label:<24} c={c:<3} r{r}  {run['rps'] or 0:>9.0f} req/s  "
                      f"p50 {(run['p50_us'] or 0) / 1e3:7.2f} ms  p99 {(run['p99_us'] or 0) / 1e3:8.2f} ms  "
                      f"cpu {per_req or 0:.2f} ms/req  other {run['other_cpu_pct']:.0f}%",
                      file=sys.stderr, flush=True)
                if not run["ok"]:
                    warn(f"RUN FAILED: {label} c={c} r{r}: {'; '.join(run['problems'])}")
                    for line in run["raw"].splitlines():
                        warn(line)
                if run["socket_errors"]:
                    warn(f"{label} c={c} r{r}: socket errors {run['socket_errors']}")
                if not server.alive():
                    raise RuntimeError(f"{label} died during the runs")
                time.sleep(1.0)
        entry["ok"] = all(r["ok"] for r in entry["runs"])
    except Exception as e:  # noqa: BLE001 - recorded, reported, and the bench goes on
        entry["error"] = str(e)
        warn(f"{label}: {e}")
        for line in server.log_tail().splitlines():
            warn(line)
    finally:
        server.stop()
        entry["memory"] = server.sampler.summary() if server.sampler else None
        entry["exit_status"] = server.proc.returncode if server.proc else None
    if kind == "ferroserve":
        with open(server.log_path, errors="replace") as f:
            f.seek(log_offset)
            bad = [line.rstrip() for line in f if " WARN " in line or " ERROR " in line]
        entry["log_warnings"] = bad[:50]
        if bad:
            warn(f"{label}: ferroserve logged {len(bad)} warning/error line(s), first: {bad[0]}")
    return entry


def run_ready4(cfg):
    """ferroserve with 4 Python echo replicas: time from process start until /-/status shows
    all 4 running (and until the first one runs), over READY4_STARTS starts."""
    _, _, n = TARGETS["ferroserve-ready4"]
    starts = []
    entry = {"target": "ferroserve-ready4", "replicas": n, "starts": starts, "ok": False, "error": None}
    cmd, env, cwd = server_cmd("ferroserve", "echo", n, cfg)
    for i in range(READY4_STARTS):
        for _ in range(100):
            if port_free(cfg["port"]):
                break
            time.sleep(0.1)
        server = Server(f"ready4#{i + 1}", cmd, env, os.path.join(cfg["work"], f"ready4-{i + 1}.log"), cwd)
        server.start()
        first = allrun = None
        try:
            while time.monotonic() - server.t0 < 60:
                if not server.alive():
                    raise RuntimeError("ferroserve exited at start")
                try:
                    status, body = request(cfg["port"], "GET", "/-/status", timeout=1.0)
                except OSError:
                    status = None
                if status == 200:
                    deps = [d for d in json.loads(body)["deployments"] if d["name"] == "echo"]
                    running = sum(r["state"] == "running" for r in deps[0]["replicas"]) if deps else 0
                    now = time.monotonic() - server.t0
                    if running >= 1 and first is None:
                        first = now
                    if running >= n:
                        allrun = now
                        break
                time.sleep(0.01)
            if allrun is None:
                raise RuntimeError(f"not all {n} replicas running after 60 s")
            server.sampler.sample()
            mem = server.sampler.summary()
            starts.append({"first_running_s": first, "all_running_s": allrun,
                           "tree_rss_kib": mem["peak_tree_rss_kib"], "root_rss_kib": mem["peak_root_rss_kib"],
                           "worker_rss_kib": mem["peak_worker_rss_kib"]})
            log(f"ready4 start {i + 1}: first replica running {first:.3f} s, all {n} {allrun:.3f} s")
        except Exception as e:  # noqa: BLE001
            entry["error"] = str(e)
            warn(f"ready4 start {i + 1}: {e}")
            for line in server.log_tail().splitlines():
                warn(line)
        finally:
            server.stop()
        time.sleep(0.5)
    if len(starts) == READY4_STARTS:
        entry["ok"] = True
        entry["median_all_running_s"] = statistics.median(s["all_running_s"] for s in starts)
        entry["median_first_running_s"] = statistics.median(s["first_running_s"] for s in starts)
    return entry


# --- main ----------------------------------------------------------------------------------------


def calibrate(py):
    out = subprocess.run([py, os.path.join(HERE, "models.py"), "calibrate"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": sh("uname", "-r"),
            "loadavg": " ".join(open("/proc/loadavg").read().split()[:3])}


def split(value):
    return [v for v in re.split(r"[,\s]+", value or "") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the JSON file to write")
    args = ap.parse_args()

    e = os.environ
    cfg = {
        "duration": int(e.get("DURATION", "10")),
        "repeats": int(e.get("REPEATS", "1")),
        "warmup": int(e.get("WARMUP", "2")),
        "concurrency": [int(c) for c in split(e.get("CONCURRENCY", "1 8 64"))],
        "port": int(e.get("BASE_PORT", "18180")),
        "wrk_cpu": int(e.get("WRK_CPU", "1")),
        "py": e["PY"],
        "ray_py": e.get("RAY_PY") or None,
        "ferroserve": e["FERROSERVE_BIN"],
        "work": e["BENCH_WORK"],
    }
    models = split(e.get("MODELS")) or list(ALL_MODELS)
    for m in models:
        if m not in ALL_MODELS:
            sys.exit(f"MODELS: unknown model {m!r} (known: {', '.join(ALL_MODELS)})")
    wanted = split(e.get("TARGETS"))
    for t in wanted:
        if t not in TARGETS:
            sys.exit(f"TARGETS: unknown target {t!r} (known: {', '.join(TARGETS)})")
    targets = [t for t in TARGETS if (not wanted or t in wanted)]
    if not cfg["ray_py"]:
        skipped = [t for t in targets if TARGETS[t][0] == "ray"]
        targets = [t for t in targets if TARGETS[t][0] != "ray"]
        if skipped and wanted:
            warn(f"skipping {', '.join(skipped)}: no Ray venv (set RAY=1)")

    # Request body: V2 JSON, one [1,16] FP32 input (as bench/http.sh's json-1x16).
    random.seed(0)
    data = [round(random.uniform(-1, 1), 6) for _ in range(16)]
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 16], "datatype": "FP32", "data": data}]},
                      separators=(",", ":"))
    cfg["body"] = body.encode()
    cfg["expected"] = data
    cfg["body_path"] = os.path.join(cfg["work"], "body.json")
    with open(cfg["body_path"], "wb") as f:
        f.write(cfg["body"])
    cfg["lua"] = os.path.join(cfg["work"], "post.lua")
    with open(cfg["lua"], "w") as f:
        f.write('local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))\n'
                'wrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
                'wrk.headers["Content-Type"] = "application/json"\n')

    log("calibrating the cpu model (5 ms of CPU per call)")
    cal = calibrate(cfg["py"])
    cfg["cpu_steps"] = cal["steps"]
    log(f"cpu model: {cal['steps']} loop steps, {cal['call_ms']:.2f} ms per call (median of 9)")

    result = {
        "timestamp": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "commit": sh("git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"),
        "machine": machine(),
        "settings": {k: cfg[k] for k in ("duration", "repeats", "warmup", "concurrency", "wrk_cpu", "port")}
        | {"targets": targets, "models": models, "sleep_max_ongoing_requests": SLEEP_MAX_ONGOING},
        "versions": {
            "kserve": sh(cfg["py"], "-c", "import importlib.metadata as m; print(m.version('kserve'))"),
            "python": sh(cfg["py"], "-c", "import sys; print(sys.version.split()[0])"),
            "ferroserve": sh(cfg["ferroserve"], "--version"),
            "wrk": sh("sh", "-c", "wrk -v 2>&1 | head -1"),
        },
        "calibration": cal,
        "servers": [],
        "ready4": None,
    }
    if cfg["ray_py"]:
        result["versions"]["ray"] = sh(cfg["ray_py"], "-c", "import ray; print(ray.__version__)")

    # Model-major order: the targets of one model run close together in time.
    for model in models:
        for target in targets:
            kind, served, _ = TARGETS[target]
            if kind != "ready" and model in served:
                result["servers"].append(run_target(cfg, target, model))
    if "ferroserve-ready4" in targets:
        result["ready4"] = run_ready4(cfg)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    failed = [s for s in result["servers"] if not s["ok"]]
    if result["ready4"] and not result["ready4"]["ok"]:
        failed.append(result["ready4"])
    for s in failed:
        warn(f"FAILED: {s['target']}/{s.get('model', 'echo')}: {s['error'] or 'see the runs above'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
