"""kubelet's AtomicWriter layout, reproduced by the local node: what readers see during and after updates."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kubespin.node.atomic_writer import DATA_DIR, FileProjection, PayloadPathError, write_atomic


def _ts_dirs(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.startswith("..") and p.name not in (DATA_DIR,))


def test_layout_is_timestamped_dir_data_link_and_key_links(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomic(target, {"runtime-config.toml": FileProjection(b"a = 1\n"), "sub/x": FileProjection(b"x")})
    data = os.readlink(target / DATA_DIR)
    assert data.startswith("..") and (target / data).is_dir()
    assert os.readlink(target / "runtime-config.toml") == "..data/runtime-config.toml"
    assert os.readlink(target / "sub") == "..data/sub"
    assert (target / "runtime-config.toml").read_bytes() == b"a = 1\n"
    assert (target / "sub" / "x").read_bytes() == b"x"
    assert _ts_dirs(target) == [data]


def test_update_swaps_data_link_and_removes_old_dir_and_stale_keys(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    write_atomic(target, {"a": FileProjection(b"1"), "b": FileProjection(b"2")})
    first = os.readlink(target / DATA_DIR)
    held = (target / "a").open("rb")  # a reader holding the old file keeps reading the old bytes
    assert write_atomic(target, {"a": FileProjection(b"changed")})
    second = os.readlink(target / DATA_DIR)
    assert second != first
    assert (target / "a").read_bytes() == b"changed"
    assert not (target / "b").exists() and not (target / "b").is_symlink()
    assert _ts_dirs(target) == [second]
    assert held.read() == b"1"
    held.close()


def test_unchanged_payload_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    write_atomic(target, {"a": FileProjection(b"1", 0o600)})
    before = os.readlink(target / DATA_DIR)
    assert not write_atomic(target, {"a": FileProjection(b"1", 0o600)})
    assert os.readlink(target / DATA_DIR) == before
    assert write_atomic(target, {"a": FileProjection(b"1", 0o644)}), "a mode change is a change"
    assert (target / "a").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("bad", ["/abs", "../up", "a/../../b", "..hidden", ""])
def test_bad_paths_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PayloadPathError):
        write_atomic(tmp_path / "vol", {bad: FileProjection(b"x")})


def test_concurrent_reader_never_sees_a_mix(tmp_path: Path) -> None:
    """A reader that opens the visible path while a writer swaps payloads reads a whole payload each time.

    (A reader that resolved ``..data`` just before the old directory is removed can get ENOENT, as with
    kubelet, whose writer removes it at once too; the shim's watcher retries on the next poll.)"""
    target = tmp_path / "vol"
    payloads = [b"A" * 4096, b"B" * 8192]
    write_atomic(target, {"f": FileProjection(payloads[0])})
    stop = threading.Event()
    seen: set[bytes] = set()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add((target / "f").read_bytes())
            except FileNotFoundError:
                continue
            except OSError as err:
                errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(200):
        write_atomic(target, {"f": FileProjection(payloads[i % 2])})
    stop.set()
    thread.join()
    assert not errors
    assert seen <= set(payloads) and seen
