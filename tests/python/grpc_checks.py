"""gRPC client checks, each run in a process of its own by test_grpc.py: tritonclient.grpc
and the kserve package both register the `inference.*` protobuf messages in protobuf's
default pool, so they cannot be imported into one process (nor into pytest's, which imports
kserve for the REST tests).

    python grpc_checks.py CHECK GRPC_HOST:PORT HTTP_HOST:PORT
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading

import numpy as np

from test_triton_http import VALUES


def assert_same(got: np.ndarray, want: np.ndarray, datatype: str):
    assert got.shape == want.shape, (got.shape, want.shape)
    if datatype == "BYTES":
        assert [bytes(x) for x in got.ravel()] == [bytes(x) for x in want.ravel()]
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.tobytes() == want.tobytes(), datatype


def triton():
    import tritonclient.grpc as grpcclient

    return grpcclient


def every_datatype(grpc_addr, http_addr):
    grpcclient = triton()
    client = grpcclient.InferenceServerClient(grpc_addr)
    for datatype, arr in VALUES.items():
        inp = grpcclient.InferInput("x", list(arr.shape), datatype)
        inp.set_data_from_numpy(arr)
        result = client.infer("identity", [inp], request_id="g1")
        assert_same(result.as_numpy("x"), arr, datatype)
        assert result.get_response().id == "g1"


def asyncio_client(grpc_addr, http_addr):
    import tritonclient.grpc.aio as grpcaio

    async def main():
        client = grpcaio.InferenceServerClient(grpc_addr)
        try:
            assert await client.is_server_ready()
            for datatype in ("FP32", "BYTES", "FP16", "INT64", "BOOL"):
                arr = VALUES[datatype]
                inp = grpcaio.InferInput("x", list(arr.shape), datatype)
                inp.set_data_from_numpy(arr)
                result = await client.infer("identity", [inp], outputs=[grpcaio.InferRequestedOutput("x")])
                assert_same(result.as_numpy("x"), arr, datatype)
        finally:
            await client.close()

    asyncio.run(main())


def health_metadata_repository(grpc_addr, http_addr):
    grpcclient = triton()
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(grpc_addr)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.get_server_metadata().name == "ferroserve"
    meta = client.get_model_metadata("iris")
    assert meta.platform == "rust" and meta.inputs[0].name == "input-0"
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert index == {"iris": "READY", "identity": "READY"}, index
    client.load_model("iris")  # already loaded: fine
    try:
        client.get_model_metadata("nope")
        raise AssertionError("expected NOT_FOUND")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.NOT_FOUND", e.status()


def iris(grpc_addr, http_addr):
    grpcclient = triton()
    client = grpcclient.InferenceServerClient(grpc_addr)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]], dtype=np.float32)
    inp = grpcclient.InferInput("input-0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("iris", [inp], outputs=[grpcclient.InferRequestedOutput("output-0")])
    assert result.as_numpy("output-0").tolist() == [0, 2]
    assert result.as_numpy("probabilities") is None, "only the requested output"


def invalid_argument(grpc_addr, http_addr):
    grpcclient = triton()
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(grpc_addr)
    inp = grpcclient.InferInput("input-0", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("iris", [inp])
        raise AssertionError("expected INVALID_ARGUMENT")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
        assert "shape [N, 4]" in e.message(), e.message()


def deadline(grpc_addr, http_addr):
    grpcclient = triton()
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(grpc_addr)
    x = np.zeros((200_000, 4), dtype=np.float32)
    inp = grpcclient.InferInput("input-0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        client.infer("iris", [inp], client_timeout=0.001)
        raise AssertionError("expected DEADLINE_EXCEEDED")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.DEADLINE_EXCEEDED", e.status()


def stream(grpc_addr, http_addr):
    grpcclient = triton()
    client = grpcclient.InferenceServerClient(grpc_addr)
    replies: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for i in range(5):
            inp = grpcclient.InferInput("x", [1], "INT32")
            inp.set_data_from_numpy(np.array([i], dtype=np.int32))
            client.async_stream_infer("identity", [inp], request_id=f"s{i}")
        got = []
        for _ in range(5):
            result, error = replies.get(timeout=10)
            assert error is None, error
            got.append((result.get_response().id, int(result.as_numpy("x")[0])))
    finally:
        client.stop_stream()
    assert got == [(f"s{i}", i) for i in range(5)], got


def cancel(grpc_addr, http_addr):
    grpcclient = triton()
    client = grpcclient.InferenceServerClient(grpc_addr)
    x = np.zeros((400_000, 4), dtype=np.float32)
    inp = grpcclient.InferInput("input-0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    done = threading.Event()
    outcome = {}

    def callback(result, error):
        outcome["error"] = error
        done.set()

    future = client.async_infer("iris", [inp], callback=callback)
    future.cancel()
    assert done.wait(10)
    assert outcome["error"] is not None and "CANCELLED" in outcome["error"].status(), outcome


def config_and_statistics(grpc_addr, http_addr):
    grpcclient = triton()
    import tritonclient.http as httpclient

    client = grpcclient.InferenceServerClient(grpc_addr)
    http = httpclient.InferenceServerClient(http_addr)
    before = int(http.get_inference_statistics("identity")["model_stats"][0]["inference_count"])
    inp = grpcclient.InferInput("x", [4], "FP32")
    inp.set_data_from_numpy(np.arange(4, dtype=np.float32))
    for _ in range(3):
        client.infer("identity", [inp])
    stats = client.get_inference_statistics("identity", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == before + 3, stats
    assert int(stats["inference_stats"]["success"]["count"]) >= 3, stats
    assert int(http.get_inference_statistics("identity")["model_stats"][0]["inference_count"]) == before + 3
    config = client.get_model_config("iris", as_json=True)["config"]
    assert config["name"] == "iris"
    assert config["input"][0] == {"name": "input-0", "data_type": "TYPE_FP32", "dims": ["-1", "4"]}, config
    assert config["instance_group"][0]["count"] == 1
    http_config = http.get_model_config("iris")
    assert http_config["input"][0] == {"name": "input-0", "data_type": "TYPE_FP32", "dims": [-1, 4]}, http_config


def kserve_client(grpc_addr, http_addr):
    sys.argv = sys.argv[:1]  # kserve parses sys.argv on import
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    x = np.array([[1.0, 2.0]], dtype=np.float32)

    async def main():
        client = InferenceGRPCClient(grpc_addr)
        try:
            inp = InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            assert await client.is_server_ready()
            return await client.infer(InferRequest("identity", [inp], request_id="k1"))
        finally:
            await client.close()

    response = asyncio.run(main())
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), x)


CHECKS = {
    f.__name__: f
    for f in (
        every_datatype,
        asyncio_client,
        health_metadata_repository,
        iris,
        invalid_argument,
        deadline,
        stream,
        cancel,
        config_and_statistics,
        kserve_client,
    )
}

if __name__ == "__main__":
    name, grpc_addr, http_addr = sys.argv[1:4]
    CHECKS[name](grpc_addr, http_addr)
