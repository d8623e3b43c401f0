"""Errors a model may raise, named as kserve's so that they map to the same status codes."""


class InvalidInput(ValueError):
    """The request does not fit the model (HTTP 400)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InferenceError(RuntimeError):
    """Inference failed (HTTP 500)."""

    def __init__(self, reason: str, status=None, debug_details=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.debug_details = debug_details


class ModelNotReady(RuntimeError):
    """The model cannot serve right now (HTTP 503)."""

    def __init__(self, model_name: str, detail: str = None):
        message = f"Model with name {model_name} is not ready."
        if detail:
            message += " " + detail
        super().__init__(message)
        self.model_name = model_name
        self.detail = detail


class ServerNotReady(RuntimeError):
    """The server cannot serve right now (HTTP 503)."""


class DeploymentUnavailableError(RuntimeError):
    """A deployment called through a handle cannot serve now: overloaded, not ready, or out of
    time (HTTP 503 if it escapes the model, as the inner 503 it stands for)."""
