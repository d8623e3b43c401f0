"""Frames between ferroserve and a worker on a Unix socket.

A frame is `u32 LE header length | u64 LE payload length | header | payload`: the header is
UTF-8 JSON with a `type` (and an `id` pairing requests and replies); the payload holds raw
tensor bytes at the offsets the header gives. See ARCHITECTURE.md for the message types."""

import json
import struct

# Encoding is strict: what cannot be encoded raises (TypeError or ValueError) instead of
# writing a header the other side cannot parse. json refuses NaN and infinities; orjson writes
# them as null, which parses (the worker refuses them in parameters before encoding).
try:  # optional: a faster JSON codec for the small frame headers
    import orjson

    def _dumps(obj) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def _loads(data):
        return json.loads(bytes(data))


_PREFIX = struct.Struct("<IQ")


#: Frames up to this size are joined into one buffer: one write (and one send) per frame
#: costs less than a copy of a few kilobytes. Larger payloads are written part by part.
_JOIN_LIMIT = 64 * 1024


async def read_frame(reader):
    """Reads one frame: `(header dict, payload)`, the payload a memoryview of a bytearray, so
    that the input arrays made on it are writable (as kserve's are: models modify them in
    place). Raises `asyncio.IncompleteReadError` at end of stream."""
    header_len, payload_len = _PREFIX.unpack(await reader.readexactly(_PREFIX.size))
    body = memoryview(await reader.readexactly(header_len + payload_len))
    # StreamReader only hands out bytes: one copy of the payload makes it writable.
    return _loads(body[:header_len]), memoryview(bytearray(body[header_len:]))


def write_frame(writer, header, parts=()):
    """Queues one frame; `parts` are bytes-like objects forming the payload, in order."""
    h = _dumps(header)
    total = sum(memoryview(p).nbytes for p in parts)
    prefix = _PREFIX.pack(len(h), total)
    if total <= _JOIN_LIMIT:
        writer.write(b"".join((prefix, h, *parts)))
    else:
        writer.writelines((prefix, h, *parts))
