"""The optional C host functions (``_native.c``): which are available, and for which imports.

It also configures the wasmtime C-API functions the module calls (values.py configures the rest).

A native function is used for an import only when all of these hold; otherwise the Python
implementation registered beside it runs, with the same behaviour:

* the extension module was built (it is optional: no C compiler, no accelerator);
* ``KUBESPIN_NATIVE_HOST`` is not ``0`` (to compare both paths, or rule the accelerator out);
* wasmtime's value layout matches what the C code writes (payload at offset 8, checked in capi);
* the import's type is exactly ``func() -> u64``, the only shape the C functions produce.

Under the same conditions (built, not switched off, layout checked) every other host function and
every resource destructor is entered through the module's C entry points rather than a ctypes
callback (see :func:`entry_points` and binding.py); the Python code they run is the same. And each
request's store, instance and call are made by one C function (:func:`runner`) instead of ten
ctypes calls (runtime.py keeps those for when the module is missing or off).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from types import ModuleType

import wasmtime.component as wc
from wasmtime import _ffi as ffi

from kubespin_shim.host import capi

log = logging.getLogger("kubespin.shim.native")

ENV_SWITCH = "KUBESPIN_NATIVE_HOST"
SYMBOLS = frozenset({"monotonic_now", "monotonic_resolution", "random_u64"})
_module: ModuleType | None = None
_loaded = False


def built() -> ModuleType | None:
    """The extension module if it was built, whether or not it is switched on (its per-thread call
    context must follow the Python one either way: a linker made while it was on may still run)."""
    try:
        from kubespin_shim.host import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native  # type: ignore[no-any-return]


def module() -> ModuleType | None:
    """The configured extension module, or None when it is missing, switched off or unusable."""
    global _module, _loaded
    if _loaded:
        return _module
    _loaded = True
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        log.debug("native host functions switched off (%s=0)", ENV_SWITCH)
        return None
    _native = built()
    if _native is None:
        log.debug("native host functions not built: using the Python implementations")
        return None
    if _native.PAYLOAD_OFFSET != capi.PAYLOAD:
        log.warning(
            "native host functions disabled: wasmtime's value payload is at offset %d, the C code writes at %d",
            capi.PAYLOAD,
            _native.PAYLOAD_OFFSET,
        )
        return None
    _native.configure(
        capi.K_U64,
        *(
            address_of(name)
            for name in (
                "wasmtime_error_new",
                "wasmtime_component_resource_any_to_host",
                "wasmtime_component_resource_host_rep",
                "wasmtime_component_resource_host_delete",
                "wasmtime_component_resource_host_new",
                "wasmtime_component_resource_host_to_any",
            )
        ),
    )
    _module = _native
    return _module


_RUNNER_SYMBOLS = (
    "wasmtime_store_new",
    "wasmtime_store_context",
    "wasmtime_store_limiter",
    "wasmtime_store_delete",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_component_linker_instantiate",
    "wasmtime_component_instance_get_func",
    "wasmtime_component_func_call",
    "wasmtime_component_func_post_return",
    "wasmtime_component_val_delete",
)
_runner_configured = False


def runner() -> Callable[..., tuple[int, int, float, float]] | None:
    """The extension's ``run_guest`` (one request's store, instance and call in one C call), or None:
    then runtime.py makes the same C calls through ctypes. Needs the value layout (values.py)
    configured first: it lowers the handler's arguments."""
    global _runner_configured
    mod = module()
    if mod is None:
        return None
    if not _runner_configured:
        mod.configure_runner(
            tuple(address_of(name) for name in _RUNNER_SYMBOLS),
            ctypes.sizeof(ffi.wasmtime_component_instance_t),
            ctypes.sizeof(ffi.wasmtime_component_func_t),
        )
        _runner_configured = True
    return mod.run_guest  # type: ignore[no-any-return]


def start_ticker(engine: object, interval_s: float) -> object | None:
    """Advance ``engine``'s epoch every ``interval_s`` from a C thread that never takes the GIL; None
    when the extension is missing or switched off (the caller then ticks from Python)."""
    mod = module()
    if mod is None:
        return None
    engine_ptr = ctypes.cast(engine.ptr(), ctypes.c_void_p).value  # type: ignore[attr-defined]
    return mod.start_ticker(address_of("wasmtime_engine_increment_epoch"), engine_ptr, interval_s, engine)


def stop(handle: object) -> None:
    """Stop a ticker or a watch (:func:`start_ticker`, http/workers.py) and wait for its thread."""
    mod = built()
    if mod is not None:
        mod.stop(handle)


def address_of(symbol: str) -> int:
    """The address of a function of wasmtime's C API."""
    return ctypes.cast(getattr(ffi.dll, symbol), ctypes.c_void_p).value or 0


def available() -> bool:
    return module() is not None


def callback_for(symbol: str, ty: wc.FuncType) -> int | None:
    """The address of C function ``symbol`` (one of ``SYMBOLS``, checked by ``Interface.native``) if it
    may implement an import of type ``ty``."""
    mod = module()
    if mod is None or ty.params or ty.result != wc.U64():
        return None
    return int(getattr(mod, symbol))


def entry_points() -> tuple[int, int] | None:
    """Addresses of the C entry points for Python host functions and resource destructors
    (``host_call``, ``resource_drop``), or None: then binding.py's ctypes trampolines serve."""
    mod = module()
    if mod is None:
        return None
    return int(mod.host_call), int(mod.resource_drop)


def reset_for_tests() -> None:
    """Forget the load decision (tests flip ``KUBESPIN_NATIVE_HOST``)."""
    global _module, _loaded, _runner_configured
    _module, _loaded, _runner_configured = None, False, False
