"""ferroserve for Python models: a `Model` base class shaped like `kserve.Model`, kserve's
request/response types, Ray Serve's `deployment` decorator, and `ModelServer` that serves them
with the ferroserve binary, each replica a worker process."""

from .deployment import deployment, serve
from .errors import InferenceError, InvalidInput, ModelNotReady, ServerNotReady
from .model import Model
from .server import ModelServer
from .types import InferInput, InferOutput, InferRequest, InferResponse

__all__ = [
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
    "serve",
]
__version__ = "0.1.0"
