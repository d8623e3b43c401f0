"""Handles to the other deployments of the server, as Ray Serve's `DeploymentHandle`.

Inside a replica, `get_deployment_handle("name")` (or a handle passed to the model) reaches any
deployment of the server: Python, Rust or built-in. `handle.remote(payload)` sends a V1 dict
or an `InferRequest` over the worker's own socket to ferroserve, which routes it through that
deployment's router exactly as a client's request (backpressure, queue, timeouts, metrics),
bounded by the deadline of the request being served; tensors travel as raw bytes both ways.
It returns a `DeploymentResponse` at once: `await` it in an `async def` handler (or pass it to
another `.remote()` to chain without waiting), or call `.result()` from a sync handler.
`asyncio.gather` over several responses runs the calls in parallel. When the request being
served is cancelled, its calls are cancelled too.

Errors keep their kind: the callee's bad input raises `InvalidInput`, a deployment that cannot
serve now (overloaded, not ready, timed out) raises `DeploymentUnavailableError` (a 503 if it
escapes the model), anything else `InferenceError`; each message names the deployment."""

import asyncio
import contextvars
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
    `.result()` (in sync code); pass it to another `.remote()` to chain calls."""

    def __init__(self, coro, channel):
        self._channel = channel
        if _on_loop(channel):
            self._task = channel.loop.create_task(coro)
            self._future = None
        else:  # a sync handler, on its own thread
            self._task = None
            self._future = asyncio.run_coroutine_threadsafe(coro, channel.loop)

    def __await__(self):
        if self._task is None:
            raise RuntimeError("await a DeploymentResponse in async code; use .result() in a sync handler")
        return self._task.__await__()

    def result(self, timeout_s: Optional[float] = None) -> Any:
        """Waits for the answer (from a sync handler)."""
        if self._future is None:
            raise RuntimeError("use `await response` in an async handler; .result() would block the event loop")
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

    def __init__(self, deployment_name: str, app_name: Optional[str] = None, *, timeout_s: Optional[float] = None):
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._timeout_s = timeout_s

    def options(self, *, timeout_s: Optional[float] = None, **_ignored) -> "DeploymentHandle":
        """A copy with other call options (`timeout_s`: the most a call may take)."""
        return DeploymentHandle(self.deployment_name, self.app_name, timeout_s=timeout_s)

    def remote(self, payload) -> DeploymentResponse:
        """Runs the deployment's preprocess → predict → postprocess on `payload`: a V1 dict (or
        list), an `InferRequest`, or the `DeploymentResponse` of an earlier call."""
        channel = _require_channel()
        parent = current_request.get()
        return DeploymentResponse(self._call(channel, payload, parent), channel)

    async def _call(self, channel, payload, parent):
        if isinstance(payload, DeploymentResponse):
            payload = await payload._resolve()
        call = channel.call(self.deployment_name, payload, parent)
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
        return DeploymentHandle, (self.deployment_name, self.app_name)


def get_deployment_handle(deployment_name: str, app_name: Optional[str] = None) -> DeploymentHandle:
    """A handle to any deployment of the server (Ray Serve's `serve.get_deployment_handle`),
    including the Rust and built-in ones of the config file."""
    return DeploymentHandle(deployment_name, app_name)


__all__ = ["DeploymentHandle", "DeploymentResponse", "get_deployment_handle", "current_request"]
