"""KServe 0.21 serving one of bench/python/models.py's models, as the benchmark starts it:

    python kserve_server.py --model_name echo --http_port 18180 --grpc_port 18181 [--workers 2]

Everything else is KServe's default (gRPC on, access and latency logging on). With
`BENCH_RAY_REPLICAS=N` the model runs as a Ray Serve deployment of N replicas (Ray's defaults
otherwise) behind KServe's ingress, wired as KServe 0.21 supports it: `serve.run(...)` →
`kserve.ray.RayModel(name, handle)` → `ModelServer().start([ray_model])` (baseline.md §6).

KServe binds 0.0.0.0 (REST) and [::] (gRPC) with no option to change it; this launcher patches
`uvicorn.Config` and grpc.aio's `add_insecure_port` at import time so that both bind 127.0.0.1.
The installed package is not modified. The patch runs at module level, so it also applies in
the processes `--workers` spawns (they re-import this file).
"""

import os
import sys

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kserve  # noqa: E402
from kserve import model_server  # noqa: E402

import models  # noqa: E402


def main():
    name = model_server.args.model_name
    if name not in models.MODELS:
        sys.exit(f"--model_name must be one of {', '.join(models.MODELS)}, not {name!r}")
    cls = getattr(models, "KServe" + models.MODELS[name])
    replicas = int(os.environ.get("BENCH_RAY_REPLICAS", "0"))
    if replicas > 0:
        import ray
        from ray import serve

        from kserve.ray import RayModel

        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
        serve.start(
            http_options={"host": "127.0.0.1", "port": int(os.environ.get("BENCH_RAY_SERVE_PORT", "8000"))}
        )
        handle = serve.run(
            serve.deployment(cls, num_replicas=replicas).bind(name), name=name, route_prefix=None
        )
        model = RayModel(name, handle)
    else:
        model = cls(name)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
