"""The shared memory ferroserve gives this worker (crates/shm/src/arena.rs is the other side).

ferroserve makes an anonymous memory file, sealed at its size, and hands it over the worker's
socket before the first frame. Its first half holds request tensors that ferroserve placed:
an input with `"region": "in"` is a numpy view of it, valid until the request is answered
(copy an array to keep it longer). The second half is this worker's: outputs of at least
`min_tensor_bytes` are copied there and named by offset (`"region": "out"`), and ferroserve
sends `free` when it is done with one. An output that is a view of one of its request's inputs
is named where it is, without a copy. When the half is full, an output goes inline."""

import bisect
import ctypes
import mmap
import os
import socket
import threading

import numpy as np

#: Blocks start on this many bytes (as ferroserve's).
ALIGN = 64


def receive(sock: socket.socket, spec: str) -> "Arena":
    """The arena that ferroserve sends on `sock` (one byte with the descriptor), sized as
    `spec` (`size:inputs_end:min_tensor_bytes`, the `--arena` argument) says."""
    size, inputs_end, min_bytes = (int(x) for x in spec.split(":"))
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if len(fds) != 1:
        raise RuntimeError(f"ferroserve sent {len(fds)} descriptors for the arena, not 1")
    return Arena(fds[0], size, inputs_end, min_bytes)


class Arena:
    def __init__(self, fd: int, size: int, inputs_end: int, min_tensor_bytes: int):
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.view = memoryview(self._map)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.size = size
        self.inputs_end = inputs_end
        self.min_tensor_bytes = min_tensor_bytes
        self._lock = threading.Lock()  # outputs may be placed on the predict thread
        self._free_at = [inputs_end]  # free blocks of the worker's half: starts, sorted
        self._free_len = {inputs_end: size - inputs_end}
        self._taken = {}  # offset -> reserved length

    def input(self, offset: int, length: int) -> memoryview:
        """The bytes of an input ferroserve placed."""
        if offset < 0 or length < 0 or offset + length > self.inputs_end:
            raise ValueError(f"an input at {offset}+{length} lies outside the arena's request half")
        return self.view[offset : offset + length]

    def place_output(self, raw, n, inputs):
        """Where the `n` output bytes `raw` go: `("in", offset)` when they are a view of one
        of the request's `inputs` (`(offset, length)` pairs), `("out", offset)` once copied
        into this worker's half, or `None` (inline: small, or no room)."""
        if n < self.min_tensor_bytes or n == 0:
            return None
        data = memoryview(raw)
        if data.format != "B" or data.ndim != 1:
            data = data.cast("B")
        at = np.frombuffer(data, dtype=np.uint8).__array_interface__["data"][0] - self._base
        for offset, length in inputs:
            if offset <= at and at + n <= offset + length:
                return "in", at
        offset = self._take(n)
        if offset is None:
            return None
        self.view[offset : offset + n] = data
        return "out", offset

    def _take(self, n: int):
        need = (n + ALIGN - 1) & ~(ALIGN - 1)
        with self._lock:
            for i, start in enumerate(self._free_at):
                size = self._free_len[start]
                if size >= need:
                    del self._free_at[i]
                    del self._free_len[start]
                    if size > need:
                        bisect.insort(self._free_at, start + need)
                        self._free_len[start + need] = size - need
                    self._taken[start] = need
                    return start
        return None

    def release(self, offset: int) -> None:
        """ferroserve is done with the output block at `offset`."""
        with self._lock:
            length = self._taken.pop(offset, None)
            if length is None:
                return
            i = bisect.bisect_left(self._free_at, offset)
            if i > 0:
                before = self._free_at[i - 1]
                if before + self._free_len[before] == offset:
                    offset, length = before, length + self._free_len.pop(before)
                    del self._free_at[i - 1]
                    i -= 1
            after = offset + length
            if after in self._free_len:
                length += self._free_len.pop(after)
                del self._free_at[i]
            self._free_at.insert(i, offset)
            self._free_len[offset] = length
