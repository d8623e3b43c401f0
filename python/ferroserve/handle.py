"""Handles to the other deployments of the server, as Ray Serve's `DeploymentHandle`.

Inside a replica, `get_deployment_handle("name")` (or a handle passed to the model) reaches any
deployment of the server: Python, Rust or built-in. `handle.remote(payload)` sends a V1 dict
or an `InferRequest` over the worker's own socket to ferroserve, which routes it through that
deployment's router exactly as a client's request (backpressure, queue, timeouts, metrics),
bounded by the deadline of the request being served; tensors travel as raw bytes both ways.
`handle.method_name.remote(*args, **kwargs)` (or `handle.options(method_name=...)`) calls
any public method of a Python deployment's model, arguments and answer pickled. Each call
returns a `DeploymentResponse` at once: `await` it in an `async def` handler (or pass it to
another `.remote()` to chain without waiting). `.result()` waits for it from a sync handler that
runs on a thread (FERROSERVE_RUN_SYNC_IN_THREADPOOL=1, as Ray's RAY_SERVE_RUN_SYNC_IN_THREADPOOL);
sync handlers run on the worker's event loop by default, as in Ray, where nothing may block.
`asyncio.gather` over several responses runs the calls in parallel. When the request being
served is cancelled, its calls are cancelled too.

Errors keep their kind: the callee's bad input raises `InvalidInput`, a deployment that cannot
serve now (overloaded, not ready, timed out) raises `DeploymentUnavailableError` (a 503 if it
escapes the model), anything else `InferenceError`; each message names the deployment."""

import asyncio
import contextvars
import pickle
from typing import Any, Optional

from .errors import DeploymentUnavailableError, InferenceError, InvalidInput

#: The worker's channel to ferroserve, set when the worker starts serving.
_channel = None

#: The id of the request being served in this task or thread: its calls inherit its deadline.
current_request: contextvars.ContextVar = contextvars.ContextVar("ferroserve_request", default=None)


def _set_channel(channel) -> None:
    global _channel
    _channel = channel


def _require_channel():
    if _channel is None:
        raise RuntimeError("deployment handles work inside a ferroserve replica (a model's handlers)")
    return _channel


def error_from(kind: str, message: str) -> Exception:
    """The exception for a failed call, by the error's kind."""
    if kind == "invalid_input":
        return InvalidInput(message)
    if kind in ("unavailable", "overloaded", "model_not_ready", "timeout"):
        return DeploymentUnavailableError(message)
    return InferenceError(message)


class DeploymentResponse:
    """The answer of a `.remote()` call, on its way. Await it (in async code) or call
    `.result()` (in a sync handler on a thread); pass it to another `.remote()` to chain calls."""

    def __init__(self, work, channel):
        if asyncio.isfuture(work):  # a call already sent from the loop: its answer
            self._task = work
            self._future = None
        elif _on_loop(channel):
            self._task = channel.loop.create_task(work)
            self._future = None
        else:  # a sync handler, on its own thread
            self._task = None
            self._future = asyncio.run_coroutine_threadsafe(work, channel.loop)

    def __await__(self):
        if self._task is None:
            raise RuntimeError("await a DeploymentResponse in async code; use .result() in a sync handler")
        return self._task.__await__()

    def result(self, timeout_s: Optional[float] = None) -> Any:
        """Waits for the answer (from a sync handler)."""
        if self._future is None:
            raise RuntimeError(
                "this handler runs on the worker's event loop, which .result() would block: make it "
                "`async def` and `await` the response, or set FERROSERVE_RUN_SYNC_IN_THREADPOOL=1 in "
                "the deployment's runtime_env env_vars to run sync handlers on a thread"
            )
        return self._future.result(timeout_s)

    def cancel(self) -> None:
        """Cancels the call."""
        if self._task is not None:
            self._task.cancel()
        else:
            self._future.cancel()

    async def _resolve(self):
        """The answer, from a coroutine on the worker's loop."""
        if self._task is not None:
            return await self._task
        return await asyncio.wrap_future(self._future)


def _on_loop(channel) -> bool:
    try:
        return asyncio.get_running_loop() is channel.loop
    except RuntimeError:
        return False


class DeploymentHandle:
    """A handle to one deployment of the server (Ray Serve's `DeploymentHandle`)."""

    def __init__(
        self,
        deployment_name: str,
        app_name: Optional[str] = None,
        *,
        timeout_s: Optional[float] = None,
        method_name: Optional[str] = None,
    ):
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._timeout_s = timeout_s
        self._method = None if method_name in (None, "__call__", "predict") else method_name

    def options(
        self, *, method_name: Optional[str] = None, timeout_s: Optional[float] = None, **_ignored
    ) -> "DeploymentHandle":
        """A copy with other call options: `method_name` (the method `.remote()` calls; the
        default runs preprocess → predict → postprocess), `timeout_s` (the most a call may
        take)."""
        return DeploymentHandle(
            self.deployment_name,
            self.app_name,
            timeout_s=timeout_s if timeout_s is not None else self._timeout_s,
            method_name=method_name if method_name is not None else self._method,
        )

    def __getattr__(self, name: str) -> "DeploymentHandle":
        """`handle.method_name`: a handle whose `.remote(*args, **kwargs)` calls that method."""
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args, **kwargs) -> DeploymentResponse:
        """Runs the deployment's preprocess → predict → postprocess on one payload (a V1 dict or
        list, an `InferRequest`, or the `DeploymentResponse` of an earlier call), or, on a
        method handle, the method with these arguments."""
        channel = _require_channel()
        parent = current_request.get()
        if self._method is None:
            if len(args) != 1 or kwargs:
                raise TypeError("remote() takes one payload; use handle.method_name.remote(...) for methods")
            payload = args[0]
            if self._timeout_s is None and not isinstance(payload, DeploymentResponse) and _on_loop(channel):
                # The common case: sent now, its answer a future (no task per call).
                started = channel.start_call(self.deployment_name, payload, parent)
                if started is not None:
                    return DeploymentResponse(started, channel)
            work = self._call(channel, payload, parent)
        else:
            work = self._call_method(channel, args, kwargs, parent)
        return DeploymentResponse(work, channel)

    async def _call_method(self, channel, args, kwargs, parent):
        args = [await a._resolve() if isinstance(a, DeploymentResponse) else a for a in args]
        kwargs = {k: await v._resolve() if isinstance(v, DeploymentResponse) else v for k, v in kwargs.items()}
        data = pickle.dumps((tuple(args), kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        return await self._bounded(channel.call_method(self.deployment_name, self._method, data, parent))

    async def _call(self, channel, payload, parent):
        if isinstance(payload, DeploymentResponse):
            payload = await payload._resolve()
        return await self._bounded(channel.call(self.deployment_name, payload, parent))

    async def _bounded(self, call):
        if self._timeout_s is None:
            return await call
        try:
            return await asyncio.wait_for(call, self._timeout_s)
        except asyncio.TimeoutError:
            raise DeploymentUnavailableError(
                f"deployment '{self.deployment_name}': no answer within {self._timeout_s} s"
            ) from None

    def __repr__(self):
        return f"DeploymentHandle(deployment={self.deployment_name!r})"

    def __reduce__(self):
        return _handle, (self.deployment_name, self.app_name, self._timeout_s, self._method)


def _handle(deployment_name, app_name, timeout_s, method_name):
    return DeploymentHandle(deployment_name, app_name, timeout_s=timeout_s, method_name=method_name)


def get_deployment_handle(deployment_name: str, app_name: Optional[str] = None) -> DeploymentHandle:
    """A handle to any deployment of the server (Ray Serve's `serve.get_deployment_handle`),
    including the Rust and built-in ones of the config file."""
    return DeploymentHandle(deployment_name, app_name)


__all__ = ["DeploymentHandle", "DeploymentResponse", "get_deployment_handle", "current_request"]
