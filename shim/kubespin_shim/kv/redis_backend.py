"""``type = "redis"`` key-value stores (``url = "redis://host:port/db"``), with the ``redis`` client.

As in Spin's key-value-redis, a Redis database is one keyspace: the label only chooses which
database, and ``get-keys`` lists the whole database. Counters are Redis integers (``INCRBY``),
so other Redis clients can read and update them.

Atomic across replicas: ``INCRBY`` is one server-side command; compare-and-swap is ``SET … NX``
when the key was absent and a two-line Lua script (compare, then set) otherwise, which Redis runs
without interleaving another client. No connection is held between ``current`` and ``swap``.

Failure handling, so that a Redis outage never takes the shim down: the client connects lazily,
a connect attempt gives up after ``connect_timeout`` seconds and a command after
``command_timeout``, and a command is retried once on a fresh connection (the pooled connection of
a restarted server is dead; the retry is what makes the first request after a restart succeed).
Every ``RedisError`` becomes a :class:`BackendError` naming the server, which the guest receives as
``other(<message>)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kubespin_shim.kv.base import BackendError, KeyValueBackend, KeyValueStore
from kubespin_shim.lazy import lazy_import

redis = lazy_import("redis")

T = TypeVar("T")

_CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def describe_redis_url(url: str) -> str:
    """``"Redis at 10.0.0.5:6379 db 1"`` (never the password); raises ValueError for a bad URL."""
    parts = redis.connection.parse_url(url)
    where = parts.get("path") or f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}"
    return f"Redis at {where} db {parts.get('db', 0)}"


class RedisBackend(KeyValueBackend):
    def __init__(self, url: str, *, connect_timeout: float = 2.0, command_timeout: float = 5.0) -> None:
        self.url = url
        try:
            self.summary = describe_redis_url(url)
        except ValueError as e:
            raise BackendError(f"invalid Redis URL: {e}") from None
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1),
        )
        self._cas = self.client.register_script(_CAS_SCRIPT)

    def store(self, label: str) -> RedisStore:
        return RedisStore(self)

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        try:
            return fn(self.client)
        except redis.RedisError as e:
            raise BackendError(f"{self.summary}: {_reason(e)}") from None
        except (OSError, ValueError, AttributeError) as e:
            # What redis-py raises when its socket is torn down under a command (a pool closed
            # while in use): still a failure of the backend, never a reason to trap the guest.
            raise BackendError(f"{self.summary}: connection failed: {type(e).__name__}: {e}") from None


def _reason(e: redis.RedisError) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, redis.ConnectionError | redis.TimeoutError):
        return f"unreachable: {text}"
    return text


def _key(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class RedisStore(KeyValueStore):
    __slots__ = ("backend",)

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend

    def get(self, key: str) -> bytes | None:
        return self.backend.call(lambda r: r.get(key))

    def set(self, key: str, value: bytes) -> None:
        self.backend.call(lambda r: r.set(key, value))

    def delete(self, key: str) -> None:
        self.backend.call(lambda r: r.delete(key))

    def exists(self, key: str) -> bool:
        return bool(self.backend.call(lambda r: r.exists(key)))

    def keys(self) -> list[str]:
        # SCAN in pages rather than KEYS: the server keeps answering other clients meanwhile.
        return self.backend.call(lambda r: sorted(_key(k) for k in r.scan_iter(count=1000)))

    def get_many(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        if not keys:
            return []
        values = self.backend.call(lambda r: r.mget(keys))
        return list(zip(keys, values, strict=True))

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        mapping = dict(items)
        if mapping:
            self.backend.call(lambda r: r.mset(mapping))

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.backend.call(lambda r: r.delete(*keys))

    def increment(self, key: str, delta: int) -> int:
        return int(self.backend.call(lambda r: r.incrby(key, delta)))

    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool:
        if expected is None:
            return bool(self.backend.call(lambda r: r.set(key, new, nx=True)))
        return bool(self.backend.call(lambda r: self.backend._cas(keys=[key], args=[expected, new], client=r)))
