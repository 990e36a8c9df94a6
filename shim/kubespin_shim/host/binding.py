"""Linking Python host interfaces into a component's imports, with signatures compiled once.

A capability declares an :class:`Interface` (``wasi:io/streams``, ``fermyon:spin/key-value`` …) and
registers Python callables under the WIT function names (``[method]input-stream.read``,
``[static]store.open``, ``get-environment``). :func:`build_linker` walks the *component's* imports
and defines exactly what it imports, at the version it imports, so a component built against
``@0.2.0`` and one built against ``@0.2.3`` both link.

Every Python host function is entered through one C entry point (``_native.host_call``; a ctypes
trampoline when the optional extension is not built). On the first call of a function its
``FuncType`` is compiled into typed lift/lower closures (see ``values.py``) and one *invoker* for
its shape (arity, context, result), cached by the definition's slot: later calls skip type
reflection entirely and run no per-argument loop. The trampoline and the resource destructors are
registered with untyped pointer arguments (see ``capi.py`` for why that is the cheap path).

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
from functools import partial
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as ffi

from kubespin_shim.host import capi, native
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

    __slots__ = ("_out", "_out_ref", "component_id", "extras", "host_error", "store_ptr", "table")

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id
        self.table = ResourceTable()
        self.store_ptr: int | None = None  # address of the wasmtime_context_t of the call in progress
        self.host_error: BaseException | None = None
        self.extras: dict[str, Any] = {}
        self._out: ctypes.c_void_p | None = None

    @property
    def out(self) -> ctypes.c_void_p:
        """Out-parameter for the resource conversions of this request's host calls (one thread at a
        time); made on first use: only the Python conversions (no C extension) use it."""
        if self._out is None:
            self._out = ctypes.c_void_p()
            self._out_ref = ctypes.byref(self._out)
        return self._out

    @property
    def out_ref(self) -> Any:
        """``byref(out)``."""
        self.out  # noqa: B018 - made on first use
        return self._out_ref


def current_context() -> CallContext:
    return _tls.ctx


def set_current_context(ctx: CallContext | None) -> None:
    _tls.ctx = ctx
    if _C_SET_CONTEXT is not None:
        _C_SET_CONTEXT(ctx)


class Deferred:
    """Per-request state made only when a host function first asks for it (most requests make no
    outbound call, for one): a factor's ``prepare`` stores one shared ``Deferred`` per component
    under its key, and :func:`request_state` replaces it with ``make(ctx)`` on first use."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[CallContext], Any]) -> None:
        self.make = make


def request_state(ctx: CallContext, key: str) -> Any:
    """``ctx.extras[key]`` (None when absent), made now if its factor deferred it."""
    state = ctx.extras.get(key)
    if type(state) is Deferred:
        state = ctx.extras[key] = state.make(ctx)
    return state


_BUILT = native.built()
# The C entry points (host_call, resource_drop) read the context from their own thread-local.
_C_SET_CONTEXT: Callable[[CallContext | None], None] | None = _BUILT.set_context if _BUILT else None


@dataclass
class Interface:
    """One WIT interface implemented in Python, keyed by its unversioned name."""

    name: str
    funcs: dict[str, tuple[Callable[..., Any], bool]] = field(default_factory=dict)
    resources: dict[str, type[HostResource]] = field(default_factory=dict)
    # WIT function name -> C function in host/_native.c used instead of ``funcs`` when it fits (native.py)
    natives: dict[str, str] = field(default_factory=dict)

    def func(self, wit_name: str, *, needs_ctx: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function. ``needs_ctx``: the callable takes the :class:`CallContext` first."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.funcs[wit_name] = (fn, needs_ctx)
            return fn

        return deco

    def native(self, wit_name: str, symbol: str) -> None:
        """Implement ``wit_name`` with C function ``symbol`` where it is available; the Python
        function registered with :meth:`func` stays the fallback and must behave the same."""
        if wit_name not in self.funcs:
            raise ValueError(f"{self.name}.{wit_name}: register the Python implementation first")
        if symbol not in native.SYMBOLS:
            raise ValueError(f"{self.name}.{wit_name}: no native host function {symbol!r}")
        self.natives[wit_name] = symbol

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
    """Dispatch on the object's class, so subclasses (a socket-backed stream…) override methods.

    The invoker calls ``obj.<attr>(…)`` itself (see :func:`_invoker`); this function is the
    fallback for shapes it does not inline.
    """

    def call(obj: Any, *args: Any) -> Any:
        return getattr(obj, attr)(*args)

    call.__name__ = attr
    call.method_name = attr  # type: ignore[attr-defined]
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
    """One Python host function as linked: the C entry point (``_native.host_call``) and the ctypes
    trampoline both call ``invoke``, ``compile`` on the first call and ``failed`` on an exception."""

    name: str
    fn: Callable[..., Any]
    needs_ctx: bool
    invoke: Callable[[CallContext, int, int], None] | None = None
    # What host_call runs instead of ``invoke`` once compiled with the C plans (``_native_call``)
    native: tuple[Any, str | None, bool, tuple[Any, ...], Any] | None = None

    def compile(self, ty_raw: int) -> Callable[[CallContext, int, int], None]:
        return _compile(self, ty_raw)

    def failed(self, ctx: CallContext | None, e: BaseException) -> int:
        return _host_failure(f"host function {self.name}", ctx, e)


def _host_failure(name: str, ctx: CallContext | None, e: BaseException) -> int:
    """Record ``e`` as the request's host error and return the trap (a ``wasmtime_error_t*``): any
    host failure must become a trap in the guest's call, never a crash of the shim."""
    if ctx is not None and ctx.host_error is None:
        ctx.host_error = e
    if not isinstance(e, HostTrap):
        log.debug("%s failed", name, exc_info=e)
    return capi.error_ptr(f"{name} failed: {e}")


_ENTRIES: list[_Entry] = []
_ENTRIES_LOCK = threading.Lock()


class _Owner:
    """Marks a FuncType as borrowed from the caller (wasmtime-py must not free it)."""


_BORROWED = _Owner()
_FUNC_TYPE_PTR = ctypes.POINTER(ffi.wasmtime_component_func_type_t)


def _compile(entry: _Entry, ty_raw: int) -> Callable[[CallContext, int, int], None]:
    with wc.FuncType._from_ptr(ctypes.cast(ty_raw, _FUNC_TYPE_PTR), owner=_BORROWED) as fty:
        lifts = [lift_for(pty) for _name, pty in fty.params]
        lower = lower_for(fty.result) if fty.result is not None else None
    entry.invoke = _invoker(entry.fn, entry.needs_ctx, lifts, lower)
    entry.native = _native_call(entry.fn, entry.needs_ctx, lifts, lower)
    return entry.invoke


_NATIVE_MAX_ARGS = 16  # _native.c's NATIVE_MAX_ARGS


def _native_call(
    fn: Callable[..., Any], needs_ctx: bool, lifts: list[Lift], lower: Lower | None
) -> tuple[Any, str | None, bool, tuple[Any, ...], Any] | None:
    """What ``_native.host_call`` needs to do the invoker's work itself: the function (or the method
    name, for a resource method, as :func:`_invoker` inlines it), whether it takes the context, and
    the C plans of the arguments and the result. None when a conversion is not a C plan (the
    extension is off) or there are more parameters than the C side takes."""
    plans = [_c_plan(lf) for lf in lifts]
    lower_plan = _c_plan(lower) if lower is not None else None
    if any(p is None for p in plans) or (lower is not None and lower_plan is None) or len(plans) > _NATIVE_MAX_ARGS:
        return None
    method = getattr(fn, "method_name", None)
    if not (method is not None and plans and method.isidentifier() and not needs_ctx):
        method = None
    return (fn, method, needs_ctx, tuple(plans), lower_plan)


def _c_plan(conversion: Any) -> Any:
    """The plan of a C lift or lower (``partial(_native.lift | lower, plan)``), else None."""
    mod = native.module()
    if mod is None or not isinstance(conversion, partial) or conversion.func not in (mod.lift, mod.lower):
        return None
    return conversion.args[0]


def _invoker(
    fn: Callable[..., Any],
    needs_ctx: bool,
    lifts: list[Lift],
    lower: Lower | None,
) -> Callable[[CallContext, int, int], None]:
    """``invoke(ctx, args, results)`` for one function's shape, as straight-line code.

    Generated source (as ``dataclasses`` and ``namedtuple`` do) because a loop over the arguments
    and branches on ``needs_ctx``/result would run on every host call; this way each call is one
    Python frame doing exactly its own lifts, the call and the lower. A resource method is called on
    the lifted object directly (``self.read(n)``), which saves a Python frame per call.
    """
    ns: dict[str, Any] = {"fn": fn, "lower": lower}
    lifted = []
    for i, lf in enumerate(lifts):
        ns[f"lift{i}"] = lf
        lifted.append(f"lift{i}(args + {i * capi.VAL_SIZE}, ctx)")
    method = getattr(fn, "method_name", None)
    if method is not None and lifted and method.isidentifier() and not needs_ctx:
        call = f"{lifted[0]}.{method}({', '.join(lifted[1:])})"
    else:
        call = f"fn({', '.join((['ctx'] if needs_ctx else []) + lifted)})"
    body = f"lower({call}, results, ctx)" if lower is not None else call
    exec(f"def invoke(ctx, args, results):\n    {body}\n", ns)
    return ns["invoke"]  # type: ignore[no-any-return]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.c_void_p,  # data: the _ENTRIES slot
    ctypes.c_void_p,  # wasmtime_context_t*
    ctypes.c_void_p,  # const wasmtime_component_func_type_t*
    ctypes.c_void_p,  # wasmtime_component_val_t *args
    ctypes.c_size_t,
    ctypes.c_void_p,  # wasmtime_component_val_t *results
    ctypes.c_size_t,
)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# The callback goes by address: the Python trampoline below, or a C function of host/_native.c.
_add_func_raw = ctypes.CFUNCTYPE(
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, _FINALIZER
)(("wasmtime_component_linker_instance_add_func", ffi.dll))
_DESTRUCTOR = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
# The destructor goes by address too: the Python one below, or _native.resource_drop.
_add_resource_raw = ctypes.CFUNCTYPE(
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    _FINALIZER,
)(("wasmtime_component_linker_instance_add_resource", ffi.dll))


@_CALLBACK
def _trampoline(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    # The ctypes entry point, when the C one (_native.host_call, the same steps) is not available.
    entry = _ENTRIES[idx or 0]
    ctx: CallContext | None = getattr(_tls, "ctx", None)
    try:
        if ctx is None:
            raise HostTrap("host function called outside a request (no call context on this thread)")
        invoke = entry.invoke
        if invoke is None:
            invoke = entry.compile(ty_raw)
        ctx.store_ptr = context
        invoke(ctx, args, results)
        return 0
    except BaseException as e:
        return entry.failed(ctx, e)


_TRAMPOLINE_ADDRESS = capi.address(_trampoline)


def _add_func(inst: wc.LinkerInstance, name: str, fn: Callable[..., Any], needs_ctx: bool) -> None:
    entry = _Entry(name=name, fn=fn, needs_ctx=needs_ctx)
    with _ENTRIES_LOCK:
        idx = len(_ENTRIES)
        _ENTRIES.append(entry)  # kept for the life of the process: wasmtime holds its address
    c_entry = native.entry_points()
    if c_entry is not None:
        _link_func(inst, name, c_entry[0], id(entry))
    else:
        _link_func(inst, name, _TRAMPOLINE_ADDRESS, idx)


def _link_func(inst: wc.LinkerInstance, name: str, callback: int, data: int | None) -> None:
    name_bytes = name.encode("utf-8")
    err = _add_func_raw(capi.address(inst.ptr()), name_bytes, len(name_bytes), callback, data, _noop_finalize)
    if err:
        capi.raise_error(err)


@_FINALIZER
def _noop_finalize(idx):  # type: ignore[no-untyped-def]
    # Entries live as long as the process: linkers are built once per component at startup.
    return None


class _Drop:
    """The guest dropped an own handle of a host resource: close the object it stood for. Types
    registered with the linker all share one destructor; the request's table knows the object."""

    @staticmethod
    def drop(ctx: CallContext, rep: int) -> int | None:
        try:
            obj = ctx.table.pop(rep)
        except HostTrap:
            return None
        try:
            obj.close()
        except BaseException as e:
            return _host_failure(f"closing {type(obj).__name__}", ctx, e)
        return None

    @staticmethod
    def failed(ctx: CallContext | None, e: BaseException) -> int:
        return _host_failure("a host resource destructor", ctx, e)


_DROP = _Drop()


@_DESTRUCTOR
def _destructor(data, context, rep):  # type: ignore[no-untyped-def]
    # The ctypes entry point, when the C one (_native.resource_drop, the same steps) is not available.
    ctx: CallContext | None = getattr(_tls, "ctx", None)
    if ctx is None:
        return 0
    try:
        return _DROP.drop(ctx, rep) or 0
    except BaseException as e:
        return _DROP.failed(ctx, e)


_DESTRUCTOR_ADDRESS = capi.address(_destructor)


def _add_resource(inst: wc.LinkerInstance, name: str, resource_id: int) -> None:
    name_bytes = name.encode("utf-8")
    c_entry = native.entry_points()
    destructor, data = (c_entry[1], id(_DROP)) if c_entry is not None else (_DESTRUCTOR_ADDRESS, None)
    with wc.ResourceType.host(resource_id) as ty:
        err = _add_resource_raw(
            capi.address(inst.ptr()),
            name_bytes,
            len(name_bytes),
            ctypes.cast(ty.ptr(), ctypes.c_void_p).value,
            destructor,
            data,
            _noop_finalize,
        )
    if err:
        capi.raise_error(err)


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
    # The error value is worked out on the first call: a componentize-py app links ~50 functions it
    # never calls (wasi:sockets' methods), and reading their types costs ~10 ms of a cold start.
    value: list[Any] = []

    def missing(ctx: CallContext, *args: Any) -> Any:
        if not value:
            value.append(missing_feature_value(fty.result, message))
            log.warning("component %s called %s: %s", ctx.component_id, fname, message)
        if value[0] is None:
            raise HostTrap(message)
        return value[0]

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
                        _add_resource(inst, item_name, cls.resource_id)
                    elif isinstance(ty, wc.FuncType):
                        symbol = iface.natives.get(item_name) if iface else None
                        address = native.callback_for(symbol, ty) if symbol else None
                        if address is not None:
                            _link_func(inst, item_name, address, None)
                            continue
                        impl = iface.funcs.get(item_name) if iface else None
                        if impl is None:
                            impl = _missing_func(import_name, item_name, ty)
                        _add_func(inst, item_name, impl[0], impl[1])
                    # type exports (records, variants) need no definition
    return linker
