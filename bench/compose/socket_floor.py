"""The floor under a Python hop: the round trip of a small length-prefixed JSON frame between two
Python processes over a Unix socket, with nothing else, on this machine. A call from one Python
deployment to another crosses four such process boundaries (caller's worker → ferroserve →
callee's worker → ferroserve → caller's worker) where a single model crosses two, so twice this
figure is what the extra boundaries alone cost before any frame is decoded or any model runs.

    python3 bench/compose/socket_floor.py [ROUNDS]       # 20000 by default

It runs the ping-pong against a blocking server (the cheapest a Python process can answer),
and against an asyncio protocol on uvloop when uvloop is installed (what a ferroserve worker
runs), each twice: with both processes where the kernel puts them (on an idle machine, on two
CPUs: each message wakes the other CPU), and with both pinned to one CPU (a message only
switches processes). The difference is what waking another CPU costs on this machine. The
client is a blocking socket in this process; p50 and p99 in µs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import struct
import sys
import tempfile
import time

HEADER = struct.Struct("<I")


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return HEADER.pack(len(body)) + body


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the socket")
        data += chunk
    return data


def blocking_server(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    conn, _ = listener.accept()
    while True:
        try:
            (n,) = HEADER.unpack(read_exact(conn, HEADER.size))
        except ConnectionError:
            return
        request = json.loads(read_exact(conn, n))
        conn.sendall(frame({"type": "result", "id": request["id"]}))


def uvloop_server(path: str) -> None:
    import uvloop

    class Answer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def data_received(self, data):
            self.buffer += data
            while len(self.buffer) >= HEADER.size:
                (n,) = HEADER.unpack_from(self.buffer)
                if len(self.buffer) < HEADER.size + n:
                    return
                body = self.buffer[HEADER.size : HEADER.size + n]
                self.buffer = self.buffer[HEADER.size + n :]
                asyncio.ensure_future(self.answer(body))

        async def answer(self, body):
            request = json.loads(body)
            self.transport.write(frame({"type": "result", "id": request["id"]}))

    async def serve():
        server = await asyncio.get_running_loop().create_unix_server(Answer, path)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


def connect(path: str) -> socket.socket:
    """A connection to the server at `path`, once it listens (the file appears at bind)."""
    deadline = time.monotonic() + 10
    while True:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start") from None
            time.sleep(0.01)


def measure(server, rounds: int, cpu: int | None = None) -> tuple[float, float]:
    """p50 and p99 of `rounds` round trips; with `cpu`, client and server both on that CPU."""
    placement = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the server process inherits it
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "floor.sock")
        process = multiprocessing.Process(target=server, args=(path,), daemon=True)
        process.start()
        try:
            sock = connect(path)
            took = []
            for i in range(rounds):
                message = frame({"type": "infer", "id": i})
                start = time.perf_counter_ns()
                sock.sendall(message)
                (n,) = HEADER.unpack(read_exact(sock, HEADER.size))
                read_exact(sock, n)
                took.append(time.perf_counter_ns() - start)
            sock.close()
        finally:
            process.terminate()
            process.join()
            os.sched_setaffinity(0, placement)
    took.sort()
    return took[len(took) // 2] / 1000, took[int(len(took) * 0.99)] / 1000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    servers = [("blocking", blocking_server)]
    try:
        import uvloop  # noqa: F401

        servers.append(("uvloop protocol", uvloop_server))
    except ImportError:
        print("(uvloop is not installed: only the blocking server)")
    one_cpu = min(os.sched_getaffinity(0))
    for name, server in servers:
        for where, cpu in (("as placed", None), (f"on CPU {one_cpu}", one_cpu)):
            p50, p99 = measure(server, rounds, cpu)
            print(f"{name:16} {where:10} p50 {p50:6.1f} µs   p99 {p99:6.1f} µs   ({rounds} round trips)")


if __name__ == "__main__":
    main()
