"""KServe 0.21 serving the composition benchmark's pipeline as one custom model (KServe has no
handles: the ingress's `predict` calls the echo model's `predict` in the same process):

    python kserve_compose.py --model_name compose --http_port 18180 --grpc_port 18181

Importing bench/python/kserve_server.py applies its patches (REST and gRPC bind 127.0.0.1) and
leaves everything else at KServe's defaults, as in bench/python.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import kserve_server  # noqa: E402,F401  (bench/python/kserve_server.py: the 127.0.0.1 patches)
from kserve_server import kserve, model_server  # noqa: E402

import compose_models  # noqa: E402


def main():
    model = compose_models.KServeCompose(model_server.args.model_name)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
