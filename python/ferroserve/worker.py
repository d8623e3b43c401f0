"""The replica worker: `python -m ferroserve.worker --socket PATH --target FILE.py:Class
--name NAME`. ferroserve starts one per Python replica; it constructs the model, loads it,
says it is ready, then serves requests arriving as frames on the Unix socket until the socket
closes. A worker never outlives ferroserve: it exits when the socket closes, and on Linux the
kernel kills it when ferroserve dies (PR_SET_PDEATHSIG)."""

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import traceback

import numpy as np

from .protocol import read_frame, write_frame
from .types import InferInput, InferRequest, InferResponse, encode_bytes, from_np_dtype, to_np_dtype


def _die_with_parent():
    """Asks the kernel to SIGKILL this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; socket EOF also ends the worker
        return
    parent = os.environ.get("FERROSERVE_PARENT_PID")
    if parent and os.getppid() != int(parent):
        os._exit(1)  # the parent died before prctl took effect


def load_class(target: str):
    """`path/to/file.py:Class` or `package.module:Class` → the class."""
    module_part, _, class_name = target.rpartition(":")
    if not module_part or not class_name:
        raise ValueError(f"target {target!r} must be 'file.py:Class' or 'module:Class'")
    if module_part.endswith(".py") or os.sep in module_part:
        path = os.path.abspath(module_part)
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = "ferroserve_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_part)
    obj = module
    for part in class_name.split("."):
        obj = getattr(obj, part)
    return obj


def construct(cls, name: str):
    """`Class(name)` when the constructor takes a name (as kserve models do), else
    `Class()`; the model's `name` is set either way."""
    try:
        inspect.signature(cls).bind(name)
        model = cls(name)
    except TypeError:
        model = cls()
    try:
        model.name = name
    except AttributeError:
        pass
    return model


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


def _error_kind(exc: BaseException) -> str:
    names = {c.__name__ for c in type(exc).__mro__}
    if "InvalidInput" in names:
        return "invalid_input"
    if names & {"ModelNotReady", "ServerNotReady"}:
        return "unavailable"
    return "internal"


def _error_message(exc: BaseException) -> str:
    if _error_kind(exc) == "invalid_input":
        return str(getattr(exc, "reason", exc))
    return f"{type(exc).__name__} : {exc}"


def _request_from(header, payload, model_name) -> InferRequest:
    req = header["request"]
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    inputs = []
    for t in req["inputs"]:
        i = InferInput(t["name"], t["shape"], t["datatype"], parameters=t.get("parameters") or {})
        i.set_raw(view[t["offset"] : t["offset"] + t["length"]])
        inputs.append(i)
    return InferRequest(
        model_name,
        inputs,
        request_id=req.get("id"),
        parameters=req.get("parameters") or {},
        request_outputs=req.get("outputs") or [],
    )


def _tensor_bytes(name, datatype, array):
    """Raw bytes of one output (a memoryview when no copy is needed)."""
    if datatype == "BYTES":
        return encode_bytes(array)
    arr = np.ascontiguousarray(array, dtype=to_np_dtype(datatype))
    return memoryview(arr).cast("B")


def _encode_response(result, model_name):
    """An `InferResponse` (ours, kserve's or anything shaped like it) or a V2-shaped dict →
    (response header, payload parts)."""
    if isinstance(result, dict):
        outputs = result.get("outputs")
        if outputs is None:
            raise TypeError("a V2 request needs an InferResponse or a dict with 'outputs'")
        rid, name, params = result.get("id"), result.get("model_name", model_name), result.get("parameters")
        items = [
            (o["name"], o.get("datatype"), o.get("shape"), o.get("data"), o.get("parameters")) for o in outputs
        ]
    else:
        rid, name, params = getattr(result, "id", None), getattr(result, "model_name", model_name), getattr(result, "parameters", None)
        items = []
        for o in result.outputs:
            data = o.as_numpy() if hasattr(o, "as_numpy") else o.data
            items.append((o.name, getattr(o, "datatype", None), getattr(o, "shape", None), data, getattr(o, "parameters", None)))
    header_outputs, parts, offset = [], [], 0
    for out_name, datatype, shape, data, out_params in items:
        array = data if isinstance(data, np.ndarray) else None
        if datatype is None:
            if array is None:
                raise TypeError(f"output {out_name} has neither a datatype nor a numpy array")
            datatype = from_np_dtype(array.dtype)
        datatype = datatype.upper()
        if array is None:
            array = np.array(data, dtype=to_np_dtype(datatype))
            if shape is not None:
                array = array.reshape(shape)
        if shape is None:
            shape = list(array.shape)
        raw = _tensor_bytes(out_name, datatype, array)
        length = memoryview(raw).nbytes
        header_outputs.append(
            {
                "name": out_name,
                "datatype": datatype,
                "shape": [int(d) for d in shape],
                "parameters": _plain(out_params),
                "offset": offset,
                "length": length,
            }
        )
        parts.append(raw)
        offset += length
    response = {"model_name": name or model_name, "outputs": header_outputs, "parameters": _plain(params)}
    if rid is not None:
        response["id"] = str(rid)
    return response, parts


def _plain(params):
    """Parameters as plain JSON values (kserve may hold protobuf-ish wrappers)."""
    if not params:
        return {}
    out = {}
    for k, v in dict(params).items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = str(v)
    return out


def _pipeline(model):
    """The handlers to call, each with whether it is a coroutine function, decided once.
    `preprocess`/`postprocess` left as the base class's pass-through are skipped."""
    steps = []
    for name in ("preprocess", "predict", "postprocess"):
        fn = getattr(model, name, None)
        if fn is None:
            continue
        defined = getattr(type(model), name, None)
        qualname = getattr(defined, "__qualname__", "")
        module = getattr(defined, "__module__", "")
        if name != "predict" and qualname == f"Model.{name}" and module in ("ferroserve.model", "kserve.model"):
            continue
        steps.append((fn, inspect.iscoroutinefunction(fn)))
    return steps


class Worker:
    def __init__(self, model, name, reader, writer):
        self.model = model
        self.name = name
        self.reader = reader
        self.writer = writer
        self.tasks = {}
        self.steps = _pipeline(model)
        # An async model overlaps requests; a sync one runs them one at a time (the GIL would
        # serialise them anyway).
        self.concurrent = any(is_async for _, is_async in self.steps)

    async def send(self, header, parts=()):
        write_frame(self.writer, header, parts)
        await self.writer.drain()

    async def infer(self, header, payload):
        rid = header["id"]
        headers = header.get("headers") or {}
        try:
            if header["protocol"] == "v2":
                payload_in = _request_from(header, payload, self.name)
            else:
                payload_in = header["body"]
            z = payload_in
            for fn, is_async in self.steps:
                z = fn(z, headers)
                if is_async or inspect.isawaitable(z):
                    z = await z
            if header["protocol"] == "v2":
                response, parts = _encode_response(z, self.name)
                await self.send({"type": "result", "id": rid, "protocol": "v2", "response": response}, parts)
            else:
                if isinstance(z, InferResponse) or hasattr(z, "outputs") and not isinstance(z, dict):
                    raise TypeError("a V1 request needs a dict (or list) answer, not an InferResponse")
                await self.send({"type": "result", "id": rid, "protocol": "v1", "body": z})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every model error goes back to the caller
            try:
                await self.send({"type": "error", "id": rid, "kind": _error_kind(e), "message": _error_message(e)})
            except (TypeError, ValueError):
                await self.send({"type": "error", "id": rid, "kind": "internal", "message": "cannot encode the error"})
        finally:
            self.tasks.pop(rid, None)

    async def health(self, rid):
        try:
            healthy = getattr(self.model, "healthy", None)
            ok = bool(await _maybe_await(healthy())) if healthy else True
        except Exception:  # noqa: BLE001
            ok = False
        await self.send({"type": "health", "id": rid, "ok": ok})

    async def reconfigure(self, rid, user_config):
        error = None
        try:
            hook = getattr(self.model, "reconfigure", None)
            if hook:
                await _maybe_await(hook(user_config))
        except Exception as e:  # noqa: BLE001
            error = _error_message(e)
        await self.send({"type": "reconfigured", "id": rid, "error": error})

    async def serve(self):
        while True:
            try:
                header, payload = await read_frame(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # ferroserve closed the socket: stop
            kind = header.get("type")
            if kind == "infer":
                if self.concurrent:
                    self.tasks[header["id"]] = asyncio.ensure_future(self.infer(header, payload))
                else:
                    await self.infer(header, payload)
            elif kind == "cancel":
                task = self.tasks.get(header["id"])
                if task:
                    task.cancel()
            elif kind == "health":
                await self.health(header["id"])
            elif kind == "reconfigure":
                await self.reconfigure(header["id"], header.get("user_config"))


def _info(model):
    def sigs(method):
        try:
            return [
                {"name": t["name"], "datatype": t["datatype"].upper(), "shape": [int(d) for d in t["shape"]]}
                for t in (getattr(model, method)() if hasattr(model, method) else [])
            ]
        except Exception:  # noqa: BLE001 - metadata is optional
            return []

    return {"platform": "python", "inputs": sigs("get_input_types"), "outputs": sigs("get_output_types")}


async def main(argv=None):
    parser = argparse.ArgumentParser(prog="ferroserve.worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--user-config", default=None)
    args, _ = parser.parse_known_args(argv)
    _die_with_parent()
    reader, writer = await asyncio.open_unix_connection(args.socket, limit=1 << 20)
    try:
        cls = load_class(args.target)
        model = construct(cls, args.name)
        if not getattr(model, "ready", False):
            await _maybe_await(model.load())
        if args.user_config is not None:
            hook = getattr(model, "reconfigure", None)
            if hook:
                await _maybe_await(hook(json.loads(args.user_config)))
    except BaseException:  # noqa: BLE001 - report any failure, then exit
        write_frame(writer, {"type": "load_failed", "error": traceback.format_exc(limit=20)})
        await writer.drain()
        writer.close()
        return 1
    write_frame(writer, {"type": "ready", "info": _info(model)})
    await writer.drain()
    await Worker(model, args.name, reader, writer).serve()
    stop = getattr(model, "stop", None)
    if stop:
        try:
            stop()
        except Exception:  # noqa: BLE001
            pass
    return 0


def run() -> int:
    """Runs the worker, on uvloop when it is installed (it halves the loop's overhead)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    if hasattr(uvloop, "run"):
        return uvloop.run(main())
    uvloop.install()
    return asyncio.run(main())


if __name__ == "__main__":
    sys.exit(run())
