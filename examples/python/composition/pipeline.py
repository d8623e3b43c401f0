"""Composition: a Python pipeline that checks and converts its input, then calls the Rust
`iris` classifier and turns class numbers into names. Each step is a deployment with its own
replicas; calls go through ferroserve's router (no HTTP between them).

    ferroserve serve --config examples/python/composition/ferroserve.yaml
    curl -s localhost:8080/v1/models/flowers:predict -d '{"instances": [[51, 35, 14, 2]]}'
    # {"predictions": ["setosa"]}
"""

from ferroserve import InvalidInput, Model, get_deployment_handle, serve

NAMES = ["setosa", "versicolor", "virginica"]


@serve.deployment(num_replicas=2)
class Millimetres:
    """Ray-style step: measurements in millimetres → the centimetres iris was trained on."""

    def __call__(self, payload):
        rows = payload.get("instances")
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 4 for r in rows):
            raise InvalidInput("instances must be rows of 4 measurements in millimetres")
        return {"instances": [[v / 10 for v in row] for row in rows]}


@serve.deployment(name="flowers", max_ongoing_requests=32)
class Flowers(Model):
    """The ingress: millimetres → `iris` (a Rust deployment of the config file) → names."""

    def __init__(self, to_cm):
        super().__init__("flowers")
        self.to_cm = to_cm  # a DeploymentHandle
        self.iris = get_deployment_handle("iris")
        self.ready = True

    async def predict(self, payload, headers=None):
        classes = await self.iris.remote(self.to_cm.remote(payload))
        return {"predictions": [NAMES[c] for c in classes["predictions"]]}


app = Flowers.bind(Millimetres.bind())
