"""Remote deployments: a deployment whose replicas are other V2 servers over gRPC.

On loopback (anywhere): requests spread over two ferroserve "pods", an endpoint that refuses
connections costs no request, and KServe's own Python server (the kserve package) serves
through a remote deployment, metadata included.

On a simulated cluster (the image in Docker, where FERROSERVE_IMAGE is set; CI sets it): three
model pods under one DNS name on a private network and an ingress pod in front; kill -9 of a
pod under load, a partition of a pod (network disconnect), and a fourth pod joining the DNS
answer, each while clients keep sending."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Server, _free_port, _stop, ferroserve_bin, start_process, wait_for

BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
).encode()


def infer(url: str, model: str, timeout: float = 10) -> dict:
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=BODY, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def served(url: str, model: str = "identity") -> int:
    """Requests a server's model has answered (Triton's statistics)."""
    with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=5) as r:
        return json.loads(r.read())["model_stats"][0]["inference_count"]


def serve_config(tmp_path: Path, label: str, config: str) -> Server:
    path = tmp_path / f"{label}.yaml"
    path.write_text(config)
    port = _free_port()
    command = [str(ferroserve_bin()), "serve", "--config", str(path), f"--http_port={port}", f"--grpc_port={_free_port()}"]
    return start_process(command, port, tmp_path, label)


def pod(tmp_path: Path, label: str) -> tuple[Server, int]:
    """A ferroserve serving the embedded example (identity among it), and its gRPC port."""
    port, grpc_port = _free_port(), _free_port()
    command = [str(ferroserve_bin()), "serve", f"--http_port={port}", f"--grpc_port={grpc_port}"]
    return start_process(command, port, tmp_path, label), grpc_port


def wait_until(what: str, check, timeout_s: float = 20) -> None:
    wait_for(check, what, timeout_s)


def test_requests_spread_over_endpoints_and_a_refusing_one_costs_none(tmp_path):
    (a, a_grpc), (b, b_grpc) = pod(tmp_path, "pod-a"), pod(tmp_path, "pod-b")
    dead = _free_port()  # nothing listens there
    ingress = serve_config(
        tmp_path,
        "ingress",
        "deployments:\n"
        "  - name: clf\n"
        f"    remote: {{endpoints: ['127.0.0.1:{a_grpc}', '127.0.0.1:{b_grpc}', '127.0.0.1:{dead}'], model: identity}}\n",
    )
    try:
        wait_until("two endpoints serve", lambda: _status_running(ingress) == 2)
        for _ in range(60):
            out = infer(ingress.url, "clf")
            assert out["model_name"] == "clf"
            assert out["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]
        assert served(a.url) > 5 and served(b.url) > 5, (served(a.url), served(b.url))
        with urllib.request.urlopen(f"{ingress.url}/v2/models/clf", timeout=5) as r:
            assert json.loads(r.read())["platform"] == "ferroserve_identity"
        # One endpoint goes away: requests sent after it left are retried or go elsewhere.
        _stop(b)
        failures = 0
        for _ in range(40):
            try:
                infer(ingress.url, "clf")
            except urllib.error.HTTPError:
                failures += 1
        assert failures == 0, f"{failures} requests failed after an endpoint closed; log:\n{ingress.log()}"
        log = ingress.log()
        assert f"127.0.0.1:{dead}" in log, "the refusing endpoint is named in the log"
    finally:
        for s in (ingress, a):
            _stop(s)


def _status_running(server: Server, name: str = "clf") -> int:
    return _status_running_url(server.url, name)


def test_kserves_python_server_serves_through_a_remote_deployment(tmp_path):
    port, grpc_port = _free_port(), _free_port()
    command = [
        sys.executable, str(REPO_ROOT / "tests/python/models/kserve_doubler.py"),
        f"--http_port={port}", f"--grpc_port={grpc_port}",
    ]  # fmt: skip
    kserve = start_process(command, port, tmp_path, "kserve-doubler")
    ingress = serve_config(
        tmp_path,
        "ingress-kserve",
        f"deployments:\n  - name: double\n    remote: {{endpoints: ['127.0.0.1:{grpc_port}'], model: doubler}}\n",
    )
    try:
        wait_until("the KServe endpoint serves", lambda: _status_running(ingress, "double") == 1)
        out = infer(ingress.url, "double")
        assert out["model_name"] == "double"
        assert out["outputs"][0]["name"] == "y"
        assert out["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
        with urllib.request.urlopen(f"{ingress.url}/v2/models/double", timeout=5) as r:
            meta = json.loads(r.read())
        assert meta["name"] == "double"
    finally:
        _stop(ingress)
        kserve.proc.terminate()
        kserve.proc.wait(timeout=20)


def post_v1(url: str, model: str, body: dict) -> dict:
    req = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_a_remote_over_http_forwards_v2_binary_and_v1_and_grpc_refuses_v1(tmp_path):
    a, a_grpc = pod(tmp_path, "pod-http")
    ingress = serve_config(
        tmp_path,
        "ingress-http",
        "deployments:\n"
        f"  - {{name: clf, remote: {{endpoints: ['127.0.0.1:{a.port}'], model: identity, protocol: http}}}}\n"
        f"  - {{name: flowers, remote: {{endpoints: ['127.0.0.1:{a.port}'], model: iris, protocol: http}}}}\n"
        f"  - {{name: flowers-grpc, remote: {{endpoints: ['127.0.0.1:{a_grpc}'], model: iris}}}}\n",
    )
    try:
        wait_until("the endpoints serve", lambda: all(_status_running(ingress, n) == 1 for n in ("clf", "flowers", "flowers-grpc")))
        out = infer(ingress.url, "clf")
        assert out["model_name"] == "clf" and out["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]
        assert post_v1(ingress.url, "flowers", {"instances": [[6.9, 3.1, 5.4, 2.1]]}) == {"predictions": [2]}
        with pytest.raises(urllib.error.HTTPError) as e:
            post_v1(ingress.url, "flowers-grpc", {"instances": [[6.9, 3.1, 5.4, 2.1]]})
        assert e.value.code == 400 and "protocol: http" in e.value.read().decode()
        # Bad input is the remote's 400, named by endpoint.
        with pytest.raises(urllib.error.HTTPError) as e:
            post_v1(ingress.url, "flowers", {"instances": [[1.0]]})
        assert e.value.code == 400 and f"127.0.0.1:{a.port}" in e.value.read().decode()
    finally:
        _stop(ingress)
        _stop(a)


def test_a_graph_spans_pods_through_remote_deployments(tmp_path):
    """KServe's InferenceGraph over two remote deployments (each on its own pod): a Sequence
    whose steps run on different servers, no HTTP of the user's in between."""
    (a, a_grpc), (b, b_grpc) = pod(tmp_path, "pod-g1"), pod(tmp_path, "pod-g2")
    ingress = serve_config(
        tmp_path,
        "ingress-graph",
        "deployments:\n"
        f"  - {{name: first, exposed: false, remote: {{endpoints: ['127.0.0.1:{a_grpc}'], model: identity}}}}\n"
        f"  - {{name: second, exposed: false, remote: {{endpoints: ['127.0.0.1:{b_grpc}'], model: identity}}}}\n"
        "graphs:\n"
        "  - name: pipeline\n"
        "    nodes:\n"
        "      root:\n"
        "        routerType: Sequence\n"
        "        steps:\n"
        "          - {name: one, serviceName: first}\n"
        "          - {name: two, serviceName: second, data: $response}\n",
    )
    try:
        wait_until("both remotes serve", lambda: _status_running(ingress, "first") == 1 and _status_running(ingress, "second") == 1)
        before = (served(a.url), served(b.url))
        out = infer(ingress.url, "pipeline")
        assert out["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]
        assert (served(a.url), served(b.url)) == (before[0] + 1, before[1] + 1), "each step ran on its own pod"
    finally:
        for s in (ingress, a, b):
            _stop(s)


def test_remote_config_errors_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    for remote, expected in (
        ("{endpoints: [], model: m}", "at least one host:port"),
        ("{endpoints: ['no-port'], model: m}", "must be host:port"),
        ("{endpoints: ['a:1'], dns: 'b:1'}", "set one of 'endpoints'"),
        ("{dns: 'pods:8081', protocol: carrier-pigeon}", "must be grpc or http"),
        ("{dns: 'pods:8081', endpoint: 'x:1'}", "unknown field"),
    ):
        path.write_text(f"deployments:\n  - name: r\n    remote: {remote}\n")
        out = subprocess.run(
            [str(ferroserve_bin()), "serve", "--config", str(path)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode != 0
        assert expected in out.stderr and "remote" in out.stderr, out.stderr


# The simulated cluster: the image's containers on a private Docker network.

IMAGE = os.environ.get("FERROSERVE_IMAGE")
needs_docker = pytest.mark.skipif(not IMAGE, reason="FERROSERVE_IMAGE is not set: no image to run pods from (scripts/test.sh builds it)")


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr}")
    return out.stdout.strip()


class Cluster:
    """A private network, model pods under the DNS name `pods`, and an ingress pod."""

    def __init__(self, tag: str, tmp_path: Path):
        self.tag = tag
        self.id = uuid.uuid4().hex[:8]
        self.network = f"ferroserve-test-{self.id}"
        self.containers: list[str] = []
        docker("network", "create", self.network)
        self.pods = [self.add_pod(i) for i in range(3)]
        config = tmp_path / "ingress.yaml"
        config.write_text(
            "deployments:\n"
            "  - name: clf\n"
            "    remote: {dns: 'pods:8081', model: identity, dns_refresh_s: 0.5, health_period_s: 0.5}\n"
            "    max_ongoing_requests: 8\n"
            "    request_timeout_s: 2\n"
        )
        config.chmod(0o644)
        self.ingress = self.run("ingress", ["-v", f"{config}:/etc/ferroserve.yaml:ro"], ["--config", "/etc/ferroserve.yaml"])
        self.url = self.http_url(self.ingress)

    def run(self, role: str, extra: list[str], args: list[str]) -> str:
        name = f"{self.network}-{role}"
        docker("run", "-d", "--name", name, "--network", self.network, "-p", "127.0.0.1::8080", *extra, self.tag, *args)
        self.containers.append(name)
        return name

    def add_pod(self, i: int) -> str:
        return self.run(f"pod{i}", ["--network-alias", "pods"], [])

    def http_url(self, container: str) -> str:
        return "http://" + docker("port", container, "8080/tcp").splitlines()[0]

    def served(self, container: str) -> int:
        try:
            return served(self.http_url(container))
        except (urllib.error.URLError, OSError, AssertionError):
            return -1

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.ingress], capture_output=True, text=True)
        return out.stdout + out.stderr

    def remove(self) -> None:
        for c in self.containers:
            docker("rm", "-f", c, check=False)
        docker("network", "rm", self.network, check=False)


class Load:
    """Clients sending to the ingress until stopped; each result with its latency."""

    def __init__(self, url: str, clients: int = 8):
        self.url = url
        self.results: list[tuple[float, float, bool]] = []  # (start, latency, ok)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def client(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            try:
                infer(self.url, "clf", timeout=10)
                ok = True
            except (urllib.error.URLError, OSError):
                ok = False
            self.results.append((start, time.monotonic() - start, ok))

    def stop(self) -> list[tuple[float, float, bool]]:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)
        return self.results


@pytest.fixture
def cluster(tmp_path):
    tag = docker("load", "-i", str(Path(IMAGE).with_name("ferroserve.docker.tar")), timeout=300).split("Loaded image: ")[-1]
    c = Cluster(tag, tmp_path)
    try:
        wait_until("the ingress serves clf", lambda: _ready_model(c.url), timeout_s=60)
        wait_until("three endpoints in rotation", lambda: _status_running_url(c.url) == 3, timeout_s=30)
        yield c
    finally:
        c.remove()


def _ready_model(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/clf/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _status_running_url(url: str, name: str = "clf") -> int:
    """Running replicas of deployment `name` in the server's status (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"{url}/-/status", timeout=5) as r:
            for d in json.loads(r.read())["deployments"]:
                if d["name"] == name:
                    return sum(1 for rep in d["replicas"] if rep["state"] == "running")
    except (urllib.error.URLError, OSError):
        pass
    return 0


@needs_docker
def test_a_pod_killed_under_load_costs_only_its_requests_and_comes_back(cluster):
    for _ in range(60):
        infer(cluster.url, "clf")
    assert all(cluster.served(p) > 0 for p in cluster.pods), [cluster.served(p) for p in cluster.pods]
    load = Load(cluster.url)
    time.sleep(1)
    killed_at = time.monotonic()
    docker("kill", "--signal", "KILL", cluster.pods[0])
    time.sleep(3)
    results = load.stop()
    failed = [r for r in results if not r[2]]
    # Only requests in flight on the killed pod may fail: at most its max_ongoing_requests.
    assert len(failed) <= 8, f"{len(failed)} of {len(results)} failed; log:\n{cluster.logs()}"
    after = [r for r in results if r[0] > killed_at + 1.5]
    assert after and all(r[2] for r in after), "requests after the kill go to the other pods"
    docker("start", cluster.pods[0])
    before = cluster.served(cluster.pods[0])
    deadline = time.monotonic() + 20
    while cluster.served(cluster.pods[0]) <= max(before, 0):
        assert time.monotonic() < deadline, f"the restarted pod got no traffic; log:\n{cluster.logs()}"
        infer(cluster.url, "clf")


@needs_docker
def test_a_partitioned_pod_is_ejected_within_deadlines_and_returns(cluster):
    load = Load(cluster.url)
    time.sleep(1)
    docker("network", "disconnect", cluster.network, cluster.pods[1])
    time.sleep(4)
    results = load.stop()
    slowest = max(r[1] for r in results)
    assert slowest < 2.5, f"a request waited {slowest:.2f} s, past the 2 s deadline"
    failed = [r for r in results if not r[2]]
    # Only requests in flight to the cut-off pod may fail (at its deadline): at most its
    # max_ongoing_requests.
    assert len(failed) <= 8, f"{len(failed)} of {len(results)} failed; log:\n{cluster.logs()}"
    late = [r for r in results if r[0] > results[0][0] + 3]
    assert late and all(r[2] for r in late), "once ejected, the partitioned pod gets no request"
    docker("network", "connect", "--alias", "pods", cluster.network, cluster.pods[1])
    before = cluster.served(cluster.pods[1])
    deadline = time.monotonic() + 20
    while cluster.served(cluster.pods[1]) <= before:
        assert time.monotonic() < deadline, f"the reconnected pod got no traffic; log:\n{cluster.logs()}"
        infer(cluster.url, "clf")


@needs_docker
def test_a_fourth_pod_in_the_dns_answer_gets_traffic_without_a_restart(cluster):
    fourth = cluster.add_pod(3)
    wait_until("four endpoints in rotation", lambda: _status_running_url(cluster.url) == 4, timeout_s=30)
    deadline = time.monotonic() + 20
    while cluster.served(fourth) <= 0:
        assert time.monotonic() < deadline, f"the fourth pod got no traffic; log:\n{cluster.logs()}"
        infer(cluster.url, "clf")
