"""Raw HTTP against the real server (http.client, no client library in between): JSON and
binary bodies built and parsed by hand, and every error case, which must be answered with the
right status and a JSON body `{"error": "..."}` whose message names the problem."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from e2e_util import Reply, call, chunked, raw_exchange

INFER = "/v2/models/identity/infer"
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]


def infer_json(base_url: str, body, model: str = "identity", headers=None) -> Reply:
    return call(base_url, f"/v2/models/{model}/infer", "POST", body, headers)


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request: JSON header + blobs, and the headers that go with it."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def parse_binary_response(r: Reply) -> tuple[dict, dict[str, bytes]]:
    """Splits a binary-extension response into its JSON header and each output's raw bytes."""
    assert r.status == 200, r.body
    assert "inference-header-content-length" in r.headers, r.headers
    n = int(r.headers["inference-header-content-length"])
    assert 0 < n <= len(r.body)
    assert int(r.headers["content-length"]) == len(r.body)
    doc = json.loads(r.body[:n])
    blobs = {}
    offset = n
    for out in doc["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in out, out
            blobs[out["name"]] = r.body[offset : offset + size]
            offset += size
    assert offset == len(r.body), "bytes left over after the last binary output"
    return doc, blobs


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def assert_error(r: Reply, status: int, *fragments: str) -> str:
    assert r.status == status, (r.status, r.body)
    msg = r.error()
    for f in fragments:
        assert f in msg, f"{f!r} not in error message {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------
# JSON bodies.


def test_nested_json_data_is_accepted_and_comes_back_flat(base_url):
    r = infer_json(
        base_url,
        {"inputs": [{"name": "m", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]},
    )
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    out = r.json()["outputs"][0]
    assert out == {"name": "m", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}


def test_deeply_nested_and_flat_data_are_the_same_tensor(base_url):
    nested = {"inputs": [{"name": "t", "shape": [2, 1, 2], "datatype": "FP64", "data": [[[0.5, 1]], [[2, -3.25]]]}]}
    flat = {"inputs": [{"name": "t", "shape": [2, 1, 2], "datatype": "FP64", "data": [0.5, 1, 2, -3.25]}]}
    a, b = infer_json(base_url, nested), infer_json(base_url, flat)
    assert a.status == b.status == 200
    assert a.json()["outputs"] == b.json()["outputs"]
    assert a.json()["outputs"][0]["data"] == [0.5, 1.0, 2.0, -3.25]


def test_json_without_content_type_is_accepted(base_url):
    # http.client adds no Content-Type: this is what tritonclient sends for JSON bodies.
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [True]}]})
    r = call(base_url, INFER, "POST", body, headers={})
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [True]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "text/plain"]
)
def test_json_with_any_content_type_is_accepted(base_url, content_type):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [-5]}]})
    r = call(base_url, INFER, "POST", body, headers={"Content-Type": content_type})
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [-5]


def test_field_order_and_unknown_fields_do_not_matter(base_url):
    # `data` before `datatype`, plus fields that the server does not know (KServe's client
    # sends model_name at the top level).
    body = {
        "model_name": "identity",
        "id": "abc",
        "something_else": {"nested": [1, 2]},
        "inputs": [{"data": [1, -2], "name": "x", "extra": None, "shape": [2], "datatype": "INT64"}],
    }
    r = infer_json(base_url, body)
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["id"] == "abc"
    assert doc["model_name"] == "identity"
    assert doc["outputs"][0]["data"] == [1, -2]


def test_fp16_and_bf16_as_json_input(base_url):
    # tritonclient cannot send BF16 as JSON, so check the server's side of it by hand.
    body = {
        "inputs": [
            {"name": "h", "shape": [3], "datatype": "FP16", "data": [1.5, -0.0, 65504]},
            {"name": "b", "shape": [3], "datatype": "BF16", "data": [1.5, -2, 0.099609375]},
        ],
        "outputs": [{"name": "h", "parameters": {"binary_data": True}}, {"name": "b", "parameters": {"binary_data": True}}],
    }
    doc, blobs = parse_binary_response(infer_json(base_url, body))
    assert np.frombuffer(blobs["h"], dtype=np.float16).tobytes() == np.array([1.5, -0.0, 65504], dtype=np.float16).tobytes()
    bf16 = np.frombuffer(blobs["b"], dtype=np.uint16)
    assert bf16.tolist() == [0x3FC0, 0xC000, 0x3DCC]


def test_lower_case_datatype_is_accepted_and_answered_upper_case(base_url):
    # The server parses datatypes case-insensitively (as KServe does) and answers canonically.
    r = infer_json(base_url, one_input(datatype="int32"))
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["datatype"] == "INT32"


def test_bytes_json_escapes(base_url):
    values = ["", "a\u0000b", "quote\" back\\slash", "tab\tnl\n", "é ✓ 😀"]
    body = {"inputs": [{"name": "s", "shape": [5], "datatype": "BYTES", "data": values}]}
    r = infer_json(base_url, body)
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == values


def test_models_listing(base_url):
    for path in ("/v2/models", "/v1/models"):
        r = call(base_url, path)
        assert r.status == 200, r.body
        assert sorted(r.json()["models"]) == ["identity", "iris"]


def test_health_routes(base_url):
    assert call(base_url, "/v2/health/live").json() == {"live": True}
    assert call(base_url, "/v2/health/ready").json() == {"ready": True}
    assert call(base_url, "/").json() == {"status": "alive"}
    r = call(base_url, "/v2/models/iris/ready")
    assert r.status == 200 and r.json()["ready"] is True
    r = call(base_url, "/v1/models/identity")
    assert r.status == 200 and r.json()["ready"] is True


def test_metrics_count_requests(base_url):
    infer_json(base_url, {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
    r = call(base_url, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert 'model_name="identity"' in r.body.decode()


# ---------------------------------------------------------------------------------------------
# Binary bodies, by hand.


def test_hand_built_binary_request_and_binary_response(base_url):
    ints = np.array([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=np.int32)
    strings = bytes_tensor(b"alpha", b"", b"\x00\xff")
    header = {
        "id": "bin-1",
        "inputs": [
            {"name": "ints", "shape": [2, 3], "datatype": "INT32", "parameters": {"binary_data_size": ints.nbytes}},
            {"name": "json", "shape": [2], "datatype": "FP64", "data": [0.25, -8]},
            {"name": "strs", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}},
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, ints.tobytes(), strings)
    r = call(base_url, INFER, "POST", body, headers)
    assert r.headers["content-type"] == "application/octet-stream"
    doc, blobs = parse_binary_response(r)
    assert doc["id"] == "bin-1"
    outs = {o["name"]: o for o in doc["outputs"]}
    assert set(outs) == {"ints", "json", "strs"}
    assert outs["ints"]["shape"] == [2, 3] and outs["ints"]["datatype"] == "INT32"
    assert outs["strs"]["shape"] == [3] and outs["strs"]["datatype"] == "BYTES"
    assert blobs["ints"] == ints.tobytes()
    assert blobs["json"] == np.array([0.25, -8], dtype=np.float64).tobytes()
    assert blobs["strs"] == strings


def test_binary_response_per_output_choice(base_url):
    # binary_data_output is the default; each requested output can override it.
    a = np.array([1.5, 2.5], dtype=np.float32)
    header = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "shape": [1], "datatype": "UINT64", "data": [2**64 - 1]},
        ],
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, a.tobytes())
    doc, blobs = parse_binary_response(call(base_url, INFER, "POST", body, headers))
    outs = {o["name"]: o for o in doc["outputs"]}
    assert outs["a"]["data"] == [1.5, 2.5]
    assert set(blobs) == {"b"}
    assert blobs["b"] == np.array([2**64 - 1], dtype=np.uint64).tobytes()


def test_binary_request_with_json_response(base_url):
    a = np.array([7, 8, 9], dtype=np.uint16)
    body, headers = binary_body(
        {"inputs": [{"name": "a", "shape": [3], "datatype": "UINT16", "parameters": {"binary_data_size": a.nbytes}}]},
        a.tobytes(),
    )
    r = call(base_url, INFER, "POST", body, headers)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    assert r.json()["outputs"][0]["data"] == [7, 8, 9]


def test_binary_header_length_equal_to_body_means_no_blobs(base_url):
    body, headers = binary_body({"inputs": [{"name": "x", "shape": [1], "datatype": "INT16", "data": [3]}]})
    r = call(base_url, INFER, "POST", body, headers)
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [3]


def test_iris_binary_by_hand(base_url):
    x = np.array(IRIS_ROWS, dtype=np.float32)
    body, headers = binary_body(
        {
            "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        },
        x.tobytes(),
    )
    doc, blobs = parse_binary_response(call(base_url, "/v2/models/iris/infer", "POST", body, headers))
    assert np.frombuffer(blobs["output-0"], dtype=np.int64).tolist() == [0, 1, 2]
    probs = np.frombuffer(blobs["probabilities"], dtype=np.float32).reshape(3, 3)
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Errors: 400 with {"error": "..."} naming the problem.


def one_input(**fields) -> dict:
    tensor = {"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}
    tensor.update(fields)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param(one_input(shape=[3], data=[1, 2]), ["'x'", "3 INT32 elements", "got 8"], id="shape-data-mismatch"),
        pytest.param(one_input(shape=[2, 2], data=[[1, 2], [3, 4], [5, 6]]), ["'x'", "4 INT32 elements"], id="nested-too-long"),
        pytest.param(one_input(datatype="FP8"), ["unknown datatype 'FP8'"], id="unknown-datatype"),
        pytest.param(one_input(shape=[-1]), ["'x'", "negative"], id="negative-dim"),
        pytest.param(one_input(shape=[2, -3], data=[]), ["'x'", "negative"], id="negative-second-dim"),
        pytest.param(
            {"inputs": [one_input()["inputs"][0], one_input(data=[2])["inputs"][0]]},
            ["duplicate input name 'x'"],
            id="duplicate-input-names",
        ),
        pytest.param({**one_input(), "outputs": [{"name": "nope"}]}, ["'nope'"], id="unknown-requested-output"),
        pytest.param({**one_input(), "outputs": [{"name": "x"}, {"name": "x"}]}, ["duplicate", "'x'"], id="duplicate-requested-output"),
        pytest.param(one_input(datatype="INT8", data=[300]), ["'x'", "300", "out of range for INT8"], id="out-of-range"),
        pytest.param(one_input(datatype="UINT8", data=[-1]), ["'x'", "out of range for UINT8"], id="negative-unsigned"),
        pytest.param(one_input(data=[1.5]), ["'x'", "non-integer"], id="float-for-int"),
        pytest.param(one_input(data=["a"]), ["'x'", "string"], id="string-for-int"),
        pytest.param(one_input(datatype="BOOL", data=[1]), ["'x'", "BOOL"], id="number-for-bool"),
        pytest.param(one_input(datatype="BYTES", data=[1]), ["'x'", "number"], id="number-for-bytes"),
        pytest.param(one_input(data=[None]), ["'x'", "null"], id="null-element"),
        pytest.param(one_input(data=5), ["'x'", "array"], id="scalar-data"),
        pytest.param(one_input(data=[{"a": 1}]), ["'x'", "object"], id="object-element"),
        pytest.param({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32"}]}, ["'x'", "'data'"], id="missing-data"),
        pytest.param({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}, ["'x'", "datatype"], id="missing-datatype"),
        pytest.param({"inputs": [{"name": "x", "datatype": "INT32", "data": [1]}]}, ["'x'", "shape"], id="missing-shape"),
        pytest.param({}, ["inputs"], id="missing-inputs"),
        pytest.param(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": 4}}]},
            ["'x'", "Inference-Header-Content-Length"],
            id="binary-size-without-header",
        ),
    ],
)
def test_bad_json_requests_are_400_with_a_message(base_url, body, fragments):
    assert_error(infer_json(base_url, body), 400, *fragments)


def test_malformed_json_is_a_400(base_url):
    assert_error(call(base_url, INFER, "POST", b"{not json"), 400, "JSON")
    assert_error(call(base_url, INFER, "POST", b""), 400)
    assert_error(call(base_url, INFER, "POST", b"[1, 2]"), 400)


def test_binary_size_disagreeing_with_shape_is_a_400(base_url):
    header = {"inputs": [{"name": "x", "shape": [3], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]}
    body, headers = binary_body(header, b"\x00" * 8)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "'x'", "3 INT32 elements", "got 8")


def test_binary_bytes_tensor_with_wrong_element_count_is_a_400(base_url):
    blob = bytes_tensor(b"a", b"b")
    header = {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}
    body, headers = binary_body(header, blob)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "'s'")


def test_binary_bytes_tensor_with_truncated_element_is_a_400(base_url):
    blob = struct.pack("<I", 10) + b"abc"  # says 10 bytes, has 3
    header = {"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]}
    body, headers = binary_body(header, blob)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "'s'")


def test_header_length_beyond_the_body_is_a_400(base_url):
    body, headers = binary_body(one_input())
    headers["Inference-Header-Content-Length"] = str(len(body) + 100)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "Inference-Header-Content-Length", str(len(body) + 100), str(len(body)))


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_bad_header_length_value_is_a_400(base_url, value):
    body, headers = binary_body(one_input())
    headers["Inference-Header-Content-Length"] = value
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "Inference-Header-Content-Length")


def test_header_length_cutting_the_json_is_a_400(base_url):
    body, headers = binary_body(one_input())
    headers["Inference-Header-Content-Length"] = str(len(body) // 2)
    assert_error(call(base_url, INFER, "POST", body, headers), 400)


def test_binary_data_shorter_than_declared_is_a_400(base_url):
    header = {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]}
    body, headers = binary_body(header, b"\x00" * 4)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "'x'", "8 bytes", "4 remain")


def test_bytes_after_the_last_binary_input_are_a_400(base_url):
    header = {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]}
    body, headers = binary_body(header, b"\x00" * 12)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "4 bytes")


def test_data_and_binary_size_together_are_a_400(base_url):
    header = one_input(parameters={"binary_data_size": 4})
    body, headers = binary_body(header, b"\x00" * 4)
    assert_error(call(base_url, INFER, "POST", body, headers), 400, "'x'", "binary_data_size")


def test_iris_errors(base_url):
    r = infer_json(base_url, {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "iris")
    assert_error(r, 400, "input-0", "[1, 3]")
    r = infer_json(base_url, {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]}, "iris")
    assert_error(r, 400, "INT32")


def test_unknown_model_is_a_404(base_url):
    assert_error(infer_json(base_url, one_input(), model="nope"), 404, "nope")
    assert_error(call(base_url, "/v2/models/nope"), 404, "nope")
    assert_error(call(base_url, "/v2/models/nope/ready"), 404, "nope")
    assert_error(call(base_url, "/v1/models/nope:predict", "POST", {"instances": [[1, 2, 3, 4]]}), 404, "nope")


def test_unknown_route_and_wrong_method(base_url):
    assert_error(call(base_url, "/v3/nothing"), 404, "/v3/nothing")
    assert_error(call(base_url, INFER, "GET"), 405)
    assert_error(call(base_url, "/v2/health/ready", "POST", b"{}"), 405)


def test_versioned_infer_route_explains_itself(base_url):
    r = call(base_url, "/v2/models/identity/versions/1/infer", "POST", one_input())
    assert_error(r, 404, "'identity' version 1 is not found")


# ---------------------------------------------------------------------------------------------
# V1.


def test_v1_predict_iris(base_url):
    r = call(base_url, "/v1/models/iris:predict", "POST", {"instances": IRIS_ROWS})
    assert r.status == 200, r.body
    assert r.json() == {"predictions": [0, 1, 2]}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"instances": 5}, id="instances-not-a-list"),
        pytest.param({"instances": "abc"}, id="instances-a-string"),
        pytest.param({"inputs": [[1, 2, 3, 4]]}, id="no-instances"),
        pytest.param({"instances": [[1, 2]]}, id="short-row"),
        pytest.param({"instances": [["a", "b", "c", "d"]]}, id="strings"),
        pytest.param(b"not json", id="not-json"),
    ],
)
def test_v1_bad_requests_are_400(base_url, body):
    r = call(base_url, "/v1/models/iris:predict", "POST", body)
    assert_error(r, 400)


def test_v1_instances_5_names_instances(base_url):
    assert_error(call(base_url, "/v1/models/iris:predict", "POST", {"instances": 5}), 400, "instances")
    assert_error(call(base_url, "/v1/models/identity:predict", "POST", {"instances": 5}), 400, "instances")


def test_v1_explain_is_not_implemented(base_url):
    r = call(base_url, "/v1/models/iris:explain", "POST", {"instances": IRIS_ROWS})
    assert_error(r, 501, "explain")


# ---------------------------------------------------------------------------------------------
# The body size limit (a server started with --max-request-bytes 1024).


def _json_of_size(n: int) -> bytes:
    """A valid identity request of exactly n bytes (padded with spaces)."""
    body = json.dumps(one_input()).encode()
    assert len(body) <= n
    return body + b" " * (n - len(body))


def test_body_at_the_limit_is_served(small_server):
    r = call(small_server.url, INFER, "POST", _json_of_size(1024))
    assert r.status == 200, r.body


def test_body_over_the_limit_is_a_413(small_server):
    r = call(small_server.url, INFER, "POST", _json_of_size(1025))
    assert_error(r, 413, "1024")


def test_binary_body_over_the_limit_is_a_413(small_server):
    blob = np.zeros(512, dtype=np.float32).tobytes()
    body, headers = binary_body(
        {"inputs": [{"name": "x", "shape": [512], "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}}]},
        blob,
    )
    assert_error(call(small_server.url, INFER, "POST", body, headers), 413, "1024")


def test_chunked_body_over_the_limit_is_a_413(small_server):
    # No Content-Length: the server must count while reading.
    chunks = [b" " * 512] * 4 + [json.dumps(one_input()).encode()]
    req = chunked(INFER, small_server.host_port, chunks)
    assert_error(raw_exchange(small_server.host, small_server.port, req), 413, "1024")


def test_chunked_body_under_the_limit_is_served(small_server):
    chunks = [b" " * 100, json.dumps(one_input()).encode(), b" " * 100]
    r = raw_exchange(small_server.host, small_server.port, chunked(INFER, small_server.host_port, chunks))
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["data"] == [1]


def test_v1_body_over_the_limit_is_a_413(small_server):
    body = json.dumps({"instances": [IRIS_ROWS[0]] * 100}).encode()
    assert len(body) > 1024
    assert_error(call(small_server.url, "/v1/models/iris:predict", "POST", body), 413)


def test_small_server_still_serves_small_requests(small_server):
    r = call(small_server.url, "/v1/models/iris:predict", "POST", {"instances": IRIS_ROWS})
    assert r.status == 200 and r.json() == {"predictions": [0, 1, 2]}
