"""The floor of the ONNX benchmark: onnxruntime called directly in a Python loop, batch 1.

    python bench/onnx/direct.py DIR SECONDS THREADS   # prints: model calls/s median-µs
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnxruntime

root, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for name, shape in (("mlp", (1, 784)), ("cnn", (1, 3, 224, 224))):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(f"{root}/{name}/1/model.onnx", options)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    print(f"{name} {len(times) / seconds:.0f} {statistics.median(times) * 1e6:.0f}")
