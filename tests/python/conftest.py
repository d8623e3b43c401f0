"""Fixtures that run the real ferroserve binary for the end-to-end tests.

The binary comes from $FERROSERVE_BIN, else from the installed ferroserve wheel (the test venv
has it: scripts/test.sh builds and installs it).
Each server runs for the whole session on a free port of 127.0.0.1; at the end it gets SIGTERM
and must exit with code 0 (graceful shutdown).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 15.0


def ferroserve_bin() -> Path:
    raw = os.environ.get("FERROSERVE_BIN")
    if not raw:
        from ferroserve.server import find_binary

        try:
            raw = find_binary()
        except FileNotFoundError as e:
            pytest.exit(f"{e} (scripts/test.sh builds and installs the wheel)", returncode=2)
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


@dataclass
class Server:
    """A running ferroserve process."""

    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path
    grpc_port: int = 0

    @property
    def host_port(self) -> str:
        """`host:port`, as tritonclient wants it."""
        return f"{self.host}:{self.port}"

    @property
    def grpc_host_port(self) -> str:
        """`host:grpc_port`, as tritonclient.grpc wants it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def url(self) -> str:
        """`http://host:port`, as kserve and raw HTTP want it."""
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"


def onnxruntime_library() -> str:
    """The libonnxruntime of the test venv's onnxruntime package: the servers' ONNX Runtime."""
    import onnxruntime

    libs = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    assert libs, f"no libonnxruntime.so* beside {onnxruntime.__file__}"
    return str(libs[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start(extra_args: list[str], tmp_dir: Path, label: str) -> Server:
    binary = ferroserve_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.exit(
            f"ferroserve binary not found or not executable at {binary}: install the wheel "
            "(scripts/build-wheel.sh) or point FERROSERVE_BIN at a binary",
            returncode=2,
        )
    # The port is free now but another process could take it before the server binds it:
    # try a few ports before giving up.
    last_log = ""
    for _attempt in range(3):
        port = _free_port()
        grpc_port = _free_port()
        log_path = tmp_dir / f"ferroserve-{label}-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(binary), "serve", "--http-port", str(port), "--grpc-port", str(grpc_port), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "NO_COLOR": "1", "ORT_DYLIB_PATH": onnxruntime_library()},
        )
        log.close()
        server = Server(proc=proc, host="127.0.0.1", port=port, log_path=log_path, grpc_port=grpc_port)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _ready(server.url):
                return server
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(
                f"ferroserve ({label}) was not ready within {READY_TIMEOUT_S}s on port {port}; "
                f"log:\n{server.log()}"
            )
        last_log = server.log()
        if "cannot listen" not in last_log:
            break
    pytest.fail(f"ferroserve ({label}) exited before it was ready; log:\n{last_log}")


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    """Polls `condition` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def start_process(
    command: list[str], port: int, tmp_dir: Path, label: str, env: dict | None = None, timeout_s: float = 30
) -> Server:
    """Runs `command` (which serves HTTP on 127.0.0.1:`port`) and waits until it is ready."""
    log_path = tmp_dir / f"{label}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
    server = Server(proc=proc, host="127.0.0.1", port=port, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{label} exited with {proc.returncode}; log:\n{server.log()}")
        if _ready(server.url):
            return server
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"{label} was not ready in {timeout_s} s; log:\n{server.log()}")


def _stop(server: Server) -> None:
    proc = server.proc
    assert proc.poll() is None, (
        f"ferroserve died during the tests with code {proc.returncode}; log:\n{server.log()}"
    )
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"ferroserve did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGTERM; log:\n{server.log()}"
        )
    assert code == 0, f"ferroserve exited with {code} after SIGTERM; log:\n{server.log()}"


@pytest.fixture(scope="session")
def _log_dir():
    with tempfile.TemporaryDirectory(prefix="ferroserve-e2e-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def server(_log_dir) -> Server:
    """The default server: models `identity` and `iris`."""
    s = _start([], _log_dir, "default")
    try:
        yield s
    finally:
        _stop(s)


@pytest.fixture(scope="session")
def small_server(_log_dir) -> Server:
    """A server whose request bodies are limited to 1024 bytes."""
    s = _start(["--max-request-bytes", "1024"], _log_dir, "small")
    try:
        yield s
    finally:
        _stop(s)


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def host_port(server) -> str:
    return server.host_port


@pytest.fixture
def triton(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.host_port, network_timeout=30)
    try:
        yield client
    finally:
        client.close()
