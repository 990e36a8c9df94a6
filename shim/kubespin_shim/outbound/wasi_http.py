"""The outgoing side of ``wasi:http``: ``outgoing-handler.handle`` and the resources it uses.

Registered on the same ``wasi:http/types`` Interface object as the incoming side
(``kubespin_shim.http.types.types``), because a component imports one ``types`` instance for both.
Resources: ``outgoing-request``, ``request-options``, ``future-incoming-response``,
``incoming-response``; the request body is the existing ``outgoing-body`` bound to a pipe, the
response body the existing ``incoming-body`` over one.

``handle`` checks the destination against the component's ``allowed_outbound_hosts`` (denied:
``HTTP-request-denied`` and a log line saying which entry would allow it), then sends: in-process
for ``*.spin.internal`` and for relative URLs (the app itself), with httpx otherwise. Defaults
follow wasmtime-wasi-http: method GET, scheme HTTPS, path ``/``.
"""

from __future__ import annotations

import logging
import re
import weakref
from typing import TYPE_CHECKING, Any

from kubespin_shim.host.binding import CallContext, Interface, request_state
from kubespin_shim.host.values import Err, HostResource, Ok, Variant
from kubespin_shim.http.fields import Fields
from kubespin_shim.http.types import IncomingBody, OutgoingBody, method_text
from kubespin_shim.http.types import types as types_iface
from kubespin_shim.lazy import lazy_import
from kubespin_shim.outbound.pipe import BytePipe, PipeFailed
from kubespin_shim.wasi.io import CLOSED, InputStream, IoError, Pollable

if TYPE_CHECKING:
    from kubespin_shim.outbound.http_client import OutboundExchange, ResponseFuture, ResponseHead, Timeouts
    from kubespin_shim.outbound.internal import InProcessApp
    from kubespin_shim.outbound.policy import RequestHosts

# Loaded on the first outbound request: the client, the in-process path and the allow-list parser
# (~12 ms of classes and regexes) are not part of the cold start of an app that never calls out.
allowed_hosts = lazy_import("kubespin_shim.outbound.allowed_hosts")
http_client = lazy_import("kubespin_shim.outbound.http_client")
internal = lazy_import("kubespin_shim.outbound.internal")

log = logging.getLogger("kubespin.shim.outbound.http")

KEY = "outbound-http"
BODY_DROPPED = "request body dropped before outgoing-body.finish"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_BAD_URI_CHARS = re.compile(r"[\x00-\x20\x7f#]")
_BAD_AUTHORITY_CHARS = re.compile(r"[\x00-\x20\x7f/?#\\]")


class HttpRequestState:
    """Per guest request: the allow-list view, the app for in-process requests, requests in flight.

    Guests often leave handles undropped and wasmtime runs no destructors when a store goes away,
    so outbound requests still running when the guest's request ends are cancelled by a finalizer
    tied to this object, which dies with the request's context.
    """

    __slots__ = ("__weakref__", "_exchanges", "app", "component_id", "hosts")

    def __init__(self, component_id: str, hosts: RequestHosts, app: InProcessApp | None) -> None:
        self.component_id = component_id
        self.hosts = hosts
        self.app = app
        self._exchanges: list[OutboundExchange] | None = None

    def track(self, exchange: OutboundExchange) -> None:
        if self._exchanges is None:
            self._exchanges = []
            weakref.finalize(self, _cancel_all, self._exchanges, self.component_id)
        self._exchanges.append(exchange)


def _cancel_all(exchanges: list[OutboundExchange], component_id: str) -> None:
    for ex in exchanges:
        ex.cancel(f"the request of component {component_id!r} that made it has ended")


# ------------------------------------------------------------------------------------------
# resources


class HttpIoError(IoError):
    """A stream error that ``http-error-code`` can turn back into an error-code."""

    def __init__(self, message: str, code: Variant) -> None:
        super().__init__(message)
        self.error_code = code


class PipeChannel:
    """The ResponseChannel face of a pipe, so the existing OutgoingBody streams a request body."""

    def __init__(self, pipe: BytePipe) -> None:
        self.pipe = pipe

    def write(self, data: bytes) -> None:
        self.pipe.write(data)

    def finish(self, trailers: list[tuple[str, bytes]] | None) -> None:
        if trailers:
            log.debug("request trailers are not sent by the kubespin shim (%d dropped)", len(trailers))
        self.pipe.close()

    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None:  # pragma: no cover - response only
        raise NotImplementedError

    def fail(self, reason: str) -> None:  # pragma: no cover - response only
        raise NotImplementedError

    def flush(self) -> None:
        return None  # request bodies stream through the pipe as written


class OutgoingRequestBody(OutgoingBody):
    """``outgoing-body`` of a request: buffered until ``handle``, then streamed through a pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.pipe: BytePipe | None = None

    def attach(self, pipe: BytePipe) -> None:
        self.pipe = pipe
        self.bind(PipeChannel(pipe))  # type: ignore[arg-type]

    def close(self) -> None:
        super().close()
        if not self.finished and self.pipe is not None:
            # WASI: dropping a body without finish() means the request is incomplete.
            self.pipe.abort(http_client.internal_error(BODY_DROPPED), "body dropped")


class OutgoingRequest(HostResource):
    def __init__(self, headers: Fields) -> None:
        self.headers_ = headers
        self.method_: Variant = Variant("get")
        self.path_: str | None = None
        self.scheme_: Variant | None = None
        self.authority_: str | None = None
        self.body_: OutgoingRequestBody | None = None

    def body(self) -> Ok | Err:
        if self.body_ is not None:
            return Err(None)
        self.body_ = OutgoingRequestBody()
        return Ok(self.body_)

    def method(self) -> Variant:
        return self.method_

    def set_method(self, method: Variant) -> Ok | Err:
        if method.tag == "other" and not _TOKEN.fullmatch(method.value or ""):
            return Err(None)
        self.method_ = method
        return Ok(None)

    def path_with_query(self) -> str | None:
        return self.path_

    def set_path_with_query(self, path: str | None) -> Ok | Err:
        if path is not None and _BAD_URI_CHARS.search(path):
            return Err(None)
        self.path_ = path
        return Ok(None)

    def scheme(self) -> Variant | None:
        return self.scheme_

    def set_scheme(self, scheme: Variant | None) -> Ok | Err:
        if scheme is not None and scheme.tag == "other" and not _SCHEME.fullmatch(scheme.value or ""):
            return Err(None)
        self.scheme_ = scheme
        return Ok(None)

    def authority(self) -> str | None:
        return self.authority_

    def set_authority(self, authority: str | None) -> Ok | Err:
        if authority is not None and _BAD_AUTHORITY_CHARS.search(authority):
            return Err(None)
        self.authority_ = authority
        return Ok(None)

    def headers(self) -> Fields:
        return self.headers_.view()


class RequestOptions(HostResource):
    """Timeouts in nanoseconds (``wasi:clocks`` duration)."""

    def __init__(self) -> None:
        self.connect_ns: int | None = None
        self.first_byte_ns: int | None = None
        self.between_bytes_ns: int | None = None

    def connect_timeout(self) -> int | None:
        return self.connect_ns

    def set_connect_timeout(self, d: int | None) -> Ok:
        self.connect_ns = d
        return Ok(None)

    def first_byte_timeout(self) -> int | None:
        return self.first_byte_ns

    def set_first_byte_timeout(self, d: int | None) -> Ok:
        self.first_byte_ns = d
        return Ok(None)

    def between_bytes_timeout(self) -> int | None:
        return self.between_bytes_ns

    def set_between_bytes_timeout(self, d: int | None) -> Ok:
        self.between_bytes_ns = d
        return Ok(None)

    def timeouts(self) -> Timeouts:
        def s(ns: int | None) -> float | None:
            return None if ns is None else ns / 1e9

        return http_client.Timeouts(s(self.connect_ns), s(self.first_byte_ns), s(self.between_bytes_ns))


class PipeInputStream(InputStream):
    """An ``input-stream`` over a pipe: ``read`` never blocks, ``subscribe`` waits for data."""

    def __init__(self, pipe: BytePipe) -> None:
        super().__init__(lambda n: b"")
        self._pipe = pipe

    def _result(self, data: bytes | None) -> Ok | Err:
        if data is None:
            self._eof = True
            return CLOSED
        return Ok(data)

    def read(self, n: int) -> Ok | Err:
        if self._eof:
            return CLOSED
        try:
            return self._result(self._pipe.read_nowait(min(n, 1 << 20)))
        except PipeFailed as e:
            self._eof = True
            return Err(Variant("last-operation-failed", HttpIoError(str(e), e.error)))  # type: ignore[arg-type]

    def blocking_read(self, n: int) -> Ok | Err:
        if self._eof:
            return CLOSED
        if n == 0:
            return Ok(b"")
        try:
            return self._result(self._pipe.read(min(n, 1 << 20)))
        except PipeFailed as e:
            self._eof = True
            return Err(Variant("last-operation-failed", HttpIoError(str(e), e.error)))  # type: ignore[arg-type]

    def skip(self, n: int) -> Ok | Err:
        r = self.read(n)
        return Ok(len(r.value)) if isinstance(r, Ok) else r

    def blocking_skip(self, n: int) -> Ok | Err:
        r = self.blocking_read(n)
        return Ok(len(r.value)) if isinstance(r, Ok) else r

    def subscribe(self) -> Pollable:
        return Pollable(check=self._pipe.readable)

    def close(self) -> None:
        self._pipe.close_reader()


class ResponseBody(IncomingBody):
    def __init__(self, pipe: BytePipe) -> None:
        super().__init__(lambda n: b"")
        self._pipe = pipe

    def stream(self) -> Ok | Err:
        if self._streamed:
            return Err(None)
        self._streamed = True
        return Ok(PipeInputStream(self._pipe))

    def close(self) -> None:
        if not self._streamed:
            self._pipe.close_reader()


class IncomingResponse(HostResource):
    def __init__(self, head: ResponseHead) -> None:
        self._status = head.status
        self._headers = Fields(head.headers, immutable=True)
        self._pipe = head.body
        self._consumed = False

    def status(self) -> int:
        return self._status

    def headers(self) -> Fields:
        return self._headers.view()

    def consume(self) -> Ok | Err:
        if self._consumed:
            return Err(None)
        self._consumed = True
        return Ok(ResponseBody(self._pipe))

    def close(self) -> None:
        if not self._consumed:
            self._pipe.close_reader()


class FutureIncomingResponse(HostResource):
    def __init__(self, future: ResponseFuture) -> None:
        self._future = future
        self._taken = False

    def subscribe(self) -> Pollable:
        return Pollable(event=self._future.event)

    def get(self) -> Any:
        if not self._future.done():
            return None
        if self._taken:
            return Err(None)
        self._taken = True
        value = self._future.value()
        if isinstance(value, http_client.ResponseHead):
            return Ok(Ok(IncomingResponse(value)))
        return Ok(Err(value))


class _Denied(Exception):
    pass


# ------------------------------------------------------------------------------------------
# outgoing-handler.handle


def handle(ctx: CallContext, request: OutgoingRequest, options: RequestOptions | None) -> Ok | Err:
    state: HttpRequestState | None = request_state(ctx, KEY)
    if state is None:
        return Err(http_client.internal_error("outbound HTTP is not configured in this shim"))
    scheme_v = request.scheme_ or Variant("HTTPS")
    if scheme_v.tag == "other":
        return Err(http_client.error_code("HTTP-protocol-error"))
    scheme = scheme_v.tag.lower()
    method = method_text(request.method_)
    path = request.path_ if request.path_ is not None else "/"
    authority = request.authority_ or ""
    host = _host_of(authority)
    headers = [(n, v) for n, v in request.headers_.entries_ if n != "host"]  # Spin removes Host
    timeouts = options.timeouts() if options is not None else http_client.Timeouts()

    is_self = host == "" or host == "self.alt"
    if is_self:
        if not state.hosts.check_relative(["http", "https"]):
            return Err(http_client.error_code("HTTP-request-denied"))
    elif not state.hosts.check_url(f"{scheme}://{authority}{path}", "https"):
        return Err(http_client.error_code("HTTP-request-denied"))

    body_pipe: BytePipe | None = None
    if request.body_ is not None:
        body_pipe = BytePipe(http_client.BODY_PIPE_CAPACITY)

    chained = None if is_self else allowed_hosts.service_chaining_target(authority)
    if is_self or chained is not None:
        if state.app is None:
            return Err(http_client.internal_error("this shim has no app to serve in-process requests"))
        exchange = internal.start_internal(
            state.app, component_id=chained, method=method, path_with_query=path, headers=headers, body=body_pipe
        )
    else:
        exchange = http_client.start_request(
            method=method, url=f"{scheme}://{authority}{path}", headers=headers, body=body_pipe, timeouts=timeouts
        )
    state.track(exchange)
    if request.body_ is not None and body_pipe is not None:
        # After the worker started: a body the guest wrote before handle() may exceed the pipe.
        request.body_.attach(body_pipe)
        if request.body_.dropped_unfinished:
            body_pipe.abort(http_client.internal_error(BODY_DROPPED), "body dropped")
    return Ok(FutureIncomingResponse(exchange.future))


def _host_of(authority: str) -> str:
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        return hostport[: hostport.find("]") + 1] if "]" in hostport else hostport
    return hostport.rpartition(":")[0] if ":" in hostport else hostport


def _request_options_ctor(ctx: CallContext) -> RequestOptions:
    return RequestOptions()


def http_error_code(ctx: CallContext, err: IoError) -> Variant | None:
    return getattr(err, "error_code", None)


# ------------------------------------------------------------------------------------------
# registration on the shared wasi:http/types interface

types_iface.resource(
    "outgoing-request",
    OutgoingRequest,
    [
        "body",
        "method",
        "set-method",
        "path-with-query",
        "set-path-with-query",
        "scheme",
        "set-scheme",
        "authority",
        "set-authority",
        "headers",
    ],
)
types_iface.func("[constructor]outgoing-request", needs_ctx=False)(OutgoingRequest)
types_iface.resource(
    "request-options",
    RequestOptions,
    [
        "connect-timeout",
        "set-connect-timeout",
        "first-byte-timeout",
        "set-first-byte-timeout",
        "between-bytes-timeout",
        "set-between-bytes-timeout",
    ],
)
types_iface.func("[constructor]request-options")(_request_options_ctor)
types_iface.resource("future-incoming-response", FutureIncomingResponse, ["subscribe", "get"])
types_iface.resource("incoming-response", IncomingResponse, ["status", "headers", "consume"])
types_iface.func("http-error-code")(http_error_code)

outgoing_handler = Interface("wasi:http/outgoing-handler")
outgoing_handler.func("handle")(handle)

INTERFACES = [outgoing_handler]
