"""Real outbound HTTP(S) for guests: one worker thread per request, httpx underneath.

WASIp2 hands the request to the host (``outgoing-handler.handle``) *before* the guest writes the
body, and the guest reads the response body while it is still arriving. So each request runs in
a worker thread: its request body is a generator fed from a :class:`BytePipe` that the guest's
output-stream writes fill, the future resolves when the response head arrives, and the response
body is copied chunk by chunk into another pipe that the guest's input-stream reads. Bodies are
passed through as bytes on the wire (``iter_raw``: no decompression, as Spin).

Failures become ``wasi:http/types.error-code`` cases as Spin's ``factor-outbound-http`` maps them
(DNS failure -> ``DNS-error``, refused -> ``connection-refused``, connect timeout ->
``connection-timeout``, first-byte and between-bytes timeouts -> ``connection-read-timeout`` …).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from kubespin_shim.host.values import Variant
from kubespin_shim.lazy import lazy_import
from kubespin_shim.outbound.pipe import BytePipe, PipeClosed, PipeFailed
from kubespin_shim.wasi.io import notify_pollers

ssl = lazy_import("ssl")  # only its exception types are needed here, when classifying a failure

log = logging.getLogger("kubespin.shim.outbound.http")

#: Spin's default for connect, first-byte and between-bytes timeouts.
DEFAULT_TIMEOUT_S = 600.0
BODY_PIPE_CAPACITY = 1 << 20
READ_CHUNK = 64 * 1024

# Hop-by-hop fields describe one connection, never the message (the body is already de-chunked).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"})
_HOP = frozenset(n.encode() for n in HOP_BY_HOP)

httpx = lazy_import("httpx")


def error_code(case: str, payload: object = None) -> Variant:
    """A ``wasi:http/types.error-code`` value."""
    return Variant(case, payload)


def internal_error(message: str) -> Variant:
    return Variant("internal-error", message)


def dns_error() -> Variant:
    # Spin reports every resolution failure the same way (factor-outbound-http `dns_error`).
    return Variant("DNS-error", {"rcode": "address not available", "info-code": 0})


@dataclass
class ResponseHead:
    """What resolves a future-incoming-response: status, headers (lower-case names) and the body."""

    status: int
    headers: list[tuple[str, bytes]]
    body: BytePipe


class ResponseFuture:
    """Resolved exactly once, from a worker thread, with a :class:`ResponseHead` or an error-code."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._value: ResponseHead | Variant | None = None

    def set(self, value: ResponseHead | Variant) -> bool:
        if self.event.is_set():
            return False
        self._value = value
        self.event.set()
        notify_pollers()
        return True

    def done(self) -> bool:
        return self.event.is_set()

    def value(self) -> ResponseHead | Variant:
        assert self.event.is_set(), "future read before it resolved"
        assert self._value is not None
        return self._value


@dataclass
class Timeouts:
    """request-options, in seconds; None means Spin's default (600 s)."""

    connect: float | None = None
    first_byte: float | None = None
    between_bytes: float | None = None

    def resolved(self) -> tuple[float, float, float]:
        return (
            self.connect if self.connect is not None else DEFAULT_TIMEOUT_S,
            self.first_byte if self.first_byte is not None else DEFAULT_TIMEOUT_S,
            self.between_bytes if self.between_bytes is not None else DEFAULT_TIMEOUT_S,
        )


@dataclass
class OutboundExchange:
    """One request in flight: the pipes both ways and the future; ``cancel`` stops it early."""

    future: ResponseFuture
    request_body: BytePipe | None
    response_body: BytePipe
    description: str
    thread: threading.Thread | None = field(default=None, repr=False)

    def cancel(self, reason: str) -> None:
        """The guest's request is over: fail what still waits, so the worker thread ends."""
        if self.request_body is not None:
            self.request_body.abort(internal_error(reason), reason)
        self.response_body.close_reader()
        self.future.set(internal_error(reason))


_client_lock = threading.Lock()
_client: httpx.Client | None = None


def shared_client() -> httpx.Client:
    """One connection pool per process, as Spin pools per runtime. No proxies from the environment
    (Spin's hyper client ignores HTTP_PROXY) and no default headers: httpx would add
    ``accept-encoding: gzip`` and the guest would receive compressed bytes it never asked for."""
    global _client
    with _client_lock:
        if _client is None:
            # httpx logs every request at INFO: one line per guest call is noise in a server's log.
            logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
            _client = httpx.Client(
                trust_env=False,
                follow_redirects=False,
                timeout=None,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30.0),
            )
        return _client


_ids = itertools.count(1)


def start_request(
    *,
    method: str,
    url: str,
    headers: list[tuple[str, bytes]],
    body: BytePipe | None,
    timeouts: Timeouts,
    client: httpx.Client | None = None,
) -> OutboundExchange:
    """Send in a worker thread now; the request body (if any) keeps flowing in through ``body``."""
    exchange = OutboundExchange(
        future=ResponseFuture(),
        request_body=body,
        response_body=BytePipe(BODY_PIPE_CAPACITY),
        description=f"{method} {url}",
    )
    worker = threading.Thread(
        target=_run,
        args=(client or shared_client(), exchange, method, url, headers, timeouts),
        name=f"outbound-http-{next(_ids)}",
        daemon=True,
    )
    exchange.thread = worker
    worker.start()
    return exchange


def _body_chunks(pipe: BytePipe) -> Iterator[bytes]:
    while True:
        chunk = pipe.read(READ_CHUNK)
        if chunk is None:
            return
        yield chunk


def _run(
    client: httpx.Client,
    exchange: OutboundExchange,
    method: str,
    url: str,
    headers: list[tuple[str, bytes]],
    timeouts: Timeouts,
) -> None:
    connect, first_byte, between_bytes = timeouts.resolved()
    timeout = {"connect": connect, "read": first_byte, "write": None, "pool": connect}
    content: bytes | Iterator[bytes] = b"" if exchange.request_body is None else _body_chunks(exchange.request_body)
    try:
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": timeout})
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as e:
        _fail(exchange, error_code("HTTP-request-URI-invalid"), f"invalid request URL {url!r}: {e}")
        return
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as e:
        _fail(exchange, error_code_for(e, exchange), f"{exchange.description} failed: {e!r}")
        return
    except PipeFailed as e:
        _fail(exchange, e.error, f"{exchange.description}: request body failed: {e}")
        return
    except Exception as e:  # a bug here must not leave the guest waiting forever
        log.exception("outbound request %s failed unexpectedly", exchange.description)
        _fail(exchange, internal_error(str(e)), str(e))
        return
    pipe = exchange.response_body
    try:
        head = ResponseHead(
            status=response.status_code,
            headers=[(n.decode("latin-1").lower(), v) for n, v in response.headers.raw if n.lower() not in _HOP],
            body=pipe,
        )
        if not exchange.future.set(head):
            return  # cancelled meanwhile
        # httpcore reads the read timeout when the body iteration starts: from here it is between-bytes.
        timeout["read"] = between_bytes
        for chunk in response.iter_raw():
            pipe.write(chunk)
        pipe.close()
    except PipeClosed:
        log.debug("guest stopped reading the response of %s", exchange.description)
    except httpx.HTTPError as e:
        code = error_code_for(e, exchange, body=True)
        log.debug("response body of %s failed: %r", exchange.description, e)
        pipe.abort(code, f"response body failed: {e}")
    finally:
        response.close()


def _fail(exchange: OutboundExchange, code: Variant, message: str) -> None:
    log.debug("%s", message)
    exchange.future.set(code)
    exchange.response_body.abort(code, message)


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def error_code_for(e: httpx.HTTPError, exchange: OutboundExchange | None = None, *, body: bool = False) -> Variant:
    """The error-code for an httpx failure (``body``: while reading the response body)."""
    if isinstance(e, httpx.ConnectTimeout):
        return error_code("connection-timeout")
    if isinstance(e, httpx.PoolTimeout):
        return error_code("connection-limit-reached")
    if isinstance(e, httpx.ReadTimeout):
        return error_code("connection-read-timeout")
    if isinstance(e, httpx.WriteTimeout):
        return error_code("connection-write-timeout")
    if isinstance(e, httpx.ConnectError):
        for cause in _causes(e):
            if isinstance(cause, socket.gaierror):
                return dns_error()
            if isinstance(cause, ssl.SSLCertVerificationError):
                return error_code("TLS-certificate-error")
            if isinstance(cause, ssl.SSLError):
                return error_code("TLS-protocol-error")
            if isinstance(cause, ConnectionRefusedError):
                return error_code("connection-refused")
            if isinstance(cause, OSError) and cause.errno is not None:
                # Spin maps every other connect failure to connection-refused too.
                return error_code("connection-refused")
        return error_code("connection-refused")
    if isinstance(e, httpx.LocalProtocolError):
        if "Content-Length" in str(e):
            sent = None
            if exchange is not None and exchange.request_body is not None:
                sent = exchange.request_body.bytes_written
            return error_code("HTTP-request-body-size", sent)
        return error_code("HTTP-protocol-error")
    if isinstance(e, httpx.RemoteProtocolError):
        text = str(e)
        if body or "incomplete" in text or "without sending complete message body" in text:
            return error_code("HTTP-response-incomplete")
        if "Server disconnected without sending a response" in text:
            return error_code("connection-terminated")
        return error_code("HTTP-protocol-error")
    if isinstance(e, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return error_code("HTTP-response-incomplete") if body else error_code("connection-terminated")
    if isinstance(e, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return error_code("HTTP-request-URI-invalid")
    return internal_error(f"{type(e).__name__}: {e}")
