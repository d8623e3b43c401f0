"""Inputs that a client placed in its own shared memory (Triton's system shared-memory
extension), read by this worker without a copy (crates/shm/src/mapped.rs is the other side).

ferroserve names the client's object (its `/dev/shm` key, device and inode) and the input's
offset in it. The worker opens the key itself, checks that it found the object ferroserve
registered, and maps the pages holding the input privately (copy-on-write): the numpy array is
a view of the client's memory, a model that modifies its input in place changes only its own
copy, and the mapping goes away with the last view of it. A client that shrinks its object
mid-request can crash only this worker, which ferroserve then replaces."""

import mmap
import os

from .errors import InvalidInput

#: Where POSIX shared-memory objects live on Linux (as ferroserve opens them).
SHM_DIR = "/dev/shm"


def view(obj: dict, offset: int, length: int) -> memoryview:
    """The `length` bytes at `offset` of the client's object `obj` (`key`, `dev`, `ino`)."""
    key = obj["key"]
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", ".."):
        raise InvalidInput(f"invalid shared memory key {key!r}")
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidInput(f"unable to open shared memory key {key!r}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (obj["dev"], obj["ino"]):
            raise InvalidInput(f"shared memory key {key!r} now names another object than the one registered")
        if offset < 0 or length <= 0 or offset + length > st.st_size:
            raise InvalidInput(
                f"{length} bytes at offset {offset} lie outside shared memory key {key!r} ({st.st_size} bytes)"
            )
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(fd, offset + length - start, access=mmap.ACCESS_COPY, offset=start)
    finally:
        os.close(fd)
    return memoryview(m)[offset - start : offset - start + length]
