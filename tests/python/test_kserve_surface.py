"""ferroserve's Model and request/response types against kserve's (the version in
requirements.txt): every public method, property and attribute of kserve's is in ours, settable
where kserve's is, unless listed below with the reason; and ours add nothing unlisted. Code
written for kserve then moves over by changing its imports."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest

_argv, sys.argv = sys.argv, sys.argv[:1]
try:  # kserve parses sys.argv on import: hide pytest's arguments
    import kserve
    from kserve.protocol import infer_type as kserve_types
finally:
    sys.argv = _argv

import ferroserve
from ferroserve import types as ours_types

WIRE = "converts to and from the wire; the Rust server does that, not the model"
ENGINE = "kserve's ModelServer starts engine models (vLLM); a ferroserve worker calls load() only"
EXPLAIN = "ferroserve answers :explain with 501 and never calls an explainer"

#: kserve's public names ferroserve deliberately lacks, per class, with the reason.
MISSING = {
    "InferRequest": {
        "from_bytes": WIRE,
        "from_inference_request": WIRE,
        "to_grpc": WIRE,
        "to_rest": WIRE,
    },
    "InferResponse": {
        "from_bytes": WIRE,
        "from_rest": WIRE,
        "to_grpc": WIRE,
        "to_rest": WIRE,
    },
    "Model": {
        "engine": ENGINE,
        "start_engine": ENGINE,
        "stop_engine": ENGINE,
        "explain": EXPLAIN,
        "explainer_host": EXPLAIN,
        "enable_latency_logging": "ferroserve measures every request itself (/metrics); the flag would do nothing",
    },
}

#: Public names ours have and kserve's do not, per class, with the reason.
EXTRA = {
    "InferInput": {"set_raw": "how the worker hands a tensor's received bytes to numpy without a copy"},
    "Model": {"reconfigure": "receives the deployment's user_config (Ray Serve's hook)"},
    "RequestedOutput": {"get": "request outputs were dicts here before: `o.get('parameters')` still works"},
}


def _instances(mod):
    """One instance of each class, made the same way from either module."""
    inp = mod.InferInput("x", [2], "FP32")
    inp.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    out = mod.InferOutput("y", [2], "FP32")
    out.set_data_from_numpy(np.zeros(2, dtype=np.float32))
    return {
        "InferInput": inp,
        "InferOutput": out,
        "InferRequest": mod.InferRequest("m", [inp], request_id="1", parameters={"a": 1}),
        "InferResponse": mod.InferResponse("1", "m", [out]),
        "RequestedOutput": mod.RequestedOutput("y", {"binary_data": True}),
    }


def _surface(instance) -> dict[str, str]:
    """Public name → `method`, `read-only` (a property without setter) or `settable`."""
    cls = type(instance)
    kinds = {}
    for name in dir(instance):
        if name.startswith("_"):
            continue
        if name in vars(instance):
            kinds[name] = "settable"
            continue
        static = inspect.getattr_static(cls, name)
        if isinstance(static, property):
            kinds[name] = "settable" if static.fset else "read-only"
        elif callable(static) or isinstance(static, (classmethod, staticmethod)):
            kinds[name] = "method"
        else:
            kinds[name] = "settable"
    return kinds


def _pairs():
    """Class name → (kserve's instance, ours). Instances, as kserve's sets `from_grpc` on them
    over the classmethod of that name."""
    theirs, ours = _instances(kserve_types), _instances(ours_types)
    theirs["Model"], ours["Model"] = kserve.Model("m"), ferroserve.Model("m")
    return {name: (theirs[name], ours[name]) for name in theirs}


@pytest.mark.parametrize("name", sorted(_pairs()))
def test_the_public_surface_matches_kserves(name):
    theirs, ours = _pairs()[name]
    want, have = _surface(theirs), _surface(ours)
    missing = MISSING.get(name, {})
    extra = EXTRA.get(name, {})
    problems = []
    for attr, kind in sorted(want.items()):
        if attr in missing:
            assert attr not in have, f"{name}.{attr} is listed as missing but exists: drop it from MISSING"
            continue
        if attr not in have:
            problems.append(f"{name}.{attr} ({kind}) is missing")
        elif kind == "method" and have[attr] != "method":
            problems.append(f"{name}.{attr} is a method in kserve, {have[attr]} here")
        elif kind != "method" and have[attr] == "method":
            problems.append(f"{name}.{attr} is a value in kserve, a method here")
        elif kind == "settable" and have[attr] != "settable":
            problems.append(f"{name}.{attr} is settable in kserve, {have[attr]} here")
    for attr in sorted(set(have) - set(want)):
        if attr not in extra:
            problems.append(f"{name}.{attr} is not in kserve: add it to EXTRA with a reason, or remove it")
    assert not problems, "\n".join(problems)


def test_the_methods_kserve_has_take_its_arguments():
    """Same parameter names (ours may accept more), so keyword calls written for kserve work."""
    problems = []
    for name, (theirs, ours) in _pairs().items():
        for attr, kind in _surface(theirs).items():
            if kind != "method" or attr in MISSING.get(name, {}):
                continue
            want = list(inspect.signature(getattr(theirs, attr)).parameters)
            have = list(inspect.signature(getattr(ours, attr)).parameters)
            if have[: len(want)] != want:
                problems.append(f"{name}.{attr}{want} vs ours {have}")
    assert not problems, "\n".join(problems)
