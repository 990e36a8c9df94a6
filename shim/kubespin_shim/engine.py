"""The wasmtime engine, its epoch ticker, and the on-disk cache of compiled components.

Compiling a 37 MB componentize-py app takes seconds; deserializing the compiled artifact takes
milliseconds. Artifacts are keyed by the sha256 of the component bytes plus the wasmtime version
and the engine settings that change code generation, so a stale artifact is never loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi

from kubespin_shim.errors import ShimError

log = logging.getLogger("kubespin.shim.engine")

# A request's deadline is counted in ticks, so it is precise to one tick. 50 ms is ample for deadlines
# of seconds (30 s by default), and every tick wakes a thread on a CPU that may be serving requests:
# 10 ms ticks cost ~0.14 context switches per js-hello request at 700 requests/s.
EPOCH_TICK_SECONDS = 0.05
_ENGINE_FLAVOUR = "epoch-interruption=1"

MB = 1 << 20
# The pooling instance allocator, as `spin up` configures it (spin-core's Config::default), opt-in with
# SPIN_WASMTIME_POOLING=1: instance slots are reserved once and reused, and each keeps its first pages
# resident. `spin up` turns it on by default; kubespin does not, on measurement (docs/performance.md): in
# this shim it bought no throughput, and the resident pages of warm slots stay with the process after a
# burst (py-hello: 128 MB two seconds after 32 concurrent connections, against 63 MB on demand).
# (setter in wasmtime's C API, C type, Spin's environment variable, Spin's default)
POOLING_ENV = "SPIN_WASMTIME_POOLING"
_POOLING_SETTINGS: tuple[tuple[str, type, str | None, int], ...] = (
    ("total_component_instances", ctypes.c_uint32, "SPIN_WASMTIME_INSTANCE_COUNT", 1_000),
    ("max_component_instance_size", ctypes.c_size_t, "SPIN_WASMTIME_INSTANCE_SIZE", 10 * MB),
    ("max_core_instance_size", ctypes.c_size_t, "SPIN_WASMTIME_CORE_INSTANCE_SIZE", 10 * MB),
    ("max_core_instances_per_component", ctypes.c_uint32, "SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200),
    ("max_tables_per_component", ctypes.c_uint32, "SPIN_WASMTIME_INSTANCE_TABLES", 20),
    ("table_elements", ctypes.c_size_t, "SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", 30_000),
    ("max_memories_per_component", ctypes.c_uint32, "SPIN_WASMTIME_INSTANCE_MEMORIES", 32),
    ("total_memories", ctypes.c_uint32, "SPIN_WASMTIME_TOTAL_MEMORIES", 1_000),
    ("total_tables", ctypes.c_uint32, "SPIN_WASMTIME_TOTAL_TABLES", 2_000),
    ("max_memory_size", ctypes.c_size_t, None, 4 << 30),  # SPIN_MAX_INSTANCE_MEMORY still limits each store
    ("linear_memory_keep_resident", ctypes.c_size_t, None, 2 * MB),
    ("table_keep_resident", ctypes.c_size_t, None, MB // 2),
)


class EngineConfigError(ShimError):
    """An engine setting from the environment is not usable."""


def pooling_settings(environ: Mapping[str, str]) -> dict[str, int] | None:
    """The pooling allocator's settings from ``environ`` when ``SPIN_WASMTIME_POOLING=1``, else None
    (instances allocated on demand: unset or ``0``)."""
    switch = environ.get(POOLING_ENV, "").strip()
    if switch not in ("", "0", "1"):
        raise EngineConfigError(f"{POOLING_ENV}={switch!r} is not supported: use 1 (pooling) or 0 (on demand)")
    if switch != "1":
        return None
    settings = {}
    for name, _ctype, env, default in _POOLING_SETTINGS:
        raw = environ.get(env) if env else None
        if raw is None:
            settings[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value <= 0 or (value >= 1 << 32 and _ctype is ctypes.c_uint32):
            raise EngineConfigError(f"{env}={raw!r} is not a positive integer{' below 2^32' if value > 0 else ''}")
        settings[name] = value
    return settings


# Per memory slot the pool reserves the memory's maximum plus guard regions; 2 GiB over-counts them
# (wasmtime's defaults are smaller), as spin-core's probe does with its "6G per linear memory".
_GUARD_ALLOWANCE = 2 << 30


def pool_reservation_bytes(settings: Mapping[str, int]) -> int:
    return settings["total_memories"] * (settings["max_memory_size"] + _GUARD_ALLOWANCE)


def address_space_available(size: int) -> bool:
    """Whether this process can reserve ``size`` bytes of address space (reserved and released at once)."""
    import mmap

    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    try:
        region = mmap.mmap(-1, size, flags=flags, prot=0)  # PROT_NONE: reserve, never touch
    except (OSError, OverflowError, ValueError):
        return False
    region.close()
    return True


def _apply_pooling(cfg: wasmtime.Config, settings: Mapping[str, int]) -> None:
    dll = ffi.dll
    new = ctypes.CFUNCTYPE(ctypes.c_void_p)(("wasmtime_pooling_allocation_config_new", dll))
    delete = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(("wasmtime_pooling_allocation_config_delete", dll))
    strategy_set = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
        ("wasmtime_pooling_allocation_strategy_set", dll)
    )
    pool = new()
    try:
        for name, ctype, _env, _default in _POOLING_SETTINGS:
            symbol = f"wasmtime_pooling_allocation_config_{name}_set"
            setter = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctype)((symbol, dll))
            setter(pool, settings[name])
        strategy_set(ctypes.cast(cfg.ptr(), ctypes.c_void_p), pool)  # the config keeps a copy
    finally:
        delete(pool)


def default_cache_dir() -> Path:
    base = os.environ.get("KUBESPIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kubespin")
    return Path(base) / "compiled"


def _start_native_ticker(engine: wasmtime.Engine) -> object | None:
    """The C ticker (host/_native.c), which advances the epoch without taking the GIL; None when the
    extension is missing or switched off, and the engine falls back to a Python thread.

    Why it matters: a Python ticker needs the GIL every tick; on a busy CPU each tick forced the
    thread running requests to hand the GIL over and back, a few context switches every time (with
    10 ms ticks, about 0.35 per js-hello request at 900 requests/s, docs/performance.md).
    """
    from kubespin_shim.host import native

    return native.start_ticker(engine, EPOCH_TICK_SECONDS)


class WasmEngine:
    """One engine per process; a thread (C, or Python without the extension) advances the epoch for
    per-request deadlines."""

    def __init__(self, cache_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        settings = pooling_settings(environ)
        if settings is not None:
            # wasmtime aborts the process (a panic in wasm_engine_new) when the pool cannot reserve its
            # address space (a 39-bit aarch64/riscv64 kernel, `ulimit -v`, valgrind), so the space is
            # probed first, as `spin up` probes it, and a clear error replaces the abort.
            need = pool_reservation_bytes(settings)
            if not address_space_available(need):
                raise EngineConfigError(
                    f"{POOLING_ENV}=1 but this process cannot reserve the {need / (1 << 40):.1f} TiB of address "
                    "space the instance pool needs: lower SPIN_WASMTIME_TOTAL_MEMORIES, or unset "
                    f"{POOLING_ENV} to allocate instances on demand"
                )
        self.pooling = settings is not None
        # Part of the compile-cache key: an artifact is only loaded by an engine configured alike.
        self.flavour = _ENGINE_FLAVOUR + (",pooling=1" if self.pooling else "")
        self.engine = wasmtime.Engine(self._config(settings))
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._loaded: dict[Path, tuple[wc.Component, bool]] = {}  # by source path: see component()
        self._stop = threading.Event()
        self._native_ticker = _start_native_ticker(self.engine)
        if self._native_ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="epoch-ticker", daemon=True)
            self._ticker.start()

    @staticmethod
    def _config(pooling: Mapping[str, int] | None) -> wasmtime.Config:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.wasm_component_model = True
        if pooling is not None:
            _apply_pooling(cfg, pooling)
        return cfg

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_SECONDS):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        if self._native_ticker is not None:
            from kubespin_shim.host import native

            native.stop(self._native_ticker)

    @staticmethod
    def ticks_for(seconds: float) -> int:
        return max(1, round(seconds / EPOCH_TICK_SECONDS))

    def _cache_key(self, wasm_path: Path) -> str:
        """sha256 of the component bytes + engine identity, memoised by the file's stat.

        Hashing a 37 MB componentize-py app costs tens of milliseconds of a cold start; the memo
        (path, size, mtime, inode -> digest) skips it when the file has not changed.
        """
        st = wasm_path.stat()
        stamp = f"{wasm_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}|{self.flavour}"
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

        h.update(f"|wasmtime-{version('wasmtime')}|{self.flavour}".encode())
        digest = h.hexdigest()
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(digest)
        except OSError:
            pass
        return digest

    def component(self, wasm_path: Path) -> tuple[wc.Component, bool]:
        """:meth:`load_component`, once per engine and source path.

        Start-up asks twice (for the imports that decide which factors to load, then to link it),
        and two components may share one file.
        """
        loaded = self._loaded.get(wasm_path)
        if loaded is None:
            loaded = self._loaded[wasm_path] = self.load_component(wasm_path)
        return loaded

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
