"""The peer a KServe user writes for an ONNX model (KServe has no ONNX server of its own): a
`kserve.Model` that calls onnxruntime in Python. One process, as `kserve.ModelServer` runs it.

    python bench/onnx/kserve_onnx.py --model_dir DIR --http_port 18590

serves DIR/<name>/1/model.onnx for every <name> (the benchmark's mlp and cnn)."""

from __future__ import annotations

import argparse
import pathlib

import kserve
import numpy as np
import onnxruntime
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: pathlib.Path, threads: int):
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.load()

    def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = onnxruntime.InferenceSession(str(self.path), options)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        results = self.session.run(None, {self.input: x})
        outputs = [
            InferOutput(name=n, shape=list(r.shape), datatype="FP32", data=r.astype(np.float32))
            for n, r in zip(self.outputs, results)
        ]
        binary = any((o.parameters or {}).get("binary_data") for o in payload.request_outputs or [])
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args, _ = parser.parse_known_args()
    root = pathlib.Path(args.model_dir)
    models = [OnnxModel(p.name, p / "1" / "model.onnx", args.threads) for p in sorted(root.iterdir()) if p.is_dir()]
    kserve.ModelServer(workers=1).start(models)
