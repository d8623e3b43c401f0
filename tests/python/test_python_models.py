"""Python models served as worker processes: both examples through tritonclient and the kserve
client, a class subclassing the real kserve.Model, and ModelServer.start's three input forms."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import REPO_ROOT, Server, _free_port, _ready, _stop, ferroserve_bin, start_process

_argv, sys.argv = sys.argv, sys.argv[:1]
try:  # kserve parses sys.argv on import: hide pytest's arguments
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
finally:
    sys.argv = _argv

import ferroserve
from ferroserve import serve
from ferroserve.server import deployments_of

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]


def start_script(script: Path, tmp_path: Path) -> Server:
    """Runs `python script --http_port N` (which execs ferroserve) and waits until ready."""
    port = _free_port()
    command = [sys.executable, str(script), "--http_port", str(port), "--grpc_port", str(_free_port())]
    return start_process(command, port, tmp_path, script.stem, env={"FERROSERVE_BIN": str(ferroserve_bin())})


def get_json(server: Server, path: str):
    with urllib.request.urlopen(server.url + path, timeout=10) as r:
        return json.loads(r.read())


def post_json(server: Server, path: str, body):
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def running_replicas(server: Server, name: str) -> int:
    for d in get_json(server, "/-/status")["deployments"]:
        if d["name"] == name:
            return sum(1 for r in d["replicas"] if r["state"] == "running")
    return 0


def wait_replicas(server: Server, name: str, n: int):
    deadline = time.monotonic() + 20
    while running_replicas(server, name) != n:
        assert time.monotonic() < deadline, f"{name} never had {n} running replicas"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def kserve_example(tmp_path_factory):
    server = start_script(REPO_ROOT / "examples/python/kserve_custom_model.py", tmp_path_factory.mktemp("ex"))
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def numpy_example(tmp_path_factory):
    server = start_script(REPO_ROOT / "examples/python/numpy_v2_model.py", tmp_path_factory.mktemp("ex"))
    yield server
    _stop(server)


def test_kserve_example_answers_v1_with_two_replicas(kserve_example):
    wait_replicas(kserve_example, "iris-classifier", 2)
    assert post_json(kserve_example, "/v1/models/iris-classifier:predict", {"instances": IRIS_ROWS}) == {
        "predictions": [0, 1, 2]
    }

    async def with_kserve_client():
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as client:
            assert await client.is_model_ready(kserve_example.url, "iris-classifier")
            return await client.infer(kserve_example.url, {"instances": IRIS_ROWS}, model_name="iris-classifier")

    assert asyncio.run(with_kserve_client()) == {"predictions": [0, 1, 2]}


def test_kserve_example_is_usable_from_tritonclient_v2_metadata(kserve_example):
    client = httpclient.InferenceServerClient(kserve_example.host_port)
    assert client.is_model_ready("iris-classifier")
    assert client.get_model_metadata("iris-classifier")["platform"] == "python"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_numpy_example_through_tritonclient(numpy_example, binary):
    wait_replicas(numpy_example, "AffineModel", 2)
    client = httpclient.InferenceServerClient(numpy_example.host_port)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "row_sum")]
    result = client.infer("AffineModel", [inp], outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2 + 1)
    np.testing.assert_allclose(result.as_numpy("row_sum"), x.astype(np.float64).sum(axis=1))
    assert result.get_response()["id"] == "r1"
    meta = client.get_model_metadata("AffineModel")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]


def test_numpy_example_through_the_kserve_client(numpy_example):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)

    async def main():
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
            inp = InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return await client.infer(numpy_example.url, InferRequest("AffineModel", [inp]), model_name="AffineModel")

    response = asyncio.run(main())
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    np.testing.assert_array_equal(outputs["y"], x * 2 + 1)
    np.testing.assert_allclose(outputs["row_sum"], [3.0, 7.0])


def test_numpy_example_rejects_a_missing_input_with_400(numpy_example):
    client = httpclient.InferenceServerClient(numpy_example.host_port)
    inp = httpclient.InferInput("z", [1], "FP32")
    inp.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    with pytest.raises(httpclient.InferenceServerException) as info:
        client.infer("AffineModel", [inp])
    assert info.value.status() == "400"
    assert "expected an FP32 input named 'x'" in info.value.message()


def test_a_subclass_of_the_real_kserve_model_is_served(tmp_path):
    server = start_script(REPO_ROOT / "tests/python/models/kserve_subclass.py", tmp_path)
    try:
        wait_replicas(server, "doubler", 2)
        pids = set()
        for _ in range(20):
            answer = post_json(server, "/v1/models/doubler:predict", {"instances": [1, 2.5]})
            assert answer["predictions"] == [2, 5.0]
            pids.add(answer["pid"])
        assert len(pids) == 2, "both replicas served"
    finally:
        _stop(server)


class Plain(ferroserve.Model):
    def predict(self, payload, headers=None):
        return payload


@serve.deployment(num_replicas=3, max_ongoing_requests=7, runtime_env={"env_vars": {"A": "1"}})
class Decorated(ferroserve.Model):
    def predict(self, payload, headers=None):
        return payload


@serve.deployment
class Bare(ferroserve.Model):
    pass


def test_start_takes_classes_instances_and_a_name_to_class_dict():
    by_class = deployments_of([Decorated, Plain])
    assert [d["name"] for d in by_class] == ["Decorated", "Plain"]
    assert by_class[0]["num_replicas"] == 3 and by_class[0]["max_ongoing_requests"] == 7
    assert by_class[0]["python"].endswith("test_python_models.py:Decorated") or by_class[0]["python"].endswith(":Decorated")
    assert by_class[0]["runtime_env"]["env_vars"] == {"A": "1"}
    assert by_class[0]["runtime_env"]["py_executable"] == sys.executable
    by_instance = deployments_of([Plain("my-model")])
    assert by_instance[0]["name"] == "my-model"
    by_dict = deployments_of({"custom-model": Decorated})
    assert by_dict[0]["name"] == "custom-model" and by_dict[0]["num_replicas"] == 3
    assert deployments_of([Bare])[0]["name"] == "Bare"
    assert deployments_of([Decorated.options(num_replicas=5)])[0]["num_replicas"] == 5
    with pytest.raises(TypeError, match="num_replica"):
        serve.deployment(num_replica=2)
