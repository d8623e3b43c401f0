"""A V2 (Open Inference Protocol) model on numpy arrays, served by ferroserve.

Input `x` (FP32, any shape) arrives as a numpy array built from the raw tensor bytes, without
JSON in between; the model answers `y = 2x + 1` and the row sums. An `async def predict` lets one
replica overlap several requests (up to `max_ongoing_requests`).

    python examples/python/numpy_v2_model.py    # with the ferroserve wheel installed (README: Install)
"""

import numpy as np

from ferroserve import InferOutput, InferRequest, InferResponse, InvalidInput, Model, ModelServer, serve


@serve.deployment(num_replicas=2, max_ongoing_requests=8)
class AffineModel(Model):
    def load(self):
        self.scale, self.offset = np.float32(2), np.float32(1)
        self.ready = True

    def get_input_types(self):
        return [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]

    def get_output_types(self):
        return [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}, {"name": "row_sum", "datatype": "FP64", "shape": [-1]}]

    async def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        x = payload.get_input_by_name("x")
        if x is None or x.datatype != "FP32":
            raise InvalidInput("expected an FP32 input named 'x'")
        arr = x.as_numpy()
        y = InferOutput("y", list(arr.shape), "FP32")
        y.set_data_from_numpy(arr * self.scale + self.offset)
        sums = arr.reshape(arr.shape[0], -1).astype(np.float64).sum(axis=1) if arr.ndim else arr.astype(np.float64)
        row_sum = InferOutput("row_sum", list(sums.shape), "FP64")
        row_sum.set_data_from_numpy(sums)
        return InferResponse(payload.id, self.name, [y, row_sum])


if __name__ == "__main__":
    ModelServer().start([AffineModel])
