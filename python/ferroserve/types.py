"""V2 request and response types with kserve's names and surface: `InferRequest`,
`InferInput`, `InferResponse`, `InferOutput`, `RequestedOutput`. Tensor data arrives as raw
little-endian bytes and becomes a numpy array without any JSON in between. The transport
conversions kserve's types have (`to_rest`, `from_grpc`, ...) are not here: the Rust server
does them."""

import struct
from typing import Any, Dict, List, Optional

import numpy as np

from .errors import InvalidInput

_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def _bf16_dtype():
    try:
        import ml_dtypes  # optional: numpy has no bfloat16 of its own

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError as e:
        raise InvalidInput("BF16 tensors need the ml_dtypes package") from e


def to_np_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype (`object` for BYTES)."""
    dtype = _DTYPES.get(datatype)
    if dtype is not None:
        return dtype
    datatype = datatype.upper()
    if datatype == "BYTES":
        return np.dtype(np.object_)
    if datatype == "BF16":
        return _bf16_dtype()
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype {datatype}") from None


def from_np_dtype(dtype) -> str:
    """The V2 datatype of a numpy dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    if dtype.name == "bfloat16":
        return "BF16"
    for name, dt in _DTYPES.items():
        if dt == dtype.newbyteorder("<") or dt == dtype:
            return name
    raise InvalidInput(f"numpy dtype {dtype} has no V2 datatype")


def decode_bytes(buf, count: int) -> np.ndarray:
    """Raw BYTES tensor (4-byte little-endian length, then the bytes, per element) → object
    array of `bytes`."""
    out = np.empty(count, dtype=np.object_)
    mv = memoryview(buf)
    pos = 0
    for i in range(count):
        (n,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        out[i] = bytes(mv[pos : pos + n])
        pos += n
    return out


def encode_bytes(arr) -> bytes:
    """Elements (bytes, str or anything str() takes) → raw BYTES tensor."""
    parts = []
    for e in np.asarray(arr, dtype=np.object_).ravel(order="C"):
        if isinstance(e, str):
            e = e.encode("utf-8")
        elif not isinstance(e, (bytes, bytearray)):
            e = str(e).encode("utf-8")
        parts.append(struct.pack("<I", len(e)))
        parts.append(bytes(e))
    return b"".join(parts)


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class InferInput:
    """One input tensor of a V2 request."""

    def __init__(self, name: str, shape: List[int], datatype: str, data=None, parameters=None):
        self.name = name
        self._shape = [int(d) for d in shape]
        self._datatype = datatype.upper()
        self._data = data
        self._raw = None
        self.parameters = parameters or {}

    @property
    def shape(self) -> List[int]:
        return self._shape

    @shape.setter
    def shape(self, shape: List[int]):
        self._shape = [int(d) for d in shape]

    @property
    def datatype(self) -> str:
        return self._datatype

    @property
    def data(self):
        """The elements as a flat list (BYTES as str), as a JSON request carries them."""
        if self._data is None and self._raw is not None:
            arr = self.as_numpy()
            self._data = [e.decode("utf-8", "replace") for e in arr.ravel()] if self._datatype == "BYTES" else arr.ravel().tolist()
        return self._data

    @data.setter
    def data(self, data):
        self._data = data
        self._raw = None

    @classmethod
    def _from_wire(cls, name: str, shape: List[int], datatype: str, parameters, raw) -> "InferInput":
        """An input as ferroserve sends it (its shape already ints, its datatype upper case)
        on raw bytes, without the checks the public constructor makes."""
        i = cls.__new__(cls)
        i.name, i._shape, i._datatype, i._data, i._raw = name, shape, datatype, None, raw
        i.parameters = parameters or {}
        return i

    def set_raw(self, raw):
        """Sets the raw little-endian bytes of the tensor."""
        self._raw = raw
        self._data = None

    def as_numpy(self) -> np.ndarray:
        """The tensor as a numpy array of its shape: a view of the raw bytes when they came so
        (writable when they are, as a received frame's are), each call a view of the same
        memory."""
        if self._raw is not None:
            if self._datatype == "BYTES":
                return decode_bytes(self._raw, _count(self._shape)).reshape(self._shape)
            return np.frombuffer(self._raw, dtype=to_np_dtype(self._datatype)).reshape(self._shape)
        if self._data is None:
            raise InvalidInput(f"input {self.name} has no data")
        if isinstance(self._data, np.ndarray):
            return self._data.reshape(self._shape)
        return np.array(self._data, dtype=to_np_dtype(self._datatype)).reshape(self._shape)

    def as_string(self) -> List[str]:
        """The elements of a BYTES tensor decoded as UTF-8, flat (as kserve's)."""
        if self._datatype != "BYTES":
            raise InvalidInput(f"invalid datatype {self._datatype} in the input")
        return [e.decode("utf-8") if isinstance(e, bytes) else str(e) for e in self.as_numpy().ravel()]

    def set_data_from_numpy(self, input_tensor: np.ndarray, binary_data: bool = True):
        """Replaces the data with a numpy array."""
        self._data = np.asarray(input_tensor)
        self._raw = None
        self._shape = list(self._data.shape)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "datatype": self.datatype,
            "data": self.data,
            "parameters": self.parameters,
        }

    def __repr__(self):
        return f"InferInput(name={self.name!r}, shape={self._shape}, datatype={self._datatype!r})"


class RequestedOutput:
    """An output the request asks for, as kserve's. Also readable as the dict it used to be
    here (`o["name"]`, `o.get("parameters")`)."""

    def __init__(self, name: str, parameters: Optional[Dict[str, Any]] = None):
        self._name = name
        self.parameters = parameters

    @property
    def name(self) -> str:
        return self._name

    @property
    def binary_data(self) -> Optional[bool]:
        """The output's `binary_data` parameter, `None` when not given."""
        return self.parameters.get("binary_data") if self.parameters else None

    def __getitem__(self, key):
        if key == "name":
            return self._name
        if key == "parameters" and self.parameters is not None:
            return self.parameters
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __eq__(self, other):
        return isinstance(other, RequestedOutput) and (self.name, self.parameters) == (other.name, other.parameters)

    def __repr__(self):
        return f"RequestedOutput(name={self.name!r}, parameters={self.parameters!r})"


class InferRequest:
    """A V2 inference request, as `kserve.InferRequest`."""

    def __init__(
        self,
        model_name: str,
        infer_inputs: List[InferInput],
        request_id: Optional[str] = None,
        raw_inputs=None,
        from_grpc: bool = False,
        parameters: Optional[Dict[str, Any]] = None,
        request_outputs: Optional[List[RequestedOutput]] = None,
        model_version: Optional[str] = None,
    ):
        self.model_name = model_name
        self.inputs = infer_inputs
        self.id = request_id
        self.parameters = parameters or {}
        self.request_outputs = request_outputs or []
        self.model_version = model_version
        self.from_grpc = from_grpc

    @property
    def use_binary_outputs(self) -> bool:
        """Whether the request's `binary_data_output` parameter asks for binary outputs (the
        server encodes the answer; this only reports the request, as kserve's does for REST)."""
        return bool(self.parameters.get("binary_data_output", False)) if self.parameters else False

    def get_input_by_name(self, name: str) -> Optional[InferInput]:
        for i in self.inputs:
            if i.name == name:
                return i
        return None

    def as_dataframe(self):
        """The inputs as the columns of a pandas DataFrame (pandas is needed for this only)."""
        import pandas as pd

        return pd.concat([pd.DataFrame(i.data, columns=[i.name]) for i in self.inputs], axis=1)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "model_name": self.model_name,
            "inputs": [i.to_dict() for i in self.inputs],
            "parameters": self.parameters,
            "from_grpc": self.from_grpc,
        }

    def __repr__(self):
        return f"InferRequest(model_name={self.model_name!r}, id={self.id!r}, inputs={self.inputs})"


class InferOutput:
    """One output tensor of a V2 response."""

    def __init__(self, name: str, shape: List[int], datatype: str, data=None, parameters=None):
        self.name = name
        self.shape = [int(d) for d in shape]
        self.datatype = datatype.upper()
        self.data = data
        self.parameters = parameters or {}

    @classmethod
    def _from_wire(cls, name: str, shape: List[int], datatype: str, data, parameters) -> "InferOutput":
        """An output as ferroserve sends it (its shape already ints, its datatype upper case),
        without the checks the public constructor makes."""
        o = cls.__new__(cls)
        o.name, o.shape, o.datatype, o.data = name, shape, datatype, data
        o.parameters = parameters or {}
        return o

    def set_data_from_numpy(self, output_tensor: np.ndarray, binary_data: bool = True):
        """Sets the data (and shape) from a numpy array."""
        arr = np.asarray(output_tensor)
        self.data = arr
        self.shape = list(arr.shape)

    def as_numpy(self) -> np.ndarray:
        if isinstance(self.data, np.ndarray):
            return self.data
        return np.array(self.data, dtype=to_np_dtype(self.datatype)).reshape(self.shape)

    def to_dict(self) -> dict:
        data = self.data.ravel().tolist() if isinstance(self.data, np.ndarray) else self.data
        return {
            "name": self.name,
            "shape": self.shape,
            "datatype": self.datatype,
            "data": data,
            "parameters": self.parameters,
        }

    def __repr__(self):
        return f"InferOutput(name={self.name!r}, shape={self.shape}, datatype={self.datatype!r})"


class InferResponse:
    """A V2 inference response, as `kserve.InferResponse`."""

    def __init__(
        self,
        response_id: Optional[str],
        model_name: str,
        infer_outputs: List[InferOutput],
        model_version: Optional[str] = None,
        raw_outputs=None,
        from_grpc: bool = False,
        parameters: Optional[Dict[str, Any]] = None,
        use_binary_outputs: bool = False,
        requested_outputs=None,
    ):
        self.id = response_id
        self.model_name = model_name
        self.outputs = infer_outputs
        self.model_version = model_version
        self.parameters = parameters or {}
        self.from_grpc = from_grpc

    def get_output_by_name(self, name: str) -> Optional[InferOutput]:
        for o in self.outputs:
            if o.name == name:
                return o
        return None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "model_name": self.model_name,
            "outputs": [o.to_dict() for o in self.outputs],
            "parameters": self.parameters,
            "from_grpc": self.from_grpc,
        }

    def __repr__(self):
        return f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, outputs={self.outputs})"
