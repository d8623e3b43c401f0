"""The composition benchmark's models (bench/compose/run.sh), the same logic for every server.
The echo logic is bench/python/models.py's (imported, not copied):

- ferroserve: `FerroPyIngress` (`async def predict` awaiting
  `get_deployment_handle("echo").remote(request)`, where `echo` is bench/python's `FerroEcho`)
  and `FerroRustIngress` (the same, to the built-in Rust `identity`);
- KServe 0.21: `KServeCompose`, ingress and echo in one process: its `predict` calls an echo
  model's `predict` directly (KServe has no handles);
- Ray Serve: `RayIngress` (HTTP ingress: parses the V2 JSON body, awaits `echo.remote(body)`)
  and `RayEcho` (the echo: numpy from the V2 input and back, as the others), wired in
  bench/compose/ray_server.py with `RayIngress.bind(RayEcho.bind())`; plus `RayEchoAlone`, the
  same echo as an HTTP deployment of its own (Ray's single-model baseline).

Classes are built on first access (a module `__getattr__`) so each server imports only its own
package. The module is named compose_models so it can import bench/python's `models`.
"""

import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import models as pymodels  # noqa: E402  (bench/python/models.py)


def _ferro():
    from ferroserve import Model, get_deployment_handle

    def ingress(prefix, downstream):
        class Ingress(Model):
            def load(self):
                self.downstream = get_deployment_handle(downstream)
                self.ready = True
                return self.ready

            async def predict(self, payload, headers=None):
                return await self.downstream.remote(payload)

        Ingress.__name__ = Ingress.__qualname__ = prefix
        Ingress.__module__ = __name__
        return Ingress

    return {"FerroPyIngress": ingress("FerroPyIngress", "echo"),
            "FerroRustIngress": ingress("FerroRustIngress", "identity")}


def _kserve():
    import kserve

    class KServeCompose(kserve.Model):
        def load(self):
            self.echo = pymodels.KServeEcho("echo")
            self.echo.load()
            self.ready = True
            return self.ready

        async def predict(self, payload, headers=None):
            return self.echo.predict(payload, headers)

    KServeCompose.__module__ = __name__
    return {"KServeCompose": KServeCompose}


# --- Ray Serve (plain classes; ray_server.py wraps them in serve.deployment) ---------------------


def ray_echo(body, model_name):
    """bench/python's echo on a V2 JSON dict: the first input through numpy, as `output-0`."""
    import numpy as np

    inp = body["inputs"][0]
    arr = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
    return {"id": body.get("id") or uuid.uuid4().hex, "model_name": model_name,
            "outputs": [{"name": "output-0", "shape": list(arr.shape), "datatype": "FP32",
                         "data": arr.flatten().tolist()}]}


class RayEcho:
    def __call__(self, body):
        return ray_echo(body, "echo")


async def _http(request, answer):
    from starlette.responses import JSONResponse

    if request.method == "GET":  # /v2/models/<m>/ready
        return JSONResponse({"name": "compose", "ready": True})
    return JSONResponse(await answer(await request.json()))


class RayIngress:
    def __init__(self, echo):
        self.echo = echo  # a DeploymentHandle

    async def __call__(self, request):
        async def call(body):
            return await self.echo.remote(body)

        return await _http(request, call)


class RayEchoAlone:
    async def __call__(self, request):
        async def call(body):
            return ray_echo(body, "ray-echo")

        return await _http(request, call)


def __getattr__(name):
    if name in ("FerroPyIngress", "FerroRustIngress"):
        globals().update(_ferro())
    elif name == "KServeCompose":
        globals().update(_kserve())
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return globals()[name]
