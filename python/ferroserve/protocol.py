"""Frames between ferroserve and a worker on a Unix socket.

A frame is `u32 LE header length | u64 LE payload length | header | payload`: the header is
UTF-8 JSON with a `type` (and an `id` pairing requests and replies); the payload holds raw
tensor bytes at the offsets the header gives. See ARCHITECTURE.md for the message types."""

import asyncio
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


class FrameChannel(asyncio.Protocol):
    """The worker's end of the socket as an asyncio protocol: frames are cut out of the bytes
    as they arrive and handed to `on_frame(header, payload)` in order, in the loop's own read
    callback (no task, no future per frame); the worker sets `on_frame` before it says `ready`,
    and ferroserve sends nothing before that. The payload is a writable memoryview of memory of
    its own, so that the input arrays made on it are writable (as kserve's are: models modify
    them in place): the end of the read buffer itself when the frame ends the bytes read so far
    (no copy), else a copy of its bytes. Writes go straight
    to the transport (`write_frame(channel.transport, ...)`); `drain()` waits while the
    transport's buffer is over its high-water mark. `closed` completes when the socket closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.transport = None
        self.closed = loop.create_future()
        self.on_frame = self._before_ready
        self._buffer = bytearray()
        self._resumed = None  # a future while writing is paused

    @staticmethod
    def _before_ready(header, payload):
        raise RuntimeError(f"ferroserve sent a {header.get('type')!r} frame before the worker was ready")

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self._buffer
        buf += data
        pos, size = 0, len(buf)
        prefix = _PREFIX.size
        while size - pos >= prefix:
            header_len, payload_len = _PREFIX.unpack_from(buf, pos)
            start = pos + prefix + header_len
            end = start + payload_len
            if end > size:
                break
            header = _loads(bytes(buf[pos + prefix : start]))
            if end == size:  # the last bytes read: the buffer itself becomes the payload's
                payload = memoryview(buf)[start:end]
                self._buffer = bytearray()
            else:
                payload = memoryview(buf[start:end])  # a bytearray slice: a copy of its own
            pos = end
            self.on_frame(header, payload)
        if pos and self._buffer is buf:
            del buf[:pos]

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_writers()

    def pause_writing(self):
        if self._resumed is None:
            self._resumed = self.closed.get_loop().create_future()

    def resume_writing(self):
        self._wake_writers()

    def _wake_writers(self):
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    @property
    def writing_paused(self) -> bool:
        """Whether the transport's buffer is full: writers should `await drain()`."""
        return self._resumed is not None

    async def drain(self) -> None:
        """Returns once the transport takes more writes; `ConnectionError` once it is closed."""
        if self._resumed is not None:
            await asyncio.shield(self._resumed)
        if self.closed.done():
            raise ConnectionResetError("ferroserve closed the socket")


def write_frame(writer, header, parts=()):
    """Queues one frame; `parts` are bytes-like objects forming the payload, in order."""
    h = _dumps(header)
    total = sum(memoryview(p).nbytes for p in parts)
    prefix = _PREFIX.pack(len(h), total)
    if total <= _JOIN_LIMIT:
        writer.write(b"".join((prefix, h, *parts)))
    else:
        writer.writelines((prefix, h, *parts))
