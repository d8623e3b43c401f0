"""Triton's Python backend running the same echo as bench/shm/models.py, the peer of the
shared-memory benchmark (bench/shm/run.sh). Uses the tritonserver bundled in the
nvidia-pytriton wheel, run from the venv that has it:

    .venv-pytriton/bin/python bench/shm/triton_echo.py --port 18380   # HTTP P, gRPC P+1

It prepares the server as PyTriton does (a copy of the bundled server with the Python backend
stub of the running interpreter's version, this venv's bin first on PATH), writes a model repository with one `echo` model
(`max_batch_size: 0`, one CPU instance, FP32 `input-0` of any shape answered as is), puts the
interpreter's LIBDIR first on LD_LIBRARY_PATH (the stub links libpython by soname; see
../shared/reference/baseline.md, section 8) and execs tritonserver on 127.0.0.1."""

import argparse
import os
import pathlib
import shutil
import sys
import sysconfig
import tempfile

import pytriton
from pytriton.utils.distribution import get_libs_path, get_stub_path

MODEL_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "input-0")
            out = pb_utils.Tensor("input-0", x.as_numpy())
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''

CONFIG = '''
name: "echo"
backend: "python"
max_batch_size: 0
input [{ name: "input-0", data_type: TYPE_FP32, dims: [-1, -1] }]
output [{ name: "input-0", data_type: TYPE_FP32, dims: [-1, -1] }]
instance_group [{ count: 1, kind: KIND_CPU }]
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18380)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="triton-echo-"))
    server = work / "tritonserver"
    dist = pathlib.Path(pytriton.__file__).parent / "tritonserver"
    shutil.copytree(dist, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy(get_stub_path(version), server / "backends" / "python" / "triton_python_backend_stub")
    model = work / "models" / "echo"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(MODEL_PY)
    (model / "config.pbtxt").write_text(CONFIG)
    libdirs = [sysconfig.get_config_var("LIBDIR") or "", str(get_libs_path()), os.environ.get("LD_LIBRARY_PATH", "")]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
    # The stub finds its environment from PATH, as PyTriton sets it: this venv's bin first.
    os.environ["PATH"] = os.pathsep.join([os.path.join(sys.exec_prefix, "bin"), os.environ.get("PATH", "")])
    binary = str(server / "bin" / "tritonserver")
    os.execv(
        binary,
        [
            binary,
            f"--model-repository={work / 'models'}",
            f"--backend-directory={server / 'backends'}",
            "--http-address=127.0.0.1", f"--http-port={args.port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={args.port + 1}",
            "--allow-metrics=false",
            "--log-info=false",
        ],
    )


if __name__ == "__main__":
    main()
