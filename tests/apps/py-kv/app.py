"""Key-value and SQLite probe (Python), written on spin-sdk's buffered `spin_sdk.http` helper.

Unlike py-features it uses the SDK the way Spin's own Python templates do (`handle_request`), so
the host is also exercised through that path. Errors from a store are answered as 500 with the
error text (`no-such-store`, `access-denied`, `store-table-full`, `other: <text>`) rather than the
SDK's empty 500, so tests can tell them apart.

Routes:
  GET/PUT/DELETE /kv/<label>/<key>   fermyon:spin/key-value: read (404 if missing), set body, delete
  GET /kv/<label>                    keys of the store, sorted JSON list
  POST /kv/<label>/<key>/incr        wasi:keyvalue/atomics increment by the body (default 1)
  GET/PUT/DELETE /wkv/<label>/<key>  the same through wasi:keyvalue/store; GET /wkv/<label> lists
  GET /sqlite[/<label>]              create table, insert one row of every type, select all
  POST /sqlite[/<label>]/execute     run {"sql": ..., "params": [[type, value], ...]}
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from spin_sdk import http, key_value, sqlite
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import atomics, wasi_keyvalue_store
from spin_sdk.wit.imports.sqlite import (
    Value,
    Value_Blob,
    Value_Integer,
    Value_Null,
    Value_Real,
    Value_Text,
)
from spin_sdk.wit.types import Err

SQL_TYPES = {"integer": Value_Integer, "real": Value_Real, "text": Value_Text, "blob": Value_Blob}


def error_text(err: Err) -> str:
    """Renders a WIT error variant as `kebab-case-name[: payload]`, e.g. `other: disk full`."""
    return variant_text(err.value)


def variant_text(value: object) -> str:
    if value is None:
        return "error"
    case = type(value).__name__.split("_", 1)[-1]
    name = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
    payload = getattr(value, "value", None)
    if payload is None:
        return name
    if hasattr(payload, "__dataclass_fields__"):  # e.g. a cas-error wrapping a store error
        return f"{name}: {variant_text(payload)}"
    return f"{name}: {payload}"


def text(status: int, body: str | bytes, content_type: str = "text/plain") -> Response:
    data = body.encode() if isinstance(body, str) else body
    return Response(status, {"content-type": content_type}, data)


def as_json(status: int, value: Any) -> Response:
    return text(status, json.dumps(value) + "\n", "application/json")


def spin_kv(method: str, label: str, key: str | None, body: bytes) -> Response:
    with key_value.open(label) as store:
        if key is None:
            if method != "GET":
                return text(405, f"{method} not allowed on a store\n")
            return as_json(200, sorted(store.get_keys()))
        if method == "GET":
            value = store.get(key)
            return text(404, f"no key {key!r} in {label!r}\n") if value is None else text(200, value)
        if method == "PUT":
            store.set(key, body)
            return text(200, "stored\n")
        if method == "DELETE":
            store.delete(key)
            return text(200, "deleted\n")
        return text(405, f"{method} not allowed on a key\n")


def wasi_kv(method: str, label: str, key: str | None, body: bytes) -> Response:
    with wasi_keyvalue_store.open(label) as bucket:
        if key is None:
            if method != "GET":
                return text(405, f"{method} not allowed on a bucket\n")
            keys: list[str] = []
            cursor: str | None = None
            while True:
                page = bucket.list_keys(cursor)
                keys.extend(page.keys)
                cursor = page.cursor
                if cursor is None:
                    return as_json(200, sorted(keys))
        if method == "GET":
            value = bucket.get(key)
            return text(404, f"no key {key!r} in {label!r}\n") if value is None else text(200, value)
        if method == "PUT":
            bucket.set(key, body)
            return text(200, "stored\n")
        if method == "DELETE":
            bucket.delete(key)
            return text(200, "deleted\n")
        return text(405, f"{method} not allowed on a key\n")


def increment(label: str, key: str, body: bytes) -> Response:
    delta = int(body.decode() or "1")
    with wasi_keyvalue_store.open(label) as bucket:
        return as_json(200, {"key": key, "value": atomics.increment(bucket, key, delta)})


def sql_value(value: Value) -> list[Any]:
    """Tags each value with its SQLite type so tests can check types, not just JSON values."""
    if isinstance(value, Value_Null):
        return ["null", None]
    if isinstance(value, Value_Blob):
        return ["blob", value.value.hex()]
    return [type(value).__name__.removeprefix("Value_").lower(), value.value]


def sql_param(tagged: list[Any]) -> Value:
    kind, value = tagged
    if kind == "null":
        return Value_Null()
    if kind == "blob":
        return Value_Blob(bytes.fromhex(value))
    return SQL_TYPES[kind](value)


def run_sql(label: str, statements: list[tuple[str, list[Value]]]) -> Response:
    with sqlite.open(label) as connection:
        result = None
        for statement, params in statements:
            result = connection.execute(statement, params)
    assert result is not None
    return as_json(
        200,
        {"columns": result.columns, "rows": [[sql_value(v) for v in row.values] for row in result.rows]},
    )


def sqlite_demo(label: str) -> Response:
    return run_sql(
        label,
        [
            (
                "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)",
                [],
            ),
            (
                "INSERT INTO probe (i, r, t, b, n) VALUES (?, ?, ?, ?, ?)",
                [Value_Integer(42), Value_Real(2.5), Value_Text("text ✓"), Value_Blob(b"\x00\xff"), Value_Null()],
            ),
            ("SELECT id, i, r, t, b, n FROM probe ORDER BY id", []),
        ],
    )


def sqlite_execute(label: str, body: bytes) -> Response:
    request = json.loads(body or b"{}")
    params = [sql_param(p) for p in request.get("params", [])]
    return run_sql(label, [(request["sql"], params)])


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        path = urlsplit(request.uri).path
        parts = [unquote(part) for part in path.strip("/").split("/")]
        body = request.body or b""
        method = request.method
        try:
            if parts[0] in ("kv", "wkv") and len(parts) >= 2:
                label = parts[1]
                if parts[0] == "kv" and len(parts) == 4 and parts[3] == "incr" and method == "POST":
                    return increment(label, parts[2], body)
                if len(parts) > 3:
                    return text(404, f"no route for {path}\n")
                key = parts[2] if len(parts) == 3 else None
                handler = spin_kv if parts[0] == "kv" else wasi_kv
                return handler(method, label, key, body)
            if parts[0] == "sqlite":
                label = parts[1] if len(parts) >= 2 and parts[1] != "execute" else "default"
                if parts[-1] == "execute" and method == "POST":
                    return sqlite_execute(label, body)
                return sqlite_demo(label)
        except Err as err:
            return text(500, error_text(err) + "\n")
        return text(404, f"py-kv has no route for {method} {path}\n")
