"""Outbound networking probe (Python, spin-sdk 3.4.1): each route makes one kind of outbound call.

Routes (paths under /restricted/ run the same code in a component with no allowed hosts):
- POST /proxy?url=U[&method=M][&connect_ms=N][&first_byte_ms=N][&between_bytes_ms=N]
    streams the request body to U with the raw wasi:http resources (blocking style: the body is
    written after outgoing-handler.handle returned) and streams the response back: same status,
    content-type and x-* headers. Failures: 502 with "error: <error-code case>".
- GET /send?url=U   the SDK's buffered `spin_sdk.http.send` (its asyncio poll loop); JSON answer.
- GET /self         `spin_sdk.http.send` to the relative URL /hello (the app itself).
- GET /chain        `spin_sdk.http.send` to http://outbound.spin.internal/hello (service chaining).
- GET /hello        JSON with the spin-* headers this component was called with.
- GET /redis?addr=A&key=K   every fermyon:spin/redis operation; JSON report.
- GET /redis/open?addr=A    opens a connection only: "ok" or "error: <case>".
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from spin_sdk import http, redis
from spin_sdk.wit import exports
from spin_sdk.wit.imports import outgoing_handler
from spin_sdk.wit.imports.redis import RedisParameter_Binary, RedisParameter_Int64
from spin_sdk.wit.imports.streams import InputStream, OutputStream, StreamError_Closed
from spin_sdk.wit.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Other,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    RequestOptions,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)
from spin_sdk.wit.types import Err, Ok

READ_CHUNK = 64 * 1024


def error_text(err: Err) -> str:
    """A WIT error variant as `kebab-case-name[: payload]`, e.g. `http-request-denied`."""
    value = err.value
    if value is None:
        return "error"
    case = type(value).__name__.split("_", 1)[-1]
    name = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
    payload = getattr(value, "value", None)
    return f"{name}: {payload}" if payload is not None else name


def write_all(stream: OutputStream, data: bytes) -> None:
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        permit = stream.check_write()
        if permit == 0:
            with stream.subscribe() as pollable:
                pollable.block()
            continue
        count = min(permit, len(data) - offset)
        stream.write(bytes(view[offset : offset + count]))
        offset += count
    stream.blocking_flush()


def read_chunks(stream: InputStream):
    while True:
        try:
            chunk = stream.blocking_read(READ_CHUNK)
        except Err as err:
            if isinstance(err.value, StreamError_Closed):
                return
            raise
        if chunk:
            yield chunk


def respond(response_out: ResponseOutparam, status: int, body: bytes | str, content_type: str = "text/plain") -> None:
    data = body.encode() if isinstance(body, str) else body
    headers = Fields.from_list([("content-type", content_type.encode()), ("content-length", str(len(data)).encode())])
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    out_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with out_body.write() as stream:
        write_all(stream, data)
    OutgoingBody.finish(out_body, None)


def respond_json(response_out: ResponseOutparam, status: int, value: Any) -> None:
    respond(response_out, status, json.dumps(value, sort_keys=True) + "\n", "application/json")


def header_entries(request: IncomingRequest) -> list[tuple[str, bytes]]:
    with request.headers() as fields:
        return fields.entries()


def method_variant(name: str):
    return {"GET": Method_Get(), "POST": Method_Post(), "PUT": Method_Put()}.get(name, Method_Other(name))


def proxy(request: IncomingRequest, response_out: ResponseOutparam, query: dict[str, str]) -> None:
    """Streams the client's body to `url` and the upstream response back, chunk by chunk."""
    url = urlsplit(query["url"])
    forwarded = [
        (n, v) for n, v in header_entries(request) if n in ("content-type", "content-length") or n.startswith("x-")
    ]
    outgoing = OutgoingRequest(Fields.from_list(forwarded))
    outgoing.set_method(method_variant(query.get("method", "POST")))
    outgoing.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
    outgoing.set_authority(url.netloc)
    outgoing.set_path_with_query(url.path + ("?" + url.query if url.query else ""))
    options = RequestOptions()
    if "connect_ms" in query:
        options.set_connect_timeout(int(query["connect_ms"]) * 1_000_000)
    if "first_byte_ms" in query:
        options.set_first_byte_timeout(int(query["first_byte_ms"]) * 1_000_000)
    if "between_bytes_ms" in query:
        options.set_between_bytes_timeout(int(query["between_bytes_ms"]) * 1_000_000)
    out_body = outgoing.body()
    try:
        future = outgoing_handler.handle(outgoing, options)
    except Err as err:
        respond(response_out, 502, f"error: {error_text(err)}\n")
        return
    # The body goes out after handle() returned, as WASIp2 intends.
    in_body = request.consume()
    with in_body.stream() as source, out_body.write() as sink:
        for chunk in read_chunks(source):
            write_all(sink, chunk)
    OutgoingBody.finish(out_body, None)
    with future.subscribe() as pollable:
        pollable.block()
    result = future.get()
    if result is None or isinstance(result, Err):
        respond(response_out, 500, "future not ready after block()\n")
        return
    if isinstance(result.value, Err):
        respond(response_out, 502, f"error: {error_text(result.value)}\n")
        return
    upstream = result.value.value
    with upstream.headers() as fields:
        passed = [(n, v) for n, v in fields.entries() if n == "content-type" or n.startswith("x-")]
    response = OutgoingResponse(Fields.from_list(passed))
    response.set_status_code(upstream.status())
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    upstream_body = upstream.consume()
    with upstream_body.stream() as source, body.write() as sink:
        for chunk in read_chunks(source):
            write_all(sink, chunk)
    OutgoingBody.finish(body, None)


def send(response_out: ResponseOutparam, url: str) -> None:
    try:
        reply = http.send(http.Request("GET", url, {}, None))
    except Err as err:
        respond(response_out, 502, f"error: {error_text(err)}\n")
        return
    respond_json(
        response_out,
        200,
        {"status": reply.status, "headers": reply.headers, "body": (reply.body or b"").decode("utf-8", "replace")},
    )


def describe(result: Any) -> list[Any]:
    kind = type(result).__name__.removeprefix("RedisResult_").lower()
    value = getattr(result, "value", None)
    return [kind, value.decode() if isinstance(value, bytes) else value]


def redis_report(addr: str, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        conn = redis.open(addr)
    except Err as err:
        return {"open": f"error: {error_text(err)}"}
    with conn:
        conn.set(key, b"v1")
        out["get"] = conn.get(key).decode()
        out["get_missing"] = conn.get(key + ":missing")
        out["incr"] = [conn.incr(key + ":n"), conn.incr(key + ":n")]
        try:
            conn.incr(key)
            out["incr_text"] = "no error"
        except Err as err:
            out["incr_text"] = f"error: {error_text(err)}"
        out["sadd"] = conn.sadd(key + ":s", ["a", "b", "c"])
        out["srem"] = conn.srem(key + ":s", ["b", "zz"])
        out["smembers"] = sorted(conn.smembers(key + ":s"))
        try:
            conn.sadd(key, ["x"])
            out["sadd_wrong_type"] = "no error"
        except Err as err:
            out["sadd_wrong_type"] = f"error: {error_text(err)}"
        out["execute"] = {
            "incrby": [
                describe(r)
                for r in conn.execute("INCRBY", [RedisParameter_Binary((key + ":n").encode()), RedisParameter_Int64(5)])
            ],
            "get": [describe(r) for r in conn.execute("GET", [RedisParameter_Binary(key.encode())])],
            "get_missing": [describe(r) for r in conn.execute("GET", [RedisParameter_Binary(b"no:such:key")])],
            "ping": [describe(r) for r in conn.execute("PING", [])],
            "smembers": sorted(
                describe(r)[1] for r in conn.execute("SMEMBERS", [RedisParameter_Binary((key + ":s").encode())])
            ),
        }
        try:
            conn.execute("NOSUCHCOMMAND", [])
            out["execute_bad"] = "no error"
        except Err as err:
            out["execute_bad"] = f"error: {error_text(err)}"[:40]
        conn.publish(key + ":chan", b"hello")
        out["publish"] = "ok"
        out["del"] = conn.del_([key, key + ":n", key + ":s", key + ":absent"])
        out["get_after_del"] = conn.get(key)
    return out


def redis_open(addr: str) -> str:
    try:
        with redis.open(addr):
            return "ok"
    except Err as err:
        return f"error: {error_text(err)}"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        split = urlsplit(request.path_with_query() or "/")
        path = split.path.removeprefix("/restricted")
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        if path == "/proxy":
            proxy(request, response_out, query)
        elif path == "/send":
            send(response_out, query["url"])
        elif path == "/self":
            send(response_out, "/hello")
        elif path == "/chain":
            send(response_out, "http://outbound.spin.internal/hello?via=chain")
        elif path == "/hello":
            spin = {n: v.decode() for n, v in header_entries(request) if n.startswith("spin-") or n == "host"}
            respond_json(
                response_out, 200, {"hello": "py-outbound", "path": request.path_with_query(), "headers": spin}
            )
        elif path == "/redis":
            respond_json(response_out, 200, redis_report(query["addr"], query.get("key", "k")))
        elif path == "/redis/open":
            respond(response_out, 200, redis_open(query["addr"]) + "\n")
        else:
            respond(response_out, 404, f"py-outbound has no route {path}\n")
