"""Outbound requests that stay in the process: the app's own routes and local service chaining.

``http://<component>.spin.internal/...`` runs that component directly, as Spin's
``OutboundHttpInterceptor`` does (no network, the route match is synthetic: the whole path is the
wildcard). A relative URL (or host ``self.alt``) is a request to the app itself; Spin sends it to
its own listener, here it goes through the same router in-process, which answers the same
without a socket.

The target component runs in a worker thread with its own store and its own request context,
exactly like a request from a client; the two guests exchange bodies through :class:`BytePipe`s.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Protocol

from kubespin_shim.http.server import Request
from kubespin_shim.outbound.http_client import (
    BODY_PIPE_CAPACITY,
    OutboundExchange,
    ResponseFuture,
    ResponseHead,
    error_code,
    internal_error,
)
from kubespin_shim.outbound.pipe import BytePipe, PipeFailed

log = logging.getLogger("kubespin.shim.outbound.internal")

#: What Spin reports as the client address of a chained request (trigger-http outbound_http.rs).
CHAINED_CLIENT_ADDR = ("0.0.0.0", 0)
SELF_HOST = "localhost"


class InProcessApp(Protocol):
    """The part of SpinHttpApp that serves in-process requests."""

    def handle(self, ex: InternalExchange) -> None: ...  # type: ignore[override]
    def handle_chained(self, ex: InternalExchange, component_id: str) -> bool: ...


class InternalExchange:
    """Looks like :class:`kubespin_shim.http.server.Exchange` to the app; no socket behind it."""

    def __init__(
        self, request: Request, body: BytePipe | None, future: ResponseFuture, response_body: BytePipe
    ) -> None:
        self.request = request
        self._body = body
        self._future = future
        self._response_body = response_body
        self.started = False
        self.finished = False
        self.broken = False
        self.status = 0

    # request body, read by the target guest
    def read_body(self, n: int) -> bytes:
        if self._body is None:
            return b""
        try:
            chunk = self._body.read(n)
        except PipeFailed as e:
            raise OSError(f"request body failed: {e}") from None
        return chunk or b""

    # ResponseChannel
    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        self.started = True
        self.status = status
        self._future.set(ResponseHead(status, [(n.lower(), v) for n, v in headers], self._response_body))

    def write(self, data: bytes) -> None:
        self._response_body.write(data)  # PipeClosed is a BrokenPipeError: the caller stopped reading

    def finish(self, trailers: list[tuple[str, bytes]] | None) -> None:
        if not self.finished:
            self.finished = True
            self._response_body.close()

    def fail(self, reason: str) -> None:
        self.respond_simple(500, b"Internal Server Error\n")

    def flush(self) -> None:
        return None  # in-process: every write is already in the pipe

    def respond_simple(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        if self.started:
            return
        hdrs = [(n, v.encode()) for n, v in headers or []]
        hdrs.append(("content-length", str(len(body)).encode()))
        self.start(status, hdrs)
        self.write(body)
        self.finish(None)


_ids = itertools.count(1)


def start_internal(
    app: InProcessApp,
    *,
    component_id: str | None,
    method: str,
    path_with_query: str,
    headers: list[tuple[str, bytes]],
    body: BytePipe | None,
) -> OutboundExchange:
    """Serve the request in a worker thread: ``component_id`` for chaining, None for the app's router."""
    target = path_with_query if path_with_query.startswith("/") else "/" + path_with_query
    # The target guest sees an authority, as in Spin: for chaining the URI's `<id>.spin.internal`
    # (its Host header is then stripped by the usual rules); for `self` Spin uses its listener's
    # address, which the app does not know, so `localhost` (what a Host-less client gets too).
    host = f"{component_id}.spin.internal" if component_id else SELF_HOST
    request = Request(
        method=method,
        target=target,
        http_version="1.1",
        headers=[("host", host), *((n, v.decode("latin-1")) for n, v in headers if n != "host")],
        client_addr=CHAINED_CLIENT_ADDR,
    )
    future = ResponseFuture()
    response_body = BytePipe(BODY_PIPE_CAPACITY)
    where = f"{component_id}.spin.internal" if component_id else "self"
    exchange = OutboundExchange(future, body, response_body, f"{method} http://{where}{target}")
    ex = InternalExchange(request, body, future, response_body)
    worker = threading.Thread(
        target=_serve, args=(app, ex, component_id, exchange), name=f"outbound-internal-{next(_ids)}", daemon=True
    )
    exchange.thread = worker
    worker.start()
    return exchange


def _serve(app: InProcessApp, ex: InternalExchange, component_id: str | None, exchange: OutboundExchange) -> None:
    try:
        if component_id is None:
            app.handle(ex)
        elif not app.handle_chained(ex, component_id):
            # Spin traps the caller here; a missing component is an error the caller can handle.
            log.error("service chaining to unknown or unserved component %r (%s)", component_id, exchange.description)
            exchange.future.set(error_code("destination-not-found"))
            return
    except Exception as e:
        log.exception("in-process request %s failed", exchange.description)
        if not ex.started:
            exchange.future.set(internal_error(str(e)))
            return
        ex.broken = True
    if not ex.started:
        exchange.future.set(internal_error(f"{exchange.description} produced no response"))
    elif ex.broken or not ex.finished:
        exchange.response_body.abort(error_code("HTTP-response-incomplete"), "the response was cut short")
