"""The replica worker: `python -m ferroserve.worker --socket PATH --target FILE.py:Class
--name NAME`. ferroserve starts one per Python replica; it constructs the model, loads it,
says it is ready, then serves requests arriving as frames on the Unix socket until the socket
closes. A worker never outlives ferroserve: it exits when the socket closes, and on Linux the
kernel kills it when ferroserve dies (PR_SET_PDEATHSIG)."""

import argparse
import asyncio
import collections
import inspect
import json
import math
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import arena as _arena
from . import client_memory as _client_memory
from . import handle as _handles
from . import batching as _batching
from .deployment import Application
from .loader import load_class
from .protocol import FrameChannel, write_frame
from .errors import InvalidInput
from .types import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    _DTYPES,
    encode_bytes,
    from_np_dtype,
    to_np_dtype,
)


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
    if parent and os.getppid() != int(parent) and not _alive(int(parent)):
        # ferroserve died before prctl took effect. (A parent other than ferroserve that is
        # alive is a py_executable wrapper that did not exec: the socket's EOF still ends us.)
        print(f"ferroserve.worker: ferroserve (pid {parent}) is gone: exiting", file=sys.stderr, flush=True)
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def construct(cls, name: str):
    """`Class(name)` when the constructor takes a name (as kserve models do), else
    `Class()`, decided from the signature so that the constructor runs once and whatever it
    raises (a TypeError too) reaches the load_failed traceback. The model's `name` is set
    either way."""
    model = cls(name) if _takes_name(cls, name) else cls()
    _set_name(model, name)
    return model


def _set_name(model, name: str) -> None:
    """Gives the model its deployment name (kserve models read `self.name`)."""
    try:
        model.name = name
    except AttributeError:
        pass


def _takes_name(cls, name: str) -> bool:
    """Whether `cls(name)` fits the constructor's signature. One that cannot be inspected (some
    extension types) gets the name, as every kserve model takes one."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(name)
    except TypeError:
        return False
    return True


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


def _error_kind(exc: BaseException) -> str:
    names = {c.__name__ for c in type(exc).__mro__}
    if "InvalidInput" in names:
        return "invalid_input"
    if names & {"ModelNotReady", "ServerNotReady", "DeploymentUnavailableError"}:
        return "unavailable"
    return "internal"


def _error_message(exc: BaseException) -> str:
    if _error_kind(exc) == "invalid_input":
        return str(getattr(exc, "reason", exc))
    return f"{type(exc).__name__} : {exc}"


def _request_from(header, payload, model_name, arena=None) -> InferRequest:
    req = header["request"]
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    inputs = []
    for t in req["inputs"]:
        region = t.get("region")
        if region is None:
            raw = view[t["offset"] : t["offset"] + t["length"]]
        elif region == "in":
            if arena is None:
                raise RuntimeError(f"input {t['name']!r} is in shared memory but this worker has none")
            raw = arena.input(t["offset"], t["length"])
        else:  # "client"
            raw = _client_memory.view(t["object"], t["offset"], t["length"])
        inputs.append(InferInput._from_wire(t["name"], t["shape"], t["datatype"], t.get("parameters"), raw))
    outputs = req.get("outputs")
    return InferRequest(
        model_name,
        inputs,
        request_id=req.get("id"),
        parameters=req.get("parameters") or {},
        request_outputs=[RequestedOutput(o["name"], o.get("parameters")) for o in outputs] if outputs else None,
    )


class OutputError(Exception):
    """The model's answer cannot be sent (an output or parameter the protocol cannot carry): an
    internal error (HTTP 500) of that request, whatever exception revealed it; never
    `InvalidInput`, as the request was not at fault."""


_V2_DATATYPES = tuple("BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BF16 BYTES".split())


def _output_array(datatype, data) -> np.ndarray:
    """The data of an output as an array of its (valid, upper-case) V2 datatype. Only casts
    numpy calls "same_kind" are made (float64 → FP32, int64 → INT32); one that would change
    what the values are (1.7 sent as INT32 → 1) is refused rather than done silently."""
    if datatype == "BYTES":
        array = data if isinstance(data, np.ndarray) else np.array(data, dtype=np.object_)
        if array.dtype.kind == "O":
            for e in array.flat:
                if not isinstance(e, (bytes, bytearray, str)):
                    raise ValueError(f"a BYTES element is a {type(e).__name__}, not bytes or str")
        return array
    target = to_np_dtype(datatype)
    if isinstance(data, np.ndarray):
        if data.size and not np.can_cast(data.dtype, target, casting="same_kind"):
            raise ValueError(f"a {data.dtype} array cannot be sent as {datatype} without changing its values")
        return data
    natural = np.array(data)
    # Python ints become int64 here; numpy checks their range when it makes the target type.
    ints = natural.dtype.kind in "iub" and target.kind in "iu"
    if natural.size and not ints and not np.can_cast(natural.dtype, target, casting="same_kind"):
        raise ValueError(f"{natural.dtype} data cannot be sent as {datatype} without changing its values")
    return np.array(data, dtype=target)


def _output_shape(shape, array) -> list:
    """The declared shape (or the array's) as non-negative ints holding the array's elements."""
    if shape is None:
        return list(array.shape)
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError(f"shape {shape!r} is not a list of non-negative integers")
    count = 1
    for d in shape:
        count *= int(d)
    if count != array.size:
        raise ValueError(f"shape {list(shape)} holds {count} elements but the data has {array.size}")
    return [int(d) for d in shape]


def _tensor_bytes(datatype, array):
    """Raw bytes of one output (a memoryview when no copy is needed)."""
    if datatype == "BYTES":
        return encode_bytes(array)
    arr = np.ascontiguousarray(array, dtype=to_np_dtype(datatype))
    return memoryview(arr).cast("B")


def _output(name, datatype, shape, data, params):
    """(header entry without offset, raw bytes) of one output, or `OutputError` naming it."""
    fixed = _DTYPES.get(datatype) if type(datatype) is str else None  # (np.dtype(None) is float64)
    if fixed is not None and type(data) is np.ndarray and type(name) is str and not params and data.dtype == fixed:
        # The common case, checked in full without the general path's conversions: a numpy
        # array of exactly the declared fixed-size type, its own shape (or none) declared. The
        # header carries the array's own dimensions.
        dims = list(data.shape)
        if shape is None or (isinstance(shape, list) and shape == dims):
            return {"name": name, "datatype": datatype, "shape": dims, "parameters": {}}, _tensor_bytes(datatype, data)
    if not isinstance(name, str):
        raise OutputError(f"output name {name!r} is not a string")
    try:
        if datatype is None:
            if not isinstance(data, np.ndarray):
                raise ValueError("has neither a datatype nor a numpy array")
            datatype = from_np_dtype(data.dtype)
        if not isinstance(datatype, str) or datatype.upper() not in _V2_DATATYPES:
            raise ValueError(f"datatype {datatype!r} is not one of {', '.join(_V2_DATATYPES)}")
        datatype = datatype.upper()
        array = _output_array(datatype, data)
        entry = {"name": name, "datatype": datatype, "shape": _output_shape(shape, array)}
        entry["parameters"] = _plain(params, f"output {name!r}")
        return entry, _tensor_bytes(datatype, array)
    except OutputError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the data is, the request gets a 500 naming it
        raise OutputError(f"output {name!r}: {e}") from e


def _v1_body(z):
    """A V1 answer as sent: a dict or a list, never a V2 response."""
    if isinstance(z, InferResponse) or hasattr(z, "outputs") and not isinstance(z, dict):
        raise TypeError("a V1 request needs a dict (or list) answer, not an InferResponse")
    return z


def _arena_inputs(header):
    """`(offset, length)` of the inputs of an `infer` or `batch` frame that are in the arena."""
    requests = header.get("requests") or [header.get("request") or {}]
    return [(t["offset"], t["length"]) for r in requests for t in r.get("inputs", ()) if t.get("region") == "in"]


def _encode_response(result, model_name, offset=0, arena=None, inputs=()):
    """An `InferResponse` (ours, kserve's or anything shaped like it) or a V2-shaped dict →
    (response header, payload parts), the outputs' offsets counted from `offset`. With an
    `arena`, large outputs go there instead (or are named in place when they are views of the
    request's `inputs`). Anything in it the protocol cannot carry raises `OutputError`: a
    header the Rust side could not parse would cost the whole worker."""
    if isinstance(result, dict):
        outputs = result.get("outputs")
        if outputs is None:
            raise TypeError("a V2 request needs an InferResponse or a dict with 'outputs'")
        rid, name, params = result.get("id"), result.get("model_name", model_name), result.get("parameters")
        items = [
            (o.get("name"), o.get("datatype"), o.get("shape"), o.get("data"), o.get("parameters")) for o in outputs
        ]
    else:
        rid, name, params = getattr(result, "id", None), getattr(result, "model_name", model_name), getattr(result, "parameters", None)
        items = [_output_fields(o) for o in result.outputs]
    header_outputs, parts = [], []
    for item in items:
        entry, raw = _output(*item)
        length = memoryview(raw).nbytes
        placed = arena.place_output(raw, length, inputs) if arena is not None else None
        if placed is not None:
            entry["region"], entry["offset"] = placed
            entry["length"] = length
            header_outputs.append(entry)
            continue
        entry["offset"], entry["length"] = offset, length
        header_outputs.append(entry)
        parts.append(raw)
        offset += length
    response = {
        "model_name": str(name or model_name),
        "outputs": header_outputs,
        "parameters": _plain(params, "the response"),
    }
    if rid is not None:
        response["id"] = str(rid)
    return response, parts


def _output_fields(o):
    """(name, datatype, shape, data, parameters) of an output object. The data as given (a list
    is converted with checks later); kserve's binary outputs hold only raw bytes, read back with
    `as_numpy`."""
    name = getattr(o, "name", None)
    data = getattr(o, "data", None)
    if data is None and hasattr(o, "as_numpy"):
        try:
            data = o.as_numpy()
        except Exception as e:  # noqa: BLE001
            raise OutputError(f"output {name!r}: {e}") from e
    return name, getattr(o, "datatype", None), getattr(o, "shape", None), data, getattr(o, "parameters", None)


#: Integers a V2 parameter can hold (i64, or u64 above it).
_PARAMETER_INTS = range(-(2**63), 2**64)


def _plain(params, owner):
    """Parameters as plain JSON values (kserve may hold protobuf-ish wrappers, shown as
    strings). A value JSON cannot carry (NaN, infinity, an integer beyond 64 bits) raises
    `OutputError` naming `owner` and the parameter."""
    if not params:
        return {}
    out = {}
    for k, v in dict(params).items():
        if isinstance(v, np.generic):
            v = v.item()
        if not isinstance(k, str):
            raise OutputError(f"{owner}: parameter name {k!r} is not a string")
        if isinstance(v, float) and not math.isfinite(v):
            raise OutputError(f"{owner}: parameter {k!r} is {v}, which JSON cannot carry")
        if isinstance(v, int) and not isinstance(v, bool) and v not in _PARAMETER_INTS:
            raise OutputError(f"{owner}: parameter {k!r} is {v}, beyond 64 bits")
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def _pipeline(model):
    """The handlers to call, in kserve's order, each with whether it is a coroutine function,
    decided once. `preprocess`/`validate`/`postprocess` left as the base class's pass-through
    are skipped."""
    steps = []
    for name in ("preprocess", "validate", "predict", "postprocess"):
        fn = getattr(model, name, None)
        if fn is None and not (name == "predict" and callable(model)):
            continue
        if fn is None:  # a Ray-style deployment: `__call__(self, request)`
            fn = _with_optional_headers(model.__call__)
        defined = getattr(type(model), name, None)
        qualname = getattr(defined, "__qualname__", "")
        module = getattr(defined, "__module__", "")
        if name != "predict" and qualname == f"Model.{name}" and module in ("ferroserve.model", "kserve.model"):
            continue
        if name == "validate":  # kserve calls it with the payload alone
            steps.append((lambda payload, headers, validate=fn: validate(payload), False))
        else:
            steps.append((fn, inspect.iscoroutinefunction(fn)))
    return steps


def _batch_steps(steps):
    """(steps before, the `@serve.batch` handler, steps after) when the pipeline has one."""
    for k, (fn, _) in enumerate(steps):
        if _batching.batched_handler(fn) is not None:
            return steps[:k], fn, steps[k + 1 :]
    return None


async def _run_steps(steps, z, headers):
    for fn, is_async in steps:
        z = fn(z, headers)
        if is_async or inspect.isawaitable(z):
            z = await z
    return z


def _with_optional_headers(fn):
    """`fn(payload, headers)` for a handler that may take the payload alone."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return fn
    if inspect.iscoroutinefunction(fn):

        async def call_async(payload, headers):
            return await fn(payload)

        return call_async
    return lambda payload, headers: fn(payload)


def _wire_request(request):
    """An `InferRequest` as a call's header and raw tensor parts (no copy where the input
    arrived raw)."""
    inputs, parts, offset = [], [], 0
    for i in request.inputs:
        raw = getattr(i, "_raw", None)
        if raw is None:
            raw = _tensor_bytes(i.datatype, i.as_numpy())
        length = memoryview(raw).nbytes
        inputs.append(
            {
                "name": i.name,
                "datatype": i.datatype,
                "shape": [int(d) for d in i.shape],
                "parameters": _plain(i.parameters, f"input '{i.name}' of the call"),
                "offset": offset,
                "length": length,
            }
        )
        parts.append(raw)
        offset += length
    outputs = [
        {"name": o["name"], "parameters": _plain(o.get("parameters"), f"requested output '{o['name']}'")}
        for o in (request.request_outputs or [])
    ]
    wire = {"id": request.id, "parameters": _plain(request.parameters, "the call"), "inputs": inputs, "outputs": outputs}
    return wire, parts


def _call_frame(target, payload, parent):
    """The `call` frame (header, parts) sending `payload` to deployment `target`."""
    header = {"type": "call", "target": target, "parent": parent}
    parts = ()
    if isinstance(payload, InferRequest):
        header["protocol"] = "v2"
        header["request"], parts = _wire_request(payload)
    elif isinstance(payload, (dict, list)):
        header["protocol"] = "v1"
        header["body"] = payload
    else:
        raise TypeError(f"a call takes a dict, a list or an InferRequest, not {type(payload).__name__}")
    return header, parts


def _response_from(response, payload):
    """A call's V2 answer as an `InferResponse` whose outputs are numpy views of the payload."""
    view = payload if isinstance(payload, memoryview) else memoryview(payload)
    outputs = []
    for t in response["outputs"]:
        name, shape, datatype = t["name"], t["shape"], t["datatype"]
        data = InferInput._from_wire(name, shape, datatype, None, view[t["offset"] : t["offset"] + t["length"]]).as_numpy()
        outputs.append(InferOutput._from_wire(name, shape, datatype, data, t.get("parameters")))
    return InferResponse(response.get("id"), response.get("model_name", ""), outputs, parameters=response.get("parameters") or {})


class Worker:
    """Serves one model's requests from the socket until it closes.

    Every `infer` gets exactly one answer: `result`, `error`, or `cancelled` when ferroserve
    cancelled it (the caller left) before it finished; ferroserve keeps the request's slot
    until then. Frames are taken in by the socket's protocol (`FrameChannel`) in the loop's read
    callback, and each is dispatched there (`on_frame`). An async model runs requests as
    concurrent tasks, and a cancel cancels the task. A sync model runs them one at a time, in
    order, on the event loop (as Ray Serve does by default), each in a callback of its own
    scheduled after the frames that came with it were taken in, so a cancel drops a request
    that has not started, and health checks and reconfigures are answered between requests.
    (ferroserve judges a sync worker that is computing healthy without waiting for it.) With
    FERROSERVE_RUN_SYNC_IN_THREADPOOL=1 in the deployment's environment (Ray's
    RAY_SERVE_RUN_SYNC_IN_THREADPOOL), sync requests run on a thread of their own instead: the loop answers at once, and a sync handler may wait for a handle's call with
    `.result()`, at the cost of a thread hop per request (measured: half the throughput of a
    trivial model)."""

    def __init__(self, model, name, channel, arena=None):
        self.arena = arena  # the shared memory ferroserve gave this worker, if any
        self.model = model
        self.name = name
        self.channel = channel  # the socket's FrameChannel
        self.writer = channel.transport
        self.steps = _pipeline(model)
        self.concurrent = any(is_async for _, is_async in self.steps)
        self.batch_steps = _batch_steps(self.steps)
        self.tasks = {}  # async model: request id -> task
        self.backlog = collections.OrderedDict()  # sync model: id -> frame, not started yet
        threadpool = os.environ.get("FERROSERVE_RUN_SYNC_IN_THREADPOOL", "") not in ("", "0")
        self.executor = (
            ThreadPoolExecutor(1, thread_name_prefix="ferroserve-predict") if threadpool and not self.concurrent else None
        )
        self.runner = None  # sync model: the callback or task running the backlog, if any
        self.loop = None  # the event loop, set by `serve`
        self.calls = {}  # the model's calls to other deployments: id -> future of the answer
        self.next_call = 0

    def send_now(self, header, parts=()) -> None:
        """Writes an answer frame at once (from a callback); one whose header cannot be
        encoded becomes an error answer."""
        try:
            write_frame(self.writer, header, parts)
        except (TypeError, ValueError) as e:  # the answer's header cannot be encoded
            write_frame(self.writer, *self._error(header["id"], e))

    def _input(self, header, payload):
        if header["protocol"] == "v2":
            return _request_from(header, payload, self.name, self.arena)
        return header["body"]

    def _result(self, header, z):
        """The answer frame of a finished pipeline."""
        rid = header["id"]
        if header["protocol"] == "v2":
            inputs = _arena_inputs(header) if self.arena is not None else ()
            response, parts = _encode_response(z, self.name, 0, self.arena, inputs)
            return {"type": "result", "id": rid, "protocol": "v2", "response": response}, parts
        return {"type": "result", "id": rid, "protocol": "v1", "body": _v1_body(z)}, ()

    @staticmethod
    def _error(rid, exc):
        return {"type": "error", "id": rid, "kind": _error_kind(exc), "message": _error_message(exc)}, ()

    async def _send_answer(self, header, parts):
        """`send_now`, then waits while the socket's buffer is full."""
        self.send_now(header, parts)
        try:
            await self.channel.drain()
        except ConnectionError:
            pass  # ferroserve is gone; the worker is about to exit

    def _method(self, header, payload):
        """The model's method a `method` frame names, and its unpickled arguments."""
        name = header["method"]
        fn = getattr(self.model, name, None) if not name.startswith("_") else None
        if fn is None or not callable(fn):
            raise InvalidInput(f"deployment {self.name} has no method '{name}'")
        args, kwargs = pickle.loads(payload)
        return fn, args, kwargs

    @staticmethod
    def _method_result(rid, value):
        return {"type": "method_result", "id": rid}, (pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),)

    async def infer_async(self, header, payload):
        """An async model's request, in its own task (`on_frame`). A cancel ends the task
        without an answer from here: `_task_done` gives it."""
        rid = header["id"]
        _handles.current_request.set(rid)  # this task's own context
        try:
            answer = await self._run_async(header, payload)
        except Exception as e:  # noqa: BLE001 - every model error goes back to the caller
            answer = self._error(rid, e)
        del self.tasks[rid]  # answered from here on
        await self._send_answer(*answer)

    def _task_done(self, rid):
        """An infer task ended. One still in `tasks` did not answer: it was cancelled, while
        running or before its first step (when the cancel came in the same read as its
        request), and answers `cancelled` here; without an answer ferroserve would keep the
        request's slot for good."""
        if self.tasks.pop(rid, None) is not None:
            self.send_now({"type": "cancelled", "id": rid})

    async def _run_async(self, header, payload):
        """The answer frame of an `infer` (the pipeline), a `batch` or a `method` frame."""
        if header["type"] == "batch":
            return await self._run_batch(header, payload)
        if header["type"] == "method":
            fn, args, kwargs = self._method(header, payload)
            return self._method_result(header["id"], await _maybe_await(fn(*args, **kwargs)))
        z = await _run_steps(self.steps, self._input(header, payload), header.get("headers") or {})
        return self._result(header, z)

    async def _run_batch(self, header, payload):
        """A `batch` frame: each request's steps before the `@serve.batch` handler, the handler
        once with the list, each request's steps after it. A request failing alone (in its
        preprocess, say) gets its own error; the handler failing fails the whole batch."""
        v2 = header["protocol"] == "v2"
        if v2:
            items = [_request_from({"request": r}, payload, self.name, self.arena) for r in header["requests"]]
        else:
            items = list(header["bodies"])
        n = len(items)
        headers = [header.get("headers") or {}] * n  # the batch's, for each request
        errors = [None] * n
        before, handler, after = self.batch_steps
        for k in range(n):
            try:
                items[k] = await _run_steps(before, items[k], headers[k])
            except Exception as e:  # noqa: BLE001 - this request's own error
                errors[k] = e
        live = [k for k in range(n) if errors[k] is None]
        if live:
            out = handler.batch([items[k] for k in live], [headers[k] for k in live])
            if inspect.isawaitable(out):
                out = await out
            if not isinstance(out, (list, tuple)) or len(out) != len(live):
                got = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
                raise TypeError(
                    f"the @serve.batch handler returned {got} results for a batch of {len(live)} requests; "
                    "it must return a list with one result per request"
                )
            for k, z in zip(live, out):
                items[k] = z
        results, parts, offset = [], [], 0
        inputs = _arena_inputs(header) if v2 and self.arena is not None else ()
        for k in range(n):
            if errors[k] is None:
                try:
                    z = await _run_steps(after, items[k], headers[k])
                    if v2:
                        response, raw = _encode_response(z, self.name, offset, self.arena, inputs)
                        offset += sum(memoryview(p).nbytes for p in raw)
                        parts.extend(raw)
                        results.append({"response": response})
                    else:
                        results.append({"body": _v1_body(z)})
                    continue
                except Exception as e:  # noqa: BLE001
                    errors[k] = e
            results.append({"error": {"kind": _error_kind(errors[k]), "message": _error_message(errors[k])}})
        return {"type": "batch_result", "id": header["id"], "results": results}, parts

    def _send_batch_config(self, **options):
        """Tells ferroserve the model changed its batching (`set_max_batch_size`, ...)."""
        frame = {"type": "batch_config", **options}
        if threading.get_ident() == self.thread:
            write_frame(self.writer, frame)
        else:
            self.loop.call_soon_threadsafe(write_frame, self.writer, frame)

    def _compute_sync(self, header, payload, loop):
        """On the predict thread: the whole pipeline, returning the answer frame."""
        headers = header.get("headers") or {}
        _handles.current_request.set(header["id"])
        try:
            if header["type"] == "batch":  # batches run on the loop
                return asyncio.run_coroutine_threadsafe(self._run_batch(header, payload), loop).result()
            if header["type"] == "method":
                fn, args, kwargs = self._method(header, payload)
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = asyncio.run_coroutine_threadsafe(value, loop).result()
                return self._method_result(header["id"], value)
            z = self._input(header, payload)
            for fn, _ in self.steps:
                z = fn(z, headers)
                if inspect.isawaitable(z):  # a plain function that returned a coroutine
                    z = asyncio.run_coroutine_threadsafe(z, loop).result()
            return self._result(header, z)
        except Exception as e:  # noqa: BLE001 - every model error goes back to the caller
            return self._error(header["id"], e)

    def _kick(self) -> None:
        """Schedules the next request of a sync model's backlog, unless one is running."""
        if self.runner is not None or not self.backlog:
            return
        if self.executor is not None:
            self.runner = self.loop.create_task(self.run_backlog_on_thread())
        elif self.channel.writing_paused:  # ferroserve is not reading: wait before computing more
            self.runner = self.loop.create_task(self._after_drain())
        else:
            self.runner = self.loop.call_soon(self._run_next_inline)

    async def _after_drain(self):
        try:
            await self.channel.drain()
        except ConnectionError:
            return
        finally:
            self.runner = None
        self._kick()

    def _run_next_inline(self):
        """Runs the oldest request of a sync model's backlog in this callback, on the loop. A
        handler that hands back an awaitable (or a batch or method frame) goes on in a task,
        and the backlog waits for it."""
        self.runner = None
        if not self.backlog:
            return
        _, (header, payload) = self.backlog.popitem(last=False)
        rid = header["id"]
        _handles.current_request.set(rid)  # this callback's own context
        try:
            if header["type"] != "infer":
                self.runner = self.loop.create_task(self._finish_sync(rid, self._run_async(header, payload)))
                return
            headers = header.get("headers") or {}
            z = self._input(header, payload)
            steps = self.steps
            for k, (fn, _) in enumerate(steps):
                z = fn(z, headers)
                if inspect.isawaitable(z):  # a plain function that returned a coroutine
                    rest = self._finish_steps(header, z, steps[k + 1 :], headers)
                    self.runner = self.loop.create_task(self._finish_sync(rid, rest))
                    return
            answer = self._result(header, z)
        except Exception as e:  # noqa: BLE001 - every model error goes back to the caller
            answer = self._error(rid, e)
        self.send_now(*answer)
        self._kick()

    async def _finish_steps(self, header, z, steps, headers):
        z = await z
        return self._result(header, await _run_steps(steps, z, headers))

    async def _finish_sync(self, rid, answer):
        """Awaits the rest of a sync model's request, answers, then goes on with the backlog."""
        try:
            answer = await answer
        except Exception as e:  # noqa: BLE001 - every model error goes back to the caller
            answer = self._error(rid, e)
        finally:
            self.runner = None
        await self._send_answer(*answer)
        self._kick()

    async def run_next_sync(self):
        """Runs the oldest request of a sync model's backlog on the predict thread."""
        _, (header, payload) = self.backlog.popitem(last=False)
        answer = await self.loop.run_in_executor(self.executor, self._compute_sync, header, payload, self.loop)
        await self._send_answer(*answer)

    async def run_backlog_on_thread(self):
        """With the thread pool: runs the backlog while the loop goes on reading frames (the
        answers to the model's calls among them)."""
        try:
            while self.backlog:
                await asyncio.sleep(0)  # let cancels that arrived in first
                if self.backlog:
                    await self.run_next_sync()
        finally:
            self.runner = None

    def cancel(self, rid):
        if self.concurrent:
            task = self.tasks.get(rid)
            if task:
                task.cancel()  # `_task_done` answers `cancelled`
        elif self.backlog.pop(rid, None) is not None:
            self.send_now({"type": "cancelled", "id": rid})
        # Else it is running (it will answer) or already answered.

    async def health(self, rid):
        try:
            healthy = getattr(self.model, "healthy", None)
            ok = bool(await _maybe_await(healthy())) if healthy else True
        except Exception:  # noqa: BLE001
            ok = False
        await self._send_answer({"type": "health", "id": rid, "ok": ok}, ())

    async def reconfigure(self, rid, user_config):
        """Runs the model's `reconfigure` hook; a sync model's backlog waits for it."""
        error = None
        try:
            hook = getattr(self.model, "reconfigure", None)
            if hook:
                await _maybe_await(hook(user_config))
        except Exception as e:  # noqa: BLE001
            error = _error_message(e)
        finally:
            if self.runner is asyncio.current_task():
                self.runner = None
        await self._send_answer({"type": "reconfigured", "id": rid, "error": error}, ())
        self._kick()

    async def call_method(self, target, method, args, parent):
        """Calls method `method` of deployment `target` with pickled `args`; the unpickled
        answer (see `handle`)."""
        header = {"type": "call", "target": target, "parent": parent, "protocol": "method", "method": method}
        return await self._exchange(header, (args,))

    async def call(self, target, payload, parent):
        """Sends one call to deployment `target` and waits for its answer (see `handle`)."""
        return await self._exchange(*_call_frame(target, payload, parent))

    def start_call(self, target, payload, parent):
        """Sends one call to deployment `target` now, from the loop's thread, and returns the
        future of its answer: no task of its own. A payload that cannot be sent fails the
        future, as an awaited call would. `None` while the socket's buffer is full: the caller
        then takes the path that waits (`call`)."""
        if self.channel.writing_paused:
            return None
        try:
            return self._send_call(*_call_frame(target, payload, parent))
        except Exception as e:  # noqa: BLE001 - raised where the call is awaited
            failed = self.loop.create_future()
            failed.set_exception(e)
            return failed

    def _send_call(self, header, parts):
        """Writes a `call` frame under a new id; the future of its answer. Cancelling the
        future (its awaiting task cancelled) sends `call_cancel`."""
        self.next_call += 1
        cid = header["id"] = self.next_call
        write_frame(self.writer, header, parts)
        answer = self.calls[cid] = self.loop.create_future()
        answer.add_done_callback(lambda _, cid=cid: self._call_done(cid))
        return answer

    def _call_done(self, cid):
        """A call's future is done: if nobody answered it, the caller stopped waiting."""
        if self.calls.pop(cid, None) is not None:
            write_frame(self.writer, {"type": "call_cancel", "id": cid})

    async def _exchange(self, header, parts):
        """`_send_call`, waiting while the socket's buffer is full, then for the answer."""
        answer = self._send_call(header, parts)
        try:
            await self.channel.drain()
        except BaseException:
            answer.cancel()
            raise
        return await answer

    def _answer_call(self, header, payload):
        answer = self.calls.pop(header["id"], None)
        if answer is None or answer.done():
            return  # the model stopped waiting
        if header["type"] == "call_error":
            answer.set_exception(_handles.error_from(header.get("kind", "internal"), header.get("message", "")))
        elif header.get("protocol") == "v2":
            answer.set_result(_response_from(header["response"], payload))
        elif header.get("protocol") == "method":
            try:
                answer.set_result(pickle.loads(payload))
            except Exception as e:  # noqa: BLE001 - an answer this process cannot unpickle
                answer.set_exception(e)
        else:
            answer.set_result(header.get("body"))

    def on_frame(self, header, payload):
        """Dispatches one frame from ferroserve (called by the channel as frames arrive)."""
        kind = header.get("type")
        if kind in ("infer", "method", "batch"):
            if self.concurrent:
                rid = header["id"]
                task = self.tasks[rid] = self.loop.create_task(self.infer_async(header, payload))
                task.add_done_callback(lambda _, rid=rid: self._task_done(rid))
            else:
                self.backlog[header["id"]] = (header, payload)
                self._kick()
        elif kind == "free":
            if self.arena is not None:
                self.arena.release(header["offset"])
        elif kind == "cancel":
            self.cancel(header["id"])
        elif kind in ("call_result", "call_error"):
            self._answer_call(header, payload)
        elif kind == "health":
            self.loop.create_task(self.health(header["id"]))
        elif kind == "reconfigure":
            task = self.loop.create_task(self.reconfigure(header["id"], header.get("user_config")))
            if not self.concurrent and self.runner is None:
                self.runner = task  # the backlog waits for the hook
            # (A sync request running meanwhile finishes first: the hook then runs between
            # requests, as ferroserve sends no new request to a worker it reconfigures.)

    async def serve(self, ready):
        """Takes frames, says `ready` (ferroserve sends none before it), and serves them until
        ferroserve closes the socket."""
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        _handles._set_channel(self)
        _batching._notify = self._send_batch_config
        self.channel.on_frame = self.on_frame
        try:
            write_frame(self.writer, ready)
            await self.channel.drain()
            await self.channel.closed
        finally:
            if isinstance(self.runner, asyncio.Future):
                self.runner.cancel()
            if self.executor is not None:
                self.executor.shutdown(wait=False)


def _info(model):
    """What `ready` says about the model. Its signatures are optional metadata: an invalid one
    is reported in one line on stderr and the model is served without it."""
    info = {
        "platform": "python",
        "inputs": _signatures(model, "get_input_types"),
        "outputs": _signatures(model, "get_output_types"),
    }
    steps = _batch_steps(_pipeline(model))
    if steps is not None:
        info["batch"] = _batching.batched_handler(steps[1]).options()
    return info


def _signatures(model, method):
    getter = getattr(model, method, None)
    if getter is None:
        return []
    try:
        return [_signature(t) for t in getter()]
    except Exception as e:  # noqa: BLE001 - metadata is optional
        problem = f"{type(e).__name__}: {e}".replace("\n", " ")
        print(f"ferroserve.worker: {method}() ignored, serving without that metadata: {problem}", file=sys.stderr)
        return []


def _signature(t):
    """One `{"name", "datatype", "shape"}` checked as the V2 metadata needs it."""
    if not isinstance(t, dict):
        raise ValueError(f"{t!r} is not a dict with name, datatype and shape")
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if not isinstance(name, str):
        raise ValueError(f"name {name!r} is not a string")
    if not isinstance(datatype, str) or datatype.upper() not in _V2_DATATYPES:
        raise ValueError(f"{name}: datatype {datatype!r} is not one of {', '.join(_V2_DATATYPES)}")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise ValueError(f"{name}: shape {shape!r} is not a list of integers >= -1")
    return {"name": name, "datatype": datatype.upper(), "shape": [int(d) for d in shape]}


async def main(argv=None):
    parser = argparse.ArgumentParser(prog="ferroserve.worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--user-config", default=None)
    parser.add_argument("--arena", default=None, help="size:inputs_end:min_tensor_bytes of the shared memory")
    args, _ = parser.parse_known_args(argv)
    _die_with_parent()
    arena = None
    loop = asyncio.get_running_loop()
    channel = FrameChannel(loop)
    if args.arena:
        # The arena's descriptor comes first on the socket, before any frame.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(args.socket)
        arena = _arena.receive(sock, args.arena)
        await loop.create_unix_connection(lambda: channel, sock=sock)
    else:
        await loop.create_unix_connection(lambda: channel, args.socket)
    writer = channel.transport
    try:
        target = load_class(args.target)
        if isinstance(target, Application):  # a deployment of a bound application
            model = target.find(args.name).construct()
            _set_name(model, args.name)
        else:
            model = construct(target, args.name)
        load = getattr(model, "load", None)
        if load is not None and not getattr(model, "ready", False):
            await _maybe_await(load())
        if args.user_config is not None:
            hook = getattr(model, "reconfigure", None)
            if hook:
                await _maybe_await(hook(json.loads(args.user_config)))
    except BaseException:  # noqa: BLE001 - report any failure, then exit
        write_frame(writer, {"type": "load_failed", "error": traceback.format_exc(limit=20)})
        await channel.drain()
        writer.close()
        return 1
    worker = Worker(model, args.name, channel, arena)
    ready = {
        "type": "ready",
        "info": _info(model),
        "concurrent": worker.concurrent,
        "arena": arena is not None,
        "client_memory": True,
    }
    await worker.serve(ready)
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
