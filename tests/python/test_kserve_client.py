"""KServe's own Python client (kserve.InferenceRESTClient, kserve 0.21) against the real server:
V2 inference in JSON and binary on `identity` and `iris`, V1 predict, health and readiness.

kserve 0.21's REST client has no model-metadata call; metadata is covered through tritonclient
and raw HTTP."""

from __future__ import annotations

import asyncio
import sys

import httpx
import numpy as np
import pytest

# kserve parses sys.argv with argparse when it is imported (kserve/model_server.py), and
# argparse takes pytest options for abbreviations of its own (`--co` is read as
# `--configure_logging` and exits): import it with pytest's arguments hidden.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput
finally:
    sys.argv = _argv

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]
IRIS_CLASSES = [0, 1, 2]


def run(protocol: str, fn):
    """Runs `fn(client)` (a coroutine function) with a fresh client in a fresh event loop."""

    async def main():
        async with InferenceRESTClient(RESTConfig(protocol=protocol, timeout=30)) as client:
            return await fn(client)

    return asyncio.run(main())


# Every datatype kserve 0.21 knows (no BF16); kserve refuses FP16 as JSON input.
KSERVE_VALUES = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-32768, 32767], dtype=np.int16),
    "INT32": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([-0.0, 65504.0, 1.5], dtype=np.float16),
    "FP32": np.array([[0.1, -0.0], [3.4028235e38, 1e-45]], dtype=np.float32),
    "FP64": np.array([0.1, -1.0 / 3.0, 5e-324, 1.7976931348623157e308], dtype=np.float64),
    "BYTES": np.array([b"hello", b"", "héllo ✓ 日本".encode(), b"a\x00b"], dtype=np.object_),
}
KSERVE_CASES = [
    pytest.param(dt, binary, id=f"{dt}-{'binary' if binary else 'json'}")
    for dt in KSERVE_VALUES
    for binary in (True, False)
    if binary or dt != "FP16"
]


def assert_same(actual: np.ndarray, expected: np.ndarray, datatype: str) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if datatype == "BYTES":
        got = [e.encode() if isinstance(e, str) else bytes(e) for e in actual.flatten()]
        assert got == [bytes(e) for e in expected.flatten()]
    else:
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        assert actual.tobytes() == expected.tobytes(), f"{actual!r} != {expected!r}"


@pytest.mark.parametrize(("datatype", "binary"), KSERVE_CASES)
def test_identity_v2_every_datatype(base_url, datatype, binary):
    arr = KSERVE_VALUES[datatype]
    inp = InferInput("x", list(arr.shape), datatype)
    inp.set_data_from_numpy(arr, binary_data=binary)
    # Ask for the output in the same encoding as the input.
    request = InferRequest(
        "identity",
        [inp],
        request_id="kserve-1",
        parameters={"binary_data_output": binary},
    )

    async def go(client):
        headers: dict = {}
        resp = await client.infer(base_url, request, model_name="identity", response_headers=headers)
        return resp, headers

    resp, headers = run("v2", go)
    assert resp.model_name == "identity"
    assert resp.id == "kserve-1"
    assert ("inference-header-content-length" in headers) == binary, headers
    out = resp.get_output_by_name("x")
    assert out.datatype == datatype
    assert out.shape == list(arr.shape)
    assert_same(out.as_numpy(), arr, datatype)


def test_identity_v2_several_inputs_with_requested_outputs(base_url):
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    b = np.array([b"one", b"two"], dtype=np.object_)
    c = np.array([[1.25, -0.5]], dtype=np.float32)
    inputs = []
    for name, arr, dt, binary in [("a", a, "INT64", True), ("b", b, "BYTES", False), ("c", c, "FP32", True)]:
        i = InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    request = InferRequest(
        "identity",
        inputs,
        request_outputs=[
            RequestedOutput("c", parameters={"binary_data": True}),
            RequestedOutput("a", parameters={"binary_data": False}),
            RequestedOutput("b"),
        ],
    )
    resp = run("v2", lambda c_: c_.infer(base_url, request, model_name="identity"))
    assert [o.name for o in resp.outputs] == ["c", "a", "b"]
    assert_same(resp.get_output_by_name("a").as_numpy(), a, "INT64")
    assert_same(resp.get_output_by_name("b").as_numpy(), b, "BYTES")
    assert_same(resp.get_output_by_name("c").as_numpy(), c, "FP32")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("FP64", np.float64)])
def test_iris_v2(base_url, datatype, dtype, binary):
    x = np.array(IRIS_ROWS, dtype=dtype)
    inp = InferInput("input-0", list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary)
    request = InferRequest("iris", [inp], parameters={"binary_data_output": binary})
    resp = run("v2", lambda c: c.infer(base_url, request, model_name="iris"))
    classes = resp.get_output_by_name("output-0")
    assert classes.datatype == "INT64"
    assert classes.shape == [3]
    assert classes.as_numpy().tolist() == IRIS_CLASSES
    probs = resp.get_output_by_name("probabilities")
    assert probs.datatype == "FP32"
    assert probs.shape == [3, 3]
    p = probs.as_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert p.argmax(axis=1).tolist() == IRIS_CLASSES


def test_iris_v2_from_a_plain_dict(base_url):
    body = {
        "inputs": [
            {"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": IRIS_ROWS},
        ]
    }
    resp = run("v2", lambda c: c.infer(base_url, body, model_name="iris"))
    assert resp.get_output_by_name("output-0").as_numpy().tolist() == IRIS_CLASSES


def test_iris_v1_predict(base_url):
    resp = run("v1", lambda c: c.infer(base_url, {"instances": IRIS_ROWS}, model_name="iris"))
    assert resp == {"predictions": IRIS_CLASSES}


def test_identity_v1_predict_echoes_instances(base_url):
    instances = [[1, 2.5, "x"], {"k": [True, None]}, "s"]
    resp = run("v1", lambda c: c.infer(base_url, {"instances": instances}, model_name="identity"))
    assert resp == {"predictions": instances}


def test_v1_bad_instances_is_an_http_400_with_the_message(base_url):
    with pytest.raises(httpx.HTTPStatusError) as info:
        run("v1", lambda c: c.infer(base_url, {"instances": 5}, model_name="iris"))
    assert info.value.response.status_code == 400
    assert "instances" in str(info.value)


def test_unknown_model_v2_is_a_404_with_the_message(base_url):
    inp = InferInput("x", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], dtype=np.int32), binary_data=False)
    with pytest.raises(httpx.HTTPStatusError) as info:
        run("v2", lambda c: c.infer(base_url, InferRequest("nope", [inp]), model_name="nope"))
    assert info.value.response.status_code == 404
    assert "Request for unknown model: 'nope' is not found" in str(info.value)


def test_health_and_readiness_v2(base_url):
    async def go(c):
        return (
            await c.is_server_live(base_url),
            await c.is_server_ready(base_url),
            await c.is_model_ready(base_url, "iris"),
            await c.is_model_ready(base_url, "identity"),
            await c.is_model_ready(base_url, "nope"),
        )

    assert run("v2", go) == (True, True, True, True, False)


def test_health_and_readiness_v1(base_url):
    async def go(c):
        return (
            await c.is_server_live(base_url),
            await c.is_model_ready(base_url, "iris"),
            await c.is_model_ready(base_url, "identity"),
        )

    assert run("v1", go) == (True, True, True)


def test_v1_readiness_of_an_unknown_model_is_a_404(base_url):
    with pytest.raises(httpx.HTTPStatusError) as info:
        run("v1", lambda c: c.is_model_ready(base_url, "nope"))
    assert info.value.response.status_code == 404
    assert "nope" in str(info.value)
