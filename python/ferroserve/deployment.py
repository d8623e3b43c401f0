"""The `deployment` decorator (Ray Serve's deployment options on a model class), and
applications made of deployments.

Applications the Ray Serve way: `Cls.bind(*args, **kwargs)` makes a node of a graph of
deployments; a node passed as a constructor argument arrives in the replica as a
`DeploymentHandle` to that deployment. The outermost node is the ingress, which clients reach;
the others are internal.

A worker of an application's deployment is started with the application's import path
(`file.py:app`) and the deployment's name: it imports the module (which binds the graph again),
finds its node, and constructs the class with the node's arguments, nodes replaced by handles.
So arguments need not be picklable; the module must bind the application at import time (and
start the server only under `if __name__ == "__main__":`)."""

from typing import Any, Dict, List, Optional

from .handle import DeploymentHandle
from .loader import load_class

#: Options the decorator accepts, as in Ray Serve (and `runtime_env` for the worker process).
OPTIONS = (
    "name",
    "num_replicas",
    "max_ongoing_requests",
    "max_queued_requests",
    "autoscaling_config",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_timeout_s",
    "request_timeout_s",
    "user_config",
    "max_batch_size",
    "batch_wait_timeout_s",
    "preferred_batch_sizes",
    "max_concurrent_batches",
    "runtime_env",
    "exposed",  # an application's deployment other than the ingress that clients reach too
)

_ATTR = "_ferroserve_options"


def deployment(_cls=None, **options):
    """Marks a model class as a deployment: `@deployment`, `@deployment(num_replicas=2)`,
    or `@serve.deployment(name="m", max_ongoing_requests=8)`. The class is returned as is,
    with its options attached, so it still constructs and subclasses normally."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown deployment option(s): {', '.join(sorted(unknown))}")

    def wrap(cls):
        merged = dict(getattr(cls, _ATTR, {}))
        merged.update(options)
        setattr(cls, _ATTR, merged)
        setattr(cls, "options", classmethod(_with_options))
        setattr(cls, "bind", classmethod(_bind))
        return cls

    return wrap(_cls) if _cls is not None else wrap


def _with_options(cls, **options):
    """`Cls.options(num_replicas=4)`: a subclass with these options merged in."""
    sub = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return deployment(sub, **options)


def _bind(cls, *args, **kwargs):
    """`Cls.bind(*args, **kwargs)`: a node of an application (see `Application`)."""
    return Application(cls, args, kwargs)


def options_of(cls) -> Dict[str, Any]:
    """The deployment options attached to a class (empty if not decorated)."""
    return dict(getattr(cls, _ATTR, {}))


def name_of(cls, default: Optional[str] = None) -> str:
    return options_of(cls).get("name") or default or cls.__name__


class Application:
    """A bound deployment: its class, options and constructor arguments."""

    def __init__(self, cls, args, kwargs):
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    @property
    def name(self) -> str:
        """The deployment's name: its `name` option, else the class name (as Ray)."""
        return name_of(self.cls)

    @property
    def options(self) -> Dict[str, Any]:
        return options_of(self.cls)

    def deployments(self) -> List["Application"]:
        """Every node of the graph, this one (the ingress) first, each once. Two different
        nodes with one name are refused."""
        seen: Dict[str, Application] = {}
        order: List[Application] = []

        def visit(node):
            other = seen.get(node.name)
            if other is node:
                return
            if other is not None:
                raise ValueError(
                    f"two deployments are named {node.name!r}: give one another name with "
                    f"{node.cls.__name__}.options(name=...).bind(...)"
                )
            seen[node.name] = node
            order.append(node)
            for child in _nodes_in((node.args, node.kwargs)):
                visit(child)

        visit(self)
        return order

    def find(self, name: str) -> "Application":
        """The node of deployment `name`."""
        for node in self.deployments():
            if node.name == name:
                return node
        raise LookupError(f"the application has no deployment named {name!r}")

    def construct(self):
        """An instance of the class, with nodes among its arguments replaced by handles."""
        args = _with_handles(self.args)
        kwargs = _with_handles(self.kwargs)
        return self.cls(*args, **kwargs)

    def __repr__(self):
        return f"Application({self.name})"


def _nodes_in(value):
    """The Application nodes in a value: itself, or inside lists, tuples and dicts."""
    if isinstance(value, Application):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _nodes_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _nodes_in(v)


def _with_handles(value):
    if isinstance(value, Application):
        return DeploymentHandle(value.name)
    if isinstance(value, tuple):
        return tuple(_with_handles(v) for v in value)
    if isinstance(value, list):
        return [_with_handles(v) for v in value]
    if isinstance(value, dict):
        return {k: _with_handles(v) for k, v in value.items()}
    return value


def describe(import_path: str) -> List[Dict[str, Any]]:
    """The deployments of the application at `import_path` (`file.py:app`), the ingress
    first, each exposed to clients if it is the ingress or says `exposed=True`: what `ferroserve serve` reads (`python -m ferroserve.describe`) for an `applications:` entry
    of its config."""
    app = load_class(import_path)
    if not isinstance(app, Application):
        raise TypeError(f"{import_path} is a {type(app).__name__}, not an application made with .bind()")
    out = []
    for node in app.deployments():
        options = node.options
        options.pop("name", None)
        options.pop("runtime_env", None)  # the application's runtime_env applies
        exposed = bool(options.pop("exposed", False))
        out.append({"name": node.name, "options": options, "exposed": node is app or exposed})
    return out

