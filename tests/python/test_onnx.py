"""The built-in ONNX backend end to end: a model repository of ONNX models (made by
`onnx_models.py` at test time) served with no code, called with tritonclient over HTTP and gRPC.
Outputs must match onnxruntime in Python within 1e-5; requests that do not fit the graph get a
400 naming the input; a broken model fails alone."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import onnxruntime
import pytest

import onnx_models
from conftest import REPO_ROOT, _start, _stop

PYTHON_MODELS = REPO_ROOT / "tests" / "python" / "models" / "repository"
KEY = ("admin-key", "s3cret")


def make_test_repository(root):
    """Triton's four example models (`simple_identity` in Python), an MLP, a CNN and a Python
    `simple`: seven models, as many as Triton's example repository holds (its model-control
    example counts them)."""
    onnx_models.test_models(root)
    for name, source in (("simple_python", "add_sub.py"), ("simple_identity", "identity.py")):
        (root / name).mkdir()
        shutil.copy(PYTHON_MODELS / source, root / name / "model.py")


@pytest.fixture(scope="session")
def onnx_repo(_log_dir):
    root = _log_dir / "onnx-repository"
    root.mkdir()
    make_test_repository(root)
    return root


@pytest.fixture(scope="session")
def onnx_server(_log_dir, onnx_repo):
    import sys

    s = _start(
        [
            "--model-repository", str(onnx_repo),
            "--model-control-mode", "explicit",
            "--load-model", "*",
            "--python", sys.executable,
        ],
        _log_dir,
        "onnx",
    )
    try:
        yield s
    finally:
        _stop(s)


@pytest.fixture(scope="module")
def odd_server(_log_dir):
    """Every datatype, a model with fixed dims, three broken models; the repository API
    restricted to requests with the admin key."""
    root = _log_dir / "odd-repository"
    root.mkdir()
    onnx_models.datatype_and_broken_models(root)
    spec = f"model-repository:{KEY[0]}={KEY[1]}"
    s = _start(
        ["--model-repository", str(root), "--http-restricted-api", spec, "--grpc-restricted-protocol", spec],
        _log_dir,
        "odd",
    )
    s.root = root
    try:
        yield s
    finally:
        _stop(s)


def http_client(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=server.host_port, network_timeout=30)


def grpc_client(server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=server.grpc_host_port)


def post(server, path, body, headers=None):
    req = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def simple_inputs(module, a, b, datatype="INT32", binary=True):
    inputs = [module.InferInput("INPUT0", list(a.shape), datatype), module.InferInput("INPUT1", list(b.shape), datatype)]
    if module.__name__.endswith("http"):
        inputs[0].set_data_from_numpy(a, binary_data=binary)
        inputs[1].set_data_from_numpy(b, binary_data=binary)
    else:
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
    return inputs


@pytest.mark.parametrize("binary", [True, False])
def test_simple_over_http(onnx_server, binary):
    import tritonclient.http as httpclient

    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    with http_client(onnx_server) as client:
        result = client.infer("simple", simple_inputs(httpclient, a, b, binary=binary))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("model,dtype", [("simple", np.int32), ("simple_int8", np.int8), ("simple_python", np.int32)])
def test_simple_models_over_grpc(onnx_server, model, dtype):
    import tritonclient.grpc as grpcclient

    a = np.arange(16, dtype=dtype).reshape(1, 16)
    b = np.ones((1, 16), dtype=dtype)
    name = "INT8" if dtype == np.int8 else "INT32"
    result = grpc_client(onnx_server).infer(model, simple_inputs(grpcclient, a, b, datatype=name))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_strings_both_ways(onnx_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    a = np.array([[str(i) for i in range(16)]], dtype=object)
    b = np.array([["1"] * 16], dtype=object)
    with http_client(onnx_server) as client:
        http = client.infer("simple_string", simple_inputs(httpclient, a, b, datatype="BYTES"))
    grpc = grpc_client(onnx_server).infer("simple_string", simple_inputs(grpcclient, a, b, datatype="BYTES"))
    for result in (http, grpc):
        sums = [int(x) for x in result.as_numpy("OUTPUT0").flatten()]
        diffs = [int(x) for x in result.as_numpy("OUTPUT1").flatten()]
        assert sums == [i + 1 for i in range(16)]
        assert diffs == [i - 1 for i in range(16)]


@pytest.mark.parametrize("model,shape", [("mlp", (3, 20)), ("cnn", (2, 3, 32, 32))])
def test_outputs_match_onnxruntime(onnx_server, onnx_repo, model, shape):
    """Batches of several rows (the dynamic batch dimension) over HTTP binary and gRPC."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_repo / model / "1" / "model.onnx"))
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    expected = session.run(None, {input_name: x})[0]

    http_input = httpclient.InferInput(input_name, list(shape), "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    with http_client(onnx_server) as client:
        got_http = client.infer(model, [http_input]).as_numpy(output_name)
    grpc_input = grpcclient.InferInput(input_name, list(shape), "FP32")
    grpc_input.set_data_from_numpy(x)
    got_grpc = grpc_client(onnx_server).infer(model, [grpc_input]).as_numpy(output_name)
    for got in (got_http, got_grpc):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_metadata_and_config_come_from_the_graph(onnx_server):
    with http_client(onnx_server) as client:
        meta = client.get_model_metadata("simple")
        config = client.get_model_config("simple")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert [i["data_type"] for i in config["input"]] == ["TYPE_INT32", "TYPE_INT32"]
    grpc_meta = grpc_client(onnx_server).get_model_metadata("cnn", as_json=True)
    assert grpc_meta["inputs"][0]["shape"] == ["-1", "3", "32", "32"]


@pytest.mark.parametrize(
    "inputs,message,code",
    [
        (
            [("INPUT0", "FP32", [1, 16]), ("INPUT1", "INT32", [1, 16])],
            "inference input 'INPUT0' has datatype FP32, but the model expects INT32",
            400,
        ),
        ([("INPUT0", "INT32", [16]), ("INPUT1", "INT32", [16])], "unexpected shape for input 'INPUT0'", 400),
        ([("INPUT0", "INT32", [1, 15]), ("INPUT1", "INT32", [1, 15])], "dimension 1 is 15, the model expects 16", 400),
        ([("INPUT0", "INT32", [1, 16])], "missing input 'INPUT1'", 400),
        (
            [("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16]), ("INPUT9", "INT32", [1, 16])],
            "unexpected inference input 'INPUT9'",
            400,
        ),
        # Shapes each allowed by the graph but not together: the engine's own error, as
        # ONNX Runtime reports a failed kernel (a 500 naming the node and why).
        (
            [("INPUT0", "INT32", [3, 16]), ("INPUT1", "INT32", [2, 16])],
            "onnxruntime: Non-zero status code returned while running Sub node",
            500,
        ),
    ],
)
def test_requests_that_do_not_fit_the_graph_are_refused(onnx_server, inputs, message, code):
    body = {
        "inputs": [
            {"name": n, "datatype": dt, "shape": shape, "data": [1] * int(np.prod(shape))} for n, dt, shape in inputs
        ]
    }
    status, answer = post(onnx_server, "/v2/models/simple/infer", body)
    assert status == code, answer
    assert message in answer["error"]
    # The model still serves.
    ok = {"inputs": [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": [1] * 16} for n in ("INPUT0", "INPUT1")]}
    assert post(onnx_server, "/v2/models/simple/infer", ok)[0] == 200


def test_every_datatype_round_trips(odd_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rng = np.random.default_rng(3)
    samples = {
        "BOOL": np.array([[True, False, True]]),
        "FP16": rng.standard_normal((2, 3)).astype(np.float16),
        "FP32": rng.standard_normal((2, 3)).astype(np.float32),
        "FP64": rng.standard_normal((2, 3)),
        "BYTES": np.array([[b"a", b"", "ünï".encode()]], dtype=object),
    }
    for dt in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"):
        np_type = {"U": "uint", "I": "int"}[dt[0]] + dt.lstrip("UINT").lstrip("INT")
        samples[dt] = np.arange(6, dtype=np_type).reshape(2, 3)
    assert set(samples) == set(onnx_models.DATATYPES)
    with http_client(odd_server) as client:
        for dt, x in samples.items():
            model = f"identity_{dt.lower()}"
            i = httpclient.InferInput("INPUT0", list(x.shape), dt)
            i.set_data_from_numpy(x, binary_data=True)
            got = client.infer(model, [i]).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(got, x, err_msg=f"{dt} over HTTP")
            g = grpcclient.InferInput("INPUT0", list(x.shape), dt)
            g.set_data_from_numpy(x)
            got = grpc_client(odd_server).infer(model, [g]).as_numpy("OUTPUT0")
            np.testing.assert_array_equal(got, x, err_msg=f"{dt} over gRPC")


def test_fixed_dimensions_are_checked(odd_server):
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2], "data": [1.0] * 6}]}
    status, answer = post(odd_server, "/v2/models/fixed/infer", body)
    assert status == 400
    assert "dimension 0 is 3, the model expects 2" in answer["error"]
    body["inputs"][0]["shape"] = [2, 3]
    status, answer = post(odd_server, "/v2/models/fixed/infer", body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == [2.0] * 6


def test_broken_models_fail_alone_with_their_reason(odd_server):
    status, index = post(odd_server, "/v2/repository/index", {}, headers={KEY[0]: KEY[1]})
    assert status == 200
    by_name = {m["name"]: m for m in index}
    for name in ("corrupt", "missing", "unsupported"):
        assert by_name[name]["state"] == "UNAVAILABLE", by_name[name]
        status, answer = post(odd_server, f"/v2/models/{name}/infer", {"inputs": []})
        assert status == 404, answer
    assert "corrupt" in by_name["corrupt"]["reason"] and "model.onnx" in by_name["corrupt"]["reason"]
    assert by_name["missing"]["reason"].endswith("missing/1/model.onnx does not exist")
    assert "Frobnicate" in by_name["unsupported"]["reason"]
    ready = [m["name"] for m in index if m["state"] == "READY"]
    assert len(ready) == len(onnx_models.DATATYPES) + 1, index
    with http_client(odd_server) as client:
        assert client.is_server_ready()


def test_repository_api_is_restricted_to_the_key(odd_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    for path in ("/v2/repository/index", "/v2/repository/models/fixed/load", "/v2/repository/models/fixed/unload"):
        status, answer = post(odd_server, path, {})
        assert status == 403, (path, answer)
        assert answer["error"] == "This API is restricted, expecting header 'admin-key'"
    with http_client(odd_server) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("fixed")
        client.load_model("fixed", headers={KEY[0]: KEY[1]})
        assert client.is_model_ready("fixed")
        # Inference is not restricted.
        assert client.is_model_ready("identity_fp32")
    grpc = grpcclient.InferenceServerClient(url=odd_server.grpc_host_port)
    with pytest.raises(InferenceServerException) as info:
        grpc.get_model_repository_index()
    assert "PERMISSION_DENIED" in str(info.value.status())
    index = grpc.get_model_repository_index(headers={KEY[0]: KEY[1]}, as_json=True)
    assert any(m["name"] == "fixed" for m in index["models"])


def test_quick_start_serves_a_scikit_learn_model_with_no_code(_log_dir):
    """README's quick start: train and export with examples/onnx/train_export.py, serve the
    file with `--model FILE --name NAME`; answers match scikit-learn's."""
    import importlib.util

    import tritonclient.http as httpclient

    spec = importlib.util.spec_from_file_location("train_export", REPO_ROOT / "examples" / "onnx" / "train_export.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.train()
    path = example.export(model, _log_dir / "quick-start")
    s = _start(["--model", str(path), "--name", "iris"], _log_dir, "quick-start")
    try:
        x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
        i = httpclient.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        with http_client(s) as client:
            result = client.infer("iris", [i])
        np.testing.assert_array_equal(result.as_numpy("label"), model.predict(x))
        np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(x), rtol=0, atol=1e-5)
        # KServe's V1, as its scikit-learn server answers: the first output (the labels) by row.
        status, answer = post(s, "/v1/models/iris:predict", {"instances": x.tolist()})
        assert status == 200, answer
        assert answer == {"predictions": model.predict(x).tolist()}
        status, answer = post(s, "/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4], [6.7, 3.0, 5.2, 2.3]]})
        assert status == 400 and "ragged" in answer["error"], answer
        status, answer = post(s, "/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4]]})
        assert status == 400 and "dimension 1 is 3, the model expects 4" in answer["error"], answer
    finally:
        _stop(s)
