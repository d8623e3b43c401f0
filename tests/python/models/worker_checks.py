"""Models for test_worker_checks.py: models getting something wrong that the worker must report
precisely (rather than crash, hide it, or blame the request), one using kserve's request
surface, and one telling its parent process."""

import math
import os

import numpy as np

from ferroserve import InferOutput, InferResponse, InvalidInput, Model


class TypeErrorInInit(Model):
    """Its constructor takes the name and raises a TypeError of its own."""

    def __init__(self, name):
        super().__init__(name)
        raise TypeError("weights must be a path, not 42")


class BadMetadata(Model):
    """Declares an input with a datatype V2 does not have ("FLOAT32"), and a valid output."""

    def get_input_types(self):
        return [{"name": "x", "datatype": "FLOAT32", "shape": [-1]}]

    def get_output_types(self):
        return [{"name": "y", "datatype": "FP32", "shape": [-1]}]

    def predict(self, payload, headers=None):
        return {"pid": os.getpid()}


def _output(name, datatype, array, shape=None, parameters=None):
    out = InferOutput(name, list(array.shape) if shape is None else shape, datatype, parameters=parameters)
    out.data = array
    return out


def _answer(*outputs, parameters=None):
    return InferResponse(None, "bad-outputs", list(outputs), parameters=parameters)


def _untyped(array):
    """A V2-shaped dict answer whose datatype the worker takes from the array."""
    return {"outputs": [{"name": "y", "data": array}]}


_ONES = np.ones(2, np.float32)

#: Answers the model cannot send, by the `case` parameter of the request.
BAD_ANSWERS = {
    "nan_output_parameter": lambda: _answer(_output("y", "FP32", _ONES, parameters={"scale": math.nan})),
    "inf_response_parameter": lambda: _answer(_output("y", "FP32", _ONES), parameters={"t": -math.inf}),
    "negative_shape": lambda: _answer(_output("y", "FP32", _ONES, shape=[-1])),
    "shape_mismatch": lambda: _answer(_output("y", "FP32", _ONES, shape=[3])),
    "datetime": lambda: _untyped(np.array(["2026-01-01"], dtype="datetime64[D]")),
    "object": lambda: _untyped(np.array([{"a": 1}], dtype=object)),
    "complex": lambda: _answer(_output("y", "FP64", np.array([1 + 2j]))),
    "float_as_int32": lambda: _answer(_output("y", "INT32", np.array([1.7, 2.5]))),
    "unknown_datatype": lambda: _answer(_output("y", "FLOAT32", _ONES)),
}


class BadOutputs(Model):
    """Answers with the broken answer the request's `case` parameter names, else with `y` = x
    as FP32 from a float64 array (a same-kind cast the worker makes) and its pid."""

    def predict(self, payload, headers=None):
        case = payload.parameters.get("case")
        if case:
            return BAD_ANSWERS[case]()
        x = payload.get_input_by_name("x").as_numpy().astype(np.float64)
        pid = _output("pid", "INT64", np.array([os.getpid()]))
        return InferResponse(payload.id, self.name, [_output("y", "FP32", x), pid])


class KserveStyle(Model):
    """Uses kserve's request surface: refuses a request without `x` in `validate`, scales `x`
    in place, answers the requested outputs by `.name`, and reports what as_string, to_dict,
    as_dataframe and use_binary_outputs gave."""

    def validate(self, payload):
        if payload.get_input_by_name("x") is None:
            raise InvalidInput("an input named x is needed")
        return payload

    def predict(self, payload, headers=None):
        words = payload.get_input_by_name("words").as_string()
        report = [
            " ".join(words),
            str(payload.to_dict()["inputs"][0]["data"]),
            str(payload.as_dataframe().shape),
            str(payload.use_binary_outputs),
        ]
        x = payload.get_input_by_name("x").as_numpy()
        x *= 2  # in place, as kserve's (writable) input arrays allow
        answers = {
            "x2": _output("x2", "FP32", x),
            "report": _output("report", "BYTES", np.array(report, dtype=object)),
        }
        names = [o.name for o in payload.request_outputs] or ["x2"]
        response = InferResponse(payload.id, self.name, [answers[name] for name in names])
        assert response.get_output_by_name(names[0]) is answers[names[0]]
        return response


class Echo(Model):
    """V1: answers with its pid and its parent's."""

    def predict(self, payload, headers=None):
        return {"pid": os.getpid(), "ppid": os.getppid()}
