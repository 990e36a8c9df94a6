"""A small pool of stdlib ``sqlite3`` connections to one database, shared by request threads.

Why a pool and not one connection per thread: the HTTP server runs one thread per client
connection, so threads come and go; a connection per thread would be opened on every new client
and could not be closed from the thread that retires the backend after a relink. Why not one
shared connection behind a lock (as Spin does): requests run in parallel (wasm releases the GIL)
and SQLite in WAL mode lets readers proceed while one writer commits.

Every connection is opened in autocommit mode (``isolation_level=None``), so a statement commits
on its own and explicit ``BEGIN``/``COMMIT`` from a guest mean what they say; ``busy_timeout``
makes writers from other threads and other processes (replicas sharing a volume) wait for the
lock instead of failing at once. Files use WAL with ``synchronous=NORMAL`` (SQLite's recommended
pairing: durable across process crashes; the last commits may be lost on power failure).

An in-memory database (a ``type = "spin"`` store without ``path``, as in Spin) has exactly one
connection: separate ``:memory:`` connections would be separate databases, and shared-cache
memory databases answer concurrent writers with SQLITE_LOCKED, which busy_timeout does not retry.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubespin_shim.kv.base import BackendError

DEFAULT_BUSY_TIMEOUT_S = 5.0
MAX_IDLE = 16


def _text(b: bytes) -> str:
    # WIT strings must be UTF-8; Spin would panic on bad bytes in a TEXT column, we substitute.
    return b.decode("utf-8", "replace")


class SqlitePool:
    """Connections to the database at ``path`` (``None``: one private in-memory database)."""

    def __init__(
        self,
        path: Path | None,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        on_open: Callable[[sqlite3.Connection], None] | None = None,
        describe: str = "",
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._on_open = on_open
        self.describe = describe or (f"SQLite file {path}" if path is not None else "in-memory SQLite")
        self._max = 1 if path is None else None
        self._idle: list[sqlite3.Connection] = []
        self._open = 0
        self._closed = False
        self._initialised = False
        self._cond = threading.Condition()

    # ---- opening

    def _connect(self) -> sqlite3.Connection:
        if self.path is not None:
            ensure_parent_dir(self.path, self.describe)
        try:
            if self.path is None:
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as e:
            raise BackendError(f"{self.describe}: cannot open: {e}") from None
        try:
            conn.text_factory = _text
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if self.path is not None:
                self._wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
            if self._on_open is not None:
                self._on_open(conn)
        except sqlite3.Error as e:
            conn.close()
            raise BackendError(f"{self.describe}: cannot prepare the database: {e}") from None
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL once. The mode is persistent in the file; another process doing the
        same at the same moment can make this return SQLITE_BUSY without waiting, so retry briefly."""
        if self._initialised:
            return
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                self._initialised = True
                return
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # ---- checkout

    def acquire(self) -> sqlite3.Connection:
        """A connection for this thread's exclusive use until :meth:`release`."""
        deadline: float | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise BackendError(f"{self.describe}: the store was closed (its binding was replaced)")
                if self._idle:
                    return self._idle.pop()
                if self._max is None or self._open < self._max:
                    self._open += 1
                    break
                if deadline is None:
                    deadline = time.monotonic() + self.busy_timeout_s
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendError(f"{self.describe}: database is busy (waited {self.busy_timeout_s:g}s)")
                self._cond.wait(left)
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, conn: sqlite3.Connection, *, discard: bool = False) -> None:
        """Give a connection back. One left inside a transaction is rolled back first."""
        if not discard and conn.in_transaction:
            try:
                conn.rollback()
            except sqlite3.Error:
                discard = True
        with self._cond:
            if discard or self._closed or len(self._idle) >= MAX_IDLE:
                self._open -= 1
                self._cond.notify()
                close = True
            else:
                self._idle.append(conn)
                self._cond.notify()
                close = False
        if close:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        conn = self.acquire()
        broken = False
        try:
            yield conn
        except sqlite3.DatabaseError as e:
            # "file is not a database" and internal errors: do not keep a connection in a bad state.
            broken = type(e) in (sqlite3.DatabaseError, sqlite3.InternalError)
            raise
        finally:
            self.release(conn, discard=broken)

    def close(self) -> None:
        """Close idle connections now and the rest as they are released; later acquires fail."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @property
    def open_connections(self) -> int:
        with self._cond:
            return self._open


def ensure_parent_dir(path: Path, what: str) -> None:
    """Create a database file's directory (as Spin does when it reads the runtime config)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BackendError(
            f"failed to create {what}'s parent directory {str(path.parent)!r}: {e.strerror or e}"
        ) from None
