"""The `deployment` decorator: Ray Serve's deployment options on a model class."""

from typing import Any, Dict, Optional

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
    """`Cls.bind(*args, **kwargs)`: a node of an application (see `ferroserve.app`)."""
    from .app import bind

    return bind(cls, *args, **kwargs)


def options_of(cls) -> Dict[str, Any]:
    """The deployment options attached to a class (empty if not decorated)."""
    return dict(getattr(cls, _ATTR, {}))


def name_of(cls, default: Optional[str] = None) -> str:
    return options_of(cls).get("name") or default or cls.__name__


class _Serve:
    """`from ferroserve import serve; @serve.deployment(...)`: Ray Serve's spelling."""

    deployment = staticmethod(deployment)

    @staticmethod
    def run(app, **server_options):
        """Serves the application (`Ingress.bind(...)`): replaces this process with ferroserve,
        as `ModelServer(**server_options).start(app)` (Ray's `serve.run` returns instead)."""
        from .server import ModelServer

        ModelServer(**server_options).start(app)

    @staticmethod
    def get_deployment_handle(deployment_name, app_name=None):
        """A handle to a deployment of the server (Ray Serve's `serve.get_deployment_handle`)."""
        from .handle import get_deployment_handle

        return get_deployment_handle(deployment_name, app_name)


serve = _Serve()
