"""Outbound HTTP on the host side: ``outgoing-handler.handle`` and the resources a guest drives,
called as the host-call layer would call them, against a real HTTP server on 127.0.0.1.

The full path through a real guest (component-model ABI included) is in
tests/integration/test_shim_outbound.py; here each behaviour is isolated and timed tightly.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from kubespin_shim.host.binding import CallContext
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.http.fields import Fields
from kubespin_shim.manifest import VariableDecl
from kubespin_shim.outbound import wasi_http
from kubespin_shim.outbound.http_client import error_code_for
from kubespin_shim.outbound.policy import ComponentPolicy, RequestHosts, app_renderer
from kubespin_shim.outbound.wasi_http import (
    FutureIncomingResponse,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
    handle,
    http_error_code,
)
from kubespin_shim.variables import Resolver, StaticProvider
from kubespin_shim.wasi.io import CLOSED, OutputStream, poll

from tests.unit.test_outbound_upstream import Upstream, pattern


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def context(hosts: list[str], *, variables: object | None = None, component: str = "web") -> CallContext:
    policy = ComponentPolicy(component, hosts, [component, "other"])
    ctx = CallContext(component)
    ctx.extras["variables"] = variables
    ctx.extras[wasi_http.KEY] = wasi_http.HttpRequestState(
        component, RequestHosts(policy, lambda: app_renderer(ctx.extras.get("variables"))), None
    )
    return ctx


def request(method: str, url: str, headers: list[tuple[str, bytes]] = ()) -> OutgoingRequest:  # type: ignore[assignment]
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    req = OutgoingRequest(Fields.from_list(list(headers)).value)
    assert isinstance(req.set_method(Variant(method.lower()) if method != "PROPFIND" else Variant("other", method)), Ok)
    assert isinstance(req.set_scheme(Variant(scheme.upper())), Ok)
    assert isinstance(req.set_authority(authority), Ok)
    assert isinstance(req.set_path_with_query(slash + path), Ok)
    return req


def wait(ctx: CallContext, future: FutureIncomingResponse, timeout: float = 10) -> Ok | Err:
    t0 = time.monotonic()
    poll(ctx, [future.subscribe()])
    assert time.monotonic() - t0 < timeout
    result = future.get()
    assert result is not None
    assert isinstance(result, Ok)
    return result.value


def write_body(body: object, chunks: list[bytes]) -> None:
    stream = body.write().value  # type: ignore[attr-defined]
    assert isinstance(stream, OutputStream)
    for chunk in chunks:
        assert isinstance(stream.write(chunk), Ok)
    type(body).finish(body, None)  # type: ignore[attr-defined]


def read_all(ctx: CallContext, response: IncomingResponse) -> bytes:
    """Reads the way spin-sdk's poll loop does: non-blocking read, poll on empty."""
    body = response.consume().value
    stream = body.stream().value
    out = bytearray()
    while True:
        r = stream.read(16 * 1024)
        if r is CLOSED or (isinstance(r, Err) and r.value.tag == "closed"):
            return bytes(out)
        assert isinstance(r, Ok), r
        if not r.value:
            poll(ctx, [stream.subscribe()])
        out += r.value


def test_streamed_body_both_ways(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    data = pattern(1 << 20)
    req = request("POST", upstream.url("/echo"), [("content-type", b"application/octet-stream")])
    body = req.body().value
    result = handle(ctx, req, None)
    assert isinstance(result, Ok), result
    # WASIp2: the body is written after handle() returned, in chunks
    write_body(body, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    response = wait(ctx, result.value).value
    assert response.status() == 200
    headers = dict(response.headers().entries())
    assert headers[b"x-received-sha256".decode()] == hashlib.sha256(data).hexdigest().encode()
    assert headers["x-received-te"] == b"chunked"  # no content-length given: streamed chunked
    assert read_all(ctx, response) == data
    seen = upstream.seen[-1]
    assert (seen.method, seen.path, seen.body_length) == ("POST", "/echo", len(data))


def test_body_written_before_handle_larger_than_the_pipe(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    data = pattern(3 << 20)
    req = request("PUT", upstream.url("/echo"), [("content-length", str(len(data)).encode())])
    body = req.body().value
    write_body(body, [data])  # all buffered in the body before handle()
    response = wait(ctx, handle(ctx, req, None).value).value
    assert dict(response.headers().entries())["x-received-te"] == b"identity"
    assert dict(response.headers().entries())["x-received-method"] == b"PUT"
    assert read_all(ctx, response) == data


def test_headers_on_the_wire_are_the_guests_only(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    req = request("GET", upstream.url("/plain"), [("x-trace", b"abc"), ("host", b"evil.example")])
    response = wait(ctx, handle(ctx, req, None).value).value
    assert read_all(ctx, response) == b"hello from upstream /plain\n"
    seen = dict(upstream.seen[-1].headers)
    assert seen["x-trace"] == "abc"
    assert seen["host"] == upstream.authority  # the guest's Host is dropped, as Spin does
    for added in ("accept-encoding", "user-agent", "accept", "transfer-encoding", "content-length"):
        assert added not in seen, f"the shim added {added}"


def test_response_body_is_passed_through_undecoded(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    response = wait(ctx, handle(ctx, request("GET", upstream.url("/gzip")), None).value).value
    assert dict(response.headers().entries())["content-encoding"] == b"gzip"
    raw = read_all(ctx, response)
    assert raw[:2] == b"\x1f\x8b"  # gzip magic: not decompressed


def test_denied_destination_returns_the_error_and_logs_the_fix(
    upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(["https://api.example.com"])
    with caplog.at_level(logging.WARNING, logger="kubespin.shim.outbound"):
        result = handle(ctx, request("GET", upstream.url("/x")), None)
    assert result == Err(Variant("HTTP-request-denied"))
    assert f"add \"http://{upstream.authority}\" to allowed_outbound_hosts of component 'web'" in caplog.text
    assert all(s.path != "/x" for s in upstream.seen)  # nothing was sent
    # the same with a default port: the suggestion leaves it out
    with caplog.at_level(logging.WARNING, logger="kubespin.shim.outbound"):
        assert handle(ctx, request("GET", "https://other.example.com:443/"), None) == Err(
            Variant("HTTP-request-denied")
        )
    assert 'add "https://other.example.com" to allowed_outbound_hosts' in caplog.text


def test_relative_requests_need_self() -> None:
    ctx = context(["https://example.com"])
    req = request("GET", "http://:443/hello")  # what spin-sdk sends for a relative URL
    assert handle(ctx, req, None) == Err(Variant("HTTP-request-denied"))
    # allowed but no app to route it in this unit test: the in-process path is reached
    ctx = context(["http://self"])
    assert handle(ctx, request("GET", "http://:443/hello"), None) == Err(
        Variant("internal-error", "this shim has no app to serve in-process requests")
    )
    assert handle(context(["http://self"]), request("GET", "http://self.alt/x"), None).value.tag == "internal-error"


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        ctx = context(["http://127.0.0.1:*"])
        result = wait(ctx, handle(ctx, request("GET", f"http://127.0.0.1:{port}/"), None).value)
    assert result == Err(Variant("connection-refused"))


def test_connect_timeout_from_request_options() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=1)  # the accept queue is now full
        try:
            ctx = context(["http://127.0.0.1:*"])
            options = RequestOptions()
            options.set_connect_timeout(200_000_000)
            t0 = time.monotonic()
            result = wait(ctx, handle(ctx, request("GET", f"http://127.0.0.1:{port}/"), options).value)
            assert time.monotonic() - t0 < 5
        finally:
            filler.close()
    assert result == Err(Variant("connection-timeout"))


def test_first_byte_timeout(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    options = RequestOptions()
    options.set_first_byte_timeout(200_000_000)
    assert options.first_byte_timeout() == 200_000_000
    t0 = time.monotonic()
    result = wait(ctx, handle(ctx, request("GET", upstream.url("/slow-head?ms=3000")), options).value)
    assert result == Err(Variant("connection-read-timeout"))
    assert time.monotonic() - t0 < 2.5


def test_between_bytes_timeout_fails_the_body_stream(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    options = RequestOptions()
    options.set_first_byte_timeout(5_000_000_000)
    options.set_between_bytes_timeout(200_000_000)
    response = wait(ctx, handle(ctx, request("GET", upstream.url("/slow-body?ms=3000")), options).value).value
    stream = response.consume().value.stream().value
    assert stream.blocking_read(100) == Ok(b"01234")
    failed = stream.blocking_read(100)
    assert isinstance(failed, Err) and failed.value.tag == "last-operation-failed"
    assert http_error_code(ctx, failed.value.value) == Variant("connection-read-timeout")
    assert stream.blocking_read(100) is CLOSED


def test_server_hanging_up_before_answering(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    result = wait(ctx, handle(ctx, request("GET", upstream.url("/hang-up")), None).value)
    assert result == Err(Variant("connection-terminated"))


def test_future_semantics(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    future = handle(ctx, request("GET", upstream.url("/slow-head?ms=300")), None).value
    assert future.get() is None  # not ready yet: the guest must poll
    assert not future.subscribe().ready()
    response = wait(ctx, future).value
    assert future.get() == Err(None)  # a second get after it resolved
    assert response.consume().value is not None
    assert response.consume() == Err(None)


def test_request_resource_validation() -> None:
    req = OutgoingRequest(Fields())
    assert req.method() == Variant("get") and req.scheme() is None and req.path_with_query() is None
    assert req.set_method(Variant("other", "BAD METHOD")) == Err(None)
    assert req.set_method(Variant("other", "PROPFIND")) == Ok(None)
    assert req.set_authority("bad host/x") == Err(None)
    assert req.set_path_with_query("/a b") == Err(None)
    assert req.set_scheme(Variant("other", "1nope")) == Err(None)
    assert req.body().value is not None and req.body() == Err(None)
    assert req.headers().set("x", [b"y"]) == Err(Variant("immutable"))
    ctx = context(["*://*:*"])
    req = OutgoingRequest(Fields())
    req.set_scheme(Variant("other", "ftp"))
    req.set_authority("127.0.0.1:21")
    assert handle(ctx, req, None) == Err(Variant("HTTP-protocol-error"))


def test_dropping_the_body_unfinished_fails_the_request(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    req = request("POST", upstream.url("/echo"))
    body = req.body().value
    future = handle(ctx, req, None).value
    body.write().value.write(b"partial")
    body.close()  # the guest dropped it without outgoing-body.finish
    result = wait(ctx, future)
    assert isinstance(result, Err), result


def test_body_dropped_before_handle_fails_the_request(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    req = request("POST", upstream.url("/echo"))
    body = req.body().value
    body.write().value.write(b"partial")
    body.close()
    result = wait(ctx, handle(ctx, req, None).value, timeout=5)
    assert isinstance(result, Err), result


def test_template_hosts_resolve_from_app_variables(upstream: Upstream) -> None:
    decls = {"api_host": VariableDecl("api_host", "127.0.0.1:1", False, False)}
    resolver = Resolver(decls, [StaticProvider({"api_host": upstream.authority})])
    variables = resolver.component_getter({}, component_id="web")
    ctx = context(["http://{{ api_host }}"], variables=variables)
    response = wait(ctx, handle(ctx, request("GET", upstream.url("/tmpl")), None).value).value
    assert read_all(ctx, response) == b"hello from upstream /tmpl\n"
    # a host the variable does not name stays denied
    assert handle(ctx, request("GET", "http://127.0.0.1:1/"), None) == Err(Variant("HTTP-request-denied"))
    # no variables at all: templates cannot resolve, so nothing is allowed
    ctx = context(["http://{{ api_host }}"], variables=None)
    assert handle(ctx, request("GET", upstream.url("/tmpl")), None) == Err(Variant("HTTP-request-denied"))


def test_requests_in_flight_are_cancelled_when_the_guest_request_ends(upstream: Upstream) -> None:
    ctx = context([f"http://{upstream.authority}"])
    future = handle(ctx, request("GET", upstream.url("/bytes?n=20000000")), None).value
    wait(ctx, future)
    state = ctx.extras[wasi_http.KEY]
    threads = [ex.thread for ex in state._exchanges]
    assert threads and threads[0].is_alive()  # 20 MB do not fit the 1 MB pipe: the worker waits
    del state, future
    ctx.extras.clear()
    gc.collect()
    threads[0].join(5)
    assert not threads[0].is_alive(), "the worker kept running after its request ended"


def test_dns_failure_maps_to_dns_error() -> None:
    # httpx raises ConnectError from httpcore's ConnectError from the resolver's gaierror.
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as e:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from e
    except httpx.ConnectError as err:
        code = error_code_for(err)
    assert code == Variant("DNS-error", {"rcode": "address not available", "info-code": 0})


def test_the_factor_makes_a_requests_state_on_its_first_outbound_call(upstream: Upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kubespin_shim.factors.outbound_http import OutboundHttpFactor
    from kubespin_shim.host.binding import Deferred, request_state
    from kubespin_shim.manifest import load_app

    d = tmp_path / "app"
    d.mkdir()
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(
        'spin_manifest_version = 2\n[application]\nname = "a"\n[[trigger.http]]\nroute = "/..."\ncomponent = "web"\n'
        f'[component.web]\nsource = "app.wasm"\nallowed_outbound_hosts = ["http://{upstream.authority}"]\n'
    )
    app = load_app(d, work_dir=tmp_path / "work")
    factor = OutboundHttpFactor(app)
    component = app.components["web"]
    factor.configure(component)
    first, second = CallContext("web"), CallContext("web")
    factor.prepare(first, component)
    factor.prepare(second, component)
    # Nothing is made for a request that never calls out: both hold the component's one Deferred.
    assert type(first.extras[wasi_http.KEY]) is Deferred and first.extras[wasi_http.KEY] is second.extras[wasi_http.KEY]
    response = wait(first, handle(first, request("GET", upstream.url("/plain")), None).value).value
    assert response.status() == 200
    state = first.extras[wasi_http.KEY]
    assert type(state) is wasi_http.HttpRequestState and request_state(first, wasi_http.KEY) is state
    # The other request's state is its own, made on its own first use, under the same allow-list.
    assert type(second.extras[wasi_http.KEY]) is Deferred
    assert request_state(second, wasi_http.KEY) is not state
    denied = handle(second, request("GET", "http://denied.example/"), None)
    assert denied == Err(Variant("HTTP-request-denied"))
