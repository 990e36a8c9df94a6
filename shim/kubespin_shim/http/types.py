"""wasi:http/types for the incoming side: requests, bodies, responses and the response outparam.

The response travels to the client through a :class:`ResponseChannel` the server provides. A guest
may create and write the response body before it hands the response to ``response-outparam.set``;
until then writes are buffered, afterwards they stream straight to the socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kubespin_shim.host.binding import Interface
from kubespin_shim.host.values import Err, HostResource, HostTrap, Ok, Variant
from kubespin_shim.http.fields import Fields
from kubespin_shim.wasi.io import InputStream, OutputStream, Pollable

METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
_METHOD_VARIANTS = {m: Variant(m.lower()) for m in METHODS}  # variants are immutable: one each
_SCHEME_VARIANTS = {s: Variant(s) for s in ("HTTP", "HTTPS")}


def method_text(v: Variant) -> str:
    return v.value if v.tag == "other" else v.tag.upper()


class ResponseChannel(Protocol):
    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self, trailers: list[tuple[str, bytes]] | None) -> None: ...
    def fail(self, reason: str) -> None: ...
    def flush(self) -> None: ...


class IncomingBody(HostResource):
    def __init__(self, source: Callable[[int], bytes]) -> None:
        self._source = source
        self._streamed = False

    def stream(self) -> Ok | Err:
        if self._streamed:
            return Err(None)
        self._streamed = True
        return Ok(InputStream(self._source))

    @staticmethod
    def finish(this: IncomingBody) -> FutureTrailers:
        return FutureTrailers()


class FutureTrailers(HostResource):
    def __init__(self) -> None:
        self._taken = False

    def subscribe(self) -> Pollable:
        return Pollable()

    def get(self) -> Any:
        if self._taken:
            return Err(None)
        self._taken = True
        return Ok(Ok(None))


class IncomingRequest(HostResource):
    def __init__(
        self,
        method: str,
        path_with_query: str,
        scheme: str,
        authority: str | None,
        headers: list[tuple[str, bytes]] | Callable[[], list[tuple[str, bytes]]],
        body_source: Callable[[int], bytes],
    ) -> None:
        """``headers``: the list, or a function that makes it, called if the guest asks for them (many
        guests never do; the server's list of Spin's headers is not free)."""
        self._method = _METHOD_VARIANTS.get(method) or Variant("other", method)
        self._path = path_with_query
        self._scheme = _SCHEME_VARIANTS.get(scheme) or Variant("other", scheme)
        self._authority = authority
        self._headers: Fields | list[tuple[str, bytes]] | Callable[[], list[tuple[str, bytes]]] = headers
        self._body: IncomingBody | None = IncomingBody(body_source)

    def method(self) -> Variant:
        return self._method

    def path_with_query(self) -> str | None:
        return self._path

    def scheme(self) -> Variant | None:
        return self._scheme

    def authority(self) -> str | None:
        return self._authority

    def headers(self) -> Fields:
        fields = self._headers
        if type(fields) is not Fields:  # made on the first call
            fields = self._headers = Fields(fields if isinstance(fields, list) else fields(), immutable=True)
        return fields.view()

    def consume(self) -> Ok | Err:
        body, self._body = self._body, None
        return Ok(body) if body is not None else Err(None)


class OutgoingBody(HostResource):
    """Buffers until bound to the client's channel by ``response-outparam.set``, then streams."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._channel: ResponseChannel | None = None
        self._stream_taken = False
        self.finished = False
        self.dropped_unfinished = False

    def _sink(self, data: bytes) -> None:
        if self.finished:
            raise BrokenPipeError("body already finished")
        if self._channel is not None:
            self._channel.write(data)
        else:
            self._buffer += data

    def bind(self, channel: ResponseChannel) -> None:
        self._channel = channel
        if self._buffer:
            channel.write(bytes(self._buffer))
            self._buffer.clear()
        if self.finished:
            channel.finish(None)

    def write(self) -> Ok | Err:
        if self._stream_taken:
            return Err(None)
        self._stream_taken = True
        return Ok(OutputStream(self._sink, self._flush))

    def _flush(self) -> None:
        if self._channel is not None:
            self._channel.flush()

    @staticmethod
    def finish(this: OutgoingBody, trailers: Fields | None) -> Ok:
        this.finished = True
        if this._channel is not None:
            this._channel.finish(trailers.entries_ if trailers is not None else None)
        return Ok(None)

    def close(self) -> None:
        if not self.finished:
            self.dropped_unfinished = True


class OutgoingResponse(HostResource):
    def __init__(self, headers: Fields) -> None:
        self.status = 200
        self.headers_ = headers
        self.body_: OutgoingBody | None = None

    def status_code(self) -> int:
        return self.status

    def set_status_code(self, code: int) -> Ok | Err:
        if not 100 <= code <= 999:
            return Err(None)
        self.status = code
        return Ok(None)

    def headers(self) -> Fields:
        return self.headers_.view()

    def body(self) -> Ok | Err:
        if self.body_ is not None:
            return Err(None)
        self.body_ = OutgoingBody()
        return Ok(self.body_)


class ResponseOutparam(HostResource):
    def __init__(self, channel: ResponseChannel) -> None:
        self.channel = channel
        self.response: OutgoingResponse | None = None
        self.error: Any = None
        self.set_called = False

    @staticmethod
    def set(param: ResponseOutparam, response: Ok | Err) -> None:
        if param.set_called:
            raise HostTrap("response-outparam.set called twice")
        param.set_called = True
        if isinstance(response, Err):
            param.error = response.value
            param.channel.fail(f"guest returned error {response.value!r}")
            return
        resp: OutgoingResponse = response.value
        param.response = resp
        param.channel.start(resp.status, resp.headers_.entries_)
        if resp.body_ is not None:
            resp.body_.bind(param.channel)


def _fields_ctor(ctx: object) -> Fields:
    return Fields()


types = Interface("wasi:http/types")
types.resource("fields", Fields, ["get", "has", "set", "delete", "append", "entries", "clone"])
types.func("[constructor]fields")(_fields_ctor)
types.func("[static]fields.from-list", needs_ctx=False)(Fields.from_list)
types.resource(
    "incoming-request", IncomingRequest, ["method", "path-with-query", "scheme", "authority", "headers", "consume"]
)
types.resource("incoming-body", IncomingBody, ["stream"])
types.func("[static]incoming-body.finish", needs_ctx=False)(IncomingBody.finish)
types.resource("future-trailers", FutureTrailers, ["subscribe", "get"])
types.resource("outgoing-response", OutgoingResponse, ["status-code", "set-status-code", "headers", "body"])
types.func("[constructor]outgoing-response", needs_ctx=False)(OutgoingResponse)
types.resource("outgoing-body", OutgoingBody, ["write"])
types.func("[static]outgoing-body.finish", needs_ctx=False)(OutgoingBody.finish)
types.resource("response-outparam", ResponseOutparam)
types.func("[static]response-outparam.set", needs_ctx=False)(ResponseOutparam.set)
types.func("http-error-code")(lambda ctx, err: None)

INTERFACES = [types]
