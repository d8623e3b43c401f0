#!/usr/bin/env python3
"""Driver of bench/compose/run.sh (stdlib only): starts each server once, checks one answer of
each of its endpoints, then drives them with wrk, endpoints interleaved within each repeat (so
that a pipeline and its single-model baseline are measured close together in time), and writes
every number to one JSON file. Reuses bench/python/bench.py (servers, process sampling, wrk,
its parsing and CPU accounting) by import. run.sh sets the environment; run it rather than this.

Settings from the environment: DURATION, REPEATS, WARMUP, CONCURRENCY, SERVERS, ENDPOINTS,
BASE_PORT, WRK_CPU, PY, RAY_PY, FERROSERVE_BIN, BENCH_WORK. Exit status 1 if any run failed.
"""

import argparse
import datetime
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "python"))

import bench as pybench  # noqa: E402  (bench/python/bench.py)
from bench import log, warn, split, sh  # noqa: E402

# endpoint → (server, model in the URL, name of the answer's output, what it is)
ENDPOINTS = {
    "fs-py-echo": ("ferroserve", "echo", "output-0", "Python echo alone (1 replica)"),
    "fs-py-py": ("ferroserve", "compose-py", "output-0", "Python ingress → Python echo"),
    "fs-py-rust": ("ferroserve", "compose-rust", "input-0", "Python ingress → Rust identity"),
    "fs-identity": ("ferroserve", "identity", "input-0", "Rust identity alone"),
    "fs-graph1": ("ferroserve", "graph-1", "input-0", "graph: Sequence [identity]"),
    "fs-graph2": ("ferroserve", "graph-2", "input-0", "graph: Sequence [identity, identity]"),
    "kserve-compose": ("kserve", "compose", "output-0", "KServe: ingress calls echo in-process"),
    "ray-compose": ("ray", "compose", "output-0", "Ray Serve: ingress → echo via handle"),
    "ray-echo": ("ray", "ray-echo", "output-0", "Ray Serve: echo alone (HTTP deployment)"),
}
SERVER_ORDER = ("ferroserve", "kserve", "ray")


def ferroserve_config(cfg):
    py_echo = os.path.join(ROOT, "bench", "python", "models.py") + ":FerroEcho"
    ingress = os.path.join(HERE, "compose_models.py")
    env = f"runtime_env: {{py_executable: {cfg['py']}}}"
    text = f"""http_port: {cfg['port']}
grpc_port: {cfg['port'] + 1}
deployments:
  - name: echo
    python: {py_echo}
    {env}
  - name: compose-py
    python: {ingress}:FerroPyIngress
    {env}
  - name: compose-rust
    python: {ingress}:FerroRustIngress
    {env}
  - name: identity
    model: identity
graphs:
  - name: graph-1
    nodes:
      root:
        routerType: Sequence
        steps:
          - {{serviceName: identity}}
  - name: graph-2
    nodes:
      root:
        routerType: Sequence
        steps:
          - {{serviceName: identity}}
          - {{serviceName: identity, data: $response}}
"""
    path = os.path.join(cfg["work"], "ferroserve-compose.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def server_cmd(server, cfg):
    env = dict(os.environ)
    port = cfg["port"]
    if server == "ferroserve":
        return [cfg["ferroserve"], "serve", "--config", ferroserve_config(cfg)], env
    if server == "kserve":
        return [cfg["py"], os.path.join(HERE, "kserve_compose.py"), "--model_name", "compose",
                "--http_port", str(port), "--grpc_port", str(port + 1)], env
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.join(ROOT, "bench", "python"), env.get("PYTHONPATH", "")])
    return [cfg["ray_py"], os.path.join(HERE, "ray_server.py"), "--port", str(port)], env


def check_answer(port, model, output_name, body, expected):
    status, out = pybench.request(port, "POST", f"/v2/models/{model}/infer", body=body, timeout=30)
    if status != 200:
        raise RuntimeError(f"POST /v2/models/{model}/infer answered {status}: {out[:500]!r}")
    outputs = json.loads(out).get("outputs") or []
    data = outputs[0].get("data") if outputs else None
    if (not outputs or outputs[0].get("name") != output_name or data is None or len(data) != len(expected)
            or any(abs(float(a) - b) > 1e-6 for a, b in zip(data, expected))):
        raise RuntimeError(f"unexpected answer from {model}: {out[:500]!r}")


def new_log_lines(path, offset):
    """(WARN/ERROR lines of a ferroserve log after `offset`, new offset)."""
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
            return [l.rstrip() for l in text.splitlines() if " WARN " in l or " ERROR " in l], f.tell()
    except OSError:
        return [], offset


def run_server(cfg, server, endpoints, result):
    entry = {"server": server, "ok": False, "error": None, "startup_s": None, "memory": None,
             "endpoints": endpoints, "log_warnings": []}
    result["servers"].append(entry)
    port = cfg["port"]
    for p in (port, port + 1):
        for _ in range(100):
            if pybench.port_free(p):
                break
            time.sleep(0.1)
        else:
            entry["error"] = f"port {p} still in use"
            warn(f"{server}: {entry['error']}")
            return
    cmd, env = server_cmd(server, cfg)
    srv = pybench.Server(server, cmd, env, os.path.join(cfg["work"], f"{server}.log"), cfg["work"])
    log(f"{server}: starting ({' '.join(os.path.basename(c) for c in cmd[:3])} ...)")
    srv.start()
    offset = 0
    try:
        timeout = 240 if server == "ray" else 60
        models = [ENDPOINTS[e][1] for e in endpoints]
        entry["startup_s"] = srv.wait_ready(port, f"/v2/models/{models[0]}/ready", timeout)
        for m in models[1:]:
            srv.wait_ready(port, f"/v2/models/{m}/ready", timeout)
        log(f"{server}: ready after {entry['startup_s']:.2f} s")
        _, offset = new_log_lines(srv.log_path, 0)
        for e in endpoints:
            _, model, out_name, _ = ENDPOINTS[e]
            check_answer(port, model, out_name, cfg["body"], cfg["expected"])
            if cfg["warmup"] > 0:
                pybench.wrk(cfg, url_of(cfg, model), 8, cfg["warmup"])
        time.sleep(0.5)
        for r in range(1, cfg["repeats"] + 1):
            # Endpoint order flips every repeat (ABBA), so drift hits them alike.
            order = endpoints if r % 2 else list(reversed(endpoints))
            for e in order:
                model = ENDPOINTS[e][1]
                for c in cfg["concurrency"]:
                    run = pybench.measure(cfg, srv, url_of(cfg, model), c, r)
                    run["endpoint"] = e
                    if server == "ferroserve":
                        run["log_warnings"], offset = new_log_lines(srv.log_path, offset)
                        if run["log_warnings"]:
                            warn(f"{e} c={c} r{r}: ferroserve logged {len(run['log_warnings'])} "
                                 f"warning/error line(s), first: {run['log_warnings'][0]}")
                    result["runs"].append(run)
                    print(f"  {e:<16} c={c:<3} r{r}  {run['rps'] or 0:>9.0f} req/s  "
                          f"p50 {(run['p50_us'] or 0):8.0f} us  p99 {(run['p99_us'] or 0):8.0f} us  "
                          f"cpu {run['server_cpu_s'] / max(1, run['requests'] or 0) * 1e6:.0f} us/req  "
                          f"other {run['other_cpu_pct']:.0f}%", file=sys.stderr, flush=True)
                    if not run["ok"]:
                        warn(f"RUN FAILED: {e} c={c} r{r}: {'; '.join(run['problems'])}")
                        for line in run["raw"].splitlines():
                            warn(line)
                    if run["socket_errors"]:
                        warn(f"{e} c={c} r{r}: socket errors {run['socket_errors']}")
                    if not srv.alive():
                        raise RuntimeError(f"{server} died during the runs")
                    time.sleep(0.5)
        entry["ok"] = all(r["ok"] for r in result["runs"] if r["endpoint"] in endpoints)
    except Exception as ex:  # noqa: BLE001 - recorded, reported, and the bench goes on
        entry["error"] = str(ex)
        warn(f"{server}: {ex}")
        for line in srv.log_tail().splitlines():
            warn(line)
    finally:
        srv.stop()
        entry["memory"] = srv.sampler.summary() if srv.sampler else None
        entry["exit_status"] = srv.proc.returncode if srv.proc else None
    if server == "ferroserve":
        # Everything after readiness, including shutdown.
        with open(srv.log_path, errors="replace") as f:
            entry["log_warnings"] = [l.rstrip() for l in f if " WARN " in l or " ERROR " in l][:100]
    if cfg["keep_logs"]:
        entry["log_tail"] = srv.log_tail(200)


def url_of(cfg, model):
    return f"http://127.0.0.1:{cfg['port']}/v2/models/{model}/infer"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    e = os.environ
    cfg = {
        "duration": int(e.get("DURATION", "10")),
        "repeats": int(e.get("REPEATS", "3")),
        "warmup": int(e.get("WARMUP", "2")),
        "concurrency": [int(c) for c in split(e.get("CONCURRENCY", "1 8 64"))],
        "port": int(e.get("BASE_PORT", "18180")),
        "wrk_cpu": int(e.get("WRK_CPU", "1")),
        "py": e["PY"],
        "ray_py": e.get("RAY_PY") or None,
        "ferroserve": e["FERROSERVE_BIN"],
        "work": e["BENCH_WORK"],
        "keep_logs": e.get("KEEP_LOGS", "0") == "1",
    }
    wanted_servers = split(e.get("SERVERS")) or list(SERVER_ORDER)
    wanted_eps = split(e.get("ENDPOINTS")) or list(ENDPOINTS)
    for s in wanted_servers:
        if s not in SERVER_ORDER:
            sys.exit(f"SERVERS: unknown server {s!r} (known: {', '.join(SERVER_ORDER)})")
    for x in wanted_eps:
        if x not in ENDPOINTS:
            sys.exit(f"ENDPOINTS: unknown endpoint {x!r} (known: {', '.join(ENDPOINTS)})")
    if "ray" in wanted_servers and not cfg["ray_py"]:
        wanted_servers.remove("ray")
        if e.get("SERVERS"):
            warn("skipping ray: no Ray venv (set RAY=1)")

    # The request of bench/python: V2 JSON, one [1,16] FP32 input, the same values (seed 0).
    random.seed(0)
    data = [round(random.uniform(-1, 1), 6) for _ in range(16)]
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 16], "datatype": "FP32", "data": data}]},
                      separators=(",", ":"))
    cfg["body"], cfg["expected"] = body.encode(), data
    cfg["body_path"] = os.path.join(cfg["work"], "body.json")
    with open(cfg["body_path"], "wb") as f:
        f.write(cfg["body"])
    cfg["lua"] = os.path.join(cfg["work"], "post.lua")
    with open(cfg["lua"], "w") as f:
        f.write('local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))\n'
                'wrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
                'wrk.headers["Content-Type"] = "application/json"\n')

    plan = [(s, [x for x in ENDPOINTS if x in wanted_eps and ENDPOINTS[x][0] == s]) for s in SERVER_ORDER
            if s in wanted_servers]
    plan = [(s, eps) for s, eps in plan if eps]
    n_runs = sum(len(eps) for _, eps in plan) * len(cfg["concurrency"]) * cfg["repeats"]
    log(f"{n_runs} measured runs of {cfg['duration']} s: about "
        f"{(n_runs * (cfg['duration'] + 0.6) + 60 + (60 if 'ray' in wanted_servers else 0)) / 60:.0f} min")

    result = {
        "timestamp": datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "commit": sh("git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=12"),
        "machine": pybench.machine(),
        "settings": {k: cfg[k] for k in ("duration", "repeats", "warmup", "concurrency", "wrk_cpu", "port")}
        | {"plan": plan, "ray_max_ongoing_requests": int(e.get("BENCH_RAY_MAX_ONGOING", "100"))},
        "endpoints": {x: {"server": s, "model": m, "output": o, "what": w}
                      for x, (s, m, o, w) in ENDPOINTS.items()},
        "versions": {
            "kserve": sh(cfg["py"], "-c", "import importlib.metadata as m; print(m.version('kserve'))"),
            "python": sh(cfg["py"], "-c", "import sys; print(sys.version.split()[0])"),
            "ferroserve": sh(cfg["ferroserve"], "--version"),
            "wrk": sh("sh", "-c", "wrk -v 2>&1 | head -1"),
        },
        "servers": [],
        "runs": [],
    }
    if cfg["ray_py"]:
        result["versions"]["ray"] = sh(cfg["ray_py"], "-c", "import ray; print(ray.__version__)")
    for server, eps in plan:
        run_server(cfg, server, eps, result)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    failed = [s for s in result["servers"] if not s["ok"]]
    for s in failed:
        warn(f"FAILED: {s['server']}: {s['error'] or 'see the runs above'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
