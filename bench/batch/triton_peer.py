"""Triton peer for the batching benchmark (bench/batch/run.sh, TRITON=1): the same model logic as
models.py:FixedCost (sleep 5 ms + 0.05 ms per row, echo the input as output-0) served by Triton via
PyTriton (nvidia-pytriton 0.7), once unbatched and once behind Triton's dynamic batcher
(max_batch_size 32, max_queue_delay 5 ms), one instance each.

    python triton_peer.py --port 18490     # HTTP 18490, gRPC 18491, metrics 18492, all on 127.0.0.1

Runs from its own venv (pytriton pins numpy<2). The bundled python backend stub links libpython by
soname, so the running interpreter's own LIBDIR must come first on LD_LIBRARY_PATH before Triton
starts (see ../shared/reference/baseline.md, section 8); this script does that itself.
"""

import argparse
import os
import signal
import sysconfig
import time

import numpy as np

_libdir = sysconfig.get_config_var("LIBDIR")
if _libdir:
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in [_libdir, os.environ.get("LD_LIBRARY_PATH", "")] if p
    )

from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig  # noqa: E402


def fixed_cost(x):
    """FixedCost.predict: one call costs 5 ms + 0.05 ms per row (x.shape[0]) and echoes its input."""
    time.sleep(0.005 + 0.00005 * x.shape[0])
    return x


def unbatched(requests):
    # batching=False: Triton hands over one request at a time, its [1, 16] tensor as is.
    return [{"output-0": fixed_cost(r["input-0"])} for r in requests]


@batch
def batched(**inputs):
    # Dynamic batcher: the queued requests' [1, 16] inputs concatenated into one [N, 16] call.
    return {"output-0": fixed_cost(inputs["input-0"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18490)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-queue-delay-us", type=int, default=5000)
    args = ap.parse_args()
    p = args.port
    config = TritonConfig(
        http_address="127.0.0.1", http_port=p,
        grpc_address="127.0.0.1", grpc_port=p + 1,
        metrics_address="127.0.0.1", metrics_port=p + 2,
        allow_gpu_metrics=False,
    )
    # A server started with & from a non-interactive shell has SIGINT ignored; let run.sh's trap
    # (SIGTERM) or Ctrl-C stop Triton cleanly (workspace, shared memory).
    # PyTriton keeps the statistics/repository/... endpoints behind an access token (inference and
    # health stay open); run.sh passes its own token in PYTRITON_ACCESS_TOKEN to read /stats.
    security = TritonSecurityConfig(access_token=os.environ.get("PYTRITON_ACCESS_TOKEN") or None)
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name="triton_unbatched",
            infer_func=unbatched,
            inputs=[Tensor(name="input-0", dtype=np.float32, shape=(-1, -1))],
            outputs=[Tensor(name="output-0", dtype=np.float32, shape=(-1, -1))],
            config=ModelConfig(batching=False),
            strict=False,
        )
        triton.bind(
            model_name="triton_batched",
            infer_func=batched,
            inputs=[Tensor(name="input-0", dtype=np.float32, shape=(16,))],
            outputs=[Tensor(name="output-0", dtype=np.float32, shape=(16,))],
            config=ModelConfig(
                batching=True,
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=False,
        )

        def _stop(*_):
            triton.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        triton.serve()


if __name__ == "__main__":
    main()
