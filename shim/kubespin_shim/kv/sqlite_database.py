"""``[sqlite_database.<label>]`` with ``type = "spin"``: a local SQLite database for guest SQL.

Each guest ``connection`` handle gets a :class:`DatabaseSession`. A session borrows a pooled
connection for one statement and gives it back, unless the statement left a transaction open
(a guest's ``BEGIN``): then it keeps that connection until the transaction ends, so a multi-call
transaction sees its own writes, as it would on the dedicated connection Spin opens per handle.
A session closed (or a request ended) mid-transaction rolls it back.

``ATTACH`` of a file is refused unless ``allow_attach_file = true`` (Spin's rule: a guest must
not reach files the runtime config did not name); ``ATTACH ''`` and ``':memory:'`` stay allowed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kubespin_shim.kv.base import BackendError
from kubespin_shim.kv.sqlite_pool import SqlitePool

#: Spin's MAX_HOST_BUFFERED_BYTES: a query result larger than this is an error, not host OOM.
MAX_RESULT_BYTES = 128 << 20

_PYTHON_SQL_ERRORS = (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError)


class SqlError(Exception):
    """A statement failed (syntax, constraint, busy, I/O); the guest receives ``io(<message>)``."""


def _deny_attach(action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
    if action == sqlite3.SQLITE_ATTACH and arg1 not in ("", ":memory:", None):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class SqliteDatabase:
    """One configured database: ``path`` (None: a private in-memory database, as Spin without ``path``)."""

    def __init__(self, path: Path | None, *, allow_attach_file: bool = False) -> None:
        self.path = path
        self.allow_attach_file = allow_attach_file
        self.summary = f"SQLite database {path}" if path is not None else "a temporary in-memory SQLite database"
        on_open = None if allow_attach_file else (lambda c: c.set_authorizer(_deny_attach))
        self.pool = SqlitePool(path, on_open=on_open, describe=self.summary)

    def session(self, *, track_changes: bool = False) -> DatabaseSession:
        return DatabaseSession(self, track_changes)

    def close(self) -> None:
        self.pool.close()


class DatabaseSession:
    """What one guest connection handle executes through."""

    __slots__ = ("_conn", "changes", "closed", "db", "last_insert_rowid", "track_changes")

    def __init__(self, db: SqliteDatabase, track_changes: bool) -> None:
        self.db = db
        self.track_changes = track_changes
        self._conn: sqlite3.Connection | None = None
        self.last_insert_rowid = 0
        self.changes = 0
        self.closed = False

    def execute(self, statement: str, parameters: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one statement with bound parameters; return (column names, rows)."""
        if self.closed:
            raise SqlError("the connection was closed")
        conn = self._conn
        if conn is None:
            try:
                conn = self.db.pool.acquire()
            except BackendError as e:
                raise SqlError(str(e)) from None
        try:
            cur = conn.execute(statement, parameters)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows: list[tuple[Any, ...]] = []
            size = 0
            for row in cur:
                for v in row:
                    if isinstance(v, str | bytes):
                        size += len(v)
                    else:
                        size += 8
                if size > MAX_RESULT_BYTES:
                    raise SqlError(f"query result exceeds limit of {MAX_RESULT_BYTES} bytes")
                rows.append(row)
            if self.track_changes:
                self.last_insert_rowid, self.changes = conn.execute("SELECT last_insert_rowid(), changes()").fetchone()
            return columns, rows
        except _PYTHON_SQL_ERRORS as e:
            raise SqlError(str(e)) from None
        finally:
            if conn.in_transaction:
                self._conn = conn  # keep the guest's open transaction on its connection
            else:
                self._conn = None
                self.db.pool.release(conn)

    def close(self) -> None:
        """Give the connection back; an unfinished transaction is rolled back by the pool."""
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self.db.pool.release(conn)
