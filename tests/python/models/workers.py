"""Models for the worker-process tests: each shows one behaviour of a Python replica."""

import asyncio
import os
import time

import numpy as np

from ferroserve import InferOutput, InferResponse, InvalidInput, Model


class Echo(Model):
    """V1: instances back as predictions, with the worker's pid. V2: inputs back as outputs."""

    def predict(self, payload, headers=None):
        if isinstance(payload, dict):
            return {"predictions": payload.get("instances"), "pid": os.getpid()}
        outputs = []
        for i in payload.inputs:
            o = InferOutput(i.name, i.shape, i.datatype)
            o.set_data_from_numpy(i.as_numpy())
            outputs.append(o)
        return InferResponse(payload.id, self.name, outputs)


class Blocking(Model):
    """A synchronous predict that blocks for `sleep` seconds (as CPU-bound code would)."""

    def predict(self, payload, headers=None):
        time.sleep(payload.get("sleep", 0))
        return {"pid": os.getpid()}


class AsyncSleep(Model):
    """An async predict that waits `sleep` seconds; requests overlap on one worker."""

    async def predict(self, payload, headers=None):
        await asyncio.sleep(payload.get("sleep", 0))
        return {"pid": os.getpid()}


class Faulty(Model):
    """Raises what the request asks for; otherwise answers with its pid."""

    def predict(self, payload, headers=None):
        if payload.get("fail"):
            raise ValueError("kaput")
        if payload.get("invalid"):
            raise InvalidInput("bad input!")
        return {"pid": os.getpid()}


class BadLoad(Model):
    """`load()` raises until the file named by FS_TEST_LOAD_OK exists."""

    def load(self):
        flag = os.environ.get("FS_TEST_LOAD_OK", "")
        if not (flag and os.path.exists(flag)):
            raise RuntimeError("no weights here")
        self.ready = True

    def predict(self, payload, headers=None):
        return {"loaded": True}


class Environment(Model):
    """Answers with its environment variable FS_TEST_VAR and working directory."""

    def predict(self, payload, headers=None):
        return {"var": os.environ.get("FS_TEST_VAR"), "cwd": os.getcwd()}


class Tunable(Model):
    """Answers with the latest user_config."""

    def __init__(self, name):
        super().__init__(name)
        self.config = None

    def reconfigure(self, user_config):
        self.config = user_config

    def predict(self, payload, headers=None):
        return {"config": self.config}


class Chatty(Model):
    """Prints during load and predict, to show worker output reaching ferroserve's log."""

    def load(self):
        print("chatty says hello from load", flush=True)
        self.ready = True

    def predict(self, payload, headers=None):
        print("chatty predicts", flush=True)
        return {}


class PidFile(Model):
    """Writes its pid into the directory FS_TEST_PID_DIR, so tests can find the workers."""

    def load(self):
        directory = os.environ["FS_TEST_PID_DIR"]
        with open(os.path.join(directory, str(os.getpid())), "w") as f:
            f.write("")
        self.ready = True

    def predict(self, payload, headers=None):
        return {"pid": os.getpid()}


class Numpy(Model):
    """V2: returns `2 * x` of input `x` in its datatype and shape, plus the sum as FP64."""

    def get_input_types(self):
        return [{"name": "x", "datatype": "FP32", "shape": [-1]}]

    def get_output_types(self):
        return [{"name": "y", "datatype": "FP32", "shape": [-1]}, {"name": "sum", "datatype": "FP64", "shape": [1]}]

    def predict(self, payload, headers=None):
        x = payload.get_input_by_name("x")
        if x is None:
            raise InvalidInput("input 'x' is missing")
        arr = x.as_numpy()
        y = InferOutput("y", list(arr.shape), x.datatype)
        y.set_data_from_numpy((arr * 2).astype(arr.dtype))
        s = InferOutput("sum", [1], "FP64")
        s.set_data_from_numpy(np.array([arr.astype(np.float64).sum()]))
        return InferResponse(payload.id, self.name, [y, s])
