"""A small HTTP server on 127.0.0.1 for outbound tests (the "upstream" a guest calls), and its own tests.

Built on ``http.server`` in a thread. It records every request it receives, so tests can check what
actually went over the wire (headers the shim added or dropped, chunked or not, bytes received).
Routes:
- ``POST|PUT /echo``: answers the body it received (chunked bodies are de-chunked) with
  ``x-received-length``, ``x-received-sha256`` and ``x-received-te`` headers.
- ``GET /bytes?n=N``: N bytes of :func:`pattern` with a content-length.
- ``GET /slow-head?ms=N``: waits N ms before the response head.
- ``GET /slow-body?ms=N``: sends the head and 5 of 10 bytes, waits N ms, sends the rest.
- ``GET /gzip``: a gzip-encoded body with ``content-encoding: gzip`` (must reach the guest as is).
- ``GET /status/<code>``: an empty answer with that status.
- ``GET /hang-up``: closes the connection without answering.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

_PERIOD = 251 * 251
_BLOCK = bytes((i * 7 + i // 251) % 251 for i in range(_PERIOD))


def pattern(n: int) -> bytes:
    """n deterministic bytes with a period of 63001 (prime factors, so chunk edges do not align)."""
    return (_BLOCK * (n // _PERIOD + 1))[:n]


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body_length: int = 0
    chunked: bool = False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return

    def _read_body(self) -> tuple[bytes, bool]:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out), True
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length), False

    def _record(self, body: bytes = b"", chunked: bool = False) -> None:
        self.server.seen.append(
            Seen(self.command, self.path, [(k.lower(), v) for k, v in self.headers.items()], len(body), chunked)
        )

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body, chunked = self._read_body()
        self._record(body, chunked)
        url = urlsplit(self.path)
        if url.path == "/echo":
            self._answer(
                200,
                body,
                {
                    "content-type": "application/octet-stream",
                    "x-received-length": str(len(body)),
                    "x-received-sha256": hashlib.sha256(body).hexdigest(),
                    "x-received-te": "chunked" if chunked else "identity",
                    "x-received-method": self.command,
                },
            )
        else:
            self._answer(404, b"no such route\n")

    do_PUT = do_POST

    def do_GET(self) -> None:
        self._record()
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/bytes":
            self._answer(200, pattern(int(query.get("n", "0"))), {"content-type": "application/octet-stream"})
        elif url.path == "/slow-head":
            time.sleep(int(query.get("ms", "1000")) / 1000)
            self._answer(200, b"late\n")
        elif url.path == "/slow-body":
            self.send_response(200)
            self.send_header("content-length", "10")
            self.end_headers()
            self.wfile.write(b"01234")
            self.wfile.flush()
            time.sleep(int(query.get("ms", "1000")) / 1000)
            self.wfile.write(b"56789")
        elif url.path == "/gzip":
            self._answer(200, gzip.compress(b"hello gzip\n", mtime=0), {"content-encoding": "gzip"})
        elif url.path.startswith("/status/"):
            self._answer(int(url.path.rsplit("/", 1)[1]), b"")
        elif url.path == "/hang-up":
            self.close_connection = True
            self.connection.shutdown(2)
        else:
            self._answer(200, f"hello from upstream {url.path}\n".encode(), {"content-type": "text/plain"})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that walk away mid-response are part of the tests (cancellation, timeouts).
        return


@dataclass
class Upstream:
    """``with Upstream() as up: up.url("/echo")``; ``up.seen`` lists what arrived."""

    server: _Server = field(init=False)
    thread: threading.Thread = field(init=False)

    def __enter__(self) -> Upstream:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.seen = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.authority}{path}"

    @property
    def seen(self) -> list[Seen]:
        return self.server.seen


# ---- the helper's own tests (it must be right for the outbound tests to mean anything)


def test_upstream_echoes_chunked_and_sized_bodies() -> None:
    data = pattern(300_000)
    with Upstream() as up:
        sized = httpx.post(up.url("/echo"), content=data)
        chunked = httpx.post(up.url("/echo"), content=iter([data[:1000], data[1000:]]))
    for r, te in ((sized, "identity"), (chunked, "chunked")):
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["x-received-sha256"] == hashlib.sha256(data).hexdigest()
        assert r.headers["x-received-te"] == te
    assert [s.chunked for s in up.seen] == [False, True]


def test_upstream_routes() -> None:
    with Upstream() as up:
        assert httpx.get(up.url("/bytes?n=1000")).content == pattern(1000)
        assert httpx.get(up.url("/status/418")).status_code == 418
        raw = httpx.get(up.url("/gzip"), headers={"accept-encoding": "identity"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.content == b"hello gzip\n"  # httpx decodes; the shim must not
        assert pattern(10) != pattern(11)[1:]
