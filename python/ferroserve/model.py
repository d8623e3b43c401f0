"""`Model`: the base class of a Python model, with `kserve.Model`'s surface so that a KServe
custom model moves over by changing its imports."""

from typing import Any, Dict, List, Optional


class Model:
    """A servable model. Override `load` and `predict`; optionally `preprocess`, `validate`,
    `postprocess`, `healthy` and `reconfigure`. Each handler may be `def` or `async def`.

    `predict(payload, headers)` receives an `InferRequest` for V2 requests and a dict for V1
    (`{"instances": [...]}`), and returns an `InferResponse` (or a V2-shaped dict) or a dict.
    As in kserve, a request goes through `preprocess`, `validate`, `predict`, `postprocess`.
    """

    def __init__(self, name: str = "model", return_response_headers: bool = False):
        self.name = name
        self.ready = False
        self.required_response_headers = return_response_headers

    @property
    def predictor_config(self) -> None:
        """kserve's transformer-to-predictor settings: ferroserve has no separate predictor to
        call, so this is always None (as in kserve when none is configured)."""
        return None

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

    def validate(self, payload):
        """Checks the payload after `preprocess`; returns it (possibly changed) or raises
        `InvalidInput`. The default accepts anything."""
        return payload

    # `response_headers` is kserve's, passed when `required_response_headers` is set; ferroserve
    # does not pass it (a model cannot set response headers here).
    def predict(self, payload, headers: Optional[Dict[str, str]] = None, response_headers: Optional[Dict] = None):
        raise NotImplementedError("predict is not implemented")

    def postprocess(self, result, headers: Optional[Dict[str, str]] = None, response_headers: Optional[Dict] = None):
        return result

    def get_input_types(self) -> List[Dict]:
        """Input signatures for metadata: `[{"name", "datatype", "shape"}]`."""
        return []

    def get_output_types(self) -> List[Dict]:
        """Output signatures for metadata: `[{"name", "datatype", "shape"}]`."""
        return []
