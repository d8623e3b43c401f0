"""`ModelServer(...).start(models)`: serves Python models with the ferroserve binary, each
deployment as worker processes (one per replica)."""

import inspect
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from typing import Any, Dict, List, Optional, Union

from .deployment import Application, name_of, options_of


def find_binary() -> str:
    """The ferroserve binary: `FERROSERVE_BIN`, else the one the wheel installed beside this
    interpreter's scripts (found without `PATH`, so an unactivated venv works), else
    `ferroserve` on `PATH`."""
    path = os.environ.get("FERROSERVE_BIN")
    if path:
        return path
    for scripts in (sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")):
        candidate = os.path.join(scripts or "", "ferroserve")
        if scripts and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    path = shutil.which("ferroserve")
    if not path:
        raise FileNotFoundError(
            "cannot find the ferroserve binary: install the ferroserve wheel, set FERROSERVE_BIN "
            "or put ferroserve on PATH"
        )
    return path


def _target(cls) -> str:
    """How a worker finds the class: `file.py:Class` for classes of a script (`__main__`),
    else `module:Class`."""
    module = sys.modules.get(cls.__module__)
    if cls.__module__ == "__main__" or module is None or cls.__module__.startswith("ferroserve_user_"):
        path = getattr(module, "__file__", None)
        if not path:
            raise ValueError(f"cannot serve {cls.__qualname__}: it is not defined in a file")
        return f"{os.path.abspath(path)}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _deployment(cls, name: str, target: Optional[str] = None) -> Dict[str, Any]:
    options = options_of(cls)
    options.pop("name", None)
    runtime_env = dict(options.pop("runtime_env", None) or {})
    runtime_env.setdefault("py_executable", sys.executable)
    runtime_env.setdefault("working_dir", os.getcwd())
    return {"name": name, "python": target or _target(cls), "runtime_env": runtime_env, **options}


def _import_path(app: Application) -> str:
    """Where a worker finds the application: `file.py:variable` (or `module:variable`) of the
    module-level variable that holds it."""
    modules = [sys.modules.get("__main__"), sys.modules.get(app.cls.__module__)]
    for module in modules:
        for var, value in vars(module or object()).items():
            if value is app:
                name = module.__name__
                if name == "__main__" or name.startswith("ferroserve_user_"):
                    return f"{os.path.abspath(module.__file__)}:{var}"
                return f"{name}:{var}"
    raise ValueError(
        "cannot find the application in a module: assign it to a module-level variable "
        "(app = Ingress.bind(...)) and start the server under `if __name__ == \"__main__\":`"
    )


def _application(app: Application) -> List[Dict[str, Any]]:
    """One entry per deployment of the application; only the ingress is exposed."""
    target = _import_path(app)
    out = []
    for node in app.deployments():
        entry = _deployment(node.cls, node.name, target)
        entry["exposed"] = node is app or bool(entry.get("exposed", False))
        out.append(entry)
    return out


def deployments_of(models) -> List[Dict[str, Any]]:
    """The config entries for what `start` was given: an application (`Ingress.bind(...)`), a
    list of decorated classes, a list of model instances, or a dict of name → class."""
    if isinstance(models, Application):
        return _application(models)
    out = []
    if isinstance(models, dict):
        for name, cls in models.items():
            out.append(_deployment(cls if inspect.isclass(cls) else type(cls), name))
        return out
    for m in models:
        if inspect.isclass(m):
            out.append(_deployment(m, name_of(m)))
        else:
            out.append(_deployment(type(m), getattr(m, "name", None) or name_of(type(m))))
    return out


def _flag(name: str) -> Optional[str]:
    """A flag's value from the command line, as kserve's ModelServer reads it (`--http_port 9000`,
    `--http_port=9000`, and `--http-port` too); other flags are the script's own and ignored."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key in spellings:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            return value
    return None


def _port_flag(name: str, default: int) -> int:
    value = _flag(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"--{name} needs a port number, got {value!r}") from None


def _bool_flag(name: str, default: bool) -> bool:
    """A boolean flag as kserve's strtobool reads it (`--enable_grpc false`)."""
    value = _flag(name)
    if value is None:
        return default
    if value.lower() in ("y", "yes", "t", "true", "on", "1"):
        return True
    if value.lower() in ("n", "no", "f", "false", "off", "0"):
        return False
    raise SystemExit(f"--{name} needs true or false, got {value!r}")


class ModelServer:
    """Serves models over KServe's V1/V2 protocols (REST and gRPC) with ferroserve, each
    deployment as `num_replicas` worker processes. Like kserve's, it takes its settings from
    the command line (`--http_port`, `--grpc_port`, `--enable_grpc`, and ferroserve's
    `--host`/`--bind`) unless given here; kserve's other arguments (`workers`, `max_threads`...)
    are accepted and have no effect."""

    def __init__(
        self,
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        enable_grpc: Optional[bool] = None,
        host: Optional[str] = None,
        **_ignored,
    ):
        self.http_port = http_port if http_port is not None else _port_flag("http_port", 8080)
        self.grpc_port = grpc_port if grpc_port is not None else _port_flag("grpc_port", 8081)
        self.enable_grpc = enable_grpc if enable_grpc is not None else _bool_flag("enable_grpc", True)
        self.host = host or _flag("host") or _flag("bind") or "0.0.0.0"

    def config(self, models) -> Dict[str, Any]:
        return {
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "enable_grpc": self.enable_grpc,
            "deployments": deployments_of(models),
        }

    def start(self, models: Union[List[Any], Dict[str, Any]], nest_asyncio: bool = False) -> None:
        """Replaces this process with ferroserve serving `models`; returns only on error."""
        config = self.config(models)
        if not config["deployments"]:
            raise ValueError("no models to serve")
        directory = tempfile.mkdtemp(prefix="ferroserve-")
        path = os.path.join(directory, "config.yaml")
        with open(path, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        binary = find_binary()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(binary, [binary, "serve", "--config", path])
