"""Trains a small scikit-learn model and exports it to ONNX in a model repository that
`ferroserve serve --model-repository` serves with no code.

    pip install scikit-learn skl2onnx onnx
    python examples/onnx/train_export.py models      # writes models/iris_lr/1/model.onnx
    ferroserve serve --model-repository models

The model takes FP32 [-1, 4] (`input`) and answers the class (`label`, INT64 [-1]) and the
class probabilities (`probabilities`, FP32 [-1, 3]).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train() -> LogisticRegression:
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)


def export(model: LogisticRegression, repository: pathlib.Path, name: str = "iris_lr") -> pathlib.Path:
    # zipmap=False: probabilities as a plain tensor (a V2 output), not a list of maps.
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = repository / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=pathlib.Path)
    args = parser.parse_args()
    print(export(train(), args.repository))


if __name__ == "__main__":
    main()
