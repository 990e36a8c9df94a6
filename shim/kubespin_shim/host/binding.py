"""Linking Python host interfaces into a component's imports, with signatures compiled once.

A capability declares an :class:`Interface` (``wasi:io/streams``, ``fermyon:spin/key-value`` …) and
registers Python callables under the WIT function names (``[method]input-stream.read``,
``[static]store.open``, ``get-environment``). :func:`build_linker` walks the *component's* imports
and defines exactly what it imports, at the version it imports, so a component built against
``@0.2.0`` and one built against ``@0.2.3`` both link.

Every host function goes through one ctypes trampoline. On the first call of a function its
``FuncType`` is compiled into typed lift/lower closures (see ``values.py``) and cached by the
definition's slot, so later calls skip type reflection entirely.

Imports with no Python implementation still link: a function returning ``result<_, E>`` returns
``E``'s own error value with a message naming the missing feature (the Spin contract: never a trap
for a missing host feature); any other unimplemented function traps with a clear message.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi

from kubespin_shim.host.values import (
    Err,
    HostResource,
    HostTrap,
    Lift,
    Lower,
    ResourceTable,
    Variant,
    lift_for,
    lower_for,
)

log = logging.getLogger("kubespin.shim.host")

_tls = threading.local()


class CallContext:
    """Per-request state every host function can reach: resource table, store, app facts.

    Capabilities hang their per-request state off ``extras`` (keyed by capability name).
    """

    __slots__ = ("component_id", "extras", "host_error", "store_ptr", "table")

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id
        self.table = ResourceTable()
        self.store_ptr: Any = None  # raw wasmtime_context_t* of the host call in progress
        self.host_error: BaseException | None = None
        self.extras: dict[str, Any] = {}


def current_context() -> CallContext:
    return _tls.ctx


def set_current_context(ctx: CallContext | None) -> None:
    _tls.ctx = ctx


@dataclass
class Interface:
    """One WIT interface implemented in Python, keyed by its unversioned name."""

    name: str
    funcs: dict[str, tuple[Callable[..., Any], bool]] = field(default_factory=dict)
    resources: dict[str, type[HostResource]] = field(default_factory=dict)

    def func(self, wit_name: str, *, needs_ctx: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function. ``needs_ctx``: the callable takes the :class:`CallContext` first."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.funcs[wit_name] = (fn, needs_ctx)
            return fn

        return deco

    def resource(self, wit_name: str, cls: type[HostResource], methods: Iterable[str] = ()) -> None:
        """Register a resource class; each WIT method ``m`` maps to ``cls.<m with - as _>(self, …)``."""
        if cls.resource_id < 0:
            cls.resource_id = _next_resource_id()
        self.resources[wit_name] = cls
        for m in methods:
            attr = m.replace("-", "_")
            getattr(cls, attr)  # fail at import time on a typo, not at the guest's first call
            self.funcs[f"[method]{wit_name}.{m}"] = (_method_caller(attr), False)


def _method_caller(attr: str) -> Callable[..., Any]:
    """Dispatch on the object's class, so subclasses (a socket-backed stream…) override methods."""

    def call(obj: Any, *args: Any) -> Any:
        return getattr(obj, attr)(*args)

    call.__name__ = attr
    return call


_resource_ids = iter(range(1, 1 << 30))
_resource_lock = threading.Lock()


def _next_resource_id() -> int:
    with _resource_lock:
        return next(_resource_ids)


class _Placeholder(HostResource):
    """Stands in for resources of interfaces we do not implement; never handed out."""


def unversioned(name: str) -> str:
    return name.split("@", 1)[0]


# ------------------------------------------------------------------------------------------
# the trampoline


@dataclass
class _Entry:
    name: str
    fn: Callable[..., Any]
    needs_ctx: bool
    lifts: list[Lift] | None = None
    lower: Lower | None = None
    has_result: bool = False
    compiled: bool = False


_ENTRIES: list[_Entry] = []
_ENTRIES_LOCK = threading.Lock()


class _Owner:
    """Marks a FuncType as borrowed from the caller (wasmtime-py must not free it)."""


_BORROWED = _Owner()


def _compile(entry: _Entry, ty_raw: Any) -> None:
    with wc.FuncType._from_ptr(ty_raw, owner=_BORROWED) as fty:
        entry.lifts = [lift_for(pty) for _name, pty in fty.params]
        rty = fty.result
        if rty is not None:
            entry.lower = lower_for(rty)
            entry.has_result = True
        entry.compiled = True


def _error_ptr(message: str) -> int:
    err = wasmtime.WasmtimeError(message)
    return ctypes.cast(err._consume(), ctypes.c_void_p).value or 0


@ffi.wasmtime_component_func_callback_t
def _trampoline(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    # The per-call path: no wasmtime-py wrapper objects, signatures compiled once per definition.
    entry = _ENTRIES[idx or 0]
    ctx: CallContext = _tls.ctx
    try:
        if not entry.compiled:
            _compile(entry, ty_raw)
        ctx.store_ptr = context
        lifts = entry.lifts
        if lifts:
            pyargs = [lf(args[i], ctx) for i, lf in enumerate(lifts)]
            r = entry.fn(ctx, *pyargs) if entry.needs_ctx else entry.fn(*pyargs)
        else:
            r = entry.fn(ctx) if entry.needs_ctx else entry.fn()
        if entry.has_result:
            entry.lower(r, results, None, ctx)  # type: ignore[misc]
        return 0
    except BaseException as e:  # any host failure must become a trap, never a crash of the shim
        if ctx.host_error is None:
            ctx.host_error = e
        if not isinstance(e, HostTrap):
            log.debug("host function %s failed", entry.name, exc_info=e)
        return _error_ptr(f"host function {entry.name} failed: {e}")


def _add_func(inst: wc.LinkerInstance, name: str, fn: Callable[..., Any], needs_ctx: bool) -> None:
    with _ENTRIES_LOCK:
        idx = len(_ENTRIES)
        _ENTRIES.append(_Entry(name=name, fn=fn, needs_ctx=needs_ctx))
    name_bytes = name.encode("utf-8")
    err = ffi.wasmtime_component_linker_instance_add_func(
        inst.ptr(),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        _trampoline,
        idx,
        _noop_finalize,
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _noop_finalize(idx):  # type: ignore[no-untyped-def]
    # Entries live as long as the process: linkers are built once per component at startup.
    return None


def _dtor_for(cls: type[HostResource]) -> Callable[[Any, int], None]:
    def dtor(store: Any, rep: int) -> None:
        ctx: CallContext | None = getattr(_tls, "ctx", None)
        if ctx is None:
            return
        try:
            obj = ctx.table.pop(rep)
        except HostTrap:
            return
        obj.close()

    return dtor


# ------------------------------------------------------------------------------------------
# fallback for what we do not implement


def missing_feature_value(result_ty: Any, message: str) -> Any:
    """The error value a missing host feature returns, derived from the function's result type.

    Picks the error case that carries a message (``other``, ``runtime-error``, ``io``, …), so the
    guest sees the interface's own error with text naming the missing feature.
    """
    if not isinstance(result_ty, wc.ResultType) or result_ty.err is None:
        return None
    err_ty = result_ty.err
    if isinstance(err_ty, wc.String):
        return Err(message)
    if isinstance(err_ty, wc.VariantType):
        cases = err_ty.cases
        preferred = ("other", "runtime-error", "io", "unexpected", "connection-failed", "internal-error")
        by_name = dict(cases)
        for name in preferred:
            if name in by_name and isinstance(by_name[name], wc.String):
                return Err(Variant(name, message))
        for name, cty in cases:
            if isinstance(cty, wc.String):
                return Err(Variant(name, message))
        for name, cty in cases:
            if cty is None:
                return Err(Variant(name))
    if isinstance(err_ty, wc.EnumType):
        return Err(err_ty.names[-1])
    return None


def _missing_func(iface: str, fname: str, fty: Any) -> tuple[Callable[..., Any], bool]:
    message = f"{unversioned(iface)} ({fname}) is not supported by the kubespin shim yet"
    value = missing_feature_value(fty.result, message)
    warned = [False]

    def missing(ctx: CallContext, *args: Any) -> Any:
        if not warned[0]:
            warned[0] = True
            log.warning("component %s called %s: %s", ctx.component_id, fname, message)
        if value is None:
            raise HostTrap(message)
        return value

    return missing, True


# ------------------------------------------------------------------------------------------


def build_linker(
    engine: wasmtime.Engine,
    component: wc.Component,
    interfaces: dict[str, Interface],
) -> wc.Linker:
    """A linker that defines every import of ``component`` from ``interfaces`` (or fallbacks)."""
    linker = wc.Linker(engine)
    imports = component.type.imports(engine)
    # A resource `use`d from another interface (wasi:io/streams' `error` is wasi:io/error's) must be
    # defined with the same host type everywhere: match them by the component's own type identity.
    seen: list[tuple[wc.ResourceType, type[HostResource]]] = []
    with linker.root() as root:
        for import_name, ext in imports.items():
            ity = ext.ty
            if not isinstance(ity, wc.ComponentInstanceType):
                raise ValueError(f"component imports {import_name!r}, which is not an interface instance")
            iface = interfaces.get(unversioned(import_name))
            with root.add_instance(import_name) as inst:
                for item_name, item in ity.exports(engine).items():
                    ty = item.ty
                    if isinstance(ty, wc.ResourceType):
                        cls = next((c for t, c in seen if t == ty), None)
                        if cls is None and iface is not None:
                            cls = iface.resources.get(item_name)
                        if cls is None:
                            cls = type(f"Missing_{item_name}", (_Placeholder,), {})
                            cls.resource_id = _next_resource_id()
                        seen.append((ty, cls))
                        inst.add_resource(item_name, wc.ResourceType.host(cls.resource_id), _dtor_for(cls))
                    elif isinstance(ty, wc.FuncType):
                        impl = iface.funcs.get(item_name) if iface else None
                        if impl is None:
                            impl = _missing_func(import_name, item_name, ty)
                        _add_func(inst, item_name, impl[0], impl[1])
                    # type exports (records, variants) need no definition
    return linker
