"""Reading ``[key_value_store.<label>]`` and ``[sqlite_database.<label>]`` the way Spin 3 does.

Spin's rules, checked against spin's ``runtime-config``, ``key-value-spin``, ``key-value-redis``
and ``sqlite`` crates:

- The state directory is ``--state-dir`` if given, else the runtime config's top-level
  ``state_dir`` (an empty string means *none*), else ``.spin`` beside ``spin.toml``. Relative
  paths are made absolute against the working directory.
- ``default`` exists without configuration: key-value in ``<state dir>/sqlite_key_value.db``,
  SQLite in ``<state dir>/sqlite_db.db``; with no state dir, both are in memory.
- Key-value ``type = "spin"``: optional ``path``; relative to the *runtime config file's directory*;
  no ``path`` means an in-memory store. ``type = "redis"``: ``url``. Other keys are ignored, as
  Spin's serde structs ignore them.
- SQLite ``type = "spin"``: optional ``path`` (relative to the *working directory*, which is what
  Spin's resolver uses for databases, unlike key-value stores) and ``allow_attach_file``; unknown
  keys are an error (Spin's struct denies them).
- Any other ``type`` fails when the config is read (at start, or on reload, where the previous
  config stays in force), naming the label and the type.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubespin_shim.kv.base import BackendError, KeyValueBackend
from kubespin_shim.kv.redis_backend import RedisBackend, describe_redis_url
from kubespin_shim.kv.spin_sqlite import SpinSqliteBackend
from kubespin_shim.kv.sqlite_pool import ensure_parent_dir
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError

log = logging.getLogger("kubespin.shim.kv")

DEFAULT_LABEL = "default"
DEFAULT_KV_FILE = "sqlite_key_value.db"
DEFAULT_SQLITE_FILE = "sqlite_db.db"

KV_TYPES = ("spin", "redis")
KV_TYPES_SPIN_HAS = ("azure_cosmos", "aws_dynamo")
SQLITE_TYPES = ("spin",)
SQLITE_TYPES_SPIN_HAS = ("libsql",)
SQLITE_SPIN_KEYS = frozenset({"type", "path", "allow_attach_file"})


@dataclass(frozen=True)
class SpinKvSpec:
    """A SQLite key-value file; ``path=None`` is an in-memory store."""

    path: Path | None


@dataclass(frozen=True)
class RedisKvSpec:
    url: str


KvSpec = SpinKvSpec | RedisKvSpec


@dataclass(frozen=True)
class SqliteDbSpec:
    path: Path | None
    allow_attach_file: bool = False


def resolve_state_dir(rc: RuntimeConfig, cli_state_dir: Path | None, app_dir: Path | None) -> Path | None:
    """Spin's state directory: the flag, else ``state_dir`` in the file ("" = none), else ``<app>/.spin``."""
    if cli_state_dir is not None:
        return Path(os.path.abspath(cli_state_dir))
    value = rc.data.get("state_dir")
    if value is not None:
        if not isinstance(value, str):
            raise RuntimeConfigError(rc.path, "state_dir", "expected a string (a directory path)")
        return Path(os.path.abspath(value)) if value else None
    return app_dir / ".spin" if app_dir is not None else None


def _table(rc: RuntimeConfig, section: str, label: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RuntimeConfigError(rc.path, f"{section}.{label}", f"expected a table ([{section}.{label}])")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise RuntimeConfigError(
            rc.path, f"{section}.{label}", 'missing field `type` (for example type = "spin" or type = "redis")'
        )
    return value


def _opt_path(rc: RuntimeConfig, key: str, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RuntimeConfigError(rc.path, key, "expected a string (a file path)")
    return Path(value)


def key_value_specs(rc: RuntimeConfig, state_dir: Path | None) -> dict[str, KvSpec]:
    """Every bound key-value label, ``default`` included."""
    specs: dict[str, KvSpec] = {}
    base = rc.path.parent if rc.path is not None else None
    for label, raw in rc.section("key_value_store").items():
        table = _table(rc, "key_value_store", label, raw)
        kind = table["type"]
        key = f"key_value_store.{label}"
        if kind == "spin":
            path = _opt_path(rc, f"{key}.path", table.get("path"))
            if path is not None and base is not None and not path.is_absolute():
                path = base / path
            specs[label] = SpinKvSpec(Path(os.path.abspath(path)) if path is not None else None)
        elif kind == "redis":
            url = table.get("url")
            if not isinstance(url, str):
                raise RuntimeConfigError(rc.path, key, 'missing field `url` (for example url = "redis://host:6379/0")')
            try:
                describe_redis_url(url)
            except ValueError as e:
                raise RuntimeConfigError(rc.path, f"{key}.url", f"invalid Redis URL: {e}") from None
            specs[label] = RedisKvSpec(url)
        else:
            raise RuntimeConfigError(rc.path, f"{key}.type", _unknown_type("key-value store", label, kind, KV_TYPES,
                                                                           KV_TYPES_SPIN_HAS))
    if DEFAULT_LABEL not in specs:
        specs[DEFAULT_LABEL] = SpinKvSpec(state_dir / DEFAULT_KV_FILE if state_dir is not None else None)
    return specs


def sqlite_specs(rc: RuntimeConfig, state_dir: Path | None, cwd: Path | None = None) -> dict[str, SqliteDbSpec]:
    """Every bound SQLite database label, ``default`` included."""
    specs: dict[str, SqliteDbSpec] = {}
    base = cwd if cwd is not None else Path.cwd()
    for label, raw in rc.section("sqlite_database").items():
        table = _table(rc, "sqlite_database", label, raw)
        kind = table["type"]
        key = f"sqlite_database.{label}"
        if kind != "spin":
            raise RuntimeConfigError(rc.path, f"{key}.type", _unknown_type("SQLite database", label, kind,
                                                                           SQLITE_TYPES, SQLITE_TYPES_SPIN_HAS))
        unknown = sorted(set(table) - SQLITE_SPIN_KEYS)
        if unknown:
            raise RuntimeConfigError(
                rc.path, key,
                f"unknown field(s) {unknown}; a type = \"spin\" database takes `path` and `allow_attach_file`",
            )
        path = _opt_path(rc, f"{key}.path", table.get("path"))
        if path is not None and not path.is_absolute():
            path = base / path
        attach = table.get("allow_attach_file", False)
        if not isinstance(attach, bool):
            raise RuntimeConfigError(rc.path, f"{key}.allow_attach_file", "expected true or false")
        specs[label] = SqliteDbSpec(Path(os.path.abspath(path)) if path is not None else None, attach)
    if DEFAULT_LABEL not in specs:
        specs[DEFAULT_LABEL] = SqliteDbSpec(state_dir / DEFAULT_SQLITE_FILE if state_dir is not None else None)
    return specs


def prepare_directories(
    rc: RuntimeConfig, section: str, specs: Mapping[str, SpinKvSpec | SqliteDbSpec | RedisKvSpec],
    used: set[str], what: str,
) -> None:
    """Create the directories of the SQLite files that components use, as Spin does at start.

    A directory that cannot be created refuses the config when the runtime config named the path
    (the person who wrote it can fix it); for the implicit ``default`` in the state directory it
    is only logged, so that an app in a read-only directory that never touches its default
    store still starts (pass ``--state-dir`` to put it elsewhere). Opening creates it again later.
    """
    configured = rc.section(section)
    for label, spec in specs.items():
        path = getattr(spec, "path", None)
        if path is None or label not in used:
            continue
        try:
            ensure_parent_dir(path, what)
        except BackendError as e:
            if label in configured:
                raise RuntimeConfigError(rc.path, f"{section}.{label}.path", str(e)) from None
            log.warning("%s %r: %s; it fails until the directory can be created (or pass --state-dir)", what, label, e)


def _unknown_type(what: str, label: str, kind: str, ours: tuple[str, ...], spins: tuple[str, ...]) -> str:
    supported = " and ".join(repr(t) for t in ours)
    if kind in spins:
        return (
            f"{what} {label!r} has type {kind!r}, which Spin knows but kubespin does not support; "
            f"kubespin supports {supported}"
        )
    return f"{what} {label!r} has unknown type {kind!r}; kubespin supports {supported}"


def make_kv_backend(spec: KvSpec) -> KeyValueBackend:
    """A lazy backend for a spec: no connection, no file yet."""
    if isinstance(spec, SpinKvSpec):
        return SpinSqliteBackend(spec.path)
    if isinstance(spec, RedisKvSpec):
        return RedisBackend(spec.url)
    raise TypeError(f"no backend for {spec!r}")


__all__ = [
    "DEFAULT_LABEL",
    "BackendError",
    "KvSpec",
    "RedisKvSpec",
    "SpinKvSpec",
    "SqliteDbSpec",
    "key_value_specs",
    "make_kv_backend",
    "prepare_directories",
    "resolve_state_dir",
    "sqlite_specs",
]
