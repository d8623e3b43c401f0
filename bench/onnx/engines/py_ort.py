"""Times onnxruntime from Python (InferenceSession.run in a loop) on the engines bench's cases.

    .venv/bin/python bench/onnx/engines/py_ort.py /tmp/engines/data [secs]

Prints `bench ort-python MODEL THREADS BATCH MEDIAN_US CALLS` lines like the Rust binary.
"""

import json
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort

DT = {"FP32": np.float32}


def main() -> None:
    data = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/engines/data")
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    cases = [c for c in json.loads((data / "manifest.json").read_text())["cases"] if c["kind"] == "bench"]
    for c in cases:
        model, batch = c["name"].rsplit("_b", 1)
        feeds = {i["name"]: np.fromfile(i["file"], DT[i["dtype"]]).reshape(i["shape"]) for i in c["inputs"]}
        want = [np.fromfile(o["file"], DT[o["dtype"]]).reshape(o["shape"]) for o in c["outputs"]]
        for threads in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(c["model"], so, providers=["CPUExecutionProvider"])
            got = sess.run(None, feeds)
            assert all(np.allclose(g, w, rtol=1e-5, atol=1e-5) for g, w in zip(got, want))
            t0, n = time.perf_counter(), 0
            while n < 5 or (time.perf_counter() - t0 < 0.5 and n < 200):
                sess.run(None, feeds)
                n += 1
            samples = []
            start = time.perf_counter()
            while time.perf_counter() - start < secs or len(samples) < 10:
                t = time.perf_counter()
                sess.run(None, feeds)
                samples.append((time.perf_counter() - t) * 1e6)
            samples.sort()
            print(f"bench\tort-python\t{model}\t{threads}\t{batch}\t{samples[len(samples) // 2]:.1f}\t{len(samples)}", flush=True)


if __name__ == "__main__":
    main()
