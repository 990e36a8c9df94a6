"""Spin feature probe (Python): one component, many routes, each proving one host capability.

It implements `wasi:http/incoming-handler` directly on spin-sdk's generated bindings instead of
the SDK's buffered `spin_sdk.http.IncomingHandler`, because it needs what the buffered helper
hides: the raw header entries, the authority and scheme, and a request body that is streamed
back without being held in memory (`POST /echo` must work for 5 MB).
Routes (see spin.toml and tests/apps/README.md for the contract the host tests rely on):
/headers/..., /echo, /variables[/<name>], /files/<name>, /env, /log, /trap, /loop, /random,
/time, /users/:id, /exact, /chain.
"""

from __future__ import annotations

import json
import mimetypes
import os
import sys
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from spin_sdk import http, variables
from spin_sdk.wit import exports
from spin_sdk.wit.imports import wasi_config_store
from spin_sdk.wit.imports.streams import InputStream, OutputStream, StreamError_Closed
from spin_sdk.wit.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Other,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Other,
)
from spin_sdk.wit.types import Err, Ok

STATIC_DIR = "/static"
READ_CHUNK = 64 * 1024


def error_text(err: Err) -> str:
    """Renders a WIT error variant as `kebab-case-name[: payload]`, e.g. `undefined: no variable`."""
    value = err.value
    if value is None:
        return "error"
    case = type(value).__name__.split("_", 1)[-1]
    name = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
    payload = getattr(value, "value", None)
    return f"{name}: {payload}" if payload is not None else name


def method_name(request: IncomingRequest) -> str:
    method = request.method()
    if isinstance(method, Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def scheme_name(request: IncomingRequest) -> str | None:
    scheme = request.scheme()
    if scheme is None:
        return None
    if isinstance(scheme, Scheme_Other):
        return scheme.value
    return type(scheme).__name__.removeprefix("Scheme_").lower()


def header_entries(request: IncomingRequest) -> list[tuple[str, str]]:
    with request.headers() as fields:
        return [(name, value.decode("utf-8", "replace")) for name, value in fields.entries()]


def write_all(stream: OutputStream, data: bytes) -> None:
    """Writes `data` honouring check-write permits (blocking-write-and-flush caps at 4096 bytes)."""
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


def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    """Streams the request body back chunk by chunk: response headers go out before the body is read."""
    content_type = dict(header_entries(request)).get("content-type", "application/octet-stream")
    response = OutgoingResponse(Fields.from_list([("content-type", content_type.encode())]))
    out_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    in_body = request.consume()
    with in_body.stream() as source, out_body.write() as sink:
        for chunk in read_chunks(source):
            write_all(sink, chunk)
    IncomingBody.finish(in_body).__exit__(None, None, None)
    OutgoingBody.finish(out_body, None)


def read_variable(name: str) -> dict[str, str]:
    try:
        return {"value": variables.get(name)}
    except Err as err:
        return {"error": error_text(err)}


def read_config(name: str) -> dict[str, str | None]:
    try:
        return {"value": wasi_config_store.get(name)}
    except Err as err:
        return {"error": error_text(err)}


def variables_report() -> dict[str, Any]:
    names = ("greeting", "secret_token")
    report: dict[str, Any] = {
        "spin": {name: read_variable(name) for name in names},
        "wasi_config": {name: read_config(name) for name in names},
    }
    try:
        report["wasi_config_all"] = dict(wasi_config_store.get_all())
    except Err as err:
        report["wasi_config_all"] = {"error": error_text(err)}
    return report


def serve_file(response_out: ResponseOutparam, name: str) -> None:
    path = f"{STATIC_DIR}/{name}" if name else STATIC_DIR
    try:
        if os.path.isdir(path):
            respond_json(response_out, 200, sorted(os.listdir(path)))
            return
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        respond(response_out, 404, f"not found: {path}\n")
        return
    except OSError as exc:
        respond(response_out, 500, f"{type(exc).__name__}: {exc}\n")
        return
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    respond(response_out, 200, data, content_type)


def trap(kind: str) -> None:
    """Ends the instance abnormally; each kind reaches the host differently (see README)."""
    if kind == "raise":
        raise RuntimeError("py-features: exception escaping the handler on purpose")
    if kind == "exit":
        sys.exit(3)
    os.abort()  # wasi-libc abort(): the `unreachable` instruction, a real wasm trap


def chain(response_out: ResponseOutparam) -> None:
    """Local service chaining: calls the private `hello` component of this app."""
    try:
        reply = http.send(http.Request("GET", "http://hello.spin.internal/", {}, None))
    except Err as err:
        respond(response_out, 502, f"chain failed: {error_text(err)}\n")
        return
    respond(response_out, reply.status, reply.body or b"")


class IncomingHandler(exports.IncomingHandler):
    """Dispatches on the path the guest sees (path-with-query without the query)."""

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        target = request.path_with_query() or "/"
        split = urlsplit(target)
        path = split.path
        query = parse_qs(split.query)
        method = method_name(request)

        if path == "/echo" and method == "POST":
            echo(request, response_out)
            return

        if path == "/headers" or path.startswith("/headers/"):
            entries = header_entries(request)
            headers: dict[str, str] = {}
            for name, value in entries:
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            respond_json(
                response_out,
                200,
                {
                    "method": method,
                    "path_with_query": request.path_with_query(),
                    "authority": request.authority(),
                    "scheme": scheme_name(request),
                    "headers": headers,
                    "header_entries": entries,
                },
            )
        elif path == "/variables":
            respond_json(response_out, 200, variables_report())
        elif path.startswith("/variables/"):
            result = read_variable(path.removeprefix("/variables/"))
            if "value" in result:
                respond(response_out, 200, result["value"])
            else:
                respond(response_out, 500, result["error"] + "\n")
        elif path == "/files" or path.startswith("/files/"):
            serve_file(response_out, unquote(path.removeprefix("/files").lstrip("/")))
        elif path == "/env":
            respond_json(response_out, 200, dict(os.environ))
        elif path == "/log":
            print("py-features: line on stdout", flush=True)
            print("py-features: line on stderr", file=sys.stderr, flush=True)
            respond(response_out, 200, "logged\n")
        elif path == "/trap":
            trap(query.get("kind", ["abort"])[0])
        elif path == "/loop":
            while True:
                pass
        elif path == "/random":
            respond(response_out, 200, os.urandom(16).hex() + "\n")
        elif path == "/time":
            respond_json(
                response_out,
                200,
                {"wall_ms": time.time_ns() // 1_000_000, "monotonic_ns": time.monotonic_ns()},
            )
        elif path.startswith("/users/"):
            respond_json(
                response_out,
                200,
                {"id": dict(header_entries(request)).get("spin-path-match-id"), "path": path},
            )
        elif path == "/exact":
            respond(response_out, 200, "exact\n")
        elif path == "/chain":
            chain(response_out)
        else:
            respond(response_out, 404, f"py-features has no route for {method} {path}\n")
