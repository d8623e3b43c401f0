"""Python models for the shared-memory tests: answers that are views of their inputs (no copy
back), new arrays (placed in the worker's half of the arena), and inputs modified in place."""

import numpy as np

from ferroserve import InferOutput, InferResponse, Model


def _answer(model, request, arrays):
    outputs = [
        InferOutput(i.name, list(a.shape), i.datatype, data=a) for i, a in zip(request.inputs, arrays)
    ]
    return InferResponse(response_id=request.id, model_name=model.name, infer_outputs=outputs)


class Echo(Model):
    """Every input back as an output of the same name: the very arrays it was given."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        return _answer(self, request, [i.as_numpy() for i in request.inputs])


class PlusOne(Model):
    """Numeric inputs plus one, as new arrays; BYTES inputs reversed."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        out = []
        for i in request.inputs:
            a = i.as_numpy()
            if a.dtype == np.object_:
                out.append(a[::-1].copy())
            elif a.dtype == np.bool_:
                out.append(~a)
            else:
                out.append(a + a.dtype.type(1))
        return _answer(self, request, out)


class InPlace(Model):
    """Doubles its FP32 input in place and answers it (the view of a modified input)."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        a = request.inputs[0].as_numpy()
        a *= 2
        return _answer(self, request, [a])


class Kept(Model):
    """Keeps a copy of every input (as a model that caches must) and answers the previous one."""

    def load(self):
        self.previous = None
        self.ready = True

    def predict(self, request, headers=None):
        a = request.inputs[0].as_numpy()
        previous, self.previous = self.previous, a.copy()
        return _answer(self, request, [a if previous is None else previous])


def _arena_ranges():
    """Address ranges of this process's mappings of the ferroserve arena."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "memfd:ferroserve-arena" in line:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                ranges.append((lo, hi))
    return ranges


class WhereAreMyInputs(Model):
    """Answers, per input, 1 if its array lies in the shared-memory arena (a view, no copy),
    else 0."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        ranges = _arena_ranges()
        flags = []
        for i in request.inputs:
            address = i.as_numpy().__array_interface__["data"][0]
            flags.append(int(any(lo <= address < hi for lo, hi in ranges)))
        out = InferOutput("in_arena", [len(flags)], "INT8", data=np.array(flags, dtype=np.int8))
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=[out])


def _mapping_of(address):
    """The file behind the mapping holding `address` in this process ('' for anonymous memory)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return fields[5].strip() if len(fields) > 5 else ""
    return ""


class MappedFrom(Model):
    """Answers, per input, the file its array is a view of ('' when it was copied into this
    process, 'memfd:ferroserve-arena ...' for the arena), as BYTES."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        files = [_mapping_of(i.as_numpy().__array_interface__["data"][0]).encode() for i in request.inputs]
        out = InferOutput("mapped_from", [len(files)], "BYTES", data=np.array(files, dtype=np.object_))
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=[out])


class SlowSum(Model):
    """Sleeps half a second, then sums its FP32 input: long enough for a client to shrink the
    region the input lies in."""

    def load(self):
        self.ready = True

    def predict(self, request, headers=None):
        import time

        a = request.inputs[0].as_numpy()
        time.sleep(0.5)
        total = np.array([a.sum(dtype=np.float64)], dtype=np.float64)
        out = InferOutput("sum", [1], "FP64", data=total)
        return InferResponse(response_id=request.id, model_name=self.name, infer_outputs=[out])
