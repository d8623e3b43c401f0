"""What the worker does when a model gets something wrong, through the real binary: a TypeError
of the model's constructor reaches `ferroserve status` as it is; invalid optional metadata is
left out with one warning; an output the protocol cannot carry is a 500 naming it, and the
worker lives on; kserve's request surface (writable inputs, requested outputs with `.name`);
a `py_executable` wrapper that does not exec. Unit tests of the same worker functions follow."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO_ROOT, Server, _free_port, _stop, ferroserve_bin
from ferroserve import Model, protocol
from ferroserve.worker import Worker, _info, construct

MODELS = REPO_ROOT / "tests/python/models/worker_checks.py"


def request(server: Server, path: str, body=None):
    """(status, JSON body) of a GET, or of a POST when there is a body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def deployment_status(server: Server, name: str) -> dict:
    return next(d for d in request(server, "/-/status")[1]["deployments"] if d["name"] == name)


def eventually(what: str, check, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server with a deployment per model of worker_checks.py; `wrapped` runs its worker
    through a shell script that does not exec Python. (conftest's `_start` would wait for the
    server to be ready, which `type-error` never is.)"""
    tmp = tmp_path_factory.mktemp("worker-checks")
    wrapper = tmp / "python-wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    wrapper.chmod(0o755)

    def deployment(name, cls, python=sys.executable):
        return f"  - name: {name}\n    python: {MODELS}:{cls}\n    runtime_env: {{py_executable: {python}}}\n"

    config = tmp / "config.yaml"
    config.write_text(
        "deployments:\n"
        + deployment("type-error", "TypeErrorInInit")
        + deployment("bad-metadata", "BadMetadata")
        + deployment("bad-outputs", "BadOutputs")
        + deployment("kserve-style", "KserveStyle")
        + deployment("wrapped", "Echo", python=wrapper)
    )
    port = _free_port()
    log_path = tmp / "ferroserve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(ferroserve_bin()), "serve", "--config", str(config)]
            + ["--http-port", str(port), "--grpc-port", str(_free_port())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "NO_COLOR": "1"},
        )
    s = Server(proc=proc, host="127.0.0.1", port=port, log_path=log_path)

    def live():
        assert proc.poll() is None, f"ferroserve exited with {proc.returncode}; log:\n{s.log()}"
        try:
            return request(s, "/v2/health/live")[0] == 200
        except OSError:
            return False

    eventually("ferroserve live", live)
    yield s
    _stop(s)


def ready(server: Server, name: str) -> bool:
    return request(server, f"/v2/models/{name}/ready")[0] == 200


def wait_ready(server: Server, name: str):
    eventually(f"{name} ready; log:\n{server.log()}", lambda: ready(server, name))


def test_a_type_error_of_the_constructor_is_reported_as_raised(server):
    def error():
        return deployment_status(server, "type-error").get("last_error") or ""

    eventually("the load error in status", lambda: "weights must be a path" in error())
    traceback = error()
    assert traceback.strip().splitlines()[-1] == "TypeError: weights must be a path, not 42", traceback
    assert "missing 1 required positional argument" not in traceback, "constructed a second time"


def test_invalid_metadata_is_left_out_with_one_warning(server):
    wait_ready(server, "bad-metadata")
    status, meta = request(server, "/v2/models/bad-metadata")
    assert status == 200
    assert meta["inputs"] == []
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1]}]
    warnings = [line for line in server.log().splitlines() if "get_input_types() ignored" in line]
    assert len(warnings) == 1, server.log()
    assert "FLOAT32" in warnings[0]
    assert request(server, "/v1/models/bad-metadata:predict", {"instances": []})[0] == 200


def infer_bad_outputs(server: Server, case=None):
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, -2]}]}
    if case:
        body["parameters"] = {"case": case}
    return request(server, "/v2/models/bad-outputs/infer", body)


@pytest.mark.parametrize(
    "case,message",
    [
        ("nan_output_parameter", "output 'y': parameter 'scale' is nan"),
        ("inf_response_parameter", "parameter 't' is -inf"),
        ("negative_shape", "output 'y': shape [-1]"),
        ("shape_mismatch", "output 'y': shape [3] holds 3 elements but the data has 2"),
        ("datetime", "output 'y': numpy dtype datetime64[D] has no V2 datatype"),
        ("complex", "output 'y': a complex128 array cannot be sent as FP64"),
        ("object", "output 'y': a BYTES element is a dict"),
        ("float_as_int32", "output 'y': a float64 array cannot be sent as INT32"),
        ("unknown_datatype", "output 'y': datatype 'FLOAT32'"),
    ],
)
def test_an_output_the_protocol_cannot_carry_is_a_500_naming_it(server, case, message):
    wait_ready(server, "bad-outputs")
    status, before = infer_bad_outputs(server)
    assert status == 200, before
    status, body = infer_bad_outputs(server, case)
    assert status == 500, body
    assert message in body["error"], body
    status, after = infer_bad_outputs(server)
    assert status == 200, after
    pid = {o["name"]: o["data"] for o in after["outputs"]}["pid"]
    assert pid == {o["name"]: o["data"] for o in before["outputs"]}["pid"], "the worker was replaced"


def test_float64_outputs_declared_fp32_are_cast(server):
    wait_ready(server, "bad-outputs")
    status, body = infer_bad_outputs(server)
    assert status == 200, body
    y = next(o for o in body["outputs"] if o["name"] == "y")
    assert (y["datatype"], y["shape"], y["data"]) == ("FP32", [2], [1.5, -2.0])


def test_kserve_style_code_gets_writable_inputs_and_output_objects(server):
    wait_ready(server, "kserve-style")
    status, body = request(
        server,
        "/v2/models/kserve-style/infer",
        {
            "inputs": [
                {"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "words", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]},
            ],
            "outputs": [{"name": "report"}, {"name": "x2"}],
        },
    )
    assert status == 200, body
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    assert outputs["x2"] == [2.0, 4.0, 6.0]
    assert outputs["report"] == ["a b c", "[1.0, 2.0, 3.0]", "(3, 2)", "False"]


def test_an_overridden_validate_runs_before_predict(server):
    wait_ready(server, "kserve-style")
    body = {"inputs": [{"name": "words", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    status, body = request(server, "/v2/models/kserve-style/infer", body)
    assert (status, body["error"]) == (400, "an input named x is needed")


def test_a_wrapper_that_does_not_exec_python_still_serves(server):
    wait_ready(server, "wrapped")
    status, body = request(server, "/v1/models/wrapped:predict", {})
    assert status == 200, body
    assert body["ppid"] != server.proc.pid, "the worker's parent is the wrapper, not ferroserve"


# Unit tests of the worker's functions.


def test_construct_calls_the_constructor_once_and_lets_its_type_error_through():
    calls = []

    class Picky(Model):
        def __init__(self, name):
            calls.append(name)
            raise TypeError("mine")

    with pytest.raises(TypeError, match="^mine$"):
        construct(Picky, "m")
    assert calls == ["m"]


def test_construct_passes_the_name_only_when_the_signature_takes_it():
    class NoName:
        def __init__(self):
            self.made = True

    class Opaque:
        """A constructor whose signature cannot be read: it gets the name."""

        __signature__ = "not a signature"

        def __init__(self, name):
            self.given = name

    assert construct(NoName, "m").name == "m"
    assert construct(Opaque, "m").given == "m"


def test_info_keeps_valid_metadata_and_drops_invalid_with_a_warning(capsys):
    class Mixed:
        def get_input_types(self):
            return [{"name": "x", "datatype": "fp32", "shape": [-1, 3]}]

        def get_output_types(self):
            return [{"name": "y", "datatype": "FP32", "shape": [-2]}]

    info = _info(Mixed())
    assert info == {"platform": "python", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}], "outputs": []}
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "get_output_types()" in warning[0] and "[-2]" in warning[0]


def _frame(header: bytes, payload: bytes) -> bytes:
    return struct.pack("<IQ", len(header), len(payload)) + header + payload


def test_frames_are_cut_out_of_any_chunking_and_give_writable_arrays():
    """Frames split across reads and several in one read all arrive whole and in order, each
    payload its own memory (a payload handed over without a copy is not overwritten by what is
    read next) whose arrays are writable; a frame before the worker is ready is refused."""
    payload = np.arange(2, dtype="<f4").tobytes()
    stream = _frame(b'{"type":"x","id":1}', payload) + _frame(b'{"type":"y","id":2}', b"") + _frame(b'{"type":"z","id":3}', payload)
    for cut in range(1, len(stream)):
        loop = asyncio.new_event_loop()
        try:
            channel = protocol.FrameChannel(loop)
            got = []
            channel.on_frame = lambda h, p: got.append((h, p))
            for piece in [stream[:cut]] + [stream[k : k + 7] for k in range(cut, len(stream), 7)]:
                channel.data_received(piece)
        finally:
            loop.close()
        assert [h["id"] for h, _ in got] == [1, 2, 3], cut
        assert [bytes(p) for _, p in got] == [payload, b"", payload], cut
        for _, p in got:
            if len(p):
                arr = np.frombuffer(p, dtype="<f4")
                arr += 1
                assert arr.tolist() == [1.0, 2.0]
        assert not channel._buffer, "nothing is left over once every frame arrived"

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="'x' frame before the worker was ready"):
            protocol.FrameChannel(loop).data_received(stream)
    finally:
        loop.close()


class _Transport:
    """A transport that keeps the headers of the frames written to it."""

    def __init__(self):
        self.headers = []

    def write(self, data):
        data = bytes(data)
        header_len, _ = struct.unpack_from("<IQ", data)
        self.headers.append(json.loads(data[12 : 12 + header_len]))

    def writelines(self, parts):
        self.write(b"".join(bytes(p) for p in parts))


def test_an_async_request_cancelled_before_it_started_is_answered_cancelled():
    """The cancel in the same read as its request (the client left at once) reaches the task
    before its first step; the request must still get its one answer, or ferroserve keeps its
    slot for good."""

    class Slow(Model):
        async def predict(self, payload, headers=None):
            await asyncio.sleep(0.01)
            return {"done": payload["n"]}

    async def run():
        loop = asyncio.get_running_loop()
        channel = protocol.FrameChannel(loop)
        transport = _Transport()
        channel.connection_made(transport)
        worker = Worker(construct(Slow, "slow"), "slow", channel)
        worker.loop = loop
        worker.on_frame({"type": "infer", "id": 1, "protocol": "v1", "body": {"n": 1}}, memoryview(b""))
        worker.on_frame({"type": "cancel", "id": 1}, memoryview(b""))  # before the task's first step
        worker.on_frame({"type": "infer", "id": 2, "protocol": "v1", "body": {"n": 2}}, memoryview(b""))
        await asyncio.sleep(0.1)
        return transport.headers

    answers = asyncio.run(run())
    # One answer per request, none twice.
    assert sorted((a["id"], a["type"]) for a in answers) == [(1, "cancelled"), (2, "result")], answers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent check is Linux only")
def test_the_parent_check_exits_only_when_ferroserve_is_gone():
    def worker_start(ferroserve_pid):
        return subprocess.run(
            [sys.executable, "-c", "import ferroserve.worker as w; w._die_with_parent(); print('serving')"],
            env={**os.environ, "FERROSERVE_PARENT_PID": str(ferroserve_pid)},
            capture_output=True,
            text=True,
            timeout=30,
        )

    alive = subprocess.Popen(["sleep", "30"])
    try:
        started = worker_start(alive.pid)  # alive, but not the parent: a wrapper in between
    finally:
        alive.kill()
        alive.wait()
    assert (started.returncode, started.stdout) == (0, "serving\n"), started.stderr
    gone = worker_start(alive.pid)
    assert gone.returncode == 1 and gone.stdout == ""
    assert f"ferroserve (pid {alive.pid}) is gone" in gone.stderr
