"""A Python model of a model repository (copied to DIR/simple_python/model.py by the tests):
Triton's `simple` (sum and difference of two INT32 [-1, 16] inputs) in numpy."""

from ferroserve import InferOutput, InferResponse, Model


class AddSub(Model):
    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        a = request.inputs[0].as_numpy()
        b = request.inputs[1].as_numpy()
        shape = list(a.shape)
        outputs = [
            InferOutput("OUTPUT0", shape, "INT32", data=a + b),
            InferOutput("OUTPUT1", shape, "INT32", data=a - b),
        ]
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=outputs)
