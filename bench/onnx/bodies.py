"""Request bodies of the ONNX benchmark, written to DIR: `mlp.json` (V2 JSON, FP32 [1,784]) and
`cnn.bin` (the binary tensor extension, FP32 [1,3,224,224]: a JSON header then 602,112 raw
bytes; its header length is written to `cnn.len`), with `*.lua` scripts for wrk."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

out = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(0)
mlp = rng.standard_normal((1, 784)).astype(np.float32)
(out / "mlp.json").write_text(
    json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": mlp.flatten().tolist()}]})
)
cnn = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
header = json.dumps(
    {
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [1, 3, 224, 224], "parameters": {"binary_data_size": cnn.nbytes}}
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
).encode()
(out / "cnn.bin").write_bytes(header + cnn.tobytes())
for name, content_type, extra in (
    ("mlp", "application/json", ""),
    ("cnn", "application/octet-stream", f'wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"\n'),
):
    body = out / (name + (".json" if name == "mlp" else ".bin"))
    (out / f"{name}.lua").write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f"{extra}"
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
    )
