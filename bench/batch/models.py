"""The batching benchmark's model (bench/batch/run.sh): a fixed cost per call and a small cost
per row (5 ms + 0.05 ms per row, sleep-based, standing in for a GPU), echoing its input."""

import time

from ferroserve import InferOutput, InferResponse, Model


class FixedCost(Model):
    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        x = request.inputs[0].as_numpy()
        time.sleep(0.005 + 0.00005 * x.shape[0])
        return InferResponse(request.id, self.name, [InferOutput("output-0", list(x.shape), "FP32", data=x)])
