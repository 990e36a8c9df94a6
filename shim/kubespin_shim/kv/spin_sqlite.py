"""``type = "spin"`` key-value stores: a SQLite file in Spin's own format.

The table is Spin's ``spin_key_value (store, key, value)`` with the label in ``store``, and counters
are 8-byte little-endian integers, exactly as Spin's key-value-spin writes them: a ``.spin``
directory can move between ``spin up`` and ``kubespin up`` and keep its data.

Atomicity across processes (replicas sharing a volume): increment runs in a ``BEGIN IMMEDIATE``
transaction, which takes the database's write lock before reading, so two processes cannot both
read the old value. Compare-and-swap is a single conditional ``UPDATE`` (or an ``INSERT`` that
does nothing on conflict when the key was absent): SQLite applies one statement atomically.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from kubespin_shim.kv.base import BackendError, KeyValueBackend, KeyValueStore
from kubespin_shim.kv.sqlite_pool import SqlitePool

T = TypeVar("T")

_SCHEMA = """CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key   TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)"""
_GET = "SELECT value FROM spin_key_value WHERE store = ? AND key = ?"
_UPSERT = (
    "INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM spin_key_value WHERE store = ? AND key = ?"
_EXISTS = "SELECT 1 FROM spin_key_value WHERE store = ? AND key = ?"
_KEYS = "SELECT key FROM spin_key_value WHERE store = ? ORDER BY key"
_SWAP_EXISTING = "UPDATE spin_key_value SET value = ? WHERE store = ? AND key = ? AND value = ?"
_SWAP_ABSENT = "INSERT INTO spin_key_value (store, key, value) VALUES (?, ?, ?) ON CONFLICT (store, key) DO NOTHING"

_MAX_PARAMS = 500  # stay well below SQLITE_MAX_VARIABLE_NUMBER on old builds
_I64 = (-(1 << 63), (1 << 63) - 1)


class SpinSqliteBackend(KeyValueBackend):
    """A SQLite key-value file (``path``), or a private in-memory database when ``path`` is None."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.summary = f"SQLite file {path}" if path is not None else "a temporary in-memory SQLite store"
        self.pool = SqlitePool(path, on_open=lambda c: c.execute(_SCHEMA), describe=self.summary)

    def store(self, label: str) -> SpinSqliteStore:
        return SpinSqliteStore(self, label)

    def close(self) -> None:
        self.pool.close()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self.pool.connection() as conn:
                return fn(conn)
        except sqlite3.Error as e:
            raise BackendError(f"{self.summary}: {e}") from None

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` holding the database's write lock (``BEGIN IMMEDIATE``) from the first read."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
            return out

        return self.run(tx)


class SpinSqliteStore(KeyValueStore):
    __slots__ = ("backend", "label")

    def __init__(self, backend: SpinSqliteBackend, label: str) -> None:
        self.backend = backend
        self.label = label

    def get(self, key: str) -> bytes | None:
        row = self.backend.run(lambda c: c.execute(_GET, (self.label, key)).fetchone())
        return None if row is None else bytes(row[0])

    def set(self, key: str, value: bytes) -> None:
        self.backend.run(lambda c: c.execute(_UPSERT, (self.label, key, value)).close())

    def delete(self, key: str) -> None:
        self.backend.run(lambda c: c.execute(_DELETE, (self.label, key)).close())

    def exists(self, key: str) -> bool:
        return self.backend.run(lambda c: c.execute(_EXISTS, (self.label, key)).fetchone()) is not None

    def keys(self) -> list[str]:
        return self.backend.run(lambda c: [r[0] for r in c.execute(_KEYS, (self.label,))])

    def get_many(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        found: dict[str, bytes] = {}

        def read(conn: sqlite3.Connection) -> None:
            unique = list(dict.fromkeys(keys))
            for i in range(0, len(unique), _MAX_PARAMS):
                chunk = unique[i : i + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT key, value FROM spin_key_value WHERE store = ? AND key IN ({marks})"
                for k, v in conn.execute(sql, (self.label, *chunk)):
                    found[k] = bytes(v)

        self.backend.run(read)
        return [(k, found.get(k)) for k in keys]

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        rows = [(self.label, k, v) for k, v in items]
        self.backend.transaction(lambda c: c.executemany(_UPSERT, rows))

    def delete_many(self, keys: Iterable[str]) -> None:
        rows = [(self.label, k) for k in keys]
        self.backend.transaction(lambda c: c.executemany(_DELETE, rows))

    def increment(self, key: str, delta: int) -> int:
        def incr(conn: sqlite3.Connection) -> int:
            row = conn.execute(_GET, (self.label, key)).fetchone()
            current = 0
            if row is not None:
                raw = bytes(row[0])
                if len(raw) != 8:
                    raise _NotACounter(
                        f"{self.backend.summary}: the value of {key!r} in store {self.label!r} is not a counter "
                        f"(Spin stores counters as 8-byte little-endian integers; found {len(raw)} bytes)"
                    )
                current = int.from_bytes(raw, "little", signed=True)
            new = current + delta
            if not _I64[0] <= new <= _I64[1]:
                raise _NotACounter(f"incrementing {key!r} by {delta} overflows a signed 64-bit integer")
            conn.execute(_UPSERT, (self.label, key, new.to_bytes(8, "little", signed=True)))
            return new

        try:
            return self.backend.transaction(incr)
        except _NotACounter as e:
            raise BackendError(str(e)) from None

    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool:
        if expected is None:
            changed = self.backend.run(lambda c: c.execute(_SWAP_ABSENT, (self.label, key, new)).rowcount)
        else:
            changed = self.backend.run(lambda c: c.execute(_SWAP_EXISTING, (new, self.label, key, expected)).rowcount)
        return changed == 1


class _NotACounter(Exception):
    pass
