"""The KServe docs' custom-model pattern, served by ferroserve with 2 replicas.

A KServe custom model moves over by changing its imports: `from kserve import Model,
ModelServer` became `from ferroserve import ...`. The model loads weights from a file in `load`
and answers V1 `{"instances": [[...], ...]}` with `{"predictions": [...]}`.

    python examples/python/kserve_custom_model.py    # with the ferroserve wheel installed (README: Install)
    curl localhost:8080/v1/models/iris-classifier:predict -d '{"instances": [[6.9, 3.1, 5.4, 2.1]]}'
"""

import json
import os
from typing import Dict

import numpy as np

from ferroserve import Model, ModelServer, serve

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iris", "weights.json")


@serve.deployment(name="iris-classifier", num_replicas=2)
class IrisClassifier(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name
        self.coef = None
        self.intercept = None

    def load(self):
        with open(WEIGHTS) as f:
            weights = json.load(f)
        self.coef = np.array(weights["coef"], dtype=np.float64)
        self.intercept = np.array(weights["intercept"], dtype=np.float64)
        self.ready = True

    def predict(self, payload: Dict, headers: Dict[str, str] = None) -> Dict:
        instances = np.asarray(payload["instances"], dtype=np.float64)
        scores = instances @ self.coef.T + self.intercept
        return {"predictions": scores.argmax(axis=1).tolist()}


if __name__ == "__main__":
    model = IrisClassifier("iris-classifier")
    ModelServer().start([model])
