"""The HTTP/1.1 front end: keep-alive, streaming in both directions, on a pool of workers.

Connections are served by workers.py's pool: a worker takes a connection that has bytes, answers
the requests they complete and goes on to the next ready connection. Wasm runs inside ctypes calls
that release the GIL, so workers execute guests in parallel. Requests are parsed by httptools
(llhttp, Node's parser, the one uvicorn uses): strict by default (no Content-Length + Transfer-
Encoding, no duplicate lengths, no bare LF, no obsolete line folding), so no hand-written parser
stands between a hostile client and the guest; it costs a few microseconds per request where the
pure-Python h11 cost ~100 (bench/shim_vs_wasmtime.py). Its callbacks become a queue of events
(head, body chunks, end), read lazily as the guest reads its body, which keeps memory bounded by
one socket read.

Responses are framed here (:class:`Exchange`): the status line and headers, then Content-Length,
chunked (HTTP/1.1 without a length) or close-delimited (HTTP/1.0) bodies, no body for HEAD, 1xx,
204 and 304. That half of HTTP/1.1 is small and fully specified (RFC 9112 §6), and it has to follow
the guest's streaming writes anyway.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

import httptools

from kubespin_shim.http import workers
from kubespin_shim.http.workers import Connection, WorkerPool

log = logging.getLogger("kubespin.shim.http")

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
DRAIN_LIMIT = 1 << 20  # unread request body we are willing to discard to keep a connection alive
FLUSH_BYTES = 16 * 1024  # response bytes coalesced before a send

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class ClientGone(Exception):
    """The client closed the connection, timed out, or sent something the parser rejects.

    ``status`` is the answer owed to a malformed request (400, 431, 501…), or None when the client
    simply went away.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    http_version: str
    headers: list[tuple[str, str]]  # names lower-cased, in the client's order
    client_addr: tuple[object, ...]


class _Head(NamedTuple):
    """A request head as llhttp reported it (a tuple: made in C, on every request)."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool


_END = object()  # the request message is complete
_CLOSED = object()  # the client closed the connection between requests


class _RequestReader:
    """Socket bytes in, events out: :class:`_Head`, body ``bytes``, ``_END`` (llhttp callbacks).

    Bytes are fed only when the queue is empty, so at most one read (``READ_SIZE``) is buffered; a
    parse error is raised after the events before it, as a stream parser would report it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = httptools.HttpRequestParser(self)
        self.events: deque[object] = deque()
        self.error: ClientGone | None = None
        self.upgraded = False  # CONNECT or Upgrade: what follows is not HTTP/1.1; close after the response
        self._in_message = False
        self._in_head = False
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._method_override: bytes | None = None

    # ---- llhttp callbacks

    # No on_message_begin (one Python call less per request): a message's first callback is on_url,
    # and on_headers_complete leaves the head state fresh for the next message.

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._in_message = True
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # after the head these are trailers, which the shim does not pass on
            self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        p = self.parser
        method = self._method_override or p.get_method()
        self._method_override = None
        self.events.append(tuple.__new__(_Head, (method, self._url, p.get_http_version(), self._headers,
                                                 p.should_keep_alive())))
        self._url = b""
        self._headers = []

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self.events.append(_END)

    # ----

    def next_event(self) -> object:
        while not self.events:
            if self.error is not None:
                raise self.error
            try:
                data = self.sock.recv(READ_SIZE)
            except (TimeoutError, OSError) as e:
                raise ClientGone(str(e)) from None
            if not data:
                if self._in_message:
                    raise ClientGone("client closed the connection in the middle of a request")
                return _CLOSED
            self._feed(data)
        return self.events.popleft()

    def _feed(self, data: bytes) -> None:
        at_boundary = not self._in_message
        queued = len(self.events)
        if self._in_head or at_boundary:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserInvalidMethodError:
            method = _extension_method(data) if at_boundary and len(self.events) == queued else None
            if method is None:
                self.error = ClientGone("invalid request method", 400)
                return
            # llhttp knows a fixed list of methods; HTTP allows any token (wasi:http passes it on as
            # `other`). Parse this request as a PUT (framing comes from the headers either way) and
            # hand the handler the method the client sent.
            self.parser = httptools.HttpRequestParser(self)
            self._in_message = False
            self._head_bytes = 0
            self._method_override = method
            self._feed(b"PUT" + data[len(method) :])
            return
        except httptools.HttpParserError as e:
            self.error = ClientGone(f"malformed request: {e}", 400)
            return
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:
            self.error = ClientGone(f"request head larger than {MAX_HEADER_BYTES} bytes", 431)


def _extension_method(data: bytes) -> bytes | None:
    method, sp, _ = data.partition(b" ")
    return method if sp and _TOKEN.fullmatch(method) else None


def _check_head(head: _Head) -> tuple[int, str] | None:
    """What llhttp accepts but an HTTP/1.1 server must refuse (h11 refused these too)."""
    if head.version not in ("1.1", "1.0"):
        return 505, f"HTTP/{head.version} is not supported"
    hosts = 0
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"transfer-encoding" and value.strip().lower() != b"chunked":
            return 501, "only Transfer-Encoding: chunked is supported"
    if hosts > 1 or (hosts == 0 and head.version == "1.1"):
        return 400, "an HTTP/1.1 request needs exactly one Host header"
    return None


@functools.lru_cache(maxsize=1024)  # the same few names come back on every response
def _valid_name(name: str) -> tuple[bytes, bytes]:
    """A response header name as (bytes, lower-cased bytes), or (b"", b"") when it is not a token."""
    raw = name.encode("latin-1", "replace")
    return (raw, raw.lower()) if _TOKEN.fullmatch(raw) else (b"", b"")


class Exchange:
    """One request/response on a connection: the body source and the response channel."""

    __slots__ = ("_body_done", "_framing", "_out", "_pending", "_reader", "_remaining", "_sock", "broken",
                 "finished", "keep_alive", "request", "started", "status")

    # response body framing, decided by start()
    _LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)

    def __init__(self, sock: socket.socket, request: Request, reader: _RequestReader, keep_alive: bool) -> None:
        self._sock = sock
        self._reader = reader
        self.request = request
        self.keep_alive = keep_alive
        self._pending = b""
        self._body_done = False
        self.started = False
        self.finished = False
        self.broken = False
        self.status = 0
        self._out = bytearray()
        self._framing = self._NONE
        self._remaining = 0  # bytes still owed under Content-Length

    # ---- request body (called by the guest's input-stream reads)

    def read_body(self, n: int) -> bytes:
        if self._out and not self._pending and not self._body_done:
            self.flush()  # never sit on response bytes while waiting for the client
        while not self._pending and not self._body_done:
            ev = self._reader.next_event()
            if ev is _END:
                self._body_done = True
            elif type(ev) is bytes:
                self._pending = ev
            else:
                raise ClientGone("the client closed the connection while sending the request body")
        chunk, self._pending = self._pending[:n], self._pending[n:]
        return chunk

    def drain(self) -> bool:
        """Discard what the guest did not read, so the connection can be reused. False: close it."""
        discarded = len(self._pending)
        self._pending = b""
        while not self._body_done:
            if discarded > DRAIN_LIMIT:
                return False
            discarded += len(self.read_body(READ_SIZE))
        return True

    # ---- response (ResponseChannel for wasi:http)

    def _queue(self, data: bytes) -> None:
        """Coalesce small pieces so a short response leaves in one segment.

        The buffer goes out when it passes FLUSH_BYTES, when the guest flushes its body stream,
        before the shim blocks reading the request body, and when the response ends.
        """
        self._out += data
        if len(self._out) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._out or self.broken:
            return
        try:
            # One write(2) first: the socket is non-blocking underneath, and sendall on a socket with a
            # timeout polls before every send, a system call more per response (strace -c).
            try:
                sent = os.write(self._sock.fileno(), self._out)
            except BlockingIOError:
                sent = 0
            if sent < len(self._out):
                self._sock.sendall(self._out[sent:])  # the client reads slowly: wait, up to the timeout
        except OSError:
            self.broken = True
            raise BrokenPipeError("client closed the connection") from None
        finally:
            self._out.clear()

    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        self.started = True
        self.status = status
        if self.broken:
            raise BrokenPipeError("connection to the client is gone")
        length: bytes | None = None
        lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in headers:
            raw, lower = _valid_name(name)
            if not raw or _BAD_VALUE.search(value):
                self.broken = True
                raise BrokenPipeError(f"response header {name!r} is not valid HTTP")
            if lower == b"content-length":
                if length is not None and value != length:
                    self.broken = True
                    raise BrokenPipeError("response has conflicting Content-Length headers")
                length = value
                continue  # written once, below, where the framing is decided
            elif lower == b"transfer-encoding":
                continue  # the framing is ours to choose
            elif lower == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            lines.append(b"%s: %s\r\n" % (raw, value))
        if self.request.method == "HEAD" or status in (204, 304) or status < 200:
            self._framing = self._NONE
            if length is not None:
                lines.append(b"content-length: %s\r\n" % length)
        elif length is not None:
            if not length.isdigit():
                self.broken = True
                raise BrokenPipeError(f"response Content-Length {length!r} is not a number")
            self._framing = self._LENGTH
            self._remaining = int(length)
            lines.append(b"content-length: %s\r\n" % length)
        elif self.request.http_version == "1.1":
            self._framing = self._CHUNKED
            lines.append(b"transfer-encoding: chunked\r\n")
        else:  # an HTTP/1.0 client: the end of the body is the end of the connection
            self._framing = self._UNTIL_CLOSE
            self.keep_alive = False
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self._queue(b"".join(lines))

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.broken:
            raise BrokenPipeError("connection to the client is gone")
        framing = self._framing
        if framing == self._LENGTH:
            if len(data) > self._remaining:
                self.broken = True  # more bytes than the guest's own content-length: the response is corrupt
                raise BrokenPipeError("response body rejected: too much data for the declared Content-Length")
            self._remaining -= len(data)
            self._queue(data)
        elif framing == self._CHUNKED:
            self._queue(b"%x\r\n%s\r\n" % (len(data), data))
        elif framing == self._UNTIL_CLOSE:
            self._queue(data)
        # _NONE: HEAD, 1xx, 204, 304 carry no body; what the guest writes is dropped, as Spin does

    def finish(self, trailers: list[tuple[str, bytes]] | None) -> None:
        if self.finished:
            return
        self.finished = True
        if self.broken:
            raise BrokenPipeError("connection to the client is gone")
        framing = self._framing
        if framing == self._CHUNKED:
            tail = [b"0\r\n"]
            for name, value in trailers or []:
                raw = name.encode("latin-1")
                if _TOKEN.fullmatch(raw) and not _BAD_VALUE.search(value):
                    tail.append(b"%s: %s\r\n" % (raw, value))
            tail.append(b"\r\n")
            self._queue(b"".join(tail))
        elif framing == self._LENGTH and (self._remaining or trailers):
            self.broken = True
            raise BrokenPipeError(
                f"response incomplete: {self._remaining} bytes short of the declared Content-Length"
                if self._remaining
                else "response incomplete: trailers cannot follow a Content-Length body"
            )
        elif framing == self._UNTIL_CLOSE and trailers:
            self.broken = True
            raise BrokenPipeError("response incomplete: an HTTP/1.0 client cannot receive trailers")
        self.flush()

    def fail(self, reason: str) -> None:
        self.respond_simple(500, b"Internal Server Error\n")

    def respond_simple(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        if self.started:
            return
        hdrs = [(n, v.encode()) for n, v in headers or []]
        hdrs.append(("content-length", str(len(body)).encode()))
        self.start(status, hdrs)
        self.write(body)
        self.finish(None)


Handler = Callable[[Exchange], None]


class HttpServer:
    """Accepts connections and runs ``handler`` for each request on a pool of workers (workers.py).

    ``concurrency`` is how many requests run at once while none waits for long (default: the CPUs
    this process may use, workers.usable_cpus); a request that waits for long gets a spare worker
    released beside it, up to ``max_connections`` workers, which is also the most connections
    served at once.
    """

    def __init__(self, host: str, port: int, handler: Handler, max_connections: int = 512,
                 concurrency: int | None = None) -> None:
        self.handler = handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            # lets several shim processes share one port, the kernel balancing between them
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.address = self.sock.getsockname()
        self.max_connections = max_connections
        self._pool: WorkerPool[_RequestReader] = WorkerPool(self._serve_ready, target=concurrency,
                                                            max_workers=max_connections)
        self._stopping = threading.Event()
        # Set by start_draining(): still serving, but every response closes its connection, so that
        # keep-alive clients reconnect (to another replica once the load balancer has caught up).
        self._draining = False

    def start_draining(self) -> None:
        self._draining = True

    def serve_forever(self) -> None:
        self._pool.start()
        while not self._stopping.is_set():
            try:
                client, addr = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if len(self._pool) >= self.max_connections:
                log.warning("connection limit (%d) reached; refusing %s", self.max_connections, addr)
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(workers.IDLE_TIMEOUT_S)  # for reads and writes inside a request
            self._pool.add(client, addr, _RequestReader(client))

    def shutdown(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._pool.stop()

    def wait_for_requests(self, timeout: float) -> int:
        """After shutdown(): wait up to ``timeout`` seconds for the requests in flight to end (their
        connections close after the response). Returns how many still run."""
        return self._pool.wait_for_requests(timeout)

    def _serve_ready(self, conn: Connection[_RequestReader]) -> bool:
        """Read what the connection has (never waiting for more), and answer every request it
        completes. False: close the connection."""
        reader = conn.state
        try:
            # os.read: one non-blocking read (a socket with a timeout is non-blocking underneath);
            # sock.recv would poll first and, on a stale event, wait for the whole timeout
            data = os.read(conn.fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False  # closed by the client, between requests or in the middle of one
        reader._feed(data)
        while reader.events or reader.error is not None:
            if not self._serve_request(conn.sock, conn.addr, reader):
                return False
        return True

    def _serve_request(self, sock: socket.socket, addr: tuple[object, ...], reader: _RequestReader) -> bool:
        """Answer the request whose head is next in ``reader``. False: close the connection."""
        try:
            head = reader.next_event()
        except ClientGone as e:
            if e.status is not None:
                _reject(sock, e.status)
            return False
        if not isinstance(head, _Head):
            return False
        problem = _check_head(head)
        if problem is not None:
            log.debug("rejecting a request from %s: %s", addr, problem[1])
            _reject(sock, problem[0])
            return False
        request = Request(  # positional: a keyword call builds a dict, on every request
            head.method.decode("ascii", "replace"),
            head.target.decode("latin-1"),
            head.version,
            [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in head.headers],
            addr,
        )
        ex = Exchange(sock, request, reader, keep_alive=head.keep_alive and not reader.upgraded and not self._draining)
        try:
            self.handler(ex)
        except ClientGone as e:
            if e.status is not None and not ex.started:
                _reject(sock, e.status)
            return False
        if ex.broken or not ex.finished or not ex.keep_alive or reader.upgraded:
            return False
        return ex.drain()


def _reject(sock: socket.socket, status: int) -> None:
    """Answer a malformed request with a plain status and close (the connection is unusable)."""
    body = f"{status} bad request\n".encode()
    head = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
    with contextlib.suppress(OSError):
        sock.sendall(head + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
