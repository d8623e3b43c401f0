"""Triton's `simple_identity` as a Python model of a model repository (copied to
DIR/simple_identity/model.py by the tests): BYTES in, the same BYTES out. A Python model
because ONNX Runtime's string tensors cannot hold a NUL byte, which Triton's string
example sends."""

from ferroserve import InferOutput, InferResponse, Model


class Identity(Model):
    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        x = request.inputs[0]
        output = InferOutput("OUTPUT0", list(x.shape), x.datatype, data=x.as_numpy())
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=[output])
