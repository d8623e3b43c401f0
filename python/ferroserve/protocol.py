"""Frames between ferroserve and a worker on a Unix socket.

A frame is `u32 LE header length | u64 LE payload length | header | payload`: the header is
UTF-8 JSON with a `type` (and an `id` pairing requests and replies); the payload holds raw
tensor bytes at the offsets the header gives. See ARCHITECTURE.md for the message types."""

import json
import struct

_PREFIX = struct.Struct("<IQ")


async def read_frame(reader):
    """Reads one frame: `(header dict, payload bytes)`. Raises `asyncio.IncompleteReadError`
    at end of stream."""
    head = await reader.readexactly(_PREFIX.size)
    header_len, payload_len = _PREFIX.unpack(head)
    header = json.loads(await reader.readexactly(header_len))
    payload = await reader.readexactly(payload_len) if payload_len else b""
    return header, payload


def write_frame(writer, header, parts=()):
    """Queues one frame; `parts` are bytes-like objects forming the payload, in order."""
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    lengths = [memoryview(p).nbytes for p in parts]
    writer.write(_PREFIX.pack(len(h), sum(lengths)))
    writer.write(h)
    for p in parts:
        writer.write(p)
