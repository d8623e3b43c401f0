"""The benchmark's Python models, with the same logic for every server (as in
../shared/reference/baseline.md §2):

- **echo**: V2 infer, one FP32 input `[1,16]`, answered as `output-0` (pure serving overhead);
- **cpu**: a fixed pure-Python loop of about 5 ms of CPU, then echo; a synchronous `predict`;
- **sleep**: `async def predict` awaiting `asyncio.sleep(0.020)`, then echo.

Each is written twice, once on `kserve.Model` (`KServeEcho`, `KServeCpu`, `KServeSleep`) and
once on `ferroserve.Model` (`FerroEcho`, `FerroCpu`, `FerroSleep`), from one class body.
The classes are built on first access (a module `__getattr__`), so that a ferroserve worker
never imports kserve and KServe never imports ferroserve: each server pays only for its own
package. They are ordinary module attributes after that (pickle finds them by name, which
KServe's `--workers` processes and Ray's replicas need).

The cpu loop length comes from `BENCH_CPU_ITERS` (bench/python/bench.py calibrates once and
hands the same count to every server); without it the model calibrates itself at load.
"""

import asyncio
import os
import statistics
import time
import uuid

SLEEP_S = 0.020
CPU_TARGET_S = 0.005


def spin(n):
    """The cpu model's work: a serial integer loop of `n` steps (the GIL is held throughout)."""
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def calibrate(target_s=CPU_TARGET_S):
    """Loop steps for `target_s` of this thread's CPU time, and the median seconds of nine calls
    of that size. A short probe gives a first guess; the median of calls of that guess's size
    corrects it (a one-off slow or fast probe does not set the loop length)."""

    def timed(n):
        t = time.thread_time()
        spin(n)
        return time.thread_time() - t

    probe = 20000
    timed(probe)
    steps = max(1, int(probe * target_s / min(timed(probe) for _ in range(7))))
    for _ in range(2):
        steps = max(1, int(steps * target_s / statistics.median(timed(steps) for _ in range(7))))
    return steps, statistics.median(timed(steps) for _ in range(9))


def cpu_steps():
    env = os.environ.get("BENCH_CPU_ITERS")
    return int(env) if env else calibrate()[0]


def echo(payload, model_name, infer_output, infer_response):
    """The answer of every model: the first input, as `output-0`. The response needs an id
    (KServe's REST layer rejects one without); a request without one gets a fresh uuid, as
    KServe's own examples do."""
    arr = payload.inputs[0].as_numpy()
    out = infer_output("output-0", list(arr.shape), "FP32")
    out.set_data_from_numpy(arr, binary_data=False)
    rid = payload.id if payload.id is not None else uuid.uuid4().hex
    return infer_response(rid, model_name, [out])


def _build(prefix, base, infer_output, infer_response):
    class Echo(base):
        def load(self):
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None):
            return echo(payload, self.name, infer_output, infer_response)

    class Cpu(base):
        def load(self):
            self.steps = cpu_steps()
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None):
            spin(self.steps)
            return echo(payload, self.name, infer_output, infer_response)

    class Sleep(base):
        def load(self):
            self.ready = True
            return self.ready

        async def predict(self, payload, headers=None):
            await asyncio.sleep(SLEEP_S)
            return echo(payload, self.name, infer_output, infer_response)

    classes = {}
    for cls in (Echo, Cpu, Sleep):
        cls.__name__ = cls.__qualname__ = prefix + cls.__name__
        cls.__module__ = __name__
        classes[cls.__name__] = cls
    return classes


def __getattr__(name):
    if name in ("KServeEcho", "KServeCpu", "KServeSleep"):
        import kserve

        globals().update(_build("KServe", kserve.Model, kserve.InferOutput, kserve.InferResponse))
    elif name in ("FerroEcho", "FerroCpu", "FerroSleep"):
        import ferroserve

        globals().update(
            _build("Ferro", ferroserve.Model, ferroserve.InferOutput, ferroserve.InferResponse)
        )
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return globals()[name]


# Model name (the URL's <m>) → class name suffix.
MODELS = {"echo": "Echo", "cpu": "Cpu", "sleep": "Sleep"}


if __name__ == "__main__":
    # `python models.py calibrate`: prints the steps for 5 ms and the median call time (JSON).
    import json
    import sys

    if sys.argv[1:] == ["calibrate"]:
        steps, call_s = calibrate()
        print(json.dumps({"steps": steps, "call_ms": round(call_s * 1e3, 3), "target_ms": CPU_TARGET_S * 1e3}))
    else:
        sys.exit("usage: models.py calibrate")
