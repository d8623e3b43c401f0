"""A three-step pipeline (Python → Rust → Python) through handles, over REST with
tritonclient.http and over gRPC with tritonclient.grpc (in a process of its own, as in
test_grpc.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np
import pytest

from conftest import REPO_ROOT, _start, _stop

MODELS = REPO_ROOT / "tests" / "python" / "models" / "compose.py"


@pytest.fixture(scope="module")
def pipeline_server(_log_dir):
    config = _log_dir / "compose.yaml"
    python = sys.executable
    entries = "".join(
        f"  - name: {name}\n    python: {MODELS}:{cls}\n    runtime_env: {{py_executable: {python}}}\n{extra}"
        for name, cls, extra in [
            ("pre", "Double", "    exposed: false\n"),
            ("post", "Double", "    exposed: false\n"),
            ("pipeline", "Pipeline3", ""),
        ]
    )
    config.write_text(f"deployments:\n  - name: identity\n    model: identity\n{entries}")
    s = _start(["--config", str(config)], _log_dir, "compose")
    try:
        yield s
    finally:
        _stop(s)


def test_a_three_step_pipeline_over_rest(pipeline_server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(pipeline_server.host_port)
    x = np.array([[1.5, -2.0, 3.0]], dtype=np.float32)
    for binary in (True, False):
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("pipeline", [inp], request_id="r1")
        np.testing.assert_array_equal(result.as_numpy("x"), x * 4)
        assert result.get_response()["id"] == "r1"
    with urllib.request.urlopen(pipeline_server.url + "/v1/models") as r:
        models = json.load(r)["models"]
    assert "pipeline" in models and "pre" not in models and "post" not in models


def test_a_three_step_pipeline_over_grpc(pipeline_server):
    script = textwrap.dedent(
        f"""
        import numpy as np
        import tritonclient.grpc as grpcclient
        client = grpcclient.InferenceServerClient("{pipeline_server.grpc_host_port}")
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        inp = grpcclient.InferInput("x", [2, 3], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("pipeline", [inp], client_timeout=30)
        np.testing.assert_array_equal(result.as_numpy("x"), x * 4)
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
