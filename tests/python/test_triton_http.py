"""tritonclient.http against the real server: every datatype through `identity`, in binary and
JSON on the way in and on the way out, server/model metadata and health, and `iris`."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# ---------------------------------------------------------------------------------------------
# Test data: one array per datatype, with the edge values of that datatype. All of these can go
# through JSON both ways (finite floats, UTF-8 strings).

U64_MAX = np.iinfo(np.uint64).max
I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max


def _f16_subnormal() -> float:
    return float(np.float16(6e-8))  # the smallest positive FP16 subnormal


VALUES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]], dtype=bool),
    "UINT8": np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 255], [256, 65534, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**16], [2**31, 2**32 - 2, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array(
        [[0, 1, 2**32], [2**63, U64_MAX - 1, U64_MAX]], dtype=np.uint64
    ),
    "INT8": np.array([[-128, -1, 0], [1, 126, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, -1, 0], [1, 32766, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), -1, 0], [1, 2**31 - 2, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array(
        [[I64_MIN, I64_MIN + 1, -1], [0, 2**53 + 1, I64_MAX]], dtype=np.int64
    ),
    "FP16": np.array(
        [[0.0, -0.0, 1.5, -2.25], [65504.0, -65504.0, _f16_subnormal(), 0.0999755859375]],
        dtype=np.float16,
    ),
    "BF16": np.array(
        [[0.0, -0.0, 1.5, -2.25], [3.3895314e38, -1.0e-38, 0.099609375, 256.0]],
        dtype=ml_dtypes.bfloat16,
    ),
    "FP32": np.array(
        [
            [0.0, -0.0, 0.1, -1.1],
            [np.finfo(np.float32).max, -np.finfo(np.float32).tiny, 1e-45, math.pi],
        ],
        dtype=np.float32,
    ),
    "FP64": np.array(
        [
            [0.0, -0.0, 0.1, -1.0 / 3.0],
            [np.finfo(np.float64).max, -np.finfo(np.float64).tiny, 5e-324, 2.0**53 + 2],
        ],
        dtype=np.float64,
    ),
    "BYTES": np.array(
        [
            [b"hello", b"", "héllo wörld ✓".encode()],
            ["日本語 😀".encode(), b"a\x00b", b" spaces  \n\t\"quotes\" \\"],
        ],
        dtype=np.object_,
    ),
}

# tritonclient refuses BF16 as JSON input: BF16 goes in binary only.
JSON_INPUT_UNSUPPORTED = {"BF16"}

CASES = [
    pytest.param(dt, bin_in, bin_out, id=f"{dt}-in_{'bin' if bin_in else 'json'}-out_{'bin' if bin_out else 'json'}")
    for dt in VALUES
    for bin_in in (True, False)
    for bin_out in (True, False)
    if bin_in or dt not in JSON_INPUT_UNSUPPORTED
]


def make_input(name: str, arr: np.ndarray, datatype: str, binary: bool):
    inp = httpclient.InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr, binary_data=binary)
    return inp


def assert_same(actual: np.ndarray, expected: np.ndarray, datatype: str) -> None:
    """Exact equality: dtype, shape and every bit (so -0.0 and NaN payloads count)."""
    assert actual is not None, "output missing from the response"
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if datatype == "BYTES":
        assert actual.dtype == np.object_
        # JSON outputs come back as str, binary ones as bytes.
        got = [e.encode() if isinstance(e, str) else bytes(e) for e in actual.flatten()]
        want = [bytes(e) for e in expected.flatten()]
        assert got == want
    else:
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        assert actual.tobytes() == expected.tobytes(), f"{actual!r} != {expected!r}"


@pytest.mark.parametrize(("datatype", "binary_in", "binary_out"), CASES)
def test_identity_round_trips_every_datatype(triton, datatype, binary_in, binary_out):
    arr = VALUES[datatype]
    result = triton.infer(
        "identity",
        [make_input("x", arr, datatype, binary_in)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=binary_out)],
    )
    out = result.get_output("x")
    assert out["datatype"] == datatype
    assert out["shape"] == list(arr.shape)
    assert ("binary_data_size" in out.get("parameters", {})) == binary_out, out
    assert ("data" in out) == (not binary_out), out
    assert_same(result.as_numpy("x"), arr, datatype)


def test_bf16_json_input_is_refused_by_tritonclient():
    # Documents why BF16 has no JSON-input case above: the client itself refuses.
    inp = httpclient.InferInput("x", [1], "BF16")
    with pytest.raises(InferenceServerException, match="binary"):
        inp.set_data_from_numpy(np.array([1.0], dtype=ml_dtypes.bfloat16), binary_data=False)


# ---------------------------------------------------------------------------------------------
# Values that only binary can carry exactly: NaN (with payloads), infinities, non-UTF-8 bytes.


def _nan_with_payload(dtype, bits) -> np.ndarray:
    return np.array([bits], dtype={2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]).view(dtype)


SPECIAL_FLOATS = {
    "FP16": np.concatenate(
        [np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float16), _nan_with_payload(np.float16, 0x7E01)]
    ),
    "BF16": np.concatenate(
        [
            np.array([np.nan, np.inf, -np.inf, -0.0], dtype=ml_dtypes.bfloat16),
            _nan_with_payload(ml_dtypes.bfloat16, 0xFFC1),
        ]
    ),
    "FP32": np.concatenate(
        [np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32), _nan_with_payload(np.float32, 0x7FC00123)]
    ),
    "FP64": np.concatenate(
        [
            np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float64),
            _nan_with_payload(np.float64, 0xFFF8000000000042),
        ]
    ),
}


@pytest.mark.parametrize("datatype", list(SPECIAL_FLOATS))
def test_nan_and_infinity_round_trip_bit_exact_in_binary(triton, datatype):
    arr = SPECIAL_FLOATS[datatype]
    result = triton.infer(
        "identity",
        [make_input("x", arr, datatype, True)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=True)],
    )
    assert_same(result.as_numpy("x"), arr, datatype)


@pytest.mark.parametrize(
    "datatype",
    ["FP16", "BF16", "FP32", "FP64"],
)
def test_nan_binary_in_json_out_is_still_nan(triton, datatype):
    # The server writes NaN as a NaN literal (as Python's json does); tritonclient must read
    # back a NaN, and the finite neighbours must be intact.
    dtype = VALUES[datatype].dtype
    arr = np.array([1.5, np.nan, -2.0], dtype=dtype)
    result = triton.infer(
        "identity",
        [make_input("x", arr, datatype, True)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=False)],
    )
    out = result.as_numpy("x")
    assert out.dtype == dtype
    assert out[0] == 1.5 and out[2] == -2.0
    assert np.isnan(out[1])


def test_infinity_is_not_silently_turned_into_nan_in_json_output(triton):
    arr = np.array([np.inf, -np.inf], dtype=np.float32)
    result = triton.infer(
        "identity",
        [make_input("x", arr, "FP32", True)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=False)],
    )
    assert_same(result.as_numpy("x"), arr, "FP32")


def test_nan_json_input_is_refused_cleanly_or_kept(triton):
    # tritonclient writes a NaN as the non-standard `NaN` literal in JSON. A server may reject
    # that body (400 with a message), or accept it and keep the NaN: anything else is wrong.
    arr = np.array([np.nan, 1.0], dtype=np.float32)
    try:
        result = triton.infer(
            "identity",
            [make_input("x", arr, "FP32", False)],
            outputs=[httpclient.InferRequestedOutput("x", binary_data=True)],
        )
    except InferenceServerException as e:
        assert e.status() == "400", e
        assert "JSON" in e.message(), e.message()
        return
    out = result.as_numpy("x")
    assert np.isnan(out[0]) and out[1] == 1.0


def test_non_utf8_bytes_round_trip_in_binary(triton):
    arr = np.array([b"\xff\xfe\x00", b"\x00", b"", b"\x80abc\xc3"], dtype=np.object_)
    result = triton.infer(
        "identity",
        [make_input("s", arr, "BYTES", True)],
        outputs=[httpclient.InferRequestedOutput("s", binary_data=True)],
    )
    assert_same(result.as_numpy("s"), arr, "BYTES")


def test_non_utf8_bytes_requested_as_json_is_a_clear_400(triton):
    arr = np.array([b"ok", b"\xff\xfe"], dtype=np.object_)
    with pytest.raises(InferenceServerException) as info:
        triton.infer(
            "identity",
            [make_input("s", arr, "BYTES", True)],
            outputs=[httpclient.InferRequestedOutput("s", binary_data=False)],
        )
    assert info.value.status() == "400"
    assert "UTF-8" in info.value.message()


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES", "INT64"])
def test_empty_tensors_round_trip(triton, datatype, binary):
    dtype = VALUES[datatype].dtype
    arr = np.empty((0, 3), dtype=dtype)
    result = triton.infer(
        "identity",
        [make_input("x", arr, datatype, binary)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=binary)],
    )
    out = result.as_numpy("x")
    assert out.shape == (0, 3)
    assert out.dtype == dtype


# ---------------------------------------------------------------------------------------------
# Several inputs in one request.


def test_all_datatypes_in_one_request_with_mixed_encodings(triton):
    inputs = []
    outputs = []
    for i, (dt, arr) in enumerate(VALUES.items()):
        # Alternate the encodings so that binary blobs and JSON data interleave.
        bin_in = dt in JSON_INPUT_UNSUPPORTED or i % 2 == 0
        inputs.append(make_input(f"in_{dt.lower()}", arr, dt, bin_in))
        outputs.append(httpclient.InferRequestedOutput(f"in_{dt.lower()}", binary_data=i % 3 != 0))
    result = triton.infer("identity", inputs, outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == [o.name() for o in outputs]
    for dt, arr in VALUES.items():
        assert_same(result.as_numpy(f"in_{dt.lower()}"), arr, dt)


def test_no_requested_outputs_returns_every_input(triton):
    # Without `outputs`, tritonclient asks for binary_data_output=true: all outputs binary.
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.array([b"x", b"yz"], dtype=np.object_)
    c = np.array([[0.5]], dtype=np.float64)
    result = triton.infer(
        "identity",
        [make_input("a", a, "INT32", True), make_input("b", b, "BYTES", False), make_input("c", c, "FP64", False)],
    )
    names = sorted(o["name"] for o in result.get_response()["outputs"])
    assert names == ["a", "b", "c"]
    for o in result.get_response()["outputs"]:
        assert "binary_data_size" in o["parameters"], o
    assert_same(result.as_numpy("a"), a, "INT32")
    assert_same(result.as_numpy("b"), b, "BYTES")
    assert_same(result.as_numpy("c"), c, "FP64")


def test_subset_of_outputs_in_requested_order(triton):
    a = np.array([1, 2], dtype=np.int8)
    b = np.array([3.0], dtype=np.float32)
    c = np.array([True], dtype=bool)
    result = triton.infer(
        "identity",
        [make_input("a", a, "INT8", True), make_input("b", b, "FP32", True), make_input("c", c, "BOOL", False)],
        outputs=[
            httpclient.InferRequestedOutput("c", binary_data=True),
            httpclient.InferRequestedOutput("a", binary_data=False),
        ],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["c", "a"]
    assert result.as_numpy("b") is None
    assert_same(result.as_numpy("a"), a, "INT8")
    assert_same(result.as_numpy("c"), c, "BOOL")


def test_request_id_is_echoed(triton):
    result = triton.infer(
        "identity",
        [make_input("x", np.array([1], dtype=np.int32), "INT32", False)],
        request_id="req-42",
    )
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["model_name"] == "identity"


def test_large_binary_tensor(triton):
    arr = np.random.default_rng(7).standard_normal((256, 1024)).astype(np.float32)  # 1 MiB
    result = triton.infer(
        "identity",
        [make_input("x", arr, "FP32", True)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=True)],
    )
    assert_same(result.as_numpy("x"), arr, "FP32")


# ---------------------------------------------------------------------------------------------
# Health and metadata.


def test_server_live_and_ready(triton):
    assert triton.is_server_live() is True
    assert triton.is_server_ready() is True


def test_models_ready(triton):
    assert triton.is_model_ready("identity") is True
    assert triton.is_model_ready("iris") is True
    assert triton.is_model_ready("no-such-model") is False


def test_server_metadata(triton):
    meta = triton.get_server_metadata()
    assert meta["name"] == "ferroserve"
    assert isinstance(meta["version"], str) and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_iris_model_metadata(triton):
    meta = triton.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert isinstance(meta["platform"], str) and meta["platform"]
    inputs = {t["name"]: t for t in meta["inputs"]}
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert set(inputs) == {"input-0"}
    assert inputs["input-0"]["datatype"] in ("FP32", "FP64")
    assert inputs["input-0"]["shape"] == [-1, 4]
    assert outputs["output-0"]["datatype"] == "INT64"
    assert outputs["output-0"]["shape"] == [-1]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [-1, 3]


def test_identity_model_metadata(triton):
    meta = triton.get_model_metadata("identity")
    assert meta["name"] == "identity"
    assert isinstance(meta["inputs"], list) and isinstance(meta["outputs"], list)


def test_unknown_model_errors_carry_the_server_message(triton):
    expected = "Request for unknown model: 'no-such-model' is not found"
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("no-such-model")
    assert info.value.status() == "404"
    assert expected in info.value.message()

    with pytest.raises(InferenceServerException) as info:
        triton.infer("no-such-model", [make_input("x", np.array([1], dtype=np.int32), "INT32", True)])
    assert info.value.status() == "404"
    assert expected in info.value.message()


def test_bad_request_error_message_reaches_tritonclient(triton):
    # Shape says 3 elements, the data has 2: the client sends it as it is.
    inp = make_input("x", np.array([1, 2], dtype=np.int32), "INT32", False)
    inp.set_shape([3])
    with pytest.raises(InferenceServerException) as info:
        triton.infer("identity", [inp])
    assert info.value.status() == "400"
    assert "'x'" in info.value.message()


def test_configured_deployments_have_no_version(triton):
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("iris", model_version="1")
    assert info.value.status() == "404"
    assert info.value.message() == "Request for unknown model: 'iris' version 1 is not found"
    assert triton.is_model_ready("iris", model_version="1") is False


# ---------------------------------------------------------------------------------------------
# iris through V2.

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]
IRIS_CLASSES = [0, 1, 2]


@pytest.mark.parametrize("binary_out", [True, False], ids=["out_bin", "out_json"])
@pytest.mark.parametrize("binary_in", [True, False], ids=["in_bin", "in_json"])
@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("FP64", np.float64)])
def test_iris_v2(triton, datatype, dtype, binary_in, binary_out):
    x = np.array(IRIS_ROWS, dtype=dtype)
    result = triton.infer(
        "iris",
        [make_input("input-0", x, datatype, binary_in)],
        outputs=[
            httpclient.InferRequestedOutput("output-0", binary_data=binary_out),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary_out),
        ],
    )
    classes = result.as_numpy("output-0")
    assert classes.dtype == np.int64
    assert classes.shape == (3,)
    assert classes.tolist() == IRIS_CLASSES
    probs = result.as_numpy("probabilities")
    assert probs.dtype == np.float32
    assert probs.shape == (3, 3)
    assert np.all(probs >= 0) and np.all(probs <= 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs.argmax(axis=1).tolist() == IRIS_CLASSES


def test_iris_v2_all_outputs_by_default(triton):
    x = np.array(IRIS_ROWS[:1], dtype=np.float32)
    result = triton.infer("iris", [make_input("input-0", x, "FP32", True)])
    names = sorted(o["name"] for o in result.get_response()["outputs"])
    assert names == ["output-0", "probabilities"]
    assert result.as_numpy("output-0").tolist() == [0]


def test_iris_v2_wrong_width_is_a_400(triton):
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("iris", [make_input("input-0", x, "FP32", True)])
    assert info.value.status() == "400"
    assert info.value.message()


def test_iris_v2_unknown_requested_output_is_a_400(triton):
    x = np.array(IRIS_ROWS[:1], dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        triton.infer(
            "iris",
            [make_input("input-0", x, "FP32", True)],
            outputs=[httpclient.InferRequestedOutput("nope")],
        )
    assert info.value.status() == "400"
    assert "nope" in info.value.message()


# ---------------------------------------------------------------------------------------------
# Compressed request bodies: tritonclient can send them (Content-Encoding: gzip / deflate).


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_body(triton, algorithm):
    arr = np.array([1, 2, 3], dtype=np.int32)
    try:
        result = triton.infer(
            "identity",
            [make_input("x", arr, "INT32", False)],
            request_compression_algorithm=algorithm,
        )
    except InferenceServerException as e:
        pytest.fail(f"compressed body refused: {e.status()} {e.message()}")
    assert_same(result.as_numpy("x"), arr, "INT32")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_response_requested_still_works(triton, algorithm):
    # Accept-Encoding: the server may compress or not; the client must get the tensor back.
    arr = np.arange(100, dtype=np.float64)
    result = triton.infer(
        "identity",
        [make_input("x", arr, "FP64", True)],
        outputs=[httpclient.InferRequestedOutput("x", binary_data=True)],
        response_compression_algorithm=algorithm,
    )
    assert_same(result.as_numpy("x"), arr, "FP64")


# ---------------------------------------------------------------------------------------------
# Concurrency: many requests in flight on several connections, each answered with its own data.


def test_concurrent_requests_get_their_own_answers(server):
    client = httpclient.InferenceServerClient(url=server.host_port, concurrency=8, network_timeout=30)
    try:
        pending = []
        for i in range(64):
            arr = np.full((16, 16), i, dtype=np.int32)
            s = np.array([f"req-{i}".encode()], dtype=np.object_)
            inputs = [make_input("x", arr, "INT32", i % 2 == 0), make_input("s", s, "BYTES", i % 3 == 0)]
            outputs = [
                httpclient.InferRequestedOutput("x", binary_data=i % 4 < 2),
                httpclient.InferRequestedOutput("s", binary_data=True),
            ]
            pending.append((i, arr, s, client.async_infer("identity", inputs, outputs=outputs, request_id=str(i))))
        for i, arr, s, req in pending:
            result = req.get_result(timeout=30)
            assert result.get_response()["id"] == str(i)
            assert_same(result.as_numpy("x"), arr, "INT32")
            assert_same(result.as_numpy("s"), s, "BYTES")
    finally:
        client.close()
