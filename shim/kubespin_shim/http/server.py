"""The HTTP/1.1 front end: one thread per connection, h11 for the protocol, keep-alive, streaming.

Wasm runs inside ctypes calls that release the GIL, so connection threads execute guests in
parallel. h11 does the HTTP parsing and framing (chunked or content-length, HEAD, keep-alive), so
that no hand-written parser stands between a hostile client and the guest.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import h11

log = logging.getLogger("kubespin.shim.http")

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 60.0
DRAIN_LIMIT = 1 << 20  # unread request body we are willing to discard to keep a connection alive
FLUSH_BYTES = 16 * 1024  # response bytes coalesced before a send


class ClientGone(Exception):
    """The client closed the connection, timed out, or sent something h11 rejects.

    ``status`` is the answer owed to a malformed request (h11's hint: 400, 431…), or None when
    the client simply went away.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    http_version: str
    headers: list[tuple[str, str]]
    client_addr: tuple[object, ...]


class Exchange:
    """One request/response on a connection: the body source and the response channel."""

    def __init__(self, conn: h11.Connection, sock: socket.socket, request: Request) -> None:
        self._conn = conn
        self._sock = sock
        self.request = request
        self._pending = b""
        self._body_done = False
        self.started = False
        self.finished = False
        self.broken = False
        self.status = 0
        self._out = bytearray()

    # ---- request body (called by the guest's input-stream reads)

    def read_body(self, n: int) -> bytes:
        if self._out and not self._pending and not self._body_done:
            self.flush()  # never sit on response bytes while waiting for the client
        while not self._pending and not self._body_done:
            ev = _next_event(self._conn, self._sock)
            if isinstance(ev, h11.Data):
                self._pending = bytes(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                self._body_done = True
            else:
                raise ClientGone(f"unexpected {type(ev).__name__} while reading the request body")
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

    def _send(self, event: object) -> None:
        """Frame an event; small pieces are coalesced so a short response leaves in one segment.

        The buffer goes out when it passes FLUSH_BYTES, when the guest flushes its body stream,
        before the shim blocks reading the request body, and when the response ends.
        """
        if self.broken:
            raise BrokenPipeError("connection to the client is gone")
        data = self._conn.send(event)
        if data:
            self._out += data
            if len(self._out) >= FLUSH_BYTES:
                self.flush()

    def flush(self) -> None:
        if not self._out or self.broken:
            return
        try:
            self._sock.sendall(self._out)
        except OSError:
            self.broken = True
            raise BrokenPipeError("client closed the connection") from None
        finally:
            self._out.clear()

    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        self.started = True
        self.status = status
        hdrs = [(n.encode("latin-1"), v) for n, v in headers]
        self._send(h11.Response(status_code=status, headers=hdrs))

    def write(self, data: bytes) -> None:
        if data:
            try:
                self._send(h11.Data(data=data))
            except h11.LocalProtocolError as e:
                # e.g. more bytes than the guest's own content-length: the response is corrupt
                self.broken = True
                raise BrokenPipeError(f"response body rejected: {e}") from None

    def finish(self, trailers: list[tuple[str, bytes]] | None) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self._send(h11.EndOfMessage(headers=[(n.encode("latin-1"), v) for n, v in trailers or []]))
        except h11.LocalProtocolError as e:
            self.broken = True
            raise BrokenPipeError(f"response incomplete: {e}") from None
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


def _next_event(conn: h11.Connection, sock: socket.socket) -> object:
    while True:
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise ClientGone(str(e), e.error_status_hint) from None
        if ev is h11.NEED_DATA:
            try:
                data = sock.recv(READ_SIZE)
            except (TimeoutError, OSError) as e:
                raise ClientGone(str(e)) from None
            conn.receive_data(data)
            continue
        return ev


class HttpServer:
    """Accepts connections and runs ``handler`` for each request, one thread per connection."""

    def __init__(self, host: str, port: int, handler: Handler, max_connections: int = 512) -> None:
        self.handler = handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            # lets `--workers N` processes share one port, the kernel balancing between them
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.address = self.sock.getsockname()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                client, addr = self.sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            if not self._slots.acquire(timeout=5):
                log.warning("connection limit reached; refusing %s", addr)
                client.close()
                continue
            t = threading.Thread(target=self._connection, args=(client, addr), daemon=True)
            t.start()

    def shutdown(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _connection(self, sock: socket.socket, addr: tuple[object, ...]) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IDLE_TIMEOUT_S)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                try:
                    ev = _next_event(conn, sock)
                except ClientGone as e:
                    if e.status is not None:
                        _reject(conn, sock, e.status)
                    return
                if isinstance(ev, h11.ConnectionClosed):
                    return
                if not isinstance(ev, h11.Request):
                    return
                request = Request(
                    method=ev.method.decode("ascii", "replace"),
                    target=ev.target.decode("latin-1"),
                    http_version=ev.http_version.decode(),
                    headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in ev.headers],
                    client_addr=addr,
                )
                ex = Exchange(conn, sock, request)
                try:
                    self.handler(ex)
                except ClientGone as e:
                    if e.status is not None and not ex.started:
                        _reject(conn, sock, e.status)
                    return
                if ex.broken or not ex.finished:
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                if not ex.drain():
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except Exception:
            log.exception("connection from %s failed", addr)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self._slots.release()


def _reject(conn: h11.Connection, sock: socket.socket, status: int) -> None:
    """Answer a malformed request with a plain status, if the protocol state still allows it."""
    body = f"{status} bad request\n".encode()
    try:
        data = conn.send(h11.Response(status_code=status, headers=[("content-length", str(len(body)))]))
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        sock.sendall(data)
    except (h11.LocalProtocolError, OSError):
        pass
