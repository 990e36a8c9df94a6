"""Loading runtime-config.toml, and following it through kubelet's atomic Secret updates.

The Secret-volume layout below is the one kubelet's AtomicWriter writes
(kubernetes pkg/volume/util/atomic_writer.go): a timestamped directory ``..<timestamp>``, a
``..data`` symlink pointing at it, user-visible symlinks ``<key> -> ..data/<key>``; an update writes
a new timestamped directory, points a new ``..data_tmp`` symlink at it, renames ``..data_tmp`` over
``..data`` (atomic) and deletes the old directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from kubespin_shim.errors import ShimError
from kubespin_shim.runtime_config import (
    RuntimeConfig,
    RuntimeConfigError,
    RuntimeConfigWatcher,
    load_runtime_config,
    parse_runtime_config,
)

KEY = "runtime-config.toml"


class SecretVolume:
    """A directory kept up to date the way kubelet updates a mounted Secret."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    @property
    def file(self) -> Path:
        return self.root / KEY

    def write(self, files: dict[str, bytes]) -> Path:
        self.generation += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        ts_dir = self.root / f"..{stamp}.{self.generation:09d}"
        ts_dir.mkdir()
        for name, content in files.items():
            (ts_dir / name).write_bytes(content)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(ts_dir.name, tmp)
        os.rename(tmp, self.root / "..data")  # the atomic swap
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if old is not None:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()
        return ts_dir


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


V1 = b'[key_value_store.default]\ntype = "spin"\npath = "/data/kv.db"\n'
V2 = b'[key_value_store.default]\ntype = "redis"\nurl = "redis://127.0.0.1:6379"\n'
V3 = b'[[variables_provider]]\ntype = "static"\nvalues = { greeting = "hi" }\n'
INVALID = b"[key_value_store.default\ntype = \n"


# --- loading ------------------------------------------------------------------------------------


def test_no_file_is_the_empty_config() -> None:
    rc = load_runtime_config(None)
    assert rc.path is None and dict(rc.data) == {}
    assert rc.digest == hashlib.sha256(b"").hexdigest()
    assert dict(rc.section("key_value_store")) == {}
    assert rc.providers() == []


def test_sections_providers_and_digest(tmp_path: Path) -> None:
    path = tmp_path / KEY
    raw = V1 + b'\n[sqlite_database.default]\ntype = "spin"\n' + V3
    path.write_bytes(raw)
    rc = load_runtime_config(path)
    assert rc.path == path
    assert rc.digest == hashlib.sha256(raw).hexdigest()
    assert dict(rc.section("key_value_store")) == {"default": {"type": "spin", "path": "/data/kv.db"}}
    assert list(rc.section("sqlite_database")) == ["default"]
    assert rc.providers() == [{"type": "static", "values": {"greeting": "hi"}}]
    assert rc.unknown_keys() == []


def test_legacy_config_provider_and_unknown_keys() -> None:
    rc = parse_runtime_config(b'[[config_provider]]\ntype = "env"\nprefix = "X"\n\n[kubespin]\nfoo = 1\n')
    assert rc.providers() == [{"type": "env", "prefix": "X"}]
    assert rc.unknown_keys() == ["kubespin"]
    assert rc.unknown_keys(extra_known=["kubespin"]) == []
    both = parse_runtime_config(b'[[variables_provider]]\ntype = "env"\n[[config_provider]]\ntype = "env"\n')
    assert both.providers() == [{"type": "env"}]
    assert both.unknown_keys() == ["config_provider"]


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(INVALID)
    with pytest.raises(RuntimeConfigError) as e:
        load_runtime_config(bad)
    assert e.value.file == str(bad)
    assert str(e.value).startswith(f"{bad}: failed to parse runtime config file as toml: ")
    assert "line 1" in str(e.value)
    assert isinstance(e.value, ShimError)
    with pytest.raises(RuntimeConfigError, match="failed to read runtime config file"):
        load_runtime_config(tmp_path / "absent.toml")
    with pytest.raises(RuntimeConfigError, match="not UTF-8"):
        parse_runtime_config(b'a = "\xff"\n', tmp_path / "latin1.toml")
    rc = parse_runtime_config(b'key_value_store = "oops"\nvariables_provider = { type = "env" }\n', Path("rc.toml"))
    with pytest.raises(RuntimeConfigError) as e:
        rc.section("key_value_store")
    assert str(e.value) == "rc.toml: key_value_store: expected a table, found a string"
    with pytest.raises(RuntimeConfigError, match=r"expected an array of tables \(\[\[variables_provider\]\]\)"):
        rc.providers()


def test_config_is_read_only() -> None:
    rc = parse_runtime_config(V1)
    with pytest.raises(TypeError):
        rc.data["x"] = 1  # type: ignore[index]
    assert isinstance(rc, RuntimeConfig)


# --- watching -----------------------------------------------------------------------------------


def test_watcher_follows_kubelet_atomic_swaps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vol = SecretVolume(tmp_path)
    vol.write({KEY: V1, "other-key": b"x"})
    assert os.readlink(vol.file) == f"..data/{KEY}"
    seen: list[RuntimeConfig] = []
    changed = threading.Event()

    def on_change(rc: RuntimeConfig) -> None:
        seen.append(rc)
        changed.set()

    caplog.set_level(logging.INFO, logger="kubespin_shim.runtime_config")
    watcher = RuntimeConfigWatcher(vol.file, on_change, interval=0.02)
    assert watcher.current.section("key_value_store")["default"]["type"] == "spin"
    with watcher:
        # 1. a new Secret version: the callback sees the new content
        vol.write({KEY: V2, "other-key": b"x"})
        assert changed.wait(10), "callback not called after the ..data swap"
        assert [rc.section("key_value_store")["default"]["type"] for rc in seen] == ["redis"]
        assert watcher.current.digest == hashlib.sha256(V2).hexdigest()

        # 2. an invalid version: logged, previous config kept, no callback
        changed.clear()
        vol.write({KEY: INVALID, "other-key": b"x"})
        assert wait_for(lambda: "invalid, keeping the previous config" in caplog.text), caplog.text
        assert not changed.is_set()
        assert watcher.current.digest == hashlib.sha256(V2).hexdigest()
        assert sum("invalid" in r.getMessage() for r in caplog.records) == 1  # logged once, not every poll

        # 3. a valid version again: applied
        vol.write({KEY: V3, "other-key": b"x"})
        assert changed.wait(10)
        assert seen[-1].providers() == [{"type": "static", "values": {"greeting": "hi"}}]
        assert watcher.current is seen[-1]

        # 4. same bytes re-published (new directory, new inode): no callback
        changed.clear()
        vol.write({KEY: V3, "other-key": b"y"})
        time.sleep(0.2)
        assert not changed.is_set()
    assert len(seen) == 2


def test_watcher_keeps_old_config_when_callback_rejects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / KEY
    path.write_bytes(V1)
    calls: list[str] = []

    def reject(rc: RuntimeConfig) -> None:
        calls.append(rc.digest)
        raise ValueError("unknown store type 'redis2'")

    watcher = RuntimeConfigWatcher(path, reject, interval=60)  # not started: drive it with check()
    old = watcher.current
    tmp = tmp_path / "new.toml"
    tmp.write_bytes(V2)
    os.replace(tmp, path)  # an editor-style replace of a plain file
    assert watcher.check() is False
    assert watcher.current is old
    assert "could not be applied" in caplog.text and "redis2" in caplog.text
    assert watcher.check() is False and len(calls) == 1  # the same content is not retried


def test_watcher_missing_file_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / KEY
    path.write_bytes(V1)
    applied: list[RuntimeConfig] = []
    watcher = RuntimeConfigWatcher(path, applied.append, interval=60)
    path.unlink()
    assert watcher.check() is False
    assert "missing" in caplog.text
    assert watcher.current.digest == hashlib.sha256(V1).hexdigest()
    path.write_bytes(V2)
    assert watcher.check() is True
    assert applied[-1].digest == hashlib.sha256(V2).hexdigest()
    # an in-place rewrite of a plain file is noticed too (size and mtime change)
    path.write_bytes(V2 + b"# comment\n")
    assert watcher.check() is True


def test_watcher_stop_is_prompt_and_no_busy_wait(tmp_path: Path) -> None:
    path = tmp_path / KEY
    path.write_bytes(V1)
    watcher = RuntimeConfigWatcher(path, lambda rc: None, interval=30).start()
    cpu0 = time.process_time()
    time.sleep(0.3)
    watcher.stop(timeout=5)
    assert watcher._thread is not None and not watcher._thread.is_alive()
    assert time.process_time() - cpu0 < 0.25  # the thread sleeps on an Event between polls
    with pytest.raises(RuntimeError):
        watcher.start()


def test_change_between_initial_load_and_watcher_start_is_applied(tmp_path: Path) -> None:
    # The shim loads the config, then starts the watcher; a relink landing in between must not be lost.
    path = tmp_path / KEY
    path.write_bytes(V1)
    initial = load_runtime_config(path)
    tmp = tmp_path / "new.toml"
    tmp.write_bytes(V2)
    os.replace(tmp, path)  # the change lands before the watcher exists
    seen: list[str] = []
    watcher = RuntimeConfigWatcher(path, lambda rc: seen.append(rc.digest), interval=60, initial=initial)
    assert watcher.check() is True
    assert seen == [watcher.current.digest] and watcher.current.digest != initial.digest
    assert watcher.check() is False  # and it is applied once
