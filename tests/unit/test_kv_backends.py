"""Key-value backends against real stores: SQLite files and a real redis-server.

The same behaviour is asserted for both backends (one parametrised fixture), plus what is
specific to each: Spin's on-disk format for SQLite, Redis integers and outage handling.
Atomicity is tested across *processes* (SQLite on one file) and across clients (Redis), not
only across threads.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubespin_shim.kv.base import BackendError, KeyValueBackend
from kubespin_shim.kv.redis_backend import RedisBackend
from kubespin_shim.kv.spin_sqlite import SpinSqliteBackend

from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueBackend]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.client(3).flushdb()
        b: KeyValueBackend = RedisBackend(server.url(3))
    elif request.param == "sqlite-file":
        b = SpinSqliteBackend(tmp_path / "kv.db")
    else:
        b = SpinSqliteBackend(None)
    yield b
    b.close()


def test_get_set_delete_exists_keys(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    assert s.get("missing") is None
    assert not s.exists("missing")
    s.set("a", b"\x00\x01binary\xff")
    s.set("b/c ✓", b"")
    assert s.get("a") == b"\x00\x01binary\xff"
    assert s.get("b/c ✓") == b""  # an empty value is a value, not absence
    assert s.exists("b/c ✓")
    assert s.keys() == ["a", "b/c ✓"]
    s.set("a", b"overwritten")
    assert s.get("a") == b"overwritten"
    s.delete("a")
    s.delete("never-there")  # deleting an absent key is not an error
    assert s.get("a") is None
    assert s.keys() == ["b/c ✓"]


def test_batch_operations(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    s.set_many([("k1", b"1"), ("k2", b"2"), ("k3", b"3")])
    assert s.get_many(["k2", "nope", "k1", "k2"]) == [("k2", b"2"), ("nope", None), ("k1", b"1"), ("k2", b"2")]
    s.delete_many(["k1", "k3", "nope"])
    assert s.keys() == ["k2"]
    assert s.get_many([]) == []


def test_increment_creates_and_counts(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    assert s.increment("n", 5) == 5
    assert s.increment("n", -7) == -2
    assert s.increment("n", 0) == -2


def test_increment_of_a_non_counter_is_a_backend_error(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    s.set("text", b"not a number")
    with pytest.raises(BackendError):
        s.increment("text", 1)
    assert s.get("text") == b"not a number"


def test_compare_and_swap(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    assert s.compare_and_swap("c", None, b"first")  # absent -> set
    assert not s.compare_and_swap("c", None, b"again")  # no longer absent
    assert s.get("c") == b"first"
    assert not s.compare_and_swap("c", b"stale", b"x")
    assert s.compare_and_swap("c", b"first", b"second")
    assert s.get("c") == b"second"


def test_concurrent_increments_from_threads_lose_nothing(backend: KeyValueBackend) -> None:
    s = backend.store("default")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                s.increment("hits", 1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert s.increment("hits", 0) == 400


def test_cas_retry_loop_from_threads_loses_nothing(backend: KeyValueBackend) -> None:
    """The guest pattern: read, compute, swap; retry on conflict. Counts must add up exactly."""
    s = backend.store("default")

    def work() -> None:
        for _ in range(25):
            while True:
                cur = s.get("casn")
                n = int(cur) if cur is not None else 0
                if s.compare_and_swap("casn", cur, str(n + 1).encode()):
                    break

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert s.get("casn") == b"150"


def test_sqlite_labels_are_separate_stores_in_one_file(tmp_path: Path) -> None:
    b = SpinSqliteBackend(tmp_path / "kv.db")
    b.store("one").set("k", b"1")
    b.store("two").set("k", b"2")
    assert b.store("one").get("k") == b"1"
    assert b.store("two").keys() == ["k"]
    b.store("one").delete_many(["k"])
    assert b.store("two").get("k") == b"2"
    b.close()


def test_sqlite_file_uses_spins_table_and_counter_format(tmp_path: Path) -> None:
    """A `.spin/sqlite_key_value.db` written by us is readable by Spin, and the reverse."""
    path = tmp_path / "kv.db"
    b = SpinSqliteBackend(path)
    b.store("default").set("k", b"v")
    b.store("default").increment("n", 258)
    b.close()
    with sqlite3.connect(path) as raw:
        rows = dict(((s, k), v) for s, k, v in raw.execute("SELECT store, key, value FROM spin_key_value"))
        raw.execute("INSERT INTO spin_key_value VALUES ('default', 'from-spin', x'0300000000000000')")
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
    assert rows == {("default", "k"): b"v", ("default", "n"): (258).to_bytes(8, "little", signed=True)}
    assert mode == "wal"
    b2 = SpinSqliteBackend(path)
    assert b2.store("default").increment("from-spin", 1) == 4
    b2.close()


def test_sqlite_closed_backend_reports_instead_of_crashing(tmp_path: Path) -> None:
    b = SpinSqliteBackend(tmp_path / "kv.db")
    b.store("default").set("k", b"v")
    b.close()
    with pytest.raises(BackendError, match="closed"):
        b.store("default").get("k")
    assert b.pool.open_connections == 0


def test_sqlite_unopenable_path_is_a_backend_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    b = SpinSqliteBackend(tmp_path / "dir.db")
    with pytest.raises(BackendError, match=r"dir\.db"):
        b.store("default").get("k")


def _increment_in_process(path: str, n: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    b = SpinSqliteBackend(Path(path))
    s = b.store("default")
    barrier.wait()
    for _ in range(n):
        s.increment("shared", 1)
    b.close()


def test_sqlite_increment_is_atomic_across_processes(tmp_path: Path) -> None:
    """Replicas sharing a volume: BEGIN IMMEDIATE serialises read-modify-write between processes."""
    path = tmp_path / "shared.db"
    SpinSqliteBackend(path).store("default").set("seed", b"")  # create the file and schema first
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_increment_in_process, args=(str(path), 100, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    b = SpinSqliteBackend(path)
    assert b.store("default").increment("shared", 0) == 400
    b.close()


def _redis_cas_in_process(url: str, n: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    s = RedisBackend(url).store("default")
    barrier.wait()
    for _ in range(n):
        while True:
            cur = s.get("pcas")
            if s.compare_and_swap("pcas", cur, str(int(cur or b"0") + 1).encode()):
                break
        s.increment("pincr", 2)


def test_redis_increment_and_cas_are_atomic_across_processes(redis_server: RedisServer) -> None:
    redis_server.client(4).flushdb()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_redis_cas_in_process, args=(redis_server.url(4), 50, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    c = redis_server.client(4)
    assert c.get("pcas") == b"200"
    assert c.get("pincr") == b"400"  # a Redis integer other clients can read


def test_redis_databases_are_separate(redis_server: RedisServer) -> None:
    a, b = RedisBackend(redis_server.url(5)), RedisBackend(redis_server.url(6))
    redis_server.client(5).flushdb()
    redis_server.client(6).flushdb()
    a.store("x").set("k", b"five")
    b.store("y").set("k", b"six")
    assert a.store("x").get("k") == b"five"
    assert b.store("y").get("k") == b"six"
    assert a.summary.endswith("db 5") and "127.0.0.1" in a.summary
    a.close()
    b.close()


def test_redis_down_is_a_backend_error_and_recovers(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        b = RedisBackend(server.url(0), connect_timeout=1.0)
        s = b.store("default")
        s.set("k", b"before")
        server.stop()
        with pytest.raises(BackendError) as err:
            s.get("k")
        assert "unreachable" in str(err.value) and str(server.port) in str(err.value)
        server.start()  # same port, empty (no persistence)
        s.set("k", b"after")  # the pooled connection was dead; the client reconnects
        assert s.get("k") == b"after"
        b.close()
    finally:
        server.cleanup()


def test_redis_invalid_url_is_refused() -> None:
    with pytest.raises(BackendError, match="invalid Redis URL"):
        RedisBackend("http://127.0.0.1:6379")
