"""The small interface every key-value backend implements, and the errors it raises.

Spin's factor-key-value splits a backend into a *store manager* (one per configured backend:
a SQLite file, a Redis database) and *stores* opened from it by label. The same split is kept
here: a :class:`KeyValueBackend` is created from one ``[key_value_store.<label>]`` table and
owns the connections; :meth:`KeyValueBackend.store` hands out a cheap :class:`KeyValueStore`
view for one label (the SQLite backend keeps labels apart in its ``store`` column, as Spin's
``spin_key_value`` table does; a Redis database is one keyspace, as in Spin).

Backends never raise anything but :class:`BackendError` for expected failures (I/O, a server
that is down, a value that is not a counter): the host functions turn it into the interface's
``other(<message>)``, so a guest sees the reason and the shim keeps serving.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable


class BackendError(Exception):
    """A store operation failed for a reason outside the guest's control (I/O, server down).

    The message is what the guest receives in ``other(...)``: it names the backend and the cause.
    """


class KeyValueStore(ABC):
    """One label's view of a backend. Methods are called from many request threads at once."""

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def set(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def keys(self) -> list[str]: ...

    def get_many(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        """Every requested key in order, ``None`` where absent (wasi:keyvalue/batch's contract)."""
        return [(k, self.get(k)) for k in keys]

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        for k, v in items:
            self.set(k, v)

    def delete_many(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.delete(k)

    @abstractmethod
    def increment(self, key: str, delta: int) -> int:
        """Add ``delta`` to the counter at ``key`` (absent counts as 0), atomically across processes
        and replicas; return the new value."""

    @abstractmethod
    def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """Set ``key`` to ``new`` only if its value is still ``expected`` (``None``: still absent).

        Atomic across processes and replicas. False when another writer got there first.
        """


class KeyValueBackend(ABC):
    """One configured backend (a SQLite file, a Redis database): owns connections, opened lazily.

    Construction must not connect or open files, so that staging a runtime config that another
    factor then refuses costs nothing; the first operation connects.
    """

    #: A one-line description for logs: ``"SQLite file /data/kv.db"``, ``"Redis at 10.0.0.5:6379 db 1"``.
    summary: str = ""

    @abstractmethod
    def store(self, label: str) -> KeyValueStore: ...

    @abstractmethod
    def close(self) -> None:
        """Release connections. Called once no request can use the backend any more."""
