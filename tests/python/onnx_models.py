"""ONNX models the tests and the benchmark build for themselves, with the `onnx` package.

Nothing here is downloaded: every model is written from a graph spelled out below, with fixed
random weights (seeded), so a run is repeatable.

    python tests/python/onnx_models.py DIR            # Triton's example models, an MLP, a CNN
    python tests/python/onnx_models.py DIR --bench    # the benchmark's MLP and CNN

write a model repository in Triton's layout: DIR/<name>/1/model.onnx.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _model(nodes, inputs, outputs, initializers=(), name="model", opset=OPSET):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="ferroserve-tests",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def simple(elem_type=TensorProto.INT32) -> onnx.ModelProto:
    """Triton's `simple`: INPUT0, INPUT1 [-1, 16] -> OUTPUT0 = sum, OUTPUT1 = difference."""
    inputs = [helper.make_tensor_value_info(n, elem_type, ["batch", 16]) for n in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(n, elem_type, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    return _model(nodes, inputs, outputs, name="simple")


def simple_string() -> onnx.ModelProto:
    """Triton's `simple_string`: numbers as strings in, their sum and difference as strings out."""
    S, I = TensorProto.STRING, TensorProto.INT32
    inputs = [helper.make_tensor_value_info(n, S, ["batch", 16]) for n in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(n, S, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")]
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=I),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=I),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["diff"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=S),
        helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=S),
    ]
    return _model(nodes, inputs, outputs, name="simple_string")


def identity(elem_type, name="INPUT0", out="OUTPUT0", shape=("batch", -1)) -> onnx.ModelProto:
    """One input copied to one output (Triton's `simple_identity` is the BYTES one)."""
    dims = [d if d != -1 else f"d{i}" for i, d in enumerate(shape)]
    inputs = [helper.make_tensor_value_info(name, elem_type, dims)]
    outputs = [helper.make_tensor_value_info(out, elem_type, dims)]
    return _model([helper.make_node("Identity", [name], [out])], inputs, outputs, name="identity")


def mlp(seed=0, hidden=(512, 512), features=784, classes=10) -> onnx.ModelProto:
    """FP32 [-1, features] -> hidden layers with ReLU -> classes, softmax."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], [], "input", features
    for i, h in enumerate(list(hidden) + [classes]):
        w = (rng.standard_normal((width, h)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(h) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"]))
        prev, width = f"g{i}", h
        if i < len(hidden):
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])]
    return _model(nodes, inputs, outputs, inits, name="mlp")


def cnn(seed=0, channels=(16, 32, 64, 128), size=224, classes=10) -> onnx.ModelProto:
    """FP32 [-1, 3, size, size] -> 3x3 stride-2 convolutions with ReLU -> global average pool -> classes."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, cin = [], [], "image", 3
    for i, cout in enumerate(channels):
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"cw{i}"), numpy_helper.from_array(b, f"cb{i}")]
        nodes.append(
            helper.make_node("Conv", [prev, f"cw{i}", f"cb{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    w = (rng.standard_normal((cin, classes)) / np.sqrt(cin)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "fw"), numpy_helper.from_array(np.zeros(classes, np.float32), "fb")]
    nodes.append(helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"]))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])]
    return _model(nodes, inputs, outputs, inits, name="cnn")


def add_constant(value: int) -> onnx.ModelProto:
    """INT32 [-1, 4] -> input + value: versions of one model that answer differently."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT32, ["batch", 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 4])]
    c = numpy_helper.from_array(np.array(value, dtype=np.int32), "c")
    return _model([helper.make_node("Add", ["x", "c"], ["y"])], inputs, outputs, [c], name="add")


def fixed_shape() -> onnx.ModelProto:
    """FP32 [2, 3] -> doubled: every dimension fixed, to test the checks of fixed dims."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    return _model([helper.make_node("Add", ["x", "x"], ["y"])], inputs, outputs, name="fixed")


def unsupported_operator() -> onnx.ModelProto:
    """A valid graph whose one node is an operator no engine knows (a custom domain)."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")], "bad", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = IR_VERSION
    return model


# Every protocol datatype with an ONNX element type (BF16 is left out: onnxruntime's Identity
# has no kernel for it on the CPU).
DATATYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def save(model: onnx.ModelProto, repo: pathlib.Path, name: str, version: int = 1) -> pathlib.Path:
    path = repo / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def triton_examples(repo: pathlib.Path) -> None:
    """Triton's example models the example clients call that ONNX can express (the tests add
    `simple_identity` as a Python model: ONNX Runtime's strings cannot hold a NUL byte)."""
    save(simple(TensorProto.INT32), repo, "simple")
    save(simple(TensorProto.INT8), repo, "simple_int8")
    save(simple_string(), repo, "simple_string")


def test_models(repo: pathlib.Path) -> None:
    """The end-to-end tests' ONNX models: Triton's examples, a small MLP and CNN."""
    triton_examples(repo)
    save(mlp(hidden=(64, 32), features=20, classes=5), repo, "mlp")
    save(cnn(channels=(4, 8), size=32), repo, "cnn")


def datatype_and_broken_models(repo: pathlib.Path) -> None:
    """An identity per datatype, a model with fixed dims, and three that cannot load: a
    corrupt file, a directory without a model, an operator no engine has."""
    for name, elem in DATATYPES.items():
        save(identity(elem), repo, f"identity_{name.lower()}")
    save(fixed_shape(), repo, "fixed")
    corrupt = repo / "corrupt" / "1" / "model.onnx"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"this is not an onnx model\x00\x01\x02")
    (repo / "missing" / "1").mkdir(parents=True, exist_ok=True)
    save(unsupported_operator(), repo, "unsupported")


def bench_models(repo: pathlib.Path) -> None:
    save(mlp(), repo, "mlp")
    save(cnn(), repo, "cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=pathlib.Path)
    parser.add_argument("--bench", action="store_true", help="write the benchmark's MLP and CNN only")
    args = parser.parse_args()
    if args.bench:
        bench_models(args.repo)
    else:
        test_models(args.repo)
    for p in sorted(args.repo.glob("*/*/model.onnx")):
        print(p)


if __name__ == "__main__":
    main()
