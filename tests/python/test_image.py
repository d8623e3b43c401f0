"""The container image (deploy/image/build.sh): its archives pass skopeo's inspection with the
configuration KServe needs, and Docker runs it as a container that serves a Python example and
an ONNX model repository from /mnt/models to a client outside it, then stops on SIGTERM with
exit code 0. Its PID 1 reaps orphaned processes, so none is left a zombie.

The image is $FERROSERVE_IMAGE, the OCI archive (scripts/test.sh builds it); the Docker
archive beside it is what `docker load` takes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import onnx_models
from conftest import REPO_ROOT

IMAGE = os.environ.get("FERROSERVE_IMAGE")
pytestmark = pytest.mark.skipif(not IMAGE, reason="FERROSERVE_IMAGE is not set (scripts/test.sh sets it)")


def run(*command: str, timeout: float = 120) -> str:
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(command)} failed ({out.returncode}):\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def tag() -> str:
    """The image, loaded into the Docker Engine."""
    docker_archive = Path(IMAGE).with_name("ferroserve.docker.tar")
    out = run("docker", "load", "-i", str(docker_archive), timeout=300)
    loaded = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Loaded image: ")]
    assert loaded, out
    return loaded[0]


def test_the_archives_pass_skopeos_inspection_with_the_contract(tag):
    for transport in (f"oci-archive:{IMAGE}", f"docker-archive:{Path(IMAGE).with_name('ferroserve.docker.tar')}"):
        config = json.loads(run("skopeo", "inspect", "--config", transport))
        assert config["os"] == "linux" and config["architecture"] == "amd64"
        c = config["config"]
        assert c["Entrypoint"] == ["tini", "--", "ferroserve", "serve"]
        assert c["User"] == "1000:1000", "the image runs as a user, not root"
        assert set(c["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
        assert any(e.startswith("ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so") for e in c["Env"])
        manifest = json.loads(run("skopeo", "inspect", transport))
        assert manifest["Layers"], manifest
    assert tag.startswith("ferroserve:")


class Container:
    """A running container of the image, its HTTP port published on loopback, as the manifests
    in deploy/kubernetes run it: a read-only root filesystem and a writable /tmp."""

    def __init__(self, tag: str, mounts: dict[Path, str], args: list[str]):
        self.name = f"ferroserve-test-{uuid.uuid4().hex[:8]}"
        volumes = [a for host, inside in mounts.items() for a in ("-v", f"{host}:{inside}:ro")]
        run(
            "docker", "run", "-d", "--name", self.name, "-p", "127.0.0.1::8080",
            "--read-only", "--tmpfs", "/tmp", *volumes, tag, *args,
        )  # fmt: skip
        address = run("docker", "port", self.name, "8080/tcp").splitlines()[0].strip()
        self.url = f"http://{address}"

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def wait_ready(self, path: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            state = run("docker", "inspect", "-f", "{{.State.Status}}", self.name).strip()
            assert state == "running", f"the container is {state}; logs:\n{self.logs()}"
            time.sleep(0.1)
        pytest.fail(f"{path} was not ready in {timeout_s} s; logs:\n{self.logs()}")

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def exec_python(self, code: str) -> str:
        """Runs Python code in the container (as its user) and returns what it printed."""
        return run("docker", "exec", self.name, "python3", "-c", code)

    def stop(self) -> int:
        """SIGTERM (docker stop), and the exit code."""
        run("docker", "stop", "-t", "20", self.name, timeout=60)
        return int(run("docker", "inspect", "-f", "{{.State.ExitCode}}", self.name).strip())

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def test_a_python_example_serves_from_the_container_and_stops_gracefully(tag):
    example = REPO_ROOT / "examples/python/numpy_v2_model.py"
    container = Container(tag, {example: "/mnt/models/model.py"}, ["--model_name=affine", "--model_dir=/mnt/models"])
    try:
        container.wait_ready("/v2/models/affine/ready")
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        assert container.post("/v2/models/affine/infer", body)["outputs"][0]["data"] == [3.0, 5.0]
        assert container.stop() == 0, container.logs()
        assert "ferroserve stopped" in container.logs()
    finally:
        container.remove()


def test_an_onnx_repository_serves_from_the_container(tag, tmp_path):
    repo = tmp_path / "models"
    onnx_models.save(onnx_models.add_constant(5), repo, "add_five")
    onnx_models.save(onnx_models.simple(), repo, "simple")
    # The container's user (uid 1000) reads what the storage initializer left.
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    container = Container(tag, {repo: "/mnt/models"}, ["--model_dir", "/mnt/models"])
    try:
        container.wait_ready("/v2/models/add_five/ready")
        body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
        assert container.post("/v2/models/add_five/infer", body)["outputs"][0]["data"] == [6, 7, 8, 9]
        index = container.post("/v2/repository/index", {})
        assert {m["name"] for m in index} == {"add_five", "simple"}
        assert container.stop() == 0, container.logs()
    finally:
        container.remove()


# Forks a child that outlives its parent by a moment: the child is orphaned, handed to the
# container's PID 1, and left a zombie when it exits unless PID 1 reaps it. This is what a
# model's subprocesses become when their worker is killed.
ORPHAN = "import os, time\nif os.fork() == 0:\n    time.sleep(0.3)\nos._exit(0)\n"

ZOMBIES = """
import os
zombies = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        zombies.append(stat.split(")")[0] + ")")
print(zombies)
"""


def test_orphaned_processes_are_reaped_not_left_as_zombies(tag):
    example = REPO_ROOT / "examples/python/numpy_v2_model.py"
    container = Container(tag, {example: "/mnt/models/model.py"}, ["--model_name=affine", "--model_dir=/mnt/models"])
    try:
        container.wait_ready("/v2/models/affine/ready")
        for _ in range(3):
            container.exec_python(ORPHAN)
        time.sleep(1.5)
        assert container.exec_python(ZOMBIES).strip() == "[]", container.logs()
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
        assert container.post("/v2/models/affine/infer", body)["outputs"][0]["data"] == [3.0, 5.0]
        assert container.stop() == 0, container.logs()
    finally:
        container.remove()
