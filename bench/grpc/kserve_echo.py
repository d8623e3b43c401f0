"""KServe 0.21 serving an identity model, the peer for bench/grpc.sh:

    .venv/bin/python bench/grpc/kserve_echo.py --model_name identity \
        --http_port 28080 --grpc_port 28081 \
        --grpc_max_send_message_length 67108864 --grpc_max_receive_message_length 67108864

The model answers every input as an output of the same name, datatype and shape, as
ferroserve's built-in `identity` does. Over gRPC, KServe answers raw inputs with raw outputs
(`InferRequest.use_binary_outputs`), so `raw_input_contents` in gives `raw_output_contents` out.
Everything else is KServe's default (one process, access and latency logging on).

KServe binds 0.0.0.0 (REST) and [::] (gRPC) with no option to change it; this launcher patches
`uvicorn.Config` and grpc.aio's `add_insecure_port` at import time so that both bind 127.0.0.1.
The installed package is not modified.
"""

import uvicorn
from grpc.aio import _server as _grpc_aio_server

_uvicorn_init = uvicorn.Config.__init__


def _local_uvicorn_init(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _uvicorn_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _local_uvicorn_init

_grpc_add_port = _grpc_aio_server.Server.add_insecure_port


def _local_add_insecure_port(self, address):
    return _grpc_add_port(self, "127.0.0.1:" + address.rsplit(":", 1)[1])


_grpc_aio_server.Server.add_insecure_port = _local_add_insecure_port

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, model_server  # noqa: E402
from kserve.utils.utils import generate_uuid  # noqa: E402


class Echo(kserve.Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        binary = payload.use_binary_outputs
        outputs = []
        for tensor in payload.inputs:
            out = InferOutput(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype)
            out.set_data_from_numpy(tensor.as_numpy(), binary_data=binary)
            outputs.append(out)
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or generate_uuid(),
            use_binary_outputs=binary,
        )


if __name__ == "__main__":
    kserve.ModelServer().start([Echo(model_server.args.model_name)])
