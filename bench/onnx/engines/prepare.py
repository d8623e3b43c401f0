"""Writes the engines bench's models, inputs and onnxruntime's expected outputs.

    .venv/bin/python bench/onnx/engines/prepare.py /tmp/engines

makes DIR/models (bench mlp, cnn), DIR/small (tests/python/onnx_models.py's test models plus an
FP16 Add and a BOOL identity made here), and DIR/data/manifest.json: one case per (model, batch)
with its input and expected-output files (raw little-endian, C order; strings as JSON lists).
Inputs are seeded random; expected outputs come from onnxruntime (1 intra-op thread).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
import onnx_models  # noqa: E402

DTYPES = {np.float32: "FP32", np.float16: "FP16", np.int32: "INT32", np.int8: "INT8", np.bool_: "BOOL"}


def dtname(a: np.ndarray) -> str:
    if a.dtype == object:
        return "BYTES"
    return DTYPES[a.dtype.type]


def write(data: pathlib.Path, stem: str, arr: np.ndarray) -> dict:
    entry = {"dtype": dtname(arr), "shape": list(arr.shape)}
    if arr.dtype == object:
        entry["strings"] = [s.decode() if isinstance(s, bytes) else str(s) for s in arr.reshape(-1)]
    else:
        path = data / f"{stem}.bin"
        np.ascontiguousarray(arr).tofile(path)
        entry["file"] = str(path)
    return entry


def main() -> None:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/engines")
    py = sys.executable
    gen = ROOT / "tests" / "python" / "onnx_models.py"
    subprocess.run([py, str(gen), str(out / "models"), "--bench"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([py, str(gen), str(out / "small")], check=True, stdout=subprocess.DEVNULL)
    # Extra small models: FP16 Add (like `simple`), BOOL identity.
    onnx_models.save(onnx_models.simple(TensorProto.FLOAT16), out / "small", "simple_fp16")
    onnx_models.save(onnx_models.identity(TensorProto.BOOL), out / "small", "identity_bool")

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240601)
    cases = []

    def case(kind: str, model: pathlib.Path, name: str, feeds: dict) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
        c = {"kind": kind, "name": name, "model": str(model), "inputs": [], "outputs": []}
        for k, v in feeds.items():
            c["inputs"].append({"name": k, **write(data, f"{name}.in.{k}", v)})
        for meta, v in zip(sess.get_outputs(), outs):
            c["outputs"].append({"name": meta.name, **write(data, f"{name}.out.{meta.name}", np.asarray(v))})
        cases.append(c)

    for batch in (1, 16):
        case("bench", out / "models/mlp/1/model.onnx", f"mlp_b{batch}",
             {"input": rng.standard_normal((batch, 784)).astype(np.float32)})
        case("bench", out / "models/cnn/1/model.onnx", f"cnn_b{batch}",
             {"image": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)})

    small = out / "small"
    a = rng.integers(-1000, 1000, (2, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (2, 16), dtype=np.int32)
    case("small", small / "simple/1/model.onnx", "simple", {"INPUT0": a, "INPUT1": b})
    case("small", small / "simple_int8/1/model.onnx", "simple_int8",
         {"INPUT0": rng.integers(-60, 60, (2, 16), dtype=np.int8), "INPUT1": rng.integers(-60, 60, (2, 16), dtype=np.int8)})
    case("small", small / "simple_fp16/1/model.onnx", "simple_fp16",
         {"INPUT0": rng.standard_normal((2, 16)).astype(np.float16), "INPUT1": rng.standard_normal((2, 16)).astype(np.float16)})
    case("small", small / "simple_string/1/model.onnx", "simple_string",
         {"INPUT0": a.astype(str).astype(object), "INPUT1": b.astype(str).astype(object)})
    case("small", small / "simple_identity/1/model.onnx", "simple_identity",
         {"INPUT0": np.array([["hello", "wörld", ""], ["a", "xyz", "123"]], dtype=object)})
    case("small", small / "identity_bool/1/model.onnx", "identity_bool",
         {"INPUT0": rng.integers(0, 2, (2, 5)).astype(np.bool_)})
    case("small", small / "mlp/1/model.onnx", "small_mlp", {"input": rng.standard_normal((3, 20)).astype(np.float32)})
    case("small", small / "cnn/1/model.onnx", "small_cnn", {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)})

    (data / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"{len(cases)} cases -> {data / 'manifest.json'}")


if __name__ == "__main__":
    main()
