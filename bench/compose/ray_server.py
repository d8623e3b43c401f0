"""Ray Serve composition for bench/compose/run.sh (the .venv-ray interpreter):

    python ray_server.py --port 18180

Two applications behind Ray Serve's HTTP proxy on 127.0.0.1:PORT:
- `compose` at /v2/models/compose: `RayIngress.bind(RayEcho.bind())`, an ingress deployment
  that awaits the echo deployment through its handle (one replica each);
- `ray-echo` at /v2/models/ray-echo: `RayEchoAlone`, the same echo answered by the HTTP
  deployment itself (no inner call), Ray's single-model baseline.
Every deployment has `max_ongoing_requests=BENCH_RAY_MAX_ONGOING` (100) so that c=64 does not
queue at Ray's default of 5 per replica, and `num_cpus: 0` so that three replicas fit on
2 CPUs (Ray reserves 1 CPU per replica by default); everything else is Ray's default.
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ray  # noqa: E402
from ray import serve  # noqa: E402

import compose_models as m  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    mo = int(os.environ.get("BENCH_RAY_MAX_ONGOING", "100"))

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    # num_cpus=0: a scheduling reservation only (Ray's default of 1 CPU per replica leaves no
    # room for the third replica on 2 CPUs); it limits nothing.
    opts = dict(num_replicas=1, max_ongoing_requests=mo, ray_actor_options={"num_cpus": 0})
    echo = serve.deployment(m.RayEcho, name="echo", **opts)
    ingress = serve.deployment(m.RayIngress, name="ingress", **opts)
    alone = serve.deployment(m.RayEchoAlone, name="ray-echo", **opts)
    serve.run(ingress.bind(echo.bind()), name="compose", route_prefix="/v2/models/compose")
    serve.run(alone.bind(), name="ray-echo", route_prefix="/v2/models/ray-echo")
    print("ray_server: both applications running", flush=True)

    def stop(*_):
        serve.shutdown()
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
