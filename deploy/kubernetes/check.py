"""Checks Kubernetes manifests offline, strictly (an unknown field is an error):

- built-in kinds (Deployment, Service, HorizontalPodAutoscaler, ConfigMap...) with
  kubernetes-validate, which bundles the Kubernetes API schemas;
- KServe's kinds (ServingRuntime, ClusterServingRuntime, InferenceService, InferenceGraph)
  against the field names and types of the `kserve` package's generated models (and the
  `kubernetes` package's models for the core types inside them, such as containers);
- KEDA's ScaledObject against its fields as KEDA documents them (the one kind here whose
  schema no package on PyPI carries).

    python deploy/kubernetes/check.py [FILE...]     # default: every *.yaml under deploy/kubernetes

Prints one line per problem, naming the file, the object and the field path; exits 1 if any.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_VERSION = "1.33.0"

KSERVE_KINDS = {
    "ServingRuntime": "V1alpha1ServingRuntime",
    "ClusterServingRuntime": "V1alpha1ClusterServingRuntime",
    "InferenceService": "V1beta1InferenceService",
    "InferenceGraph": "V1alpha1InferenceGraph",
}

# KEDA's ScaledObject (keda.sh/v1alpha1), from KEDA's reference: a dict is an object with these
# fields, a one-item list a list of that, ("map", T) a map of T, a string a core model's name.
KEDA_SCALED_OBJECT: dict[str, Any] = {
    "apiVersion": str,
    "kind": str,
    "metadata": "V1ObjectMeta",
    "spec": {
        "scaleTargetRef": {"apiVersion": str, "kind": str, "name": str, "envSourceContainerName": str},
        "pollingInterval": int,
        "cooldownPeriod": int,
        "initialCooldownPeriod": int,
        "idleReplicaCount": int,
        "minReplicaCount": int,
        "maxReplicaCount": int,
        "fallback": {"failureThreshold": int, "replicas": int, "behavior": str},
        "advanced": {
            "restoreToOriginalReplicaCount": bool,
            "horizontalPodAutoscalerConfig": {"name": str, "behavior": "V2HorizontalPodAutoscalerBehavior"},
            "scalingModifiers": {"target": str, "activationTarget": str, "metricType": str, "formula": str},
        },
        "triggers": [
            {
                "type": str,
                "name": str,
                "metricType": str,
                "useCachedMetrics": bool,
                "metadata": ("map", str),
                "authenticationRef": {"name": str, "kind": str},
            }
        ],
    },
}

PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "datetime": (str,), "date": (str,)}


def _model(name: str):
    """A generated model class by name: KServe's first, then Kubernetes's."""
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    raise LookupError(f"no model {name} in kserve or kubernetes")


def _unknown(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{path}.{key}: unknown field{hint}"


def _check_typed(type_name: str, value: Any, path: str, errors: list[str]) -> None:
    """Checks a value against a type of the generated models: `str`, `list[T]`, `List[T]`,
    `dict(str, T)`, `Dict[str, T]`, `object` (anything) or a model's name."""
    t = type_name.strip()
    if t == "object":
        return
    if t in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[t]) and not (t in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {t}, got {type(value).__name__} {value!r}")
        return
    for prefix in ("list[", "List["):
        if t.startswith(prefix):
            if not isinstance(value, list):
                errors.append(f"{path}: expected a list, got {type(value).__name__}")
                return
            for i, item in enumerate(value):
                _check_typed(t[len(prefix) : -1], item, f"{path}[{i}]", errors)
            return
    for prefix in ("dict(str, ", "Dict[str, "):
        if t.startswith(prefix):
            if not isinstance(value, dict):
                errors.append(f"{path}: expected a map, got {type(value).__name__}")
                return
            for k, item in value.items():
                _check_typed(t[len(prefix) : -1], item, f"{path}.{k}", errors)
            return
    _check_model(_model(t), value, path, errors)


def _check_model(cls, value: Any, path: str, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({cls.__name__}), got {type(value).__name__}")
        return
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        attr = by_json.get(key)
        if attr is None:
            errors.append(_unknown(path, key, list(by_json)))
            continue
        _check_typed(cls.openapi_types[attr], item, f"{path}.{key}", errors)


def _check_spec(spec: Any, value: Any, path: str, errors: list[str]) -> None:
    """Checks a value against a hand-written spec (see KEDA_SCALED_OBJECT)."""
    if isinstance(spec, str):
        _check_model(_model(spec), value, path, errors)
    elif isinstance(spec, type):
        if not isinstance(value, spec) or (spec is int and isinstance(value, bool)):
            errors.append(f"{path}: expected {spec.__name__}, got {type(value).__name__} {value!r}")
    elif isinstance(spec, tuple):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for k, item in value.items():
            _check_spec(spec[1], item, f"{path}.{k}", errors)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check_spec(spec[0], item, f"{path}[{i}]", errors)
    else:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for key, item in value.items():
            if key not in spec:
                errors.append(_unknown(path, key, list(spec)))
            else:
                _check_spec(spec[key], item, f"{path}.{key}", errors)


def check_object(doc: dict) -> list[str]:
    """The problems of one manifest object, each naming its field path."""
    import kubernetes_validate

    errors: list[str] = []
    kind = doc.get("kind", "?")
    group = str(doc.get("apiVersion", "")).partition("/")[0]
    if group == "serving.kserve.io":
        if kind not in KSERVE_KINDS:
            return [f"{kind}: not a KServe kind this checker knows ({', '.join(KSERVE_KINDS)})"]
        _check_model(_model(KSERVE_KINDS[kind]), doc, kind, errors)
    elif group == "keda.sh":
        if kind != "ScaledObject":
            return [f"{kind}: the checker knows KEDA's ScaledObject only"]
        _check_spec(KEDA_SCALED_OBJECT, doc, kind, errors)
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            errors.append(f"{kind}.{where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{kind}: no schema ({e})")
    return errors


def check_file(path: Path) -> list[str]:
    problems = []
    try:
        objects = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    for doc in objects:
        if doc is None:
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        for error in check_object(doc):
            problems.append(f"{path}: {name}: {error}")
    return problems


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted(Path(__file__).parent.rglob("*.yaml"))
    problems = [p for f in files for p in check_file(f)]
    for p in problems:
        print(p)
    print(f"{len(files)} files, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
