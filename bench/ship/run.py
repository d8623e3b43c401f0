"""What shipping costs: the wheel's size and its `pip install` time into a fresh venv, the
image's size, and a container's time from `docker run` to ready (the model's ready route
answering 200), each the median of several runs.

    scripts/build-wheel.sh && deploy/image/build.sh     # first
    python3 bench/ship/run.py [--runs 5]

Needs the Docker Engine and the image's archives in target/image/. pip installs numpy (the
wheel's one dependency) from its cache or the registry, so the first run may be slower: it is
run once before the timed runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def pip_install_seconds(wheel: str, deps: bool) -> float:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "venv", f"{d}/venv"], check=True)
        pip = [f"{d}/venv/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        start = time.perf_counter()
        subprocess.run([*pip, *([] if deps else ["--no-deps"]), wheel], check=True)
        return time.perf_counter() - start


def ready_seconds(tag: str, args: list[str], volumes: list[str], path: str) -> float:
    """From `docker run` to `path` answering 200 on the published port."""
    name = f"ferroserve-bench-{os.getpid()}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    start = time.perf_counter()
    run("docker", "run", "-d", "--name", name, "-p", "127.0.0.1:18980:8080", *volumes, tag, *args)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:18980{path}", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() - start > 60:
                raise SystemExit(f"not ready in 60 s: {run('docker', 'logs', name)}")
            time.sleep(0.005)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    (wheel,) = glob.glob(str(ROOT / "target/wheels/ferroserve-*.whl"))
    image_dir = ROOT / "target/image"
    tag = run("docker", "load", "-i", str(image_dir / "ferroserve.docker.tar")).split("Loaded image: ")[-1].strip()
    rows = []
    rows.append(("wheel", f"{os.path.getsize(wheel) / MIB:.1f} MiB", Path(wheel).name))
    pip_install_seconds(wheel, deps=True)  # fills pip's cache with numpy
    for deps in (False, True):
        times = [pip_install_seconds(wheel, deps) for _ in range(runs)]
        what = "pip install (with numpy)" if deps else "pip install --no-deps"
        rows.append((what, f"{statistics.median(times):.2f} s", f"median of {runs}, fresh venv each"))
    size = int(run("docker", "image", "inspect", "-f", "{{.Size}}", tag))
    rows.append(("image", f"{size / MIB:.0f} MiB", f"{tag}, as `docker image inspect` counts it"))
    for archive in ("ferroserve.oci.tar", "ferroserve.docker.tar"):
        rows.append((archive, f"{os.path.getsize(image_dir / archive) / MIB:.0f} MiB", "archive file"))
    example = ROOT / "examples/python/numpy_v2_model.py"
    cases = [
        ("start → ready, embedded example (Rust)", [], [], "/v2/models/iris/ready"),
        (
            "start → ready, Python model (numpy)",
            ["--model_name=affine", "--model_dir=/mnt/models"],
            ["-v", f"{example}:/mnt/models/model.py:ro"],
            "/v2/models/affine/ready",
        ),
    ]
    onnx_dir = Path(tempfile.mkdtemp())
    try:
        sys.path.insert(0, str(ROOT / "tests/python"))
        try:
            import onnx_models

            onnx_models.save(onnx_models.add_constant(5), onnx_dir, "add")
            os.chmod(onnx_dir, 0o755)
            cases.append(
                (
                    "start → ready, ONNX model",
                    ["--model_name=add", "--model_dir=/mnt/models/add"],
                    ["-v", f"{onnx_dir}:/mnt/models:ro"],
                    "/v2/models/add/ready",
                )
            )
        except ImportError:
            print("(onnx is not installed: no ONNX case)", file=sys.stderr)
        for what, args, volumes, path in cases:
            ready_seconds(tag, args, volumes, path)  # warm the page cache
            times = [ready_seconds(tag, args, volumes, path) for _ in range(runs)]
            rows.append((what, f"{statistics.median(times) * 1000:.0f} ms", f"median of {runs}; min {min(times) * 1000:.0f} ms"))
    finally:
        shutil.rmtree(onnx_dir, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure:>9}  {note}")
    print(json.dumps({r[0]: r[1] for r in rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
