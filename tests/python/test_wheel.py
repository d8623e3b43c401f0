"""The ferroserve wheel installed into a fresh venv is the whole story: `pip install <wheel>`
gives `import ferroserve`, the `ferroserve` command and `python -m ferroserve`, and the Python
examples run with no cargo and no FERROSERVE_BIN, on a PATH without the venv.

The wheel is $FERROSERVE_WHEEL (scripts/test.sh builds it with scripts/build-wheel.sh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _free_port, _stop, start_process

WHEEL = os.environ.get("FERROSERVE_WHEEL")
pytestmark = pytest.mark.skipif(not WHEEL, reason="FERROSERVE_WHEEL is not set (scripts/test.sh sets it)")
# No cargo, no target/, no venv on PATH: what a new user's shell has.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel (and its one dependency, numpy) installed by pip."""
    path = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(path / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", WHEEL],
        check=True,
        timeout=600,
    )
    return path


def bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FERROSERVE_BIN", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = BARE_PATH
    assert shutil.which("cargo", path=BARE_PATH) is None, "cargo is on the bare PATH"
    assert shutil.which("ferroserve", path=BARE_PATH) is None, "a ferroserve is on the bare PATH"
    return env


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_the_wheel_installs_the_package_and_the_command(venv):
    python = str(venv / "bin/python")
    where = subprocess.run(
        [python, "-c", "import ferroserve, ferroserve.server as s; print(ferroserve.__file__); print(s.find_binary())"],
        env=bare_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.split()
    assert where[0].startswith(str(venv)), where
    assert where[1] == str(venv / "bin/ferroserve"), where
    for command in ([str(venv / "bin/ferroserve"), "--version"], [python, "-m", "ferroserve", "--version"]):
        out = subprocess.run(command, env=bare_env(), capture_output=True, text=True, check=True, cwd="/")
        assert out.stdout.startswith("ferroserve "), out


def test_the_kserve_custom_model_example_runs_from_the_wheel(venv, tmp_path):
    port = _free_port()
    command = [
        str(venv / "bin/python"), str(REPO_ROOT / "examples/python/kserve_custom_model.py"),
        "--http_port", str(port), "--grpc_port", str(_free_port()),
    ]  # fmt: skip
    server = start_process(command, port, tmp_path, "wheel-kserve-example", env=bare_env())
    try:
        out = post(f"{server.url}/v1/models/iris-classifier:predict", {"instances": [[6.9, 3.1, 5.4, 2.1]]})
        assert out == {"predictions": [2]}
    finally:
        _stop(server)


def test_the_numpy_example_runs_as_a_model_dir_with_the_ferroserve_command(venv, tmp_path):
    """The `ferroserve` command of the wheel serves a Python file with the venv's Python (the
    one beside the binary) though `python3` on PATH is another interpreter without ferroserve."""
    port = _free_port()
    command = [
        str(venv / "bin/ferroserve"),
        "--model_name=affine", f"--model_dir={REPO_ROOT / 'examples/python/numpy_v2_model.py'}",
        f"--http_port={port}", f"--grpc_port={_free_port()}",
    ]  # fmt: skip
    server = start_process(command, port, tmp_path, "wheel-numpy-example", env=bare_env())
    try:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        out = post(f"{server.url}/v2/models/affine/infer", body)
        assert out["outputs"][0]["data"] == [3.0, 5.0]
    finally:
        _stop(server)
