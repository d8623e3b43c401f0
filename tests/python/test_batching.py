"""Dynamic batching end to end: a Python model batched by the server with no batching code
(tensor batching), a `@serve.batch` handler (list batching), and REST and gRPC requests in one
batch. Concurrent tritonclient calls; each answer must hold exactly its own rows."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import numpy as np
import pytest

from conftest import REPO_ROOT, _start, _stop

MODELS = REPO_ROOT / "tests" / "python" / "models" / "batching.py"


@pytest.fixture(scope="module")
def batch_server(_log_dir):
    config = _log_dir / "batching.yaml"
    python = sys.executable
    env = f"    runtime_env: {{py_executable: {python}}}\n"
    config.write_text(
        "deployments:\n"
        f"  - name: rows\n    python: {MODELS}:Rows\n{env}    max_batch_size: 8\n    batch_wait_timeout_s: 0.5\n"
        f"  - name: mixed\n    python: {MODELS}:Rows\n{env}    max_batch_size: 4\n    batch_wait_timeout_s: 10\n"
        f"  - name: listed\n    python: {MODELS}:Listed\n{env}"
        f"  - name: resized\n    python: {MODELS}:Listed\n{env}"
        f"  - name: fragile\n    python: {MODELS}:Rows\n{env}    max_batch_size: 4\n    batch_wait_timeout_s: 1\n"
    )
    s = _start(["--config", str(config)], _log_dir, "batching")
    try:
        yield s
    finally:
        _stop(s)


def _concurrently(n, call):
    """Runs `call(i)` in n threads started together; their results in order."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _rest_call(server, model, i, rows=1):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.host_port)
    x = np.full((rows, 3), i, dtype=np.int32)
    inp = httpclient.InferInput("x", list(x.shape), "INT32")
    inp.set_data_from_numpy(x)
    return x, client.infer(model, [inp], request_id=f"r{i}")


def test_a_python_model_is_batched_without_code_and_each_caller_gets_its_rows(batch_server):
    # Callers of 1 and 2 rows, each row tagged with the caller.
    results = _concurrently(8, lambda i: _rest_call(batch_server, "rows", i, rows=1 + i % 2))
    sizes = []
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        x, answer = r
        np.testing.assert_array_equal(answer.as_numpy("y"), x * 2)
        assert answer.get_response()["id"] == f"r{i}"
        sizes.append(int(answer.as_numpy("rows")[0, 0]))
    assert max(sizes) > 2, f"no request shared a batch: batch rows seen {sizes}"
    assert all(s <= 8 for s in sizes), sizes
    stats = json.load(urllib.request.urlopen(batch_server.url + "/v2/models/rows/stats"))
    model = stats["model_stats"][0]
    assert model["execution_count"] < model["inference_count"], model


def test_rest_and_grpc_requests_share_a_batch(batch_server):
    # Two gRPC calls from another process and two REST calls: max_batch_size 4 and a 10 s wait,
    # so the batch leaves only when all four are in it.
    script = textwrap.dedent(
        f"""
        import json, threading
        import numpy as np
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient("{batch_server.grpc_host_port}")
        out = [None, None]
        def call(k):
            x = np.full((1, 3), 100 + k, dtype=np.int32)
            inp = grpcclient.InferInput("x", [1, 3], "INT32")
            inp.set_data_from_numpy(x)
            r = client.infer("mixed", [inp])
            out[k] = (r.as_numpy("y").tolist(), int(r.as_numpy("rows")[0, 0]))
        threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(json.dumps(out))
        """
    )
    grpc_calls = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    rest = _concurrently(2, lambda i: _rest_call(batch_server, "mixed", i))
    stdout, _ = grpc_calls.communicate(timeout=60)
    assert grpc_calls.returncode == 0
    for k, (y, rows) in enumerate(json.loads(stdout)):
        assert y == [[2 * (100 + k)] * 3] and rows == 4, (y, rows)
    for i, r in enumerate(rest):
        assert not isinstance(r, Exception), r
        x, answer = r
        np.testing.assert_array_equal(answer.as_numpy("y"), x * 2)
        assert int(answer.as_numpy("rows")[0, 0]) == 4


def test_a_serve_batch_handler_receives_the_requests_as_one_list(batch_server):
    results = _concurrently(6, lambda i: _rest_call(batch_server, "listed", i))
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        x, answer = r
        np.testing.assert_array_equal(answer.as_numpy("y"), x * 2)
        # max_batch_size 6 and a 1 s wait: the six requests fill one list.
        assert int(answer.as_numpy("n")[0, 0]) == 6
    status = json.load(urllib.request.urlopen(batch_server.url + "/-/status"))
    batching = {d["name"]: d.get("batching") for d in status["deployments"]}
    assert batching["listed"]["kind"] == "list" and batching["listed"]["max_batch_size"] == 6
    assert batching["rows"]["kind"] == "tensor" and batching["rows"]["max_batch_size"] == 8


def test_set_max_batch_size_changes_the_batches_the_server_forms(batch_server):
    x, answer = _rest_call(batch_server, "resized", -1)  # the model asks for batches of 2
    assert int(answer.as_numpy("n")[0, 0]) == 1
    results = _concurrently(6, lambda i: _rest_call(batch_server, "resized", i))
    sizes = []
    for r in results:
        assert not isinstance(r, Exception), r
        x, answer = r
        np.testing.assert_array_equal(answer.as_numpy("y"), x * 2)
        sizes.append(int(answer.as_numpy("n")[0, 0]))
    assert max(sizes) == 2, sizes
    # The status snapshot is refreshed every 100 ms.
    for _ in range(50):
        status = json.load(urllib.request.urlopen(batch_server.url + "/-/status"))
        resized = next(d for d in status["deployments"] if d["name"] == "resized")
        if resized["batching"]["max_batch_size"] == 2:
            break
        time.sleep(0.02)
    assert resized["batching"]["max_batch_size"] == 2


def test_a_killed_worker_fails_exactly_its_batch_and_the_queue_is_served_after(batch_server):
    # Four requests fill a batch that takes 3 s; two more wait behind it (the replica holds
    # max_batch_size = 4 requests). kill -9 of the worker mid-batch fails the four, names the
    # worker, and the two waiting are served by its replacement.
    def call(i):
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(batch_server.host_port, network_timeout=60)
        x = np.full((1, 3), -7 if i < 4 else i, dtype=np.int32)
        inp = httpclient.InferInput("x", list(x.shape), "INT32")
        inp.set_data_from_numpy(x)
        if i >= 4:
            time.sleep(0.5)  # behind the running batch
        return x, client.infer("fragile", [inp])

    def kill():
        time.sleep(1.5)
        pid = subprocess.run(["pgrep", "-f", "--", "--name fragile"], capture_output=True, text=True).stdout.split()
        assert len(pid) == 1, pid
        subprocess.run(["kill", "-9", pid[0]], check=True)

    killer = threading.Thread(target=kill)
    killer.start()
    results = _concurrently(6, call)
    killer.join()
    for r in results[:4]:
        assert isinstance(r, Exception), r
        assert "fragile" in str(r) and ("worker" in str(r) or "died" in str(r)), r
    for r in results[4:]:
        assert not isinstance(r, Exception), r
        x, answer = r
        np.testing.assert_array_equal(answer.as_numpy("y"), x * 2)
