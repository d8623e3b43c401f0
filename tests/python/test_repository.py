"""The live model repository: Triton's repository API through tritonclient's own calls
(`get_model_repository_index`, `load_model`, `unload_model`) over HTTP and gRPC, the checks
Triton's model-control examples make, a version switch under load that fails no request, and
`poll` mode picking up a new and a removed model."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import types

import numpy as np
import pytest

import onnx_models
from conftest import _start, _stop, wait_for
from test_onnx import grpc_client, http_client, make_test_repository


@pytest.fixture(scope="module")
def repo_server(_log_dir):
    """Explicit mode: only `simple` and `simple_string` load at start."""
    import sys

    root = _log_dir / "explicit-repository"
    root.mkdir()
    make_test_repository(root)
    onnx_models.save(onnx_models.add_constant(1), root, "counter", version=1)
    s = _start(
        [
            "--model-repository", str(root),
            "--model-control-mode", "explicit",
            "--load-model", "simple",
            "--load-model", "simple_string",
            "--python", sys.executable,
        ],
        _log_dir,
        "explicit",
    )
    s.root = root
    try:
        yield s
    finally:
        _stop(s)


def states(index):
    return {m["name"]: m.get("state", "") for m in index}


def test_explicit_mode_loads_only_what_it_is_told(repo_server):
    with http_client(repo_server) as client:
        index = client.get_model_repository_index()
        assert len(index) == 8
        got = states(index)
        assert got["simple"] == got["simple_string"] == "READY"
        assert got["mlp"] == "" and got["counter"] == ""
        assert not client.is_model_ready("mlp")
        assert [m["name"] for m in client.get_model_repository_index()] == sorted(got)
    grpc = grpc_client(repo_server)
    models = grpc.get_model_repository_index(as_json=True)["models"]
    assert {m["name"]: m.get("state", "") for m in models} == got
    assert {m["name"]: m.get("version", "") for m in models}["simple"] == "1"


def test_load_and_unload_over_http_and_grpc(repo_server):
    """What Triton's simple_http_model_control.py and simple_grpc_model_control.py check."""
    from tritonclient.utils import InferenceServerException

    with http_client(repo_server) as client:
        client.load_model("mlp")
        assert client.is_model_ready("mlp")
        assert states(client.get_model_repository_index())["mlp"] == "READY"
        # A malformed config override fails the load and leaves the model as it was.
        with pytest.raises(InferenceServerException, match="failed to load"):
            client.load_model("mlp", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
        assert client.is_model_ready("mlp")
        client.load_model("mlp", config='{"max_batch_size":"16"}')
        assert client.get_model_config("mlp")["max_batch_size"] == 16
        assert client.get_model_config("mlp")["input"][0]["dims"] == [20]
        client.unload_model("mlp")
        assert not client.is_model_ready("mlp")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["mlp"]["state"] == "UNAVAILABLE" and index["mlp"]["reason"] == "unloaded"
        with pytest.raises(InferenceServerException, match="failed to load"):
            client.load_model("wrong_model_name")

    grpc = grpc_client(repo_server)
    grpc.load_model("cnn")
    assert grpc.is_model_ready("cnn")
    grpc.unload_model("cnn")
    # Triton answers "not ready" for an unloaded model, not an error.
    assert grpc.is_model_ready("cnn") is False
    with pytest.raises(InferenceServerException, match="failed to load"):
        grpc.load_model("wrong_model_name")
    with pytest.raises(InferenceServerException, match="Invalid file path"):
        grpc.load_model("cnn", config="{}", files={"file:1/model.onnx": b"x"})
    assert grpc.is_server_live()


def test_a_python_model_loads_from_the_repository(repo_server):
    import tritonclient.http as httpclient

    with http_client(repo_server) as client:
        client.load_model("simple_identity")
        data = np.array([[b"he\x00llo", b"", b"\x00\x01\x02\x03"]], dtype=object)
        x = httpclient.InferInput("INPUT0", list(data.shape), "BYTES")
        x.set_data_from_numpy(data, binary_data=True)
        got = client.infer("simple_identity", [x]).as_numpy("OUTPUT0")
        assert got.tolist() == data.tolist()
        client.unload_model("simple_identity")


def test_versions_are_served_and_checked(repo_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    grpc = grpc_client(repo_server)
    grpc.load_model("counter")
    x = grpcclient.InferInput("x", [1, 4], "INT32")
    x.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32))
    result = grpc.infer("counter", [x], model_version="1")
    assert result.get_response().model_version == "1"
    assert grpc.get_model_metadata("counter", as_json=True)["versions"] == ["1"]
    with pytest.raises(InferenceServerException, match="'counter' version 7 is not found"):
        grpc.infer("counter", [x], model_version="7")
    with pytest.raises(InferenceServerException, match="from specified version string 'newest'"):
        grpc.infer("counter", [x], model_version="newest")


def test_a_new_version_takes_over_under_load_without_a_failed_request(repo_server):
    """Version 2 appears and is loaded while four clients call the model: no request fails,
    every answer is version 1's or version 2's, and after the load only version 2 answers."""
    with http_client(repo_server) as client:
        client.load_model("counter")
    with under_load(repo_server, first_y("counter")) as load:
        time.sleep(0.3)
        before = len(load.answers)
        onnx_models.save(onnx_models.add_constant(2), repo_server.root, "counter", version=2)
        with http_client(repo_server) as client:
            client.load_model("counter")
        after_load = len(load.answers)
        time.sleep(0.3)
    with http_client(repo_server) as client:
        assert client.get_model_metadata("counter")["versions"] == ["2"]
    assert not load.errors and not load.hung, load.errors[:3]
    assert before > 0 and len(load.answers) > after_load
    assert set(load.answers) <= {1, 2}
    assert set(load.answers[after_load + 8 :]) == {2}, "version 1 still answered after the load"


def test_poll_mode_loads_new_models_and_unloads_removed_ones(_log_dir):
    root = _log_dir / "polled-repository"
    root.mkdir()
    onnx_models.save(onnx_models.add_constant(1), root, "first")
    s = _start(
        ["--model-repository", str(root), "--model-control-mode", "poll", "--repository-poll-secs", "0.2"],
        _log_dir,
        "poll",
    )
    try:
        with http_client(s) as client:
            assert client.is_model_ready("first")
            onnx_models.save(onnx_models.add_constant(3), root, "second")
            wait_for(lambda: client.is_model_ready("second"), "the new model to load")
            shutil.rmtree(root / "first")
            wait_for(lambda: not client.is_model_ready("first"), "the removed model to unload")
            assert client.is_model_ready("second")
            # Unloaded through the API, a model stays unloaded until its files change.
            client.unload_model("second")
            time.sleep(1.0)
            assert not client.is_model_ready("second")
            onnx_models.save(onnx_models.add_constant(4), root, "second", version=2)
            wait_for(lambda: client.is_model_ready("second"), "the changed model to load")
            assert client.get_model_metadata("second")["versions"] == ["2"]
    finally:
        _stop(s)


@contextlib.contextmanager
def under_load(server, request, threads=4):
    """`threads` clients (tritonclient HTTP, one connection each) calling `request(client)`
    over and over while the block runs: what the calls returned is in `.answers`, what they
    raised in `.errors`, and `.hung` says whether a client was still in a call 20 s after."""
    import tritonclient.http as httpclient

    stop = threading.Event()
    load = types.SimpleNamespace(answers=[], errors=[], hung=False)

    def run():
        with httpclient.InferenceServerClient(url=server.host_port, network_timeout=15) as c:
            while not stop.is_set():
                try:
                    load.answers.append(request(c))
                except Exception as e:  # noqa: BLE001 - every failure is the finding
                    load.errors.append(e)

    clients = [threading.Thread(target=run) for _ in range(threads)]
    for t in clients:
        t.start()
    try:
        yield load
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=20)
        load.hung = any(t.is_alive() for t in clients)


def first_y(model):
    """A request to an `add_constant` model: its answer's first value."""

    def request(client):
        import tritonclient.http as httpclient

        x = httpclient.InferInput("x", [1, 4], "INT32")
        x.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32), binary_data=True)
        return int(client.infer(model, [x]).as_numpy("y")[0, 0])

    return request


def test_unload_under_load_fails_nothing_in_flight(repo_server):
    """Four clients call a model while it is unloaded and loaded again: every answer is the
    model's, a 404 naming it (unloaded) or a 503 saying it is not ready (loading), never another
    error and never a hang, and it serves again after the load."""
    from tritonclient.utils import InferenceServerException

    onnx_models.save(onnx_models.add_constant(5), repo_server.root, "churn")
    with http_client(repo_server) as client:
        client.load_model("churn")
        with under_load(repo_server, first_y("churn")) as load:
            for _ in range(3):
                time.sleep(0.2)
                client.unload_model("churn")
                time.sleep(0.2)
                client.load_model("churn")
            time.sleep(0.2)
        assert not load.hung, "a call hung"
        assert client.is_model_ready("churn")

    def unloaded(e):
        return isinstance(e, InferenceServerException) and e.status() == "404" and "'churn'" in e.message()

    def loading(e):
        return isinstance(e, InferenceServerException) and e.status() == "503" and "churn is not ready" in e.message()

    other = [e for e in load.errors if not unloaded(e) and not loading(e)]
    assert not other, other[:3]
    assert any(unloaded(e) for e in load.errors), "no request saw the model unloaded"
    assert set(load.answers) == {5}


def test_a_python_model_reloads_under_load_without_a_failed_request(repo_server):
    """A Python repository model whose file changed is loaded again while clients call it: its
    new worker starts before the old one drains, so no request fails."""
    import os

    import tritonclient.http as httpclient

    def add_sub(client):
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(a, binary_data=True)
        return bool((client.infer("simple_python", inputs).as_numpy("OUTPUT0") == 2 * a).all())

    with http_client(repo_server) as client:
        client.load_model("simple_python")
    with under_load(repo_server, add_sub, threads=3) as load:
        time.sleep(0.3)
        model = repo_server.root / "simple_python" / "model.py"
        os.utime(model, (time.time() + 5, time.time() + 5))
        before = len(load.answers)
        with http_client(repo_server) as client:
            client.load_model("simple_python")
        time.sleep(0.3)
    assert not load.errors and not load.hung, load.errors[:3]
    assert before > 0 and len(load.answers) > before and all(load.answers)
    # It really rolled: the replica serving now is of the deployment's second version.
    import json
    import urllib.request

    with urllib.request.urlopen(repo_server.url + "/-/status", timeout=10) as r:
        status = {d["name"]: d for d in json.load(r)["deployments"]}
    assert [r["version"] for r in status["simple_python"]["replicas"]] == [2]
    with http_client(repo_server) as client:
        client.unload_model("simple_python")


def test_an_onnx_model_batches_with_the_options_of_its_config_file(_log_dir):
    """Dynamic batching for a model with no code: config.yaml turns it on; eight concurrent
    one-row requests run in fewer executions than requests, each caller getting its own row."""
    import tritonclient.http as httpclient

    root = _log_dir / "batched-repository"
    onnx_models.save(onnx_models.add_constant(10), root, "adder")
    (root / "adder" / "config.yaml").write_text("max_batch_size: 8\nbatch_wait_timeout_s: 0.2\n")
    s = _start(["--model-repository", str(root)], _log_dir, "batched-onnx")
    try:
        results: dict[int, np.ndarray] = {}

        def call(i):
            with httpclient.InferenceServerClient(url=s.host_port, network_timeout=30) as c:
                x = httpclient.InferInput("x", [1, 4], "INT32")
                x.set_data_from_numpy(np.full((1, 4), i, dtype=np.int32), binary_data=True)
                results[i] = c.infer("adder", [x]).as_numpy("y")

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(8):
            np.testing.assert_array_equal(results[i], np.full((1, 4), i + 10, dtype=np.int32))
        with http_client(s) as client:
            stats = client.get_inference_statistics("adder")["model_stats"][0]
            config = client.get_model_config("adder")
        assert int(stats["inference_count"]) == 8
        assert int(stats["execution_count"]) < 8, stats
        assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [4]
    finally:
        _stop(s)


def test_a_broken_new_version_leaves_the_old_one_serving(repo_server):
    """A corrupt version 2 is checked before the deployment rolls: its load fails, naming the
    file, and version 1 goes on answering."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    onnx_models.save(onnx_models.add_constant(7), repo_server.root, "steady", version=1)
    with http_client(repo_server) as client:
        client.load_model("steady")
        broken = repo_server.root / "steady" / "2" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"not an onnx model")
        with pytest.raises(InferenceServerException, match="failed to load 'steady'.*2/model.onnx"):
            client.load_model("steady")
        x = httpclient.InferInput("x", [1, 4], "INT32")
        x.set_data_from_numpy(np.zeros((1, 4), dtype=np.int32), binary_data=True)
        assert client.infer("steady", [x]).as_numpy("y").tolist() == [[7, 7, 7, 7]]
        assert client.get_model_metadata("steady")["versions"] == ["1"]
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["steady"]["state"] == "READY" and index["steady"]["version"] == "1"
