"""`Model`: the base class of a Python model, with `kserve.Model`'s surface so that a KServe
custom model moves over by changing its imports."""

from typing import Any, Dict, List, Optional


class Model:
    """A servable model. Override `load` and `predict`; optionally `preprocess`,
    `postprocess`, `healthy` and `reconfigure`. Each handler may be `def` or `async def`.

    `predict(payload, headers)` receives an `InferRequest` for V2 requests and a dict for V1
    (`{"instances": [...]}`), and returns an `InferResponse` (or a V2-shaped dict) or a dict.
    """

    def __init__(self, name: str = "model", return_response_headers: bool = False):
        self.name = name
        self.ready = False
        self.return_response_headers = return_response_headers

    def load(self) -> bool:
        """Loads weights. The default only marks the model ready."""
        self.ready = True
        return self.ready

    def start(self):
        """Called by kserve's ModelServer; kept for compatibility."""
        self.ready = True

    def stop(self):
        """Called when the replica stops."""
        self.ready = False

    async def healthy(self) -> bool:
        """Whether the model can serve; checked by the controller's health checks."""
        return self.ready

    def reconfigure(self, user_config: Any) -> None:
        """Receives the deployment's `user_config` after `load` and on every change."""

    def preprocess(self, payload, headers: Optional[Dict[str, str]] = None):
        return payload

    def predict(self, payload, headers: Optional[Dict[str, str]] = None):
        raise NotImplementedError("predict is not implemented")

    def postprocess(self, result, headers: Optional[Dict[str, str]] = None):
        return result

    def get_input_types(self) -> List[Dict]:
        """Input signatures for metadata: `[{"name", "datatype", "shape"}]`."""
        return []

    def get_output_types(self) -> List[Dict]:
        """Output signatures for metadata: `[{"name", "datatype", "shape"}]`."""
        return []
