"""V2 request and response types with kserve's names and surface: `InferRequest`,
`InferInput`, `InferResponse`, `InferOutput`. Tensor data arrives as raw little-endian bytes
and becomes a numpy array without any JSON in between."""

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

    @property
    def datatype(self) -> str:
        return self._datatype

    @property
    def data(self):
        if self._data is None and self._raw is not None:
            arr = self.as_numpy()
            self._data = [e.decode("utf-8", "replace") for e in arr.ravel()] if self._datatype == "BYTES" else arr.ravel().tolist()
        return self._data

    def set_raw(self, raw):
        """Sets the raw little-endian bytes of the tensor."""
        self._raw = raw
        self._data = None

    def as_numpy(self) -> np.ndarray:
        """The tensor as a numpy array of its shape (read-only when it came as raw bytes)."""
        if self._raw is not None:
            if self._datatype == "BYTES":
                return decode_bytes(self._raw, _count(self._shape)).reshape(self._shape)
            return np.frombuffer(self._raw, dtype=to_np_dtype(self._datatype)).reshape(self._shape)
        if self._data is None:
            raise InvalidInput(f"input {self.name} has no data")
        if isinstance(self._data, np.ndarray):
            return self._data.reshape(self._shape)
        return np.array(self._data, dtype=to_np_dtype(self._datatype)).reshape(self._shape)

    def set_data_from_numpy(self, arr: np.ndarray, binary_data: bool = True):
        """Replaces the data with a numpy array."""
        self._data = np.asarray(arr)
        self._raw = None
        self._shape = list(self._data.shape)

    def __repr__(self):
        return f"InferInput(name={self.name!r}, shape={self._shape}, datatype={self._datatype!r})"


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
        request_outputs: Optional[List[Any]] = None,
        model_version: Optional[str] = None,
    ):
        self.model_name = model_name
        self.inputs = infer_inputs
        self.id = request_id
        self.parameters = parameters or {}
        self.request_outputs = request_outputs or []
        self.model_version = model_version
        self.from_grpc = from_grpc

    def get_input_by_name(self, name: str) -> Optional[InferInput]:
        for i in self.inputs:
            if i.name == name:
                return i
        return None

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

    def set_data_from_numpy(self, arr: np.ndarray, binary_data: bool = True):
        """Sets the data (and shape) from a numpy array."""
        arr = np.asarray(arr)
        self.data = arr
        self.shape = list(arr.shape)

    def as_numpy(self) -> np.ndarray:
        if isinstance(self.data, np.ndarray):
            return self.data
        return np.array(self.data, dtype=to_np_dtype(self.datatype)).reshape(self.shape)

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

    def __repr__(self):
        return f"InferResponse(model_name={self.model_name!r}, id={self.id!r}, outputs={self.outputs})"
