"""``fermyon:spin/redis@2.0.0``: outbound Redis for guests, over redis-py, under the allow-list.

As Spin's ``factor-outbound-redis``: ``connection.open(address)`` checks the address against the
component's ``allowed_outbound_hosts`` with scheme ``redis`` (denied: ``invalid-address``, and the
log line naming the entry that would allow it), then connects; each operation is one command
(``PUBLISH``, ``GET``, ``SET``, ``INCRBY key 1``, ``DEL``, ``SADD``, ``SMEMBERS``, ``SREM``, or any
command through ``execute``, whose reply is flattened into ``redis-result``s as Spin does).

Connections come from one redis-py pool per address, shared by all requests: ``open`` takes a
connection (connecting only when the pool has none idle) and the guest's drop, or the end of the
request, gives it back. redis-py runs with no response callbacks, so every command returns the
reply as Redis sent it, and a small parser subclass keeps status replies (``+OK``) apart from
bulk strings, which ``redis-result`` distinguishes (``status`` vs ``binary``).

Errors: a malformed address is ``invalid-address``; a wrong-type key (``WRONGTYPE``), or ``incr``
on a value that is not an integer, is ``type-error`` (the WIT's documented meaning; Spin itself
reports most of these as ``other``); everything else is ``other(<message>)``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

from kubespin_shim.host.binding import CallContext, Interface, request_state
from kubespin_shim.host.values import Err, HostResource, Ok, Variant
from kubespin_shim.lazy import lazy_import
from kubespin_shim.outbound.policy import RequestHosts

log = logging.getLogger("kubespin.shim.outbound.redis")

KEY = "outbound-redis"

#: Spin keeps at most this many connection handles per instance (its resource table's capacity).
MAX_CONNECTIONS_PER_REQUEST = 1024
#: Distinct addresses whose pools are kept; the least recently used pool is closed beyond it.
MAX_POOLS = 64
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0

INVALID_ADDRESS = Err(Variant("invalid-address"))
TOO_MANY = Err(Variant("too-many-connections"))
TYPE_ERROR = Err(Variant("type-error"))

redis = lazy_import("redis")


def other(message: str) -> Err:
    return Err(Variant("other", message))


class Status(bytes):
    """A RESP simple-string reply (``+OK``), as opposed to a bulk string."""


def _status_parser() -> type | None:
    """A redis-py RESP2 parser that returns simple strings as :class:`Status` (None if unavailable).

    redis-py's parser returns ``+OK`` and ``$2\\r\\nOK`` alike as ``b"OK"``; Status is a bytes
    subclass, so redis-py's own handshake checks still see bytes.
    """
    try:
        from redis._parsers import _RESP2Parser
    except ImportError:  # pragma: no cover - another redis-py layout
        return None
    base_read = _RESP2Parser._read_response

    class StatusAwareParser(_RESP2Parser):  # type: ignore[misc, valid-type]
        def _read_response(self, disable_decoding: bool = False, timeout: Any = None) -> Any:
            buffer = self._buffer
            if buffer is not None:
                pos = buffer.get_pos()
                kwargs = {} if timeout is None else {"timeout": timeout}
                first = buffer.readline(**kwargs)
                if first[:1] == b"+":
                    return Status(first[1:])
                buffer.rewind(pos)
            if timeout is None:
                return base_read(self, disable_decoding=disable_decoding)
            return base_read(self, disable_decoding=disable_decoding, timeout=timeout)

    return StatusAwareParser


_PARSER: list[type | None] = []  # built on first use: importing redis-py costs ~200 ms of a cold start
_pools: OrderedDict[str, redis.ConnectionPool] = OrderedDict()
_pools_lock = threading.Lock()


def pool_for(address: str) -> redis.ConnectionPool:
    """The shared pool for ``address``. Raises ValueError for an address redis-py cannot use."""
    with _pools_lock:
        pool = _pools.get(address)
        if pool is not None:
            _pools.move_to_end(address)
            return pool
    # RESP2, as Spin's redis-rs client speaks by default (redis-py 8 defaults to RESP3, whose replies
    # carry types that redis-result cannot express).
    kwargs: dict[str, Any] = {
        "protocol": 2,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
    }
    if not _PARSER:
        _PARSER.append(_status_parser())
    if _PARSER[0] is not None:
        kwargs["parser_class"] = _PARSER[0]
    pool = redis.ConnectionPool.from_url(address, **kwargs)
    with _pools_lock:
        existing = _pools.get(address)
        if existing is not None:
            pool.disconnect()
            return existing
        _pools[address] = pool
        while len(_pools) > MAX_POOLS:
            _, old = _pools.popitem(last=False)
            old.disconnect(inuse_connections=False)
    return pool


class RedisRequestState:
    """Per guest request: the allow-list view and the connections the guest holds."""

    __slots__ = ("__weakref__", "_open", "component_id", "hosts")

    def __init__(self, component_id: str, hosts: RequestHosts) -> None:
        self.component_id = component_id
        self.hosts = hosts
        self._open: list[Connection] | None = None

    def track(self, conn: Connection) -> bool:
        if self._open is None:
            self._open = []
            # Guests may never drop a connection and wasmtime runs no destructors: give them back
            # when the request's context goes away.
            weakref.finalize(self, _close_all, self._open)
        live = [c for c in self._open if not c.closed]
        if len(live) >= MAX_CONNECTIONS_PER_REQUEST:
            return False
        self._open[:] = [*live, conn]
        return True


def _close_all(conns: list[Connection]) -> None:
    for c in conns:
        c.close()


def _error(e: Exception, *, incr: bool = False) -> Err:
    text = str(e)
    wrong_type = text.startswith("WRONGTYPE") or (incr and "not an integer" in text)
    if isinstance(e, redis.ResponseError) and wrong_type:
        return TYPE_ERROR
    return other(text or type(e).__name__)


class Connection(HostResource):
    """``connection``: one pooled redis connection, held until the guest drops it."""

    def __init__(self, client: redis.Redis, address: str) -> None:
        self._client = client
        self.address = address
        self.closed = False

    @staticmethod
    def open(ctx: CallContext, address: str) -> Ok | Err:
        state: RedisRequestState | None = request_state(ctx, KEY)
        if state is None:
            return other("outbound Redis is not configured in this shim")
        if not state.hosts.check_url(address, "redis"):
            return INVALID_ADDRESS
        try:
            pool = pool_for(address)
        except ValueError as e:
            log.debug("component %r: redis address %r rejected: %s", state.component_id, address, e)
            return INVALID_ADDRESS
        try:
            client = redis.Redis(connection_pool=pool, single_connection_client=True)
        except redis.RedisError as e:
            return other(str(e))
        client.response_callbacks = {}  # replies exactly as Redis sent them
        conn = Connection(client, address)
        if not state.track(conn):
            conn.close()
            return TOO_MANY
        return Ok(conn)

    def _call(self, *args: Any, incr: bool = False) -> tuple[Any, Err | None]:
        """Run one command; (reply, None) or (None, the interface's error)."""
        if self.closed:
            return None, other("connection already closed")
        try:
            return self._client.execute_command(*args), None
        except redis.RedisError as e:
            return None, _error(e, incr=incr)

    def publish(self, channel: str, payload: bytes) -> Ok | Err:
        _, err = self._call("PUBLISH", channel, payload)
        return err or Ok(None)

    def get(self, key: str) -> Ok | Err:
        value, err = self._call("GET", key)
        return err or Ok(None if value is None else bytes(value))

    def set(self, key: str, value: bytes) -> Ok | Err:
        _, err = self._call("SET", key, value)
        return err or Ok(None)

    def incr(self, key: str) -> Ok | Err:
        value, err = self._call("INCRBY", key, 1, incr=True)
        return err or Ok(int(value))

    def delete(self, keys: list[str]) -> Ok | Err:
        value, err = self._call("DEL", *keys)
        return err or Ok(int(value))

    def sadd(self, key: str, values: list[str]) -> Ok | Err:
        value, err = self._call("SADD", key, *values)
        return err or Ok(int(value))

    def srem(self, key: str, values: list[str]) -> Ok | Err:
        value, err = self._call("SREM", key, *values)
        return err or Ok(int(value))

    def smembers(self, key: str) -> Ok | Err:
        value, err = self._call("SMEMBERS", key)
        if err is not None:
            return err
        try:
            return Ok([bytes(v).decode("utf-8") for v in value or []])
        except UnicodeDecodeError:
            return other(f"a member of set {key!r} is not valid UTF-8")

    def execute(self, command: str, arguments: list[Variant]) -> Ok | Err:
        args = [a.value for a in arguments]  # int64(s64) or binary(list<u8>): both go as is
        value, err = self._call(command, *args)
        if err is not None:
            return err
        out: list[Variant] = []
        try:
            _flatten(value, out)
        except TypeError as e:
            return other(str(e))
        return Ok(out)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._client.close()
            except redis.RedisError as e:  # pragma: no cover - releasing never talks to the server
                log.debug("closing redis connection to %s: %s", self.address, e)


def _flatten(value: Any, out: list[Variant]) -> None:
    """Spin's ``RedisResults``: nil, status, int64, binary; arrays flattened in order."""
    if value is None:
        out.append(Variant("nil"))
    elif isinstance(value, Status):
        out.append(Variant("status", bytes(value).decode("utf-8", "replace")))
    elif isinstance(value, bool):
        out.append(Variant("int64", int(value)))
    elif isinstance(value, int):
        out.append(Variant("int64", value))
    elif isinstance(value, (bytes, bytearray)):
        out.append(Variant("binary", bytes(value)))
    elif isinstance(value, str):
        out.append(Variant("binary", value.encode()))
    elif isinstance(value, float):
        out.append(Variant("binary", repr(value).encode()))
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            _flatten(item, out)
    elif isinstance(value, redis.ResponseError):
        raise TypeError(f"Server error: {value}")
    else:
        raise TypeError(f"Redis reply type {type(value).__name__} is not supported")


redis_iface = Interface("fermyon:spin/redis")
redis_iface.resource(
    "connection",
    Connection,
    ["publish", "get", "set", "incr", "sadd", "smembers", "srem", "execute"],
)
redis_iface.func("[static]connection.open")(Connection.open)
# `del` is a Python keyword: registered by hand onto Connection.delete.
redis_iface.func("[method]connection.del", needs_ctx=False)(lambda conn, keys: conn.delete(keys))

INTERFACES = [redis_iface]
