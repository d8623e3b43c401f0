"""KServe's container contract: the arguments KServe's controller passes (`--model_name`,
`--model_dir`, `--http_port`, `--grpc_port`, `=` and space forms), KServe flags that do not
apply (warned, not fatal), flags only meaning `serve`, `python -m ferroserve`, `--host`, and
`ModelServer().start` reading them from `sys.argv`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Server, _free_port, _stop, ferroserve_bin, start_process

EXAMPLE = REPO_ROOT / "examples/python/numpy_v2_model.py"


def infer_affine(server: Server, model: str) -> list[float]:
    """`y = 2x + 1` of the example through V2 JSON."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    req = urllib.request.Request(
        f"{server.url}/v2/models/{model}/infer", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        outputs = {o["name"]: o for o in json.loads(r.read())["outputs"]}
    return outputs["y"]["data"]


def model_dir_with_example(tmp_path: Path) -> Path:
    """A directory as KServe's storage initializer leaves it: the model file in /mnt/models."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(EXAMPLE, models / "model.py")
    return models


def serve(tmp_path: Path, label: str, *args: str, port: int | None = None) -> Server:
    port = port or _free_port()
    return start_process([str(ferroserve_bin()), *args], port, tmp_path, label)


def test_kserve_arguments_in_equals_form_serve_the_model_dir(tmp_path):
    models = model_dir_with_example(tmp_path)
    port, grpc_port = _free_port(), _free_port()
    server = serve(
        tmp_path,
        "equals",
        "serve",
        "--model_name=affine",
        f"--model_dir={models}",
        f"--http_port={port}",
        f"--grpc_port={grpc_port}",
        "--workers=2",
        "--max_threads=4",
        "--enable_predictor_health_check",
        port=port,
    )
    try:
        assert infer_affine(server, "affine") == [3.0, 5.0]
        socket.create_connection(("127.0.0.1", grpc_port), timeout=5).close()
    finally:
        _stop(server)
    log = server.log()
    assert "ignoring KServe model-server flags" in log, log
    assert "--workers=2 --max_threads=4 --enable_predictor_health_check" in log, log


def test_kserve_arguments_in_space_form_without_serve_through_python_m(tmp_path):
    """How KServe's runtimes start a server: flags only, `python -m <server>`; the model file
    given as the directory's only .py file."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(EXAMPLE, models / "affine_model.py")
    port = _free_port()
    command = [
        sys.executable, "-m", "ferroserve",
        "--model_name", "affine",
        "--model_dir", str(models),
        "--http_port", str(port),
        "--grpc_port", str(_free_port()),
        "--workers", "1",
    ]  # fmt: skip
    server = start_process(command, port, tmp_path, "python-m", env={"FERROSERVE_BIN": str(ferroserve_bin())})
    try:
        assert infer_affine(server, "affine") == [3.0, 5.0]
    finally:
        _stop(server)
    assert "--workers 1" in server.log()


def test_model_dir_of_several_models_is_a_repository(tmp_path):
    repo = tmp_path / "repo"
    for name in ("first", "second"):
        (repo / name).mkdir(parents=True)
        shutil.copy(EXAMPLE, repo / name / "model.py")
    port = _free_port()
    server = serve(
        tmp_path, "repo", "--model_name=ignored", f"--model_dir={repo}", f"--http_port={port}", "--enable_grpc=false", port=port
    )
    try:
        assert infer_affine(server, "first") == [3.0, 5.0]
        assert infer_affine(server, "second") == [3.0, 5.0]
        with pytest.raises(urllib.error.HTTPError) as e:
            infer_affine(server, "ignored")
        assert e.value.code == 404
    finally:
        _stop(server)
    assert "--model_name is ignored" in server.log()


def test_a_model_dir_without_a_model_fails_naming_what_it_expects(tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run(
        [str(ferroserve_bin()), f"--model_dir={tmp_path / 'empty'}", "--http_port=0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "no model in it" in out.stderr and "model.py" in out.stderr, out.stderr


def test_unknown_flags_that_are_not_kserves_still_fail(tmp_path):
    out = subprocess.run(
        [str(ferroserve_bin()), "serve", "--no-such-flag"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert "--no-such-flag" in out.stderr


def outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: it only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_host_binds_loopback_only(tmp_path):
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    port = _free_port()
    server = serve(tmp_path, "loopback", "serve", "--bind", "127.0.0.1", f"--http_port={port}", port=port)
    try:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
    finally:
        _stop(server)
    # The default listens on all interfaces, so the same address reaches it.
    port = _free_port()
    server = serve(tmp_path, "all", "serve", f"--http_port={port}", f"--grpc_port={_free_port()}", port=port)
    try:
        socket.create_connection((address, port), timeout=2).close()
    finally:
        _stop(server)


def test_model_server_start_reads_kserve_flags_from_argv(tmp_path):
    """The example script run as KServe runs a custom model's container: its flags in `=` form,
    one KServe flag that does not apply, and ferroserve's `--host`."""
    port, grpc_port = _free_port(), _free_port()
    command = [
        sys.executable, str(EXAMPLE),
        f"--http_port={port}", "--grpc_port", str(grpc_port),
        "--workers=1", "--enable_grpc", "false", "--host=127.0.0.1",
    ]  # fmt: skip
    server = start_process(command, port, tmp_path, "script", env={"FERROSERVE_BIN": str(ferroserve_bin())})
    try:
        assert infer_affine(server, "AffineModel") == [3.0, 5.0]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", grpc_port), timeout=2).close()
    finally:
        _stop(server)
