"""Shared memory: Triton's system shared-memory extension driven by tritonclient exactly as
Triton's shared-memory example clients drive it (simple_http_shm_client.py,
simple_grpc_shm_client.py, their string variants, reuse_infer_objects_client.py), its errors,
and the arena between ferroserve and Python workers: every datatype below and above the inline
threshold, outputs that are views of inputs, a worker killed while it holds blocks, and memory
while 16 MiB tensors stream through."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, _start, _stop, wait_for
from test_onnx import make_test_repository

MODELS = REPO_ROOT / "tests" / "python" / "models" / "shm_models.py"
#: The threshold the test deployments use: small, so that modest tensors cross both ways.
MIN_TENSOR_BYTES = 1024


@pytest.fixture(scope="module")
def shm_server(_log_dir):
    """Triton's example repository (ONNX `simple`, Python `simple_python` and
    `simple_identity`), the Python test models, and --allow-client-shm."""
    root = _log_dir / "shm-repository"
    root.mkdir()
    make_test_repository(root)
    entries = []
    for name, cls, arena_mib in [
        ("echo", "Echo", 64),
        ("plus_one", "PlusOne", 64),
        ("in_place", "InPlace", 64),
        ("kept", "Kept", 64),
        ("where", "WhereAreMyInputs", 64),
        ("mapped_from", "MappedFrom", 64),
        ("slow_sum", "SlowSum", 64),
        ("small_arena", "Echo", 1),
        ("inline_only", "Echo", 0),
    ]:
        entries.append(
            {
                "name": name,
                "python": f"{MODELS}:{cls}",
                "runtime_env": {"py_executable": sys.executable},
                "shared_memory": {"arena_mib": arena_mib, "min_tensor_bytes": MIN_TENSOR_BYTES},
                "max_ongoing_requests": 16,
            }
        )
    batching = REPO_ROOT / "tests" / "python" / "models" / "batching.py"
    for name, cls, wait in [("rows", "Rows", 0.5), ("listed", "Listed", 0.5)]:
        entries.append(
            {
                "name": name,
                "python": f"{batching}:{cls}",
                "runtime_env": {"py_executable": sys.executable},
                "shared_memory": {"min_tensor_bytes": MIN_TENSOR_BYTES},
                "max_batch_size": 4,
                "batch_wait_timeout_s": wait,
            }
        )
    config = _log_dir / "shm.yaml"
    config.write_text(json.dumps({"deployments": entries}))
    s = _start(
        ["-c", str(config), "--model-repository", str(root), "--python", sys.executable, "--allow-client-shm"],
        _log_dir,
        "shm",
    )
    try:
        yield s
    finally:
        _stop(s)


def clients(server):
    return [
        ("http", httpclient, httpclient.InferenceServerClient(server.host_port)),
        ("grpc", grpcclient, grpcclient.InferenceServerClient(server.grpc_host_port)),
    ]


def region(name: str, size: int):
    """A client region under a key unique to this test process."""
    key = f"/ferroserve-test-{os.getpid()}-{name}"
    return shm.create_shared_memory_region(name, key, size), key


# --- Triton's example flows ----------------------------------------------------------------


@pytest.mark.parametrize("model", ["simple", "simple_python"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_shm_example_flow(shm_server, protocol, model):
    """simple_{http,grpc}_shm_client.py: inputs and outputs in shared memory, results read from
    the region, status, unregister (here also through a Python model)."""
    (_, mod, client) = next(c for c in clients(shm_server) if c[0] == protocol)
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    input0 = np.arange(16, dtype=np.int32)
    input1 = np.ones(16, dtype=np.int32)
    size = input0.nbytes
    out_handle, out_key = region("output_data", size * 2)
    in_handle, in_key = region("input_data", size * 2)
    try:
        client.register_system_shared_memory("output_data", out_key, size * 2)
        shm.set_shared_memory_region(in_handle, [input0])
        shm.set_shared_memory_region(in_handle, [input1], offset=size)
        client.register_system_shared_memory("input_data", in_key, size * 2)
        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("input_data", size)
        inputs[1].set_shared_memory("input_data", size, offset=size)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory("output_data", size)
        outputs[1].set_shared_memory("output_data", size, offset=size)
        results = client.infer(model_name=model, inputs=inputs, outputs=outputs)
        out0 = results.get_output("OUTPUT0")
        assert out0 is not None
        shape0 = out0["shape"] if protocol == "http" else list(out0.shape)
        datatype0 = out0["datatype"] if protocol == "http" else out0.datatype
        sum_ = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(datatype0), shape0)
        diff = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=size)
        np.testing.assert_array_equal(sum_[0], input0 + input1)
        np.testing.assert_array_equal(diff[0], input0 - input1)
        status = client.get_system_shared_memory_status()
        if protocol == "http":
            names = {r["name"]: r for r in status}
            assert names["input_data"]["key"] == in_key and int(names["input_data"]["byte_size"]) == size * 2
        else:
            assert set(status.regions) == {"input_data", "output_data"}
            assert status.regions["output_data"].key == out_key
        client.unregister_system_shared_memory()
        empty = client.get_system_shared_memory_status()
        assert (empty if protocol == "http" else empty.regions) == ([] if protocol == "http" else {})
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_shm_string_example_flow(shm_server, protocol):
    """simple_{http,grpc}_shm_string_client.py: BYTES in shared memory, serialized as Triton
    does, through `simple_identity`; a NUL byte in a string survives."""
    (_, mod, client) = next(c for c in clients(shm_server) if c[0] == protocol)
    client.unregister_system_shared_memory()
    data = np.array([str(x).encode() + b"\x00z" for x in range(16)], dtype=np.object_).reshape(1, 16)
    serialized = utils.serialize_byte_tensor(data)
    nbytes = utils.serialized_byte_size(serialized)
    in_handle, in_key = region("input_str", nbytes)
    out_handle, out_key = region("output_str", nbytes)
    try:
        shm.set_shared_memory_region(in_handle, [serialized])
        client.register_system_shared_memory("input_str", in_key, nbytes)
        client.register_system_shared_memory("output_str", out_key, nbytes)
        inp = mod.InferInput("INPUT0", [1, 16], "BYTES")
        inp.set_shared_memory("input_str", nbytes)
        out = mod.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory("output_str", nbytes)
        client.infer("simple_identity", [inp], outputs=[out])
        got = shm.get_contents_as_numpy(out_handle, np.object_, [1, 16])
        assert got.tolist() == data.tolist()
        client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reused_infer_objects_switch_between_shared_memory_and_inline(shm_server, protocol):
    """reuse_infer_objects_client.py: the same InferInput/InferRequestedOutput objects used
    with shared memory, then with data, then mixed (one input in a region, one inline)."""
    (_, mod, client) = next(c for c in clients(shm_server) if c[0] == protocol)
    client.unregister_system_shared_memory()
    input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    input1 = np.full((1, 16), 3, dtype=np.int32)
    size = input0.nbytes
    in_handle, in_key = region("reuse_in", size * 2)
    out_handle, out_key = region("reuse_out", size * 2)
    try:
        shm.set_shared_memory_region(in_handle, [input0, input1])
        client.register_system_shared_memory("reuse_in", in_key, size * 2)
        client.register_system_shared_memory("reuse_out", out_key, size * 2)
        inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        # All in shared memory.
        inputs[0].set_shared_memory("reuse_in", size)
        inputs[1].set_shared_memory("reuse_in", size, offset=size)
        outputs[0].set_shared_memory("reuse_out", size)
        outputs[1].set_shared_memory("reuse_out", size, offset=size)
        client.infer("simple", inputs, outputs=outputs)
        np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.int32, [1, 16]), input0 + input1)
        # The same objects with data.
        inputs[0].set_data_from_numpy(input0)
        inputs[1].set_data_from_numpy(input1)
        outputs[0].unset_shared_memory()
        outputs[1].unset_shared_memory()
        result = client.infer("simple", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), input0 - input1)
        # Mixed: INPUT1 from the region, INPUT0 inline; OUTPUT0 to the region, OUTPUT1 back.
        inputs[1].set_shared_memory("reuse_in", size, offset=size)
        outputs[0].set_shared_memory("reuse_out", size, offset=size)
        result = client.infer("simple", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), input0 - input1)
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=size), input0 + input1
        )
        client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)


# --- errors ----------------------------------------------------------------------------------


def http_post(server, path, body=None):
    req = urllib.request.Request(server.url + path, data=json.dumps(body or {}).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_bad_regions_offsets_and_sizes_are_400s_naming_the_problem(shm_server):
    client = httpclient.InferenceServerClient(shm_server.host_port)
    client.unregister_system_shared_memory()
    handle, key = region("bounds", 64)
    try:
        status, body = http_post(shm_server, "/v2/systemsharedmemory/region/r/register", {"key": key, "offset": 0, "byte_size": 65})
        assert status == 400 and "outside" in body["error"], body
        status, body = http_post(shm_server, "/v2/systemsharedmemory/region/r/register", {"key": "/no-such-key-here", "byte_size": 4})
        assert status == 400 and "no-such-key-here" in body["error"], body
        status, body = http_post(shm_server, "/v2/systemsharedmemory/region/r/register", {"key": "/../../etc/passwd", "byte_size": 4})
        assert status == 400 and "invalid shared memory key" in body["error"], body
        client.register_system_shared_memory("r", key, 64)
        with pytest.raises(InferenceServerException, match="already registered"):
            client.register_system_shared_memory("r", key, 64)

        def infer(region_name, byte_size, offset):
            inp = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
            inp[0].set_shared_memory(region_name, byte_size, offset=offset)
            inp[1].set_data_from_numpy(np.zeros((1, 16), np.int32))
            return client.infer("simple", inp)

        for args, message in [
            (("nowhere", 64, 0), "unable to find system shared memory region: 'nowhere'"),
            (("r", 64, 8), "outside"),
            (("r", 60, 0), "unexpected shared memory byte size 60"),
        ]:
            with pytest.raises(InferenceServerException, match=message) as e:
                infer(*args)
            assert e.value.status() == "400", e.value
        # An output region too small for the output.
        inp = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inp:
            i.set_data_from_numpy(np.zeros((1, 16), np.int32))
        out = httpclient.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory("r", 32)
        with pytest.raises(InferenceServerException, match="was given 32 bytes"):
            client.infer("simple", inp, outputs=[out])
        grpc = grpcclient.InferenceServerClient(shm_server.grpc_host_port)
        with pytest.raises(InferenceServerException, match="unable to find system shared memory region"):
            grpc.get_system_shared_memory_status("nowhere")
        with pytest.raises(InferenceServerException, match="not supported"):
            grpc.register_cuda_shared_memory("c", b"", 0, 4)
        client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(handle)


def test_the_extension_is_off_without_allow_client_shm(server):
    client = httpclient.InferenceServerClient(server.host_port)
    assert "system_shared_memory" not in client.get_server_metadata()["extensions"]
    handle, key = region("off", 64)
    try:
        with pytest.raises(InferenceServerException, match="--allow-client-shm"):
            client.register_system_shared_memory("off", key, 64)
        inp = httpclient.InferInput("INPUT0", [1, 16], "INT32")
        inp.set_shared_memory("off", 64)
        with pytest.raises(InferenceServerException, match="unable to find system shared memory region"):
            client.infer("identity", [inp])
    finally:
        shm.destroy_shared_memory_region(handle)


def test_the_extension_is_listed_when_on(shm_server):
    meta = httpclient.InferenceServerClient(shm_server.host_port).get_server_metadata()
    assert "system_shared_memory" in meta["extensions"]


# --- the arena between ferroserve and Python workers --------------------------------------------

DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def sample(datatype: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    dtype = DATATYPES[datatype]
    if datatype == "BYTES":
        return np.array([bytes(rng.integers(0, 256, size=int(rng.integers(0, 40)), dtype=np.uint8)) for _ in range(n)], dtype=np.object_)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=n).astype(np.bool_)
    if dtype in (np.float16, np.float32, np.float64):
        return rng.standard_normal(n).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max - 1, size=n, dtype=dtype, endpoint=False)


def expected_plus_one(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.object_:
        return a[::-1]
    if a.dtype == np.bool_:
        return ~a
    return a + a.dtype.type(1)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("elements", [3, 4096])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_datatype_round_trips_below_and_above_the_threshold(shm_server, datatype, elements, protocol):
    """`echo` answers views of its inputs; `plus_one` new arrays (the worker's half of the
    arena); 3 elements stay inline, 4096 cross the arena (bytes ≥ the 1 KiB threshold, except
    BOOL/INT8/UINT8 at 4 KiB, still above)."""
    (_, mod, client) = next(c for c in clients(shm_server) if c[0] == protocol)
    a = sample(datatype, elements)
    for model, expected in (("echo", a), ("plus_one", expected_plus_one(a))):
        inp = mod.InferInput("x", [elements], datatype)
        inp.set_data_from_numpy(a)
        got = client.infer(model, [inp]).as_numpy("x")
        if datatype == "BYTES":
            assert got.tolist() == expected.tolist()
        else:
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_inputs_from_the_threshold_up_are_views_of_the_arena(shm_server):
    client = httpclient.InferenceServerClient(shm_server.host_port)
    inputs = []
    for name, n in (("small", MIN_TENSOR_BYTES // 4 - 1), ("at", MIN_TENSOR_BYTES // 4), ("large", 1 << 20)):
        i = httpclient.InferInput(name, [n], "FP32")
        i.set_data_from_numpy(np.ones(n, dtype=np.float32))
        inputs.append(i)
    assert client.infer("where", inputs).as_numpy("in_arena").tolist() == [0, 1, 1]


def test_inputs_modified_in_place_come_back_modified_and_copies_outlive_their_request(shm_server):
    client = httpclient.InferenceServerClient(shm_server.host_port)
    a = np.arange(100_000, dtype=np.float32)
    inp = httpclient.InferInput("x", [a.size], "FP32")
    inp.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("in_place", [inp]).as_numpy("x"), a * 2)
    # `kept` answers the previous request's copy: blocks reused since must not show through.
    arrays = [np.full(300_000, k, dtype=np.float32) for k in range(5)]
    previous = None
    for arr in arrays:
        inp = httpclient.InferInput("x", [arr.size], "FP32")
        inp.set_data_from_numpy(arr)
        got = client.infer("kept", [inp]).as_numpy("x")
        np.testing.assert_array_equal(got, arr if previous is None else previous)
        previous = arr


@pytest.mark.parametrize("model,count", [("rows", "rows"), ("listed", "n")])
def test_batches_cross_the_arena(shm_server, model, count):
    """Four concurrent 4 KiB requests batched into one call: stacked into one tensor (`rows`)
    or passed as a list to a `@serve.batch` handler (`listed`), each answer its own."""
    results = {}

    def run(k):
        client = httpclient.InferenceServerClient(shm_server.host_port)
        x = np.full((1, 1024), k + 1, dtype=np.int32)
        i = httpclient.InferInput("x", [1, 1024], "INT32")
        i.set_data_from_numpy(x)
        r = client.infer(model, [i])
        results[k] = (r.as_numpy("y"), int(r.as_numpy(count).flat[0]))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]
    for k, (y, n) in results.items():
        np.testing.assert_array_equal(y, np.full((1, 1024), 2 * (k + 1), dtype=np.int32))
    assert max(n for _, n in results.values()) > 1, results


@pytest.mark.parametrize("model", ["small_arena", "inline_only"])
def test_a_full_or_absent_arena_falls_back_to_inline_frames(shm_server, model):
    """`small_arena` has 512 KiB per half: 4 MiB tensors and eight of 256 KiB at once do not
    fit and travel inline; `inline_only` has no arena. No request fails."""
    client = httpclient.InferenceServerClient(shm_server.host_port, concurrency=8)
    big = np.arange(1 << 20, dtype=np.float32)
    inp = httpclient.InferInput("x", [big.size], "FP32")
    inp.set_data_from_numpy(big)
    np.testing.assert_array_equal(client.infer(model, [inp]).as_numpy("x"), big)
    arrays = [np.full(65536, k, dtype=np.float32) for k in range(8)]
    pending = []
    for arr in arrays:
        i = httpclient.InferInput("x", [arr.size], "FP32")
        i.set_data_from_numpy(arr)
        pending.append(client.async_infer(model, [i]))
    for arr, p in zip(arrays, pending):
        np.testing.assert_array_equal(p.get_result().as_numpy("x"), arr)


def memfds(pid: int) -> int:
    """Memory files the process holds open."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:ferroserve-arena"):
                n += 1
        except OSError:
            pass
    return n


def worker_pid(server, deployment: str) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"ferroserve.worker" in cmd and deployment.encode() in cmd:
            try:
                if int(open(f"/proc/{pid}/stat").read().split(")")[1].split()[1]) == server.proc.pid:
                    return int(pid)
            except (OSError, ValueError, IndexError):
                continue
    raise AssertionError(f"no worker of {deployment}")


def test_a_worker_killed_while_holding_blocks_leaks_nothing(shm_server):
    """kill -9 of a worker while requests hold arena blocks (a slow stream of 1 MiB tensors):
    its callers get errors, a new worker serves, the server holds one arena per worker
    (the dead one's is gone) and nothing appears in /dev/shm."""
    server = shm_server
    before_shm = set(os.listdir("/dev/shm"))
    arenas = memfds(server.proc.pid)
    pid = worker_pid(server, "plus_one")
    a = np.ones(1 << 18, dtype=np.float32)
    stop = threading.Event()
    failures, successes = [], []

    def load():
        client = httpclient.InferenceServerClient(server.host_port)  # one per thread
        while not stop.is_set():
            i = httpclient.InferInput("x", [a.size], "FP32")
            i.set_data_from_numpy(a)
            try:
                client.infer("plus_one", [i])
                successes.append(1)
            except InferenceServerException as e:
                failures.append(str(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: worker_pid(server, "plus_one") != pid if _alive_worker(server) else False, "a new worker", timeout=30)
    served_before = len(successes)
    wait_for(lambda: len(successes) > served_before + 10, "requests served by the new worker", timeout=30)
    stop.set()
    for t in threads:
        t.join()
    assert all("crashed" in f or "not ready" in f or "503" in f or "500" in f for f in failures), failures[:3]
    wait_for(lambda: memfds(server.proc.pid) == arenas, f"{arenas} arenas held by the server", timeout=10)
    assert set(os.listdir("/dev/shm")) - before_shm == set()


def _alive_worker(server) -> bool:
    try:
        worker_pid(server, "plus_one")
        return True
    except AssertionError:
        return False


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_memory_stays_bounded_while_16_mib_tensors_stream_at_concurrency_8(shm_server):
    """80 requests of 16 MiB through `plus_one` (the arena both ways, and inline when full):
    the server's resident memory after the last 40 is within 96 MiB of what it was after the
    first 40 (no growth per request), and under 1.5 GiB."""
    client = grpcclient.InferenceServerClient(shm_server.grpc_host_port)
    a = np.ones(4 << 20, dtype=np.float32)
    pid = shm_server.proc.pid

    def burst(n):
        done = []
        lock = threading.Lock()

        def run(k):
            for _ in range(n // 8):
                i = grpcclient.InferInput("x", [a.size], "FP32")
                i.set_data_from_numpy(a)
                out = client.infer("plus_one", [i]).as_numpy("x")
                assert out[0] == 2.0 and out[-1] == 2.0
                with lock:
                    done.append(k)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(done) == n

    burst(40)
    first = rss_mib(pid)
    burst(40)
    second = rss_mib(pid)
    assert second - first < 96, (first, second)
    assert second < 1536, second


# --- a client's region straight to a Python worker ------------------------------------------


def _region_inputs(mod, region_name, arrays):
    """Inputs `x0`, `x1`... lying one after another in `region_name`."""
    inputs, offset = [], 0
    for k, a in enumerate(arrays):
        i = mod.InferInput(f"x{k}", list(a.shape), utils.np_to_triton_dtype(a.dtype))
        i.set_shared_memory(region_name, a.nbytes, offset=offset)
        inputs.append(i)
        offset += a.nbytes
    return inputs


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_client_region_reaches_the_python_worker_without_a_copy(shm_server, protocol):
    """Inputs from the threshold up are views of the client's own object in the worker (its
    mapping's file is /dev/shm/<key>); a smaller one is copied in. The Rust-side ONNX model
    given the same region still answers (it reads the region with pread)."""
    (_, mod, client) = next(c for c in clients(shm_server) if c[0] == protocol)
    small = np.arange(MIN_TENSOR_BYTES // 4 - 1, dtype=np.float32)
    large = np.arange(1 << 18, dtype=np.float32)
    handle, key = region(f"to-worker-{protocol}", small.nbytes + large.nbytes)
    try:
        shm.set_shared_memory_region(handle, [small, large])
        client.register_system_shared_memory(f"to-worker-{protocol}", key, small.nbytes + large.nbytes)
        result = client.infer("mapped_from", _region_inputs(mod, f"to-worker-{protocol}", [small, large]))
        small_from, large_from = (f.decode() for f in result.as_numpy("mapped_from"))
        assert large_from == "/dev/shm" + key, (small_from, large_from)
        assert not small_from.startswith("/dev/shm"), small_from
        # The same region, read by the echo model (views of the client's memory come back).
        echoed = client.infer("echo", _region_inputs(mod, f"to-worker-{protocol}", [small, large]))
        np.testing.assert_array_equal(echoed.as_numpy("x0"), small)
        np.testing.assert_array_equal(echoed.as_numpy("x1"), large)
    finally:
        client.unregister_system_shared_memory(f"to-worker-{protocol}")
        shm.destroy_shared_memory_region(handle)


def test_a_model_that_modifies_a_client_input_changes_only_its_own_copy(shm_server):
    client = httpclient.InferenceServerClient(shm_server.host_port)
    a = np.arange(100_000, dtype=np.float32)
    handle, key = region("in-place", a.nbytes)
    try:
        shm.set_shared_memory_region(handle, [a])
        client.register_system_shared_memory("in-place", key, a.nbytes)
        for _ in range(2):  # the second sees the client's data again, not the first's doubling
            got = client.infer("in_place", _region_inputs(httpclient, "in-place", [a])).as_numpy("x0")
            np.testing.assert_array_equal(got, a * 2)
        np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [a.size]), a)
    finally:
        client.unregister_system_shared_memory("in-place")
        shm.destroy_shared_memory_region(handle)


def test_a_client_that_shrinks_or_replaces_its_object_gets_errors_and_the_server_serves_on(shm_server):
    """Shrunk before the request: a 400 naming the range. Replaced by another object under the
    same key: a 400 from the worker, which checks it found the registered object. Shrunk while
    the worker reads it (a slow model, four requests in flight): those requests fail (the
    worker dies of SIGBUS and is replaced), never the server, and new requests are served."""
    client = httpclient.InferenceServerClient(shm_server.host_port, concurrency=4)
    a = np.ones(1 << 18, dtype=np.float32)
    path = lambda key: "/dev/shm" + key  # noqa: E731

    # Shrunk before the request.
    handle, key = region("shrunk", a.nbytes)
    try:
        shm.set_shared_memory_region(handle, [a])
        client.register_system_shared_memory("shrunk", key, a.nbytes)
        os.truncate(path(key), 4096)
        with pytest.raises(InferenceServerException, match="outside") as e:
            client.infer("mapped_from", _region_inputs(httpclient, "shrunk", [a]))
        assert e.value.status() == "400", e.value
    finally:
        client.unregister_system_shared_memory("shrunk")
        shm.destroy_shared_memory_region(handle)

    # Replaced under the same key (ferroserve still holds the registered object open).
    handle, key = region("replaced", a.nbytes)
    try:
        shm.set_shared_memory_region(handle, [a])
        client.register_system_shared_memory("replaced", key, a.nbytes)
        os.unlink(path(key))
        with open(path(key), "wb") as f:
            f.truncate(a.nbytes)
        with pytest.raises(InferenceServerException, match="another object") as e:
            client.infer("mapped_from", _region_inputs(httpclient, "replaced", [a]))
        assert e.value.status() == "400", e.value
    finally:
        client.unregister_system_shared_memory("replaced")
        shm.destroy_shared_memory_region(handle)  # unlinks the key: the new object

    # Shrunk while the worker reads it.
    handle, key = region("shrinking", a.nbytes)
    try:
        shm.set_shared_memory_region(handle, [a])
        client.register_system_shared_memory("shrinking", key, a.nbytes)
        pid = worker_pid(shm_server, "slow_sum")
        pending = [client.async_infer("slow_sum", _region_inputs(httpclient, "shrinking", [a])) for _ in range(4)]
        time.sleep(0.2)  # the first is asleep in predict, holding its view; the rest queue
        os.truncate(path(key), 0)
        outcomes = []
        for p in pending:
            try:
                outcomes.append(float(p.get_result().as_numpy("sum")[0]))
            except InferenceServerException as e:
                outcomes.append(e.status())
        assert all(o in ("400", "500", "503") for o in outcomes), outcomes
        assert "500" in outcomes or "503" in outcomes, f"the worker read a shrunk object and lived: {outcomes}"
    finally:
        client.unregister_system_shared_memory("shrinking")
        shm.destroy_shared_memory_region(handle)
    wait_for(lambda: _worker_of(shm_server, "slow_sum") not in (None, pid), "a new slow_sum worker", timeout=30)
    i = httpclient.InferInput("x0", [a.size], "FP32")
    i.set_data_from_numpy(a)
    wait_for(lambda: _sums(client, i) == a.size, "slow_sum served again", timeout=30)
    assert shm_server.proc.poll() is None, "the server lives"


def _worker_of(server, deployment):
    try:
        return worker_pid(server, deployment)
    except AssertionError:
        return None


def _sums(client, i):
    try:
        return float(client.infer("slow_sum", [i]).as_numpy("sum")[0])
    except InferenceServerException:
        return None
