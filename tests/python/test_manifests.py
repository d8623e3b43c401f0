"""The Kubernetes manifests in deploy/kubernetes: they pass the offline strict check
(deploy/kubernetes/check.py), a misspelt field of any kind fails it, and the values that matter
agree with what ferroserve does: the runtime's arguments start the real binary and its
readiness path answers, the ports and image are ferroserve's, the drain fits the grace period,
and the metrics the autoscalers read are ones ferroserve exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, _free_port, _stop, ferroserve_bin, start_process

MANIFESTS = REPO_ROOT / "deploy/kubernetes"
CHECK = MANIFESTS / "check.py"
RUNTIME = MANIFESTS / "kserve/servingruntime.yaml"
ISVC = MANIFESTS / "kserve/inferenceservice.yaml"
PLAIN = MANIFESTS / "plain/ferroserve.yaml"
ADAPTER = MANIFESTS / "plain/prometheus-adapter.yaml"
KEDA = MANIFESTS / "plain/keda-scaledobject.yaml"
# ferroserve's default graceful_shutdown_timeout_s (crates/runtime/src/config.rs).
DRAIN_S = 20


def check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *map(str, files)], capture_output=True, text=True, timeout=120)


def docs(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def test_every_manifest_passes_the_strict_check():
    out = check()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 problems" in out.stderr


@pytest.mark.parametrize(
    "path, right, wrong",
    [
        (RUNTIME, "protocolVersions:", "protocolVersion:"),
        (RUNTIME, "containerPort: 8081", "containerport: 8081"),
        (ISVC, "storageUri:", "storageURI:"),
        (PLAIN, "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"),
        (PLAIN, "appProtocol:", "appprotocol:"),
        (PLAIN, "averageValue:", "averagevalue:"),
        (ADAPTER, "data:", "date:"),
        (KEDA, "minReplicaCount:", "minReplicas:"),
        (KEDA, 'threshold: "8"', "threshold: 8"),
    ],
)
def test_a_misspelt_or_mistyped_field_fails_the_check(tmp_path, path, right, wrong):
    text = path.read_text()
    assert right in text
    broken = tmp_path / path.name
    broken.write_text(text.replace(right, wrong, 1))
    out = check(broken)
    assert out.returncode == 1, out.stdout + out.stderr
    field = wrong.strip().split(":")[0].split()[-1]
    assert field in out.stdout or "expected" in out.stdout, out.stdout


def container_args(container: dict) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"])


def test_the_runtime_keeps_kserves_contract():
    runtime = docs(RUNTIME)["ServingRuntime"]["spec"]
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    assert {"v1", "v2", "grpc-v2"} <= set(runtime["protocolVersions"])
    assert {"onnx", "python"} <= {f["name"] for f in runtime["supportedModelFormats"]}
    args = container_args(container)
    assert args == {"model_name": "{{.Name}}", "model_dir": "/mnt/models", "http_port": "8080", "grpc_port": "8081"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http1": 8080, "h2c": 8081}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/{{.Name}}/ready"
    assert container["securityContext"]["runAsUser"] == 1000
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts, "workers need a writable /tmp on a read-only root filesystem"
    isvc = docs(ISVC)["InferenceService"]["spec"]["predictor"]
    assert isvc["model"]["runtime"] == docs(RUNTIME)["ServingRuntime"]["metadata"]["name"]
    assert isvc["model"]["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert isvc["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"] + DRAIN_S


def test_images_are_the_one_the_build_tags():
    version = re.search(r'^version = "(.+)"', (REPO_ROOT / "python/pyproject.toml").read_text(), re.M).group(1)
    runtime = docs(RUNTIME)["ServingRuntime"]["spec"]["containers"][0]
    deployment = docs(PLAIN)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert runtime["image"] == deployment["image"] == f"ferroserve:{version}"


def test_the_plain_deployment_drains_within_its_grace_period_and_scales_on_ferroserve_load():
    plain = docs(PLAIN)
    pod = plain["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"] + DRAIN_S
    args = container_args(container)
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v2/models/{args['model_name']}/ready"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(args["http_port"]), "grpc": int(args["grpc_port"])}
    grpc = next(p for p in plain["Service"]["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["appProtocol"] == "kubernetes.io/h2c"
    metric = plain["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(docs(ADAPTER)["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert metric in {r["name"]["as"] for r in rules}


def exported_metrics(server) -> set[str]:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_the_autoscalers_read_metrics_that_ferroserve_exports(server):
    exported = exported_metrics(server)
    adapter = docs(ADAPTER)["ConfigMap"]["data"]["config.yaml"]
    keda = docs(KEDA)["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    for query in (adapter, keda):
        used = set(re.findall(r"\bferroserve_[a-z_]+\b", query)) - {"ferroserve_load"}
        assert used and used <= exported, f"{used - exported} are not exported; exported: {sorted(exported)}"


def test_the_runtimes_arguments_start_ferroserve_and_its_readiness_path_answers(tmp_path):
    """The ServingRuntime's container as KServe starts it: {{.Name}} filled in, /mnt/models
    where the storage initializer put a model.py (here a temporary directory), the ports."""
    models = tmp_path / "mnt-models"
    models.mkdir()
    shutil.copy(REPO_ROOT / "examples/python/numpy_v2_model.py", models / "model.py")
    container = docs(RUNTIME)["ServingRuntime"]["spec"]["containers"][0]
    port, grpc_port = _free_port(), _free_port()
    args = [
        a.replace("{{.Name}}", "iris").replace("/mnt/models", str(models))
        .replace("8080", str(port)).replace("8081", str(grpc_port))
        for a in container["args"]
    ]  # fmt: skip
    server = start_process([str(ferroserve_bin()), "serve", *args], port, tmp_path, "runtime-args")
    try:
        path = container["readinessProbe"]["httpGet"]["path"].replace("{{.Name}}", "iris")
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            assert r.status == 200
    finally:
        _stop(server)
