"""Key-value through `kubespin up` as a real process, with guests built by the real Spin SDKs
(tests/apps/py-kv: spin-sdk 3.4.1; js-kv: @spinframework/build-tools 1.0.7), a real
redis-server and real SQLite files. Every assertion goes through HTTP on 127.0.0.1.

The relink tests hammer the app from several client threads while the runtime config file is
replaced (an atomic rename, and kubelet's `..data` symlink swap of a Secret volume) and assert
that no request fails; they print the time from the swap to the first response served by the
new binding.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kubespin_shim.kv.spin_sqlite import SpinSqliteBackend

from tests.redis_server import RedisServer
from tests.shimproc import Shim, built_app, run_shim, run_shim_expect_failure, write_atomically

pytestmark = pytest.mark.integration

KV_APPS = ["py-kv", "js-kv"]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class SecretVolume:
    """A directory laid out and updated the way kubelet's AtomicWriter updates a Secret volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.version = 0
        self.path = root / "runtime-config.toml"

    def write(self, text: str) -> None:
        self.version += 1
        ts = self.root / f"..2026_01_01_00_00_{self.version:02d}.{os.getpid()}"
        ts.mkdir()
        (ts / "runtime-config.toml").write_text(text)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(ts.name)
        os.replace(tmp, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/runtime-config.toml")
        if old is not None:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()


def redis_table(label: str, url: str) -> str:
    return f'[key_value_store.{label}]\ntype = "redis"\nurl = "{url}"\n'


def spin_table(label: str, path: Path) -> str:
    return f'[key_value_store.{label}]\ntype = "spin"\npath = "{path}"\n'


def start(app: str, tmp: Path, rc: Path | None = None, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    args = ["--state-dir", str(tmp / "state")]
    if rc is not None:
        args += ["--runtime-config-file", str(rc)]
    return run_shim(built_app(app), tmp, args=args + (extra or []))


# ------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize("app", KV_APPS)
def test_default_label_needs_no_configuration(app: str, tmp_path: Path) -> None:
    with start(app, tmp_path) as shim, shim.client() as c:
        assert c.put("/kv/default/greeting", content="hello ✓".encode()).status_code == 200
        assert c.put("/kv/default/other", content=b"\x00\xff").status_code == 200
        r = c.get("/kv/default/greeting")
        assert (r.status_code, r.content) == (200, "hello ✓".encode())
        assert c.get("/kv/default/other").content == b"\x00\xff"
        assert c.get("/kv/default").json() == ["greeting", "other"]
        assert c.delete("/kv/default/other").status_code == 200
        assert c.get("/kv/default/other").status_code == 404
    # Spin's location and format: <state dir>/sqlite_key_value.db, table spin_key_value
    store = SpinSqliteBackend(tmp_path / "state" / "sqlite_key_value.db").store("default")
    assert store.get("greeting") == "hello ✓".encode()
    # ... and the data outlives the process
    with start(app, tmp_path) as shim, shim.client() as c:
        assert c.get("/kv/default/greeting").content == "hello ✓".encode()


@pytest.mark.parametrize("app", KV_APPS)
def test_labels_not_allowed_or_not_configured(app: str, tmp_path: Path) -> None:
    with start(app, tmp_path) as shim, shim.client() as c:
        denied = c.get("/kv/gamma/x")  # not in the component's key_value_stores
        assert (denied.status_code, denied.text.strip()) == (500, "access-denied")
        unbound = c.get("/kv/alpha/x")  # allowed, but no [key_value_store.alpha]
        assert (unbound.status_code, unbound.text.strip()) == (500, "no-such-store")
        assert c.get("/kv/default/x").status_code == 404  # the app is fine otherwise
        log = shim.log()
    assert "'gamma'" in log and "access-denied" in log and "key_value_stores" in log
    assert "[key_value_store.alpha]" in log


@pytest.mark.parametrize("app", KV_APPS)
def test_two_labels_bound_to_two_redis_databases(app: str, tmp_path: Path, redis_server: RedisServer) -> None:
    db1, db2 = redis_server.client(1), redis_server.client(2)
    db1.flushdb()
    db2.flushdb()
    rc = tmp_path / "runtime-config.toml"
    rc.write_text(redis_table("alpha", redis_server.url(1)) + redis_table("beta", redis_server.url(2)))
    with start(app, tmp_path, rc) as shim, shim.client() as c:
        assert c.put("/kv/alpha/k", content=b"in-alpha").status_code == 200
        assert c.put("/kv/beta/k", content=b"in-beta").status_code == 200
        assert db1.get("k") == b"in-alpha" and db2.get("k") == b"in-beta"
        db2.set("written-by-redis-cli", b"visible")
        assert c.get("/kv/beta/written-by-redis-cli").content == b"visible"
        assert c.get("/kv/alpha/written-by-redis-cli").status_code == 404
        assert c.get("/kv/alpha").json() == ["k"]
        assert c.get("/kv/beta").json() == ["k", "written-by-redis-cli"]


def test_unknown_backend_type_fails_at_start(tmp_path: Path) -> None:
    rc = tmp_path / "runtime-config.toml"
    rc.write_text('[key_value_store.alpha]\ntype = "etcd"\n')
    out = run_shim_expect_failure(built_app("py-kv"), tmp_path, ["--runtime-config-file", str(rc)])
    assert out.returncode != 0
    assert "'alpha' has unknown type 'etcd'" in out.stderr, out.stderr


# ------------------------------------------------------------------------------------------
# wasi:keyvalue and atomicity across replicas


def test_wasi_keyvalue_bucket_and_increment(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.client(9).flushdb()
    rc = tmp_path / "runtime-config.toml"
    rc.write_text(redis_table("alpha", redis_server.url(9)))
    with start("py-kv", tmp_path, rc) as shim, shim.client() as c:
        assert c.put("/wkv/alpha/k", content=b"wasi").status_code == 200
        assert c.get("/wkv/alpha/k").content == b"wasi"
        assert c.get("/kv/alpha/k").content == b"wasi"  # same backend under both interfaces
        assert c.post("/kv/alpha/n/incr", content=b"5").json() == {"key": "n", "value": 5}
        assert c.post("/kv/alpha/n/incr", content=b"-2").json() == {"key": "n", "value": 3}
        assert redis_server.client(9).get("n") == b"3"  # a Redis integer
        assert c.get("/wkv/alpha").json() == ["k", "n"]
        assert c.delete("/wkv/alpha/k").status_code == 200
        assert c.get("/wkv/alpha/k").status_code == 404
        assert c.get("/wkv/gamma").text.strip() == "access-denied"
        assert c.get("/wkv/beta").text.strip() == "no-such-store"
        redis_server.client(9).set("text", b"abc")
        not_counter = c.post("/kv/alpha/text/incr", content=b"1")
        assert not_counter.status_code == 500 and not_counter.text.startswith("other: ")


def test_increment_is_atomic_across_two_replicas(tmp_path: Path, redis_server: RedisServer) -> None:
    """Two `kubespin up` processes (replicas) increment the same counters concurrently:
    in Redis (INCRBY) and in one SQLite file (BEGIN IMMEDIATE across processes)."""
    redis_server.client(10).flushdb()
    shared = tmp_path / "shared" / "kv.db"
    rc = tmp_path / "runtime-config.toml"
    rc.write_text(redis_table("alpha", redis_server.url(10)) + spin_table("beta", shared))
    per_thread, threads_per_replica = 25, 3
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    with start("py-kv", tmp_path / "r1", rc) as a, start("py-kv", tmp_path / "r2", rc) as b:
        failures: list[str] = []

        def hammer(shim: Shim) -> None:
            with shim.client() as c:
                for _ in range(per_thread):
                    for label in ("alpha", "beta"):
                        r = c.post(f"/kv/{label}/hits/incr", content=b"1")
                        if r.status_code != 200:
                            failures.append(f"{label}: {r.status_code} {r.text}")

        workers = [threading.Thread(target=hammer, args=(s,)) for s in (a, b) for _ in range(threads_per_replica)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        assert not failures, failures[:5]
        expected = 2 * threads_per_replica * per_thread
        with a.client() as c:
            assert c.post("/kv/alpha/hits/incr", content=b"0").json()["value"] == expected
            assert c.post("/kv/beta/hits/incr", content=b"0").json()["value"] == expected
    assert redis_server.client(10).get("hits") == str(expected).encode()


# ------------------------------------------------------------------------------------------
# a backend that goes down


@pytest.mark.parametrize("app", KV_APPS)
def test_redis_down_returns_other_and_recovers(app: str, tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        rc = tmp_path / "runtime-config.toml"
        rc.write_text(redis_table("alpha", server.url(0)))
        with start(app, tmp_path, rc) as shim, shim.client() as c:
            assert c.put("/kv/alpha/k", content=b"v1").status_code == 200
            server.stop()
            t0 = time.monotonic()
            down = c.get("/kv/alpha/k")
            assert time.monotonic() - t0 < 10
            assert down.status_code == 500
            assert down.text.startswith("other: ") and f"127.0.0.1:{server.port}" in down.text, down.text
            assert c.get("/.well-known/spin/health").status_code == 200
            assert c.put("/kv/default/k", content=b"unaffected").status_code == 200  # other stores still work
            server.start()  # same port, empty
            assert c.get("/kv/alpha/k").status_code == 404  # recovered (the restarted server has no data)
            assert c.put("/kv/alpha/k", content=b"v2").status_code == 200
            assert c.get("/kv/alpha/k").content == b"v2"
            assert shim.proc.poll() is None
    finally:
        server.cleanup()


# ------------------------------------------------------------------------------------------
# relinking under load


@dataclass
class LoadResult:
    samples: list[tuple[int, float, int, bytes]] = field(default_factory=list)  # (thread, t_done, status, body)
    errors: list[str] = field(default_factory=list)


def hammer_get(shim: Shim, path: str, threads: int, stop: threading.Event, out: LoadResult) -> list[threading.Thread]:
    def loop(i: int) -> None:
        with httpx.Client(base_url=shim.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.get(path)
                    out.samples.append((i, time.monotonic(), r.status_code, r.content))
                except httpx.HTTPError as e:
                    out.errors.append(f"{type(e).__name__}: {e}")

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    return workers


def relink_under_load(
    shim: Shim, swap: Callable[[], None], old: bytes, new: bytes, label: str
) -> tuple[float, int, LoadResult]:
    stop = threading.Event()
    out = LoadResult()
    workers = hammer_get(shim, f"/kv/{label}/k", 4, stop, out)
    time.sleep(1.5)
    before = len(out.samples)
    t_swap = time.monotonic()
    swap()
    deadline = t_swap + 20
    while time.monotonic() < deadline and not any(s[3] == new for s in out.samples[before:]):
        time.sleep(0.005)
    time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join(30)
    assert not out.errors, out.errors[:5]
    bad = [s for s in out.samples if s[2] != 200 or s[3] not in (old, new)]
    assert not bad, bad[:5]
    first_new = min((s[1] for s in out.samples if s[3] == new), default=None)
    assert first_new is not None, "the new binding never served a request"
    # Each client thread sends requests one after another: once it has seen the new store it
    # must never see the old one again (a request starts on the bindings current at its start).
    for i in range(4):
        seq = [s[3] for s in out.samples if s[0] == i]
        assert old not in seq[seq.index(new):] if new in seq else True, f"thread {i} went back to the old store"
    assert out.samples[-1][3] == new
    return first_new - t_swap, len(out.samples), out


@pytest.mark.parametrize("app", KV_APPS)
def test_relink_under_load_atomic_rename(app: str, tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.client(11).set("k", b"old-db11")
    redis_server.client(12).set("k", b"new-db12")
    rc = tmp_path / "conf" / "runtime-config.toml"
    rc.parent.mkdir()
    rc.write_text(redis_table("alpha", redis_server.url(11)))
    with start(app, tmp_path, rc) as shim:
        latency, n, _ = relink_under_load(
            shim, lambda: write_atomically(rc, redis_table("alpha", redis_server.url(12))),
            b"old-db11", b"new-db12", "alpha",
        )
        print(f"\n[{app}] relink by atomic rename under load: {n} GETs, 0 failed; "
              f"swap -> first response from the new store: {latency * 1000:.0f} ms")
        # An invalid file is refused; the binding in force stays.
        write_atomically(rc, '[key_value_store.alpha]\ntype = "nope"\n')
        time.sleep(2.5)
        with shim.client() as c:
            assert c.get("/kv/alpha/k").content == b"new-db12"
        assert "'alpha' has unknown type 'nope'" in shim.log()
        assert "keeping the previous config" in shim.log()


@pytest.mark.parametrize("app", KV_APPS)
def test_relink_under_load_kubelet_symlink_swap(app: str, tmp_path: Path, redis_server: RedisServer) -> None:
    """Secret-volume update: alpha moves from a Redis database to a SQLite file (another backend type)."""
    redis_server.client(13).set("k", b"old-redis")
    sqlite_file = tmp_path / "volume" / "alpha.db"
    sqlite_file.parent.mkdir()
    seed = SpinSqliteBackend(sqlite_file)
    seed.store("alpha").set("k", b"new-sqlite")
    seed.close()
    secret = SecretVolume(tmp_path / "secret")
    secret.write(redis_table("alpha", redis_server.url(13)))
    with start(app, tmp_path, secret.path) as shim:
        latency, n, _ = relink_under_load(
            shim, lambda: secret.write(spin_table("alpha", sqlite_file)), b"old-redis", b"new-sqlite", "alpha"
        )
        print(f"\n[{app}] relink by kubelet ..data symlink swap under load: {n} GETs, 0 failed; "
              f"swap -> first response from the new store: {latency * 1000:.0f} ms")
        assert "relinked" in shim.log()
