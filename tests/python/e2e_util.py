"""Helpers shared by the end-to-end tests (imported by the test modules)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    def error(self) -> str:
        """The message of a `{"error": "..."}` body; fails when the body is not one."""
        assert self.headers.get("content-type", "").startswith("application/json"), (
            f"error body is not JSON: {self.headers} {self.body!r}"
        )
        doc = self.json()
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
        assert doc["error"], "empty error message"
        return doc["error"]


def call(
    base_url: str,
    path: str,
    method: str = "GET",
    body: bytes | str | dict | list | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One raw HTTP request with http.client, which adds no Content-Type of its own."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def raw_exchange(host: str, port: int, request: bytes) -> Reply:
    """Writes `request` (a whole HTTP/1.1 request, byte for byte) and reads one response.

    The request goes out in one write, and a failed write is ignored: a server that answers
    early (413) and closes may leave part of the request unread, and its answer must still
    be read."""
    import socket

    with socket.create_connection((host, port), timeout=30) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def chunked(path: str, host: str, chunks: list[bytes], headers: dict[str, str] | None = None) -> bytes:
    """A POST with `Transfer-Encoding: chunked` (so no Content-Length) carrying `chunks`."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
