"""The Python echo of the shared-memory benchmark (bench/shm/run.sh): every input answered as an
output of the same name, datatype and shape — the very array it was given, as Triton's Python
backend echo (`pb_utils.Tensor(name, input.as_numpy())`) does."""

from ferroserve import InferOutput, InferResponse, Model


class Echo(Model):
    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        outputs = [InferOutput(i.name, list(i.shape), i.datatype, data=i.as_numpy()) for i in request.inputs]
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=outputs)
