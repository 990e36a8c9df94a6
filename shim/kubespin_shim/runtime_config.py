"""Load Spin's ``runtime-config.toml`` and follow it as Kubernetes updates the mounted Secret.

The file is Spin's own format (``spin up --runtime-config-file``); each capability parses its own
section (``key_value_store``, ``sqlite_database``, ``llm_compute``, ``variables_provider`` ...), as
Spin's factors do. This module only reads the file, keeps its digest, and watches it.

Why the watcher polls instead of using inotify (or ``watchfiles``): a Secret volume is written by
kubelet's AtomicWriter. ``runtime-config.toml`` is a symlink to ``..data/runtime-config.toml``;
``..data`` is itself a symlink to a timestamped directory, and an update creates a new timestamped
directory and renames a fresh ``..data_tmp`` symlink over ``..data``. The file we were told to read
is never written or renamed, so a watch on it (or on its inode) never fires, and a directory watch
sees only ``..data`` events that must be mapped back. A stat of the path (following the symlinks)
every ``POLL_INTERVAL_S`` (250 ms) sees the new target's inode, size and mtime, costs microseconds,
needs no extra dependency and behaves the same on every filesystem; kubelet only syncs Secrets every
minute or so anyway, and the local node writes them within ~70 ms, where the short poll shows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ShimError

log = logging.getLogger(__name__)

#: Top-level keys Spin 3 reads. Spin fails at startup on any other ("unused runtime config key(s)").
SPIN_TOP_LEVEL_KEYS = frozenset(
    {
        "key_value_store",
        "sqlite_database",
        "llm_compute",
        "variables_provider",
        "config_provider",  # older name for variables_provider
        "outbound_http",
        "outbound_mqtt",
        "outbound_mysql",
        "outbound_networking",
        "outbound_pg",
        "outbound_redis",
        "client_tls",
        "state_dir",
        "log_dir",
        "max_instance_memory",
    }
)


class RuntimeConfigError(ShimError):
    """A runtime config file that cannot be used: ``file``, ``key`` (dotted, may be empty), ``message``."""

    def __init__(self, file: str | Path | None, key: str, message: str) -> None:
        self.file = str(file) if file is not None else "<runtime config>"
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"

    def __reduce__(self) -> tuple[type[RuntimeConfigError], tuple[str, str, str]]:
        return (type(self), (self.file, self.key, self.message))


@dataclass(frozen=True)
class RuntimeConfig:
    """A parsed runtime config. ``digest`` is the sha256 of the file's bytes (of b"" when there is none)."""

    path: Path | None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    digest: str = hashlib.sha256(b"").hexdigest()

    def section(self, name: str) -> Mapping[str, Any]:
        """A table section such as ``key_value_store`` (``{label: table}``); empty when absent."""
        value = self.data.get(name)
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            raise RuntimeConfigError(self.path, name, f"expected a table, found {_toml_type(value)}")
        return value

    def providers(self) -> list[dict[str, Any]]:
        """The ``[[variables_provider]]`` array (or the older ``[[config_provider]]``), as Spin reads it."""
        key = "variables_provider" if "variables_provider" in self.data else "config_provider"
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise RuntimeConfigError(
                self.path, key, f"expected an array of tables ([[{key}]]), found {_toml_type(value)}"
            )
        return [dict(v) for v in value]

    def unknown_keys(self, extra_known: Iterable[str] = ()) -> list[str]:
        """Top-level keys Spin would reject as unused (sorted). Spin refuses both
        ``variables_provider`` and ``config_provider`` together, since it reads only the first."""
        known = SPIN_TOP_LEVEL_KEYS | set(extra_known)
        unknown = {k for k in self.data if k not in known}
        if "variables_provider" in self.data and "config_provider" in self.data:
            unknown.add("config_provider")
        return sorted(unknown)


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def parse_runtime_config(raw: bytes, path: Path | None = None) -> RuntimeConfig:
    """Parse runtime config bytes (UTF-8 TOML)."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuntimeConfigError(path, "", f"is not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuntimeConfigError(path, "", f"failed to parse runtime config file as toml: {e}") from None
    return RuntimeConfig(path, MappingProxyType(data), digest)


def load_runtime_config(path: Path | str | None) -> RuntimeConfig:
    """Read and parse a runtime config file; ``None`` gives the empty config (``spin up`` without the flag)."""
    if path is None:
        return RuntimeConfig(None)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise RuntimeConfigError(p, "", f"failed to read runtime config file: {e.strerror or e}") from None
    return parse_runtime_config(raw, p)


# ---------------------------------------------------------------------------------------------
# Watching.

_Stamp = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns of the resolved file


# How often the watcher stats the file: a relink reaches new requests within this (plus the control
# plane's ~70 ms on the local node; a kubelet takes up to a minute to update a mounted Secret). A stat
# every 250 ms costs microseconds.
POLL_INTERVAL_S = 0.25


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)  # follows the `..data` symlinks to the current file
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class RuntimeConfigWatcher:
    """Calls ``on_change(new_config)`` in a background thread whenever the file's content changes.

    * A change is noticed by ``stat`` (through symlinks) every ``interval`` seconds, then confirmed
      by the sha256 of the bytes: a touch, or a Secret re-written with the same data, is no change.
    * A file that is missing, unreadable or not valid TOML is logged (once per distinct content)
      and the previous config stays current; the next valid content is applied.
    * If ``on_change`` raises, the error is logged and the previous config stays current (so a
      capability can refuse a config it cannot use); the same content is not retried.
    The thread waits on an Event between polls (no busy-waiting) and ``stop()`` returns promptly.
    """

    def __init__(
        self,
        path: Path | str,
        on_change: Callable[[RuntimeConfig], None],
        *,
        interval: float = POLL_INTERVAL_S,
        initial: RuntimeConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self._on_change = on_change
        self._current = initial if initial is not None else load_runtime_config(self.path)
        # With an initial config loaded earlier, the file may have changed in between (a relink landing
        # while the shim starts): leave the stamp unset so the first poll compares content.
        self._stamp = _stamp(self.path) if initial is None else None
        self._seen_digest = self._current.digest  # last content handled (applied, rejected or invalid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> RuntimeConfig:
        """The config in force: the last one that parsed and that ``on_change`` accepted."""
        with self._lock:
            return self._current

    def start(self) -> RuntimeConfigWatcher:
        if self._thread is not None:
            raise RuntimeError("RuntimeConfigWatcher already started")
        self._thread = threading.Thread(target=self._run, name=f"runtime-config-watch:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> RuntimeConfigWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the app keeps serving with the old config
                log.exception("runtime config watcher: unexpected error while checking %s", self.path)

    def check(self) -> bool:
        """One poll (the thread calls this; tests may too). True when a new config was applied."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            if self._seen_digest != "missing":
                self._seen_digest = "missing"
                log.warning("runtime config %s is missing or unreadable; keeping the previous config", self.path)
            return False
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            log.warning("runtime config %s cannot be read (%s); keeping the previous config", self.path, e)
            self._stamp = None  # retry on the next poll
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._seen_digest:
            return False
        self._seen_digest = digest
        try:
            new = parse_runtime_config(raw, self.path)
        except RuntimeConfigError as e:
            log.error("runtime config changed but is invalid, keeping the previous config: %s", e)
            return False
        if new.digest == self.current.digest:
            return False  # back to the content in force (e.g. an invalid edit was reverted)
        try:
            self._on_change(new)
        except Exception as e:
            log.error(
                "runtime config %s changed (sha256 %s) but could not be applied, keeping the previous config: %s",
                self.path,
                digest[:12],
                e,
            )
            return False
        with self._lock:
            self._current = new
        log.info("runtime config %s reloaded (sha256 %s)", self.path, digest[:12])
        return True
