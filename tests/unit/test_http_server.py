"""The HTTP/1.1 front end on a real loopback socket: framing, keep-alive, limits, hostile input.

A small Python handler stands in for the app (the guest path is covered by the integration tests);
the client side is raw bytes on a socket, parsed back with h11 as a client, so every assertion is
about what actually crossed the wire.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import h11
import pytest
from kubespin_shim.http import server as http_server
from kubespin_shim.http import workers as http_workers
from kubespin_shim.http.server import Exchange, HttpServer

TIMEOUT = 10
BIG = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than loopback socket buffers hold


def _read_all(ex: Exchange) -> bytes:
    out = bytearray()
    while chunk := ex.read_body(65536):
        out += chunk
    return bytes(out)


def handler(ex: Exchange) -> None:
    path = ex.request.target.partition("?")[0]
    if path == "/hello":
        ex.respond_simple(200, b"hello\n", [("content-type", "text/plain")])
    elif path == "/echo":
        body = _read_all(ex)
        ex.respond_simple(200, body)
    elif path == "/echo-stream":  # answers while the body is still arriving, like a streaming guest
        ex.start(200, [])
        while chunk := ex.read_body(7):
            ex.write(chunk)
        ex.finish(None)
    elif path == "/request":
        req = ex.request
        info = {"method": req.method, "target": req.target, "version": req.http_version, "headers": req.headers}
        ex.respond_simple(200, json.dumps(info).encode(), [("content-type", "application/json")])
    elif path == "/stream":
        ex.start(200, [("x-kind", b"stream")])
        ex.write(b"first,")
        ex.flush()
        ex.write(b"second")
        ex.finish(None)
    elif path == "/trailers":
        ex.start(200, [])
        ex.write(b"body")
        ex.finish([("x-checksum", b"abc")])
    elif path == "/big":  # more than the socket buffers hold: the writes must wait for the client
        ex.start(200, [("content-length", str(len(BIG)).encode())])
        for i in range(0, len(BIG), 1 << 20):
            ex.write(BIG[i : i + (1 << 20)])
        ex.finish(None)
    elif path == "/no-content":
        ex.start(204, [])
        ex.finish(None)
    elif path == "/short":  # declares 10 bytes, sends 3: the response is corrupt, the connection must end
        ex.start(200, [("content-length", b"10")])
        ex.write(b"abc")
        with contextlib.suppress(BrokenPipeError):
            ex.finish(None)
    elif path == "/long":  # declares 2 bytes, tries to send 6
        ex.start(200, [("content-length", b"2")])
        try:
            ex.write(b"abcdef")
        except BrokenPipeError:
            return
        ex.finish(None)
    elif path == "/ignore-body":
        ex.respond_simple(200, b"ignored")
    else:
        ex.respond_simple(404, b"Not Found\n")


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    srv = HttpServer("127.0.0.1", 0, handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.address[0], srv.address[1]
    srv.shutdown()
    t.join(5)


def connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Client:
    """Raw bytes out, h11-parsed responses in; ``closed`` once the server ended the connection."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = connect(addr)
        self.conn = h11.Connection(h11.CLIENT)
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: bytes = b"GET") -> tuple[h11.Response, bytes, list[tuple[bytes, bytes]]]:
        """The next response: (head, body, trailers). Raises if the connection ends mid-response."""
        # the client side of h11 needs to know what request it is parsing a response to
        self.conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        self.conn.send(h11.EndOfMessage())
        head, body, trailers = None, bytearray(), []
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                self.conn.receive_data(data)
                continue
            if isinstance(ev, h11.Response):
                head = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                trailers = list(ev.headers)
                assert head is not None
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return head, bytes(body), trailers
            elif isinstance(ev, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection mid-response")

    def server_closed(self) -> bool:
        """True when the server closes the connection (EOF, or a reset: it had unread data) in time."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def raw_until_close(self) -> bytes:
        out = bytearray()
        try:
            while data := self.sock.recv(65536):
                out += data
        except ConnectionResetError:
            pass
        return bytes(out)

    def close(self) -> None:
        self.sock.close()


def header(resp: h11.Response, name: bytes) -> bytes | None:
    return next((v for n, v in resp.headers if n == name), None)


@pytest.fixture
def client(server: tuple[str, int]) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.close()


GET = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"


def raw_reply(server: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server sends until it closes, unparsed."""
    c = Client(server)
    try:
        c.send(data)
        return c.raw_until_close()
    finally:
        c.close()


def test_response_head_is_exactly_what_was_framed(server: tuple[str, int]) -> None:
    # raw bytes, not h11: h11 would quietly merge a duplicated Content-Length (wrk and others refuse it)
    raw = raw_reply(server, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nhello\n"
    )


def test_keep_alive_serves_many_requests_on_one_connection(client: Client) -> None:
    for _ in range(5):
        client.send(GET % b"/hello")
        head, body, _ = client.response()
        assert (head.status_code, body) == (200, b"hello\n")
        assert header(head, b"content-length") == b"6"
        assert header(head, b"content-type") == b"text/plain"


def test_pipelined_requests_are_answered_in_order(client: Client) -> None:
    client.send(GET % b"/hello" + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET % b"/nope")
    assert client.response()[1] == b"hello\n"
    assert client.response(b"POST")[1] == b"abc"
    assert client.response()[0].status_code == 404


def test_request_line_and_headers_reach_the_handler(client: Client) -> None:
    client.send(b"DELETE /request?q=1&r=%20 HTTP/1.1\r\nHost: example.com:8080\r\nX-One: a\r\nx-one: b\r\n\r\n")
    info = json.loads(client.response()[1])
    assert info["method"] == "DELETE"
    assert info["target"] == "/request?q=1&r=%20"
    assert info["version"] == "1.1"
    assert [
        [n.lower(), v] for n, v in info["headers"]
    ] == [["host", "example.com:8080"], ["x-one", "a"], ["x-one", "b"]]


def test_content_length_body(client: Client) -> None:
    payload = bytes(range(256)) * 1000
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    assert client.response(b"POST")[1] == payload


def test_chunked_request_body(client: Client) -> None:
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert client.response(b"POST")[1] == b"hello world"
    client.send(GET % b"/hello")  # and the connection is still good
    assert client.response()[1] == b"hello\n"


def test_response_streams_while_the_request_body_arrives(client: Client) -> None:
    client.send(b"POST /echo-stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"7\r\nabcdefg\r\n")
    # the first piece comes back before the request is complete: the shim flushes before it blocks
    first = client.sock.recv(65536)
    while b"abcdefg" not in first:  # the head may leave on its own, when the shim waits for body bytes
        first += client.sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    client.send(b"3\r\nxyz\r\n0\r\n\r\n")
    rest = client.sock.recv(65536)
    while not rest.endswith(b"0\r\n\r\n"):
        rest += client.sock.recv(65536)
    assert b"xyz" in rest


def test_a_big_response_reaches_a_slow_reader_whole_and_in_order(client: Client) -> None:
    client.send(GET % b"/big")
    time.sleep(0.3)  # the server fills the buffers and has to wait for this client
    head, body, _ = client.response()
    assert head.status_code == 200
    assert body == BIG
    client.send(GET % b"/hello")  # and the connection is still good
    assert client.response()[1] == b"hello\n"


def test_response_without_length_is_chunked_for_http11(client: Client) -> None:
    client.send(GET % b"/stream")
    head, body, _ = client.response()
    assert header(head, b"transfer-encoding") == b"chunked"
    assert header(head, b"content-length") is None
    assert header(head, b"x-kind") == b"stream"
    assert body == b"first,second"
    client.send(GET % b"/hello")
    assert client.response()[1] == b"hello\n"


def test_trailers_follow_a_chunked_body(client: Client) -> None:
    client.send(GET % b"/trailers")
    _, body, trailers = client.response()
    assert body == b"body"
    assert trailers == [(b"x-checksum", b"abc")]


def test_http10_response_is_close_delimited(server: tuple[str, int]) -> None:
    raw = raw_reply(server, b"GET /stream HTTP/1.0\r\n\r\n")  # the server ends the body by closing the connection
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert body == b"first,second"


def test_http10_with_length_still_closes(server: tuple[str, int]) -> None:
    raw = raw_reply(server, b"GET /hello HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\nhello\n")
    assert b"connection: close" in raw.lower()


def test_connection_close_is_honoured(client: Client) -> None:
    client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body, _ = client.response()
    assert body == b"hello\n"
    assert header(head, b"connection") == b"close"
    assert client.server_closed()


def test_head_response_has_no_body(client: Client) -> None:
    client.send(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body, _ = client.response(b"HEAD")
    assert head.status_code == 200 and body == b""
    assert header(head, b"content-length") == b"6"
    client.send(GET % b"/hello")  # no stray body bytes were left on the connection
    assert client.response()[1] == b"hello\n"


def test_204_has_no_body_and_keeps_the_connection(client: Client) -> None:
    client.send(GET % b"/no-content")
    head, body, _ = client.response()
    assert head.status_code == 204 and body == b""
    assert header(head, b"transfer-encoding") is None
    client.send(GET % b"/hello")
    assert client.response()[1] == b"hello\n"


@pytest.mark.parametrize("path", [b"/short", b"/long"])
def test_body_that_breaks_its_content_length_ends_the_connection(client: Client, path: bytes) -> None:
    client.send(GET % path)
    data = client.raw_until_close()  # the connection ends; what arrived is never a complete response
    head, _, body = data.partition(b"\r\n\r\n")
    if head:
        declared = int(dict(h.split(b": ", 1) for h in head.split(b"\r\n")[1:])[b"content-length"])
        assert len(body) != declared or body != b"abcdef"[:declared]


def test_unread_small_body_is_drained_and_the_connection_kept(client: Client) -> None:
    client.send(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"z" * 5000)
    assert client.response(b"POST")[1] == b"ignored"
    client.send(GET % b"/hello")
    assert client.response()[1] == b"hello\n"


def test_unread_huge_body_closes_instead_of_draining(client: Client) -> None:
    size = http_server.DRAIN_LIMIT * 4
    client.send(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sender = threading.Thread(target=_send_quietly, args=(client.sock, b"z" * size), daemon=True)
    sender.start()
    assert client.response(b"POST")[1] == b"ignored"
    assert client.server_closed()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server hangs up on purpose
        sock.sendall(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["no-colon", "space-in-name", "garbage", "no-host", "two-hosts", "two-lengths", "bad-length", "cl-and-te"],
)
def test_malformed_request_gets_400_and_close(server: tuple[str, int], raw: bytes) -> None:
    reply = raw_reply(server, raw)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


def test_oversized_head_gets_431(server: tuple[str, int]) -> None:
    big = b"x-big: " + b"a" * (2 * http_server.MAX_HEADER_BYTES) + b"\r\n"
    reply = raw_reply(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]


def test_bad_chunk_encoding_ends_the_connection(client: Client) -> None:
    client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    data = client.raw_until_close()
    assert b"hello" not in data  # the handler never got a body it could echo


def test_client_that_goes_away_mid_request_does_not_kill_the_server(server: tuple[str, int]) -> None:
    for raw in (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", b"GET /hel"):
        s = connect(server)
        s.sendall(raw)
        s.close()
    c = Client(server)
    try:
        c.send(GET % b"/hello")
        assert c.response()[1] == b"hello\n"
    finally:
        c.close()


def test_idle_connection_is_closed(server: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_workers, "IDLE_TIMEOUT_S", 0.3)
    c = Client(server)
    try:
        c.send(GET % b"/hello")
        assert c.response()[1] == b"hello\n"
        assert c.server_closed()  # nothing more sent: the server gives up after the idle timeout
    finally:
        c.close()


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "get"])
def test_any_token_method_reaches_the_handler(client: Client, method: str) -> None:
    # llhttp knows a fixed list of methods; HTTP allows any token and wasi:http passes it on as `other`
    client.send(b"%s /request HTTP/1.1\r\nHost: x\r\n\r\n" % method.encode())
    assert json.loads(client.response()[1])["method"] == method
    client.send(GET % b"/hello")
    assert client.response()[1] == b"hello\n"


def test_unsupported_transfer_encoding_gets_501(server: tuple[str, int]) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    reply = raw_reply(server, raw)
    assert reply.startswith(b"HTTP/1.1 501")


def test_http09_and_http2_requests_are_refused(server: tuple[str, int]) -> None:
    for raw in (b"GET /\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        reply = raw_reply(server, raw)
        assert reply[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 505"), reply[:100]


def test_upgrade_request_is_answered_then_the_connection_closed(client: Client) -> None:
    client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head, body, _ = client.response()
    assert (head.status_code, body) == (200, b"hello\n")
    assert client.server_closed()  # bytes after an upgrade request are not HTTP/1.1: never parsed


@pytest.mark.parametrize(
    ("name", "value"),
    [("bad name", b"v"), ("x-ok", b"a\r\nset-cookie: injected"), ("x-nul", b"a\x00b"), ("naïve-é", b"v"),
     ("名前", b"v"), ("", b"v")],
)
def test_a_response_header_that_is_not_http_breaks_the_response_and_writes_nothing(name: str, value: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        req = http_server.Request("GET", "/", "1.1", [], ("127.0.0.1", 1))
        for _ in range(2):  # the second time the name's verdict comes from the cache of names seen
            ex = Exchange(a, req, http_server._RequestReader(a), keep_alive=True)
            with pytest.raises(BrokenPipeError, match="not valid HTTP"):
                ex.start(200, [("content-type", b"text/plain"), (name, value)])
            assert ex.broken
            ex.flush()  # a broken exchange sends nothing
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(1)
