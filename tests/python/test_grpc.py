"""gRPC against the real server through tritonclient.grpc (sync and asyncio) and the kserve
InferenceGRPCClient: every datatype, status codes, a cancelled and a timed-out call, a
streamed sequence, Triton's model config and statistics. Each check runs in a process of its
own (see grpc_checks.py for why)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = [
    "every_datatype",
    "asyncio_client",
    "health_metadata_repository",
    "iris",
    "invalid_argument",
    "deadline",
    "stream",
    "cancel",
    "config_and_statistics",
    "kserve_client",
]


@pytest.mark.parametrize("check", CHECKS)
def test_grpc(server, check):
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, str(here / "grpc_checks.py"), check, server.grpc_host_port, server.host_port],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{check} failed:\n{proc.stdout}\n{proc.stderr}"
