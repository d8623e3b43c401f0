"""ferroserve for Python models: a `Model` base class shaped like `kserve.Model`, kserve's
request/response types, Ray Serve's `deployment` decorator, and `ModelServer` that serves them
with the ferroserve binary, each replica a worker process."""

from .deployment import deployment, serve
from .errors import DeploymentUnavailableError, InferenceError, InvalidInput, ModelNotReady, ServerNotReady
from .handle import DeploymentHandle, DeploymentResponse, get_deployment_handle
from .model import Model
from .server import ModelServer
from .types import InferInput, InferOutput, InferRequest, InferResponse

__all__ = [
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
    "deployment",
    "get_deployment_handle",
    "serve",
]
__version__ = "0.1.0"
