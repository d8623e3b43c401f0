"""A KServe model server (the kserve package's own ModelServer, REST and gRPC) for the remote
deployment tests: model `doubler` answers FP32 `y = 2x`.

    python kserve_doubler.py --http_port 8080 --grpc_port 8081
"""

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Doubler(Model):
    def __init__(self):
        super().__init__("doubler")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        y = InferOutput(name="y", shape=list(x.shape), datatype="FP32")
        y.set_data_from_numpy(x * 2, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[y], response_id=payload.id)


if __name__ == "__main__":
    ModelServer().start([Doubler()])
