"""Finding a worker's target: `path/to/file.py:Name` or `package.module:Name` → the object
(a model class, or a bound application)."""

import importlib
import importlib.util
import os
import sys


def load_class(target: str):
    """`path/to/file.py:Name` or `package.module:Name` → the object it names. A file is
    imported as module `ferroserve_user_<stem>`, its folder first on `sys.path`. `Name` `*`
    (a model file of a model repository) is the one class the module defines with a
    `predict` method."""
    module_part, _, class_name = target.rpartition(":")
    if not module_part or not class_name:
        raise ValueError(f"target {target!r} must be 'file.py:Class' or 'module:Class'")
    if module_part.endswith(".py") or os.sep in module_part:
        path = os.path.abspath(module_part)
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = "ferroserve_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_part)
    if class_name == "*":
        return _the_model_class(module)
    obj = module
    for part in class_name.split("."):
        obj = getattr(obj, part)
    return obj


def _the_model_class(module):
    """The one class defined in `module` (not imported into it) that has a `predict`."""
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__ and callable(getattr(obj, "predict", None))
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ValueError(
            f"{module.__file__}: expected one model class (a class with a predict method), found {names}; "
            "name it with python_class in the model's config.yaml"
        )
    return found[0]
