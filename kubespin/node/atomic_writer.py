"""Kubelet's AtomicWriter layout for Secret / ConfigMap / projected volumes, in Python.

Why this exists: a running shim follows its runtime config through a path such as
``<volume>/runtime-config.toml``. Kubelet never rewrites that file in place. It writes every update to
a fresh timestamped directory, points a temporary ``..data_tmp`` symlink at it, and renames that
symlink over ``..data`` (``rename(2)`` is atomic), so a reader sees either the whole old payload or
the whole new one, never a mix. The user-visible names are symlinks ``key -> ..data/key`` created
once. The shim's watcher is written against exactly this layout, so the local node reproduces it
rather than copying files. Written here (no library implements it in Python); it follows
``pkg/volume/util/atomic_writer.go`` step by step:

1. validate the payload's relative paths;
2. if ``..data`` already holds exactly this payload, only make sure the visible links exist;
3. write the payload into a new ``..YYYY_MM_DD_HH_MM_SS.<random>`` directory;
4. ``symlink ..data_tmp -> <that dir>`` then ``rename ..data_tmp ..data``;
5. create the visible top-level symlinks, remove the ones no longer in the payload;
6. remove the previous timestamped directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DATA_DIR = "..data"
DATA_TMP = "..data_tmp"


class PayloadPathError(ValueError):
    """A key or `items[].path` that kubelet would refuse (absolute, `..`, empty, too long)."""


@dataclass(frozen=True)
class FileProjection:
    """One file of a volume: bytes and permission bits (kubelet's ``FileProjection``)."""

    data: bytes
    mode: int = 0o644


def validate_path(path: str) -> None:
    """Kubelet's ``validatePath``: relative, no ``..`` element, no leading ``..``, under 4096 bytes."""
    if not path:
        raise PayloadPathError("a volume file path must not be empty")
    if len(path.encode()) > 4096:
        raise PayloadPathError(f"volume file path {path[:40]!r}... is longer than 4096 bytes")
    if path.startswith("/"):
        raise PayloadPathError(f"volume file path {path!r} must be relative")
    parts = PurePosixPath(path).parts
    if ".." in parts or path.startswith(".."):
        raise PayloadPathError(f"volume file path {path!r} must not contain '..' or start with '..'")


def _read_tree(root: Path) -> dict[str, FileProjection] | None:
    """The payload currently under ``root`` (a timestamped dir), or None if it cannot be read."""
    found: dict[str, FileProjection] = {}
    try:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                found[rel] = FileProjection(full.read_bytes(), full.stat().st_mode & 0o777)
    except OSError:
        return None
    return found


def _top_level(paths: Mapping[str, FileProjection]) -> set[str]:
    return {PurePosixPath(p).parts[0] for p in paths}


def current_data_dir(target: Path) -> Path | None:
    """The timestamped directory ``..data`` points at, if any."""
    link = target / DATA_DIR
    try:
        name = os.readlink(link)
    except OSError:
        return None
    return target / name


def write_atomic(target: Path, payload: Mapping[str, FileProjection]) -> bool:
    """Make ``target`` show exactly ``payload``; return True when the content changed (a new ``..data``).

    Safe against concurrent readers: they follow ``..data`` and see the old or the new payload whole.
    Not safe against two concurrent writers to one target (kubelet serialises per volume; so do we).
    """
    for path in payload:
        validate_path(path)
    target.mkdir(parents=True, exist_ok=True)
    old_dir = current_data_dir(target)
    if old_dir is not None and _read_tree(old_dir) == dict(payload):
        _link_visible(target, payload, old_payload_paths=set())
        return False

    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
    new_dir.chmod(0o755)
    for rel, projection in payload.items():
        file = new_dir / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(projection.data)
        file.chmod(projection.mode)

    tmp_link = target / DATA_TMP
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(new_dir.name, tmp_link)
    os.rename(tmp_link, target / DATA_DIR)

    old_paths = set(_read_tree(old_dir) or {}) if old_dir is not None else set()
    _link_visible(target, payload, old_payload_paths=old_paths)
    if old_dir is not None and old_dir != new_dir:
        shutil.rmtree(old_dir, ignore_errors=True)
    return True


def _link_visible(target: Path, payload: Mapping[str, FileProjection], old_payload_paths: set[str]) -> None:
    """Top-level ``name -> ..data/name`` links for the payload; stale ones (only in the old payload) go."""
    wanted = _top_level(payload)
    for name in sorted(wanted):
        link = target / name
        if link.is_symlink() and os.readlink(link) == f"{DATA_DIR}/{name}":
            continue
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(f"{DATA_DIR}/{name}", link)
    for name in _top_level({p: FileProjection(b"") for p in old_payload_paths}) - wanted:
        link = target / name
        if link.is_symlink():
            link.unlink()
