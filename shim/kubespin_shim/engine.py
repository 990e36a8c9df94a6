"""The wasmtime engine, its epoch ticker, and the on-disk cache of compiled components.

Compiling a 37 MB componentize-py app takes seconds; deserializing the compiled artifact takes
milliseconds. Artifacts are keyed by the sha256 of the component bytes plus the wasmtime version
and the engine settings that change code generation, so a stale artifact is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import wasmtime
import wasmtime.component as wc

log = logging.getLogger("kubespin.shim.engine")

EPOCH_TICK_SECONDS = 0.01
_ENGINE_FLAVOUR = "epoch-interruption=1"


def default_cache_dir() -> Path:
    base = os.environ.get("KUBESPIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kubespin")
    return Path(base) / "compiled"


class WasmEngine:
    """One engine per process; a daemon thread advances the epoch for per-request deadlines."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.wasm_component_model = True
        self.engine = wasmtime.Engine(cfg)
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="epoch-ticker", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_SECONDS):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()

    @staticmethod
    def ticks_for(seconds: float) -> int:
        return max(1, round(seconds / EPOCH_TICK_SECONDS))

    def _cache_key(self, wasm_path: Path) -> str:
        """sha256 of the component bytes + engine identity, memoised by the file's stat.

        Hashing a 37 MB componentize-py app costs tens of milliseconds of a cold start; the memo
        (path, size, mtime, inode -> digest) skips it when the file has not changed.
        """
        st = wasm_path.stat()
        stamp = f"{wasm_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"
        memo = self.cache_dir / "digests" / hashlib.sha256(stamp.encode()).hexdigest()
        try:
            digest = memo.read_text().strip()
            if len(digest) == 64:
                return digest
        except OSError:
            pass
        h = hashlib.sha256()
        with open(wasm_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        from importlib.metadata import version  # only on a memo miss: importing it costs ~10 ms of a cold start

        h.update(f"|wasmtime-{version('wasmtime')}|{_ENGINE_FLAVOUR}".encode())
        digest = h.hexdigest()
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(digest)
        except OSError:
            pass
        return digest

    def load_component(self, wasm_path: Path) -> tuple[wc.Component, bool]:
        """Load a component, compiling only on a cache miss. Returns (component, was_cached)."""
        key = self._cache_key(wasm_path)
        cached = self.cache_dir / f"{key}.cwasm"
        if cached.is_file():
            try:
                return wc.Component.deserialize_file(self.engine, str(cached)), True
            except wasmtime.WasmtimeError as e:
                log.warning("ignoring unusable compiled artifact %s: %s", cached, e)
        t0 = time.perf_counter()
        component = wc.Component(self.engine, wasm_path.read_bytes())
        log.info("compiled %s in %.2fs", wasm_path.name, time.perf_counter() - t0)
        import tempfile  # only on a cache miss (a warm start never writes)

        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(component.serialize())
            os.replace(tmp, cached)  # atomic: concurrent shims never see a half-written artifact
        except OSError as e:
            log.warning("could not write the compile cache %s: %s", self.cache_dir, e)
        return component, False
