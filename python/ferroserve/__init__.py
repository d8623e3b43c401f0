"""ferroserve for Python models: a `Model` base class shaped like `kserve.Model`, kserve's
request/response types, Ray Serve's `deployment` decorator, and `ModelServer` that serves them
with the ferroserve binary, each replica a worker process."""

from .batching import batch
from .deployment import Application, deployment
from .errors import DeploymentUnavailableError, InferenceError, InvalidInput, ModelNotReady, ServerNotReady
from .handle import DeploymentHandle, DeploymentResponse, get_deployment_handle
from .model import Model
from .server import ModelServer
from .types import InferInput, InferOutput, InferRequest, InferResponse

__all__ = [
    "Application",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentUnavailableError",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InvalidInput",
    "Model",
    "ModelNotReady",
    "ModelServer",
    "ServerNotReady",
    "batch",
    "deployment",
    "get_deployment_handle",
    "serve",
]
__version__ = "0.1.0"


class _Serve:
    """`from ferroserve import serve`: Ray Serve's spelling (`@serve.deployment(...)`,
    `@serve.batch`, `serve.run(app)`, `serve.get_deployment_handle(name)`)."""

    batch = staticmethod(batch)
    deployment = staticmethod(deployment)
    get_deployment_handle = staticmethod(get_deployment_handle)

    @staticmethod
    def run(app, **server_options):
        """Serves the application (`Ingress.bind(...)`): replaces this process with ferroserve,
        as `ModelServer(**server_options).start(app)` (Ray's `serve.run` returns instead)."""
        ModelServer(**server_options).start(app)


serve = _Serve()
