"""Models that call other deployments through handles (composition)."""

import asyncio
import os
import time
from fractions import Fraction

import numpy as np

from ferroserve import InferOutput, InferRequest, InferResponse, Model, get_deployment_handle


class Double(Model):
    """V1 `{"x": n}` → `{"x": 2n}`; V2: every input doubled. `{"fail": true}` raises;
    `{"sleep": s}` waits first."""

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            if payload.get("fail"):
                raise ValueError("kaput")
            time.sleep(payload.get("sleep", 0))
            return {"x": 2 * payload.get("x", 0), "pid": os.getpid()}
        outputs = []
        for i in payload.inputs:
            o = InferOutput(i.name, i.shape, i.datatype)
            o.set_data_from_numpy(i.as_numpy() * 2)
            outputs.append(o)
        return InferResponse(payload.id, self.name, outputs)


class Ingress(Model):
    """V1: `double(double(request))`, the second call chained on the first's response.
    V2: through the Rust `identity`, then `double`."""

    def load(self):
        self.double = get_deployment_handle("double")
        self.identity = get_deployment_handle("identity")
        self.ready = True

    async def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            return await self.double.remote(self.double.remote(payload))
        echoed = await self.identity.remote(payload)
        request = InferRequest("double", [_as_input(o) for o in echoed.outputs], request_id=payload.id)
        return await self.double.remote(request)


def _as_input(output):
    from ferroserve import InferInput

    i = InferInput(output.name, output.shape, output.datatype)
    i.set_data_from_numpy(np.asarray(output.as_numpy()))
    return i


class SyncIngress(Model):
    """A sync handler calling `double` with `.result()`."""

    def predict(self, payload, headers=None):
        return get_deployment_handle("double").remote(payload).result()


class SyncForwarder(Model):
    """A sync handler on the event loop that hands back `double`'s response unawaited: the
    worker awaits it, and the sync backlog waits meanwhile."""

    def predict(self, payload, headers=None):
        return get_deployment_handle("double").remote(payload)


class Sleeper(Model):
    """Async: waits `sleep` seconds."""

    async def predict(self, payload, headers=None):
        await asyncio.sleep(payload.get("sleep", 0))
        return {"slept": payload.get("sleep", 0)}


class FanOut(Model):
    """Calls `sleeper` `n` times at once with `asyncio.gather`."""

    async def predict(self, payload, headers=None):
        sleeper = get_deployment_handle("sleeper")
        calls = [sleeper.remote({"sleep": payload.get("sleep", 0)}) for _ in range(payload.get("n", 1))]
        answers = await asyncio.gather(*calls)
        return {"answers": len(answers)}


class Tagger(Model):
    """V1: the body back with this deployment's name appended to its `path`."""

    def predict(self, payload, headers=None):
        body = dict(payload)
        body["path"] = list(body.get("path", [])) + [self.name]
        return body


class Broken(Model):
    """Always fails."""

    def predict(self, payload, headers=None):
        raise RuntimeError("broken on purpose")


class Counter(Model):
    """A sync model whose methods other deployments call with Python objects."""

    def __init__(self, name):
        super().__init__(name)
        self.total = Fraction(0)
        self.ready = True

    def add(self, amount, *, times=1):
        self.total += amount * times
        return self.total

    async def describe(self, prefix):
        return f"{prefix}: {self.total}"

    def predict(self, payload, headers=None):
        return {"total": str(self.total)}


class MethodCaller(Model):
    """Calls `counter`'s methods: keyword arguments, Python objects, `options(method_name=)`."""

    async def predict(self, payload, headers=None):
        counter = get_deployment_handle("counter")
        if payload.get("missing"):
            return await counter.no_such_method.remote()
        if payload.get("rust"):
            return await get_deployment_handle("identity").add.remote(1)
        total = await counter.add.remote(Fraction(1, 3), times=3)
        described = await counter.options(method_name="describe").remote("now")
        return {"total": str(total), "type": type(total).__name__, "described": described}


class Pipeline3(Model):
    """V2: `pre` (Python) → `identity` (Rust) → `post` (Python), tensors raw all the way."""

    async def predict(self, payload, headers=None):
        pre = await get_deployment_handle("pre").remote(payload)
        mid = await get_deployment_handle("identity").remote(_request_of(pre, payload.id))
        return await get_deployment_handle("post").remote(_request_of(mid, payload.id))


def _request_of(response, request_id):
    """A response's outputs as the inputs of the next request."""
    return InferRequest("next", [_as_input(o) for o in response.outputs], request_id=request_id)
