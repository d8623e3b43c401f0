"""`@serve.batch`: Ray Serve's list batching, with the batch formed by ferroserve (in Rust).

A handler decorated with `@serve.batch(max_batch_size=..., batch_wait_timeout_s=...)` takes a
list and returns a list of the same length. When it is the model's `predict` (or `__call__`),
ferroserve's batcher collects requests for it and the worker receives the whole batch as one
frame: the handler is called once with the list of requests (and, if it takes a second
argument, a list of headers of the same length; a batch has one context, its first request's,
so every entry is those headers). Called directly with one item (from another method, or a
handle's method call), it runs as a batch of one.

`handler.set_max_batch_size(n)` and `handler.set_batch_wait_timeout_s(s)` change the batching
of this replica while it runs (from `reconfigure`, say), as in Ray."""

import functools
import inspect

#: Set by the worker: sends the replica's new batching options to ferroserve.
_notify = None


class _Batched:
    """What `@serve.batch` makes of a function: its options, and a bound handler per instance."""

    def __init__(self, fn, max_batch_size, batch_wait_timeout_s):
        _check_size(max_batch_size)
        _check_wait(batch_wait_timeout_s)
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = float(batch_wait_timeout_s)
        self.takes_headers = _positional_count(fn) >= 3  # self, items, headers
        functools.update_wrapper(self, fn)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return _bind(self, obj)

    def set_max_batch_size(self, n):
        _check_size(n)
        self.max_batch_size = n
        if _notify is not None:
            _notify(max_batch_size=n)

    def set_batch_wait_timeout_s(self, s):
        _check_wait(s)
        self.batch_wait_timeout_s = float(s)
        if _notify is not None:
            _notify(batch_wait_timeout_s=float(s))

    def options(self):
        """The options the worker reports to ferroserve."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s}


def _check_size(n):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, not {n!r}")


def _check_wait(s):
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not s >= 0 or s == float("inf"):
        raise ValueError(f"batch_wait_timeout_s must be a number of seconds >= 0, not {s!r}")


def _positional_count(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 3
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _bind(batched, obj):
    """The handler bound to `obj`: called with one item it runs a batch of one; `.batch(items,
    headers)` runs a whole batch (the worker's entry)."""
    fn = batched.fn

    def run(items, headers):
        return fn(obj, items, headers) if batched.takes_headers else fn(obj, items)

    if inspect.iscoroutinefunction(fn):

        async def one(item, headers=None):
            return _single(await run([item], [headers or {}]))

    else:

        def one(item, headers=None):
            return _single(run([item], [headers or {}]))

    functools.update_wrapper(one, fn)
    one.batch = run
    one.batching = batched
    one.set_max_batch_size = batched.set_max_batch_size
    one.set_batch_wait_timeout_s = batched.set_batch_wait_timeout_s
    return one


def _single(results):
    if not isinstance(results, (list, tuple)) or len(results) != 1:
        raise TypeError("a @serve.batch handler must return a list with one result per request")
    return results[0]


def batch(_func=None, *, max_batch_size=10, batch_wait_timeout_s=0.01):
    """Ray Serve's `@serve.batch` (see the module's doc). Defaults are Ray's: 10 requests, 0.01 s."""

    def wrap(fn):
        return _Batched(fn, max_batch_size, batch_wait_timeout_s)

    return wrap(_func) if _func is not None else wrap


def batched_handler(fn):
    """The `_Batched` behind a bound handler, or None if it is not batched."""
    return getattr(fn, "batching", None) if callable(fn) else None
