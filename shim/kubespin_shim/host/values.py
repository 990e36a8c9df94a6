"""Typed conversion between component-model values (wasmtime's C ``val_t``) and Python.

wasmtime-py converts values by reflecting on the function type at every call and guesses variant
tags from Python types; it also converts ``list<u8>`` one byte at a time. Both are measurable costs
on the per-request path (see shared notes). Here each WIT type is compiled once, when a host
function is first called, into a pair of closures that know the exact shape:

- ``lift(addr, ctx) -> python`` reads the ``val_t`` at address ``addr`` (a value the guest passed),
- ``lower(python, addr, ctx)`` writes the ``val_t`` at ``addr`` (a value the host returns).

Addresses are plain ints and memory is reached through the overlays in :mod:`capi` (why: see there).
A lift copies what it needs and frees nothing (wasmtime frees the arguments after the call); a lower
writes the payload first and the kind byte last, so a value left half-written by an exception is
still a valid ``bool`` to whoever frees it. ``ctx`` is the request's :class:`CallContext`: resource
conversions use its store pointer, resource table and scratch out-pointer.

Python representations:
``bool/int/float/str`` as is; ``char`` as a one-character ``str``; ``list<u8>`` as ``bytes``;
other lists as ``list``; records as ``dict`` keyed by WIT field name; tuples as ``tuple``;
variants as :class:`Variant`; enums as ``str``; flags as ``set[str]``; ``option<T>`` as ``None`` or
the value; ``result`` as :class:`Ok` / :class:`Err` (a bare value lowers as ``ok``); ``own``/
``borrow`` of host resources as the Python object held in the request's resource table.
"""

from __future__ import annotations

import ctypes
import itertools
from array import array
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import wasmtime.component as wc

from kubespin_shim.host import capi, native
from kubespin_shim.host.capi import (
    ENTRY_SIZE,
    ENTRY_VAL,
    NAME_SIZE,
    PAYLOAD,
    VAL,
    VAL_SIZE,
    Name,
    ValPtr,
    ValResult,
    ValVariant,
    ValVec,
    buffer_address,
    read_bytes,
)

Lift = Callable[[int, Any], Any]
Lower = Callable[[Any, int, Any], None]


class Variant(NamedTuple):
    """A WIT variant value: its case name and the payload (``None`` for payload-less cases)."""

    tag: str
    value: Any = None


class Ok:
    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ok) and other.value == self.value


class Err:
    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Err({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Err) and other.value == self.value


class ResourceTable:
    """Host objects handed to one guest instance, keyed by the ``rep`` wasmtime carries.

    Scoped to one request: guests leave handles undropped and wasmtime runs no destructors when
    a store goes away, so a per-request table is what keeps state from leaking between requests.
    """

    __slots__ = ("_counter", "_items")

    def __init__(self) -> None:
        self._counter = itertools.count(1)  # the C extension takes handles from it too (_native.c)
        self._items: dict[int, Any] = {}

    def push(self, obj: Any) -> int:
        rep = next(self._counter)
        self._items[rep] = obj
        return rep

    def get(self, rep: int) -> Any:
        try:
            return self._items[rep]
        except KeyError:
            raise HostTrap(f"unknown resource handle {rep}") from None

    def pop(self, rep: int) -> Any:
        try:
            return self._items.pop(rep)
        except KeyError:
            raise HostTrap(f"unknown resource handle {rep}") from None

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[Any]:
        return list(self._items.values())


class HostTrap(Exception):
    """Raised by host code for a guest error that must trap the instance (bad handle, misuse)."""


class HostResource:
    """Base for Python objects exposed to guests as WIT resources.

    ``resource_id`` is the host resource type id registered with the linker; subclasses set it
    when the binding layer registers the class. ``close()`` runs when the guest drops its handle.
    """

    resource_id: int = -1

    def close(self) -> None:  # pragma: no cover - default no-op
        return None


# --------------------------------------------------------------------------------------------
# compile a ValType into (lift, lower)


def lift_for(ty: Any) -> Lift:
    """Compile the guest→host conversion for one WIT type: a plan run by the C extension when it is
    available (see :func:`plan_for`), else a tree of Python closures; both give the same values."""
    mod = _native_values()
    if mod is not None:
        return partial(mod.lift, plan_for(ty, mod.PLAN_CODES))
    return _lift_for(ty)


def lower_for(ty: Any) -> Lower:
    """Compile the host→guest conversion for one WIT type (C or Python, as :func:`lift_for`)."""
    mod = _native_values()
    if mod is not None:
        return partial(mod.lower, plan_for(ty, mod.PLAN_CODES))
    return _lower_for(ty)


def own_plan() -> tuple[int, None, None]:
    """The C plan of an ``own`` handle (for ``_native.run_guest``); only with the extension on."""
    mod = _native_values()
    if mod is None:
        raise RuntimeError("own_plan(): the C extension is not available")
    return (mod.PLAN_CODES["own"], None, None)


def own_lower() -> Lower:
    """How runtime.py hands the request and its response-outparam to the guest: as ``own`` handles
    (C or Python, as :func:`lift_for`)."""
    mod = _native_values()
    if mod is not None:
        return partial(mod.lower, own_plan())
    return _lower_own


_values_configured = False


def _native_values() -> Any:
    """The C extension with its value functions configured, or None (not built, or switched off)."""
    global _values_configured
    mod = native.module()
    if mod is not None and not _values_configured:
        kinds = (
            *(_SCALARS[t][1] for t in _SCALAR_ORDER),
            capi.K_CHAR,
            capi.K_STRING,
            capi.K_LIST,
            capi.K_RECORD,
            capi.K_TUPLE,
            capi.K_VARIANT,
            capi.K_ENUM,
            capi.K_OPTION,
            capi.K_RESULT,
            capi.K_FLAGS,
            capi.K_RESOURCE,
        )
        layout = (
            VAL_SIZE,
            PAYLOAD,
            ENTRY_SIZE,
            ENTRY_VAL,
            NAME_SIZE,
            Name.size.offset,
            Name.data.offset,
            ValVec.size.offset,
            ValVec.data.offset,
            ValVariant.val.offset,
            ValResult.is_ok.offset,
            ValResult.val.offset,
            ValPtr.ptr.offset,
        )
        functions = tuple(
            native.address_of(name)
            for name in (
                "wasm_byte_vec_new",
                "wasmtime_component_vallist_new_uninit",
                "wasmtime_component_valrecord_new_uninit",
                "wasmtime_component_valtuple_new_uninit",
                "wasmtime_component_valflags_new_uninit",
                "wasmtime_component_val_new",
            )
        )
        mod.configure_values(
            layout, kinds, functions, (Ok, Err, Variant, HostTrap, capi.raise_error, HostResource.close)
        )
        _values_configured = True
    return mod


def plan_for(ty: Any, codes: dict[str, int]) -> tuple[int, Any, Any]:
    """One WIT type as the (code, a, b) tuple tree that ``_native.c``'s lift and lower walk.

    Records: ``a`` = ((field name, plan), …) in field order. Variants: ``a`` = {case name bytes:
    (case, plan | None)} for lifting, ``b`` = {case: (case name bytes, plan | None)} for lowering.
    Enums and flags: ``a`` = {name bytes: name}. Results: ``a``/``b`` = the ok/err plan or None.
    """
    t = type(ty)

    def plan(name: str, a: Any = None, b: Any = None) -> tuple[int, Any, Any]:
        return (codes[name], a, b)

    if t in _SCALAR_PLAN:
        return plan(_SCALAR_PLAN[t])
    if t is wc.Char:
        return plan("char")
    if t is wc.String:
        return plan("string")
    if t is wc.ListType:
        if type(ty.element) is wc.U8:
            return plan("bytes")
        return plan("list", plan_for(ty.element, codes))
    if t is wc.RecordType:
        return plan("record", tuple((name, plan_for(fty, codes)) for name, fty in ty.fields))
    if t is wc.TupleType:
        return plan("tuple", tuple(plan_for(e, codes) for e in ty.elements))
    if t is wc.VariantType:
        cases = [(name, plan_for(cty, codes) if cty is not None else None) for name, cty in ty.cases]
        return plan(
            "variant",
            {name.encode(): (name, p) for name, p in cases},
            {name: (name.encode(), p) for name, p in cases},
        )
    if t is wc.EnumType:
        return plan("enum", _names(ty.names))
    if t is wc.OptionType:
        return plan("option", plan_for(ty.payload, codes))
    if t is wc.ResultType:
        ok = plan_for(ty.ok, codes) if ty.ok is not None else None
        err = plan_for(ty.err, codes) if ty.err is not None else None
        return plan("result", ok, err)
    if t is wc.FlagsType:
        return plan("flags", _names(ty.names))
    if t is wc.BorrowType:
        return plan("borrow")
    if t is wc.OwnType:
        return plan("own")
    raise TypeError(f"unsupported component value type {ty!r}")


_SCALARS: dict[type, tuple[Any, int]] = {
    wc.Bool: (ctypes.c_bool, capi.K_BOOL),
    wc.S8: (ctypes.c_int8, capi.ffi.WASMTIME_COMPONENT_S8.value),
    wc.U8: (ctypes.c_uint8, capi.K_U8),
    wc.S16: (ctypes.c_int16, capi.ffi.WASMTIME_COMPONENT_S16.value),
    wc.U16: (ctypes.c_uint16, capi.ffi.WASMTIME_COMPONENT_U16.value),
    wc.S32: (ctypes.c_int32, capi.ffi.WASMTIME_COMPONENT_S32.value),
    wc.U32: (ctypes.c_uint32, capi.ffi.WASMTIME_COMPONENT_U32.value),
    wc.S64: (ctypes.c_int64, capi.ffi.WASMTIME_COMPONENT_S64.value),
    wc.U64: (ctypes.c_uint64, capi.ffi.WASMTIME_COMPONENT_U64.value),
    wc.F32: (ctypes.c_float, capi.ffi.WASMTIME_COMPONENT_F32.value),
    wc.F64: (ctypes.c_double, capi.ffi.WASMTIME_COMPONENT_F64.value),
}
_SCALAR_ORDER = (wc.Bool, wc.S8, wc.U8, wc.S16, wc.U16, wc.S32, wc.U32, wc.S64, wc.U64, wc.F32, wc.F64)
_SCALAR_PLAN = {t: t.__name__.lower() for t in _SCALAR_ORDER}
_OVERLAYS = {t: capi.scalar_overlay(ct) for t, (ct, _kind) in _SCALARS.items()}
_CHAR = capi.scalar_overlay(ctypes.c_uint32)
_KIND = ctypes.c_uint8


def _scalar_lift(ctype: Any) -> Lift:
    def lift(a: int, ctx: Any) -> Any:
        return ctype.from_address(a + PAYLOAD).value

    return lift


def _scalar_lower(t: type) -> Lower:
    overlay, kind = _OVERLAYS[t], _SCALARS[t][1]
    bounds = _INT_BOUNDS.get(t)
    if bounds is not None:
        lo, hi = bounds

        def lower_int(v: Any, a: int, ctx: Any) -> None:
            if not lo <= v <= hi:  # ctypes would store it wrapped, silently
                raise OverflowError(f"{v} is out of range for {t.__name__.lower()} ({lo}..{hi})")
            o = overlay.from_address(a)
            o.v = v
            o.kind = kind

        return lower_int

    def lower(v: Any, a: int, ctx: Any) -> None:
        o = overlay.from_address(a)
        o.v = v
        o.kind = kind

    return lower


_INT_BOUNDS: dict[type, tuple[int, int]] = {
    wc.S8: (-(1 << 7), (1 << 7) - 1),
    wc.U8: (0, (1 << 8) - 1),
    wc.S16: (-(1 << 15), (1 << 15) - 1),
    wc.U16: (0, (1 << 16) - 1),
    wc.S32: (-(1 << 31), (1 << 31) - 1),
    wc.U32: (0, (1 << 32) - 1),
    wc.S64: (-(1 << 63), (1 << 63) - 1),
    wc.U64: (0, (1 << 64) - 1),
}


def _names(names: list[str]) -> dict[bytes, str]:
    return {n.encode(): n for n in names}


def _lift_for(ty: Any) -> Lift:
    t = type(ty)
    if t in _SCALARS:
        return _scalar_lift(_SCALARS[t][0])
    if t is wc.Char:
        return lambda a, ctx: chr(ctypes.c_uint32.from_address(a + PAYLOAD).value)
    if t is wc.String:
        return _lift_string
    if t is wc.ListType:
        elem = ty.element
        if type(elem) is wc.U8:
            return _lift_bytes
        if type(elem) in _NUMERIC:
            return _numeric_lift(_NUMERIC[type(elem)])
        elem_lift = _lift_for(elem)

        def lift_list(a: int, ctx: Any) -> Any:
            o = ValVec.from_address(a)
            d = o.data
            return [elem_lift(d + i * VAL_SIZE, ctx) for i in range(o.size)]

        return lift_list
    if t is wc.RecordType:
        fields = [(name, i * ENTRY_SIZE + ENTRY_VAL, _lift_for(fty)) for i, (name, fty) in enumerate(ty.fields)]

        def lift_record(a: int, ctx: Any) -> Any:
            d = ValVec.from_address(a).data  # entries in the type's field order
            return {name: lf(d + off, ctx) for name, off, lf in fields}

        return lift_record
    if t is wc.TupleType:
        elems = [(i * VAL_SIZE, _lift_for(e)) for i, e in enumerate(ty.elements)]

        def lift_tuple(a: int, ctx: Any) -> Any:
            d = ValVec.from_address(a).data
            return tuple([lf(d + off, ctx) for off, lf in elems])

        return lift_tuple
    if t is wc.VariantType:
        cases = {name.encode(): (name, _lift_for(cty) if cty is not None else None) for name, cty in ty.cases}

        def lift_variant(a: int, ctx: Any) -> Any:
            o = ValVariant.from_address(a)
            tag, lf = cases[read_bytes(o.data, o.size)]
            return Variant(tag) if lf is None else Variant(tag, lf(o.val, ctx))

        return lift_variant
    if t is wc.EnumType:
        names = _names(ty.names)

        def lift_enum(a: int, ctx: Any) -> Any:
            o = ValVec.from_address(a)
            return names[read_bytes(o.data, o.size)]

        return lift_enum
    if t is wc.OptionType:
        inner = _lift_for(ty.payload)

        def lift_option(a: int, ctx: Any) -> Any:
            p = ValPtr.from_address(a).ptr
            return None if not p else inner(p, ctx)

        return lift_option
    if t is wc.ResultType:
        ok_lift = _lift_for(ty.ok) if ty.ok is not None else None
        err_lift = _lift_for(ty.err) if ty.err is not None else None

        def lift_result(a: int, ctx: Any) -> Any:
            o = ValResult.from_address(a)
            if o.is_ok:
                return Ok(ok_lift(o.val, ctx) if ok_lift is not None else None)
            return Err(err_lift(o.val, ctx) if err_lift is not None else None)

        return lift_result
    if t is wc.FlagsType:
        flag_names = _names(ty.names)

        def lift_flags(a: int, ctx: Any) -> Any:
            o = ValVec.from_address(a)
            d = o.data
            out = set()
            for i in range(o.size):
                n = Name.from_address(d + i * NAME_SIZE)
                out.add(flag_names[read_bytes(n.data, n.size)])
            return out

        return lift_flags
    if t is wc.BorrowType:
        return _lift_borrow
    if t is wc.OwnType:
        return _lift_own
    raise TypeError(f"unsupported component value type {ty!r}")


def _lift_string(a: int, ctx: Any) -> str:
    o = ValVec.from_address(a)
    return read_bytes(o.data, o.size).decode("utf-8")


def _lift_bytes(a: int, ctx: Any) -> bytes:
    """list<u8> in one copy: each element is a val_t; take the payload byte with a strided slice."""
    o = ValVec.from_address(a)
    n = o.size
    return read_bytes(o.data, n * VAL_SIZE)[PAYLOAD::VAL_SIZE] if n else b""


def _take_rep(a: int, ctx: Any) -> int:
    """The host ``rep`` of a resource handle the guest passed in.

    Every borrow must be released before the call returns or wasmtime traps ("borrow handles still
    remain"); converting to a host resource does that, and for an ``own`` it takes the handle out of
    the guest's table. The ``resource_any_t`` box itself is freed by wasmtime with the arguments.
    """
    err = capi.resource_any_to_host(ctx.store_ptr, ValPtr.from_address(a).ptr, ctx.out_ref)
    if err:
        capi.raise_error(err)
    host = ctx.out.value
    rep = capi.resource_host_rep(host)
    capi.resource_host_delete(host)
    return rep


def _lift_borrow(a: int, ctx: Any) -> Any:
    return ctx.table.get(_take_rep(a, ctx))


def _lift_own(a: int, ctx: Any) -> Any:
    return ctx.table.pop(_take_rep(a, ctx))


# ---- lowering


def _lower_for(ty: Any) -> Lower:
    t = type(ty)
    if t in _SCALARS:
        return _scalar_lower(t)
    if t is wc.Char:

        def lower_char(v: Any, a: int, ctx: Any) -> None:
            o = _CHAR.from_address(a)
            o.v = ord(v)
            o.kind = capi.K_CHAR

        return lower_char
    if t is wc.String:
        return _lower_string
    if t is wc.ListType:
        elem = ty.element
        if type(elem) is wc.U8:
            return _lower_bytes
        if type(elem) in _NUMERIC:
            return _numeric_lower(_NUMERIC[type(elem)])
        elem_lower = _lower_for(elem)

        def lower_list(v: Any, a: int, ctx: Any) -> None:
            capi.vallist_new_uninit(a + PAYLOAD, len(v))
            d = ValVec.from_address(a).data
            for i, item in enumerate(v):
                elem_lower(item, d + i * VAL_SIZE, ctx)
            _KIND.from_address(a).value = capi.K_LIST

        return lower_list
    if t is wc.RecordType:
        fields = [(name, name.encode(), _lower_for(fty)) for name, fty in ty.fields]

        def lower_record(v: Any, a: int, ctx: Any) -> None:
            capi.valrecord_new_uninit(a + PAYLOAD, len(fields))
            e = ValVec.from_address(a).data
            for name, encoded, lw in fields:
                capi.byte_vec_new(e, len(encoded), encoded)
                lw(v[name], e + ENTRY_VAL, ctx)
                e += ENTRY_SIZE
            _KIND.from_address(a).value = capi.K_RECORD

        return lower_record
    if t is wc.TupleType:
        elems = [(i * VAL_SIZE, _lower_for(e)) for i, e in enumerate(ty.elements)]

        def lower_tuple(v: Any, a: int, ctx: Any) -> None:
            capi.valtuple_new_uninit(a + PAYLOAD, len(elems))
            d = ValVec.from_address(a).data
            for (off, lw), item in zip(elems, v, strict=True):
                lw(item, d + off, ctx)
            _KIND.from_address(a).value = capi.K_TUPLE

        return lower_tuple
    if t is wc.VariantType:
        cases = {name: (name.encode(), _lower_for(cty) if cty is not None else None) for name, cty in ty.cases}

        def lower_variant(v: Any, a: int, ctx: Any) -> None:
            if isinstance(v, str):
                v = Variant(v)
            try:
                encoded, lw = cases[v.tag]
            except KeyError:
                raise TypeError(f"variant has no case {v.tag!r}; cases: {sorted(cases)}") from None
            box = _box(v.value, lw, ctx) if lw is not None else None
            capi.byte_vec_new(a + PAYLOAD, len(encoded), encoded)
            o = ValVariant.from_address(a)
            o.val = box
            o.kind = capi.K_VARIANT

        return lower_variant
    if t is wc.EnumType:
        return _lower_name(capi.K_ENUM)
    if t is wc.OptionType:
        inner = _lower_for(ty.payload)

        def lower_option(v: Any, a: int, ctx: Any) -> None:
            o = ValPtr.from_address(a)
            o.ptr = None if v is None else _box(v, inner, ctx)
            o.kind = capi.K_OPTION

        return lower_option
    if t is wc.ResultType:
        ok_lower = _lower_for(ty.ok) if ty.ok is not None else None
        err_lower = _lower_for(ty.err) if ty.err is not None else None

        def lower_result(v: Any, a: int, ctx: Any) -> None:
            if isinstance(v, Err):
                is_ok, box = False, _box(v.value, err_lower, ctx) if err_lower is not None else None
            else:
                if isinstance(v, Ok):
                    v = v.value
                is_ok, box = True, _box(v, ok_lower, ctx) if ok_lower is not None else None
            o = ValResult.from_address(a)
            o.is_ok = is_ok
            o.val = box
            o.kind = capi.K_RESULT

        return lower_result
    if t is wc.FlagsType:

        def lower_flags(v: Any, a: int, ctx: Any) -> None:
            capi.valflags_new_uninit(a + PAYLOAD, len(v))
            d = ValVec.from_address(a).data
            for i, name in enumerate(v):
                encoded = name.encode()
                capi.byte_vec_new(d + i * NAME_SIZE, len(encoded), encoded)
            _KIND.from_address(a).value = capi.K_FLAGS

        return lower_flags
    if t is wc.OwnType:
        return _lower_own
    if t is wc.BorrowType:
        raise TypeError("the host never lends borrowed handles to guests in these interfaces")
    raise TypeError(f"unsupported component value type {ty!r}")


def _box(v: Any, lw: Lower, ctx: Any) -> int:
    """Lower ``v`` into a new heap ``val_t`` (variant, option and result payloads are boxed)."""
    tmp = VAL()
    addr = ctypes.addressof(tmp)
    lw(v, addr, ctx)
    return capi.val_new(addr)


def _lower_string(v: str, a: int, ctx: Any) -> None:
    encoded = v.encode("utf-8")
    capi.byte_vec_new(a + PAYLOAD, len(encoded), encoded)
    _KIND.from_address(a).value = capi.K_STRING


def _lower_name(kind: int) -> Lower:
    def lower(v: str, a: int, ctx: Any) -> None:
        encoded = v.encode("utf-8")
        capi.byte_vec_new(a + PAYLOAD, len(encoded), encoded)
        _KIND.from_address(a).value = kind

    return lower


_U8_KIND_BYTE = bytes([capi.K_U8])


def _lower_bytes(v: Any, a: int, ctx: Any) -> None:
    """bytes → list<u8> in one copy: lay out val_t records with a strided slice assignment."""
    n = len(v)
    if n:
        buf = bytearray(n * VAL_SIZE)
        buf[0::VAL_SIZE] = _U8_KIND_BYTE * n
        buf[PAYLOAD::VAL_SIZE] = v
        capi.vallist_new(a + PAYLOAD, n, buffer_address(buf))
    else:
        capi.vallist_new_uninit(a + PAYLOAD, 0)
    _KIND.from_address(a).value = capi.K_LIST


# Numeric lists (embeddings are list<list<f32>>) in bulk, like list<u8>: each val_t holds its payload
# at PAYLOAD; the payload's bytes are moved lane by lane with strided slices.
_NUMERIC: dict[type, tuple[str, int]] = {
    wc.S8: ("b", capi.ffi.WASMTIME_COMPONENT_S8.value),
    wc.S16: ("h", capi.ffi.WASMTIME_COMPONENT_S16.value),
    wc.U16: ("H", capi.ffi.WASMTIME_COMPONENT_U16.value),
    wc.S32: ("i", capi.ffi.WASMTIME_COMPONENT_S32.value),
    wc.U32: ("I", capi.ffi.WASMTIME_COMPONENT_U32.value),
    wc.S64: ("q", capi.ffi.WASMTIME_COMPONENT_S64.value),
    wc.U64: ("Q", capi.ffi.WASMTIME_COMPONENT_U64.value),
    wc.F32: ("f", capi.ffi.WASMTIME_COMPONENT_F32.value),
    wc.F64: ("d", capi.ffi.WASMTIME_COMPONENT_F64.value),
}


def _numeric_lift(spec: tuple[str, int]) -> Lift:
    typecode = spec[0]
    width = array(typecode).itemsize

    def lift(a: int, ctx: Any) -> list[Any]:
        o = ValVec.from_address(a)
        n = o.size
        if n == 0:
            return []
        raw = read_bytes(o.data, n * VAL_SIZE)
        packed = bytearray(n * width)
        for lane in range(width):
            packed[lane::width] = raw[PAYLOAD + lane :: VAL_SIZE]
        return array(typecode, bytes(packed)).tolist()

    return lift


def _numeric_lower(spec: tuple[str, int]) -> Lower:
    typecode, kind = spec
    width = array(typecode).itemsize
    kind_byte = bytes([kind])

    def lower(v: Any, a: int, ctx: Any) -> None:
        n = len(v)
        if n:
            packed = array(typecode, v).tobytes()  # OverflowError for out-of-range values, never a wrap
            buf = bytearray(n * VAL_SIZE)
            buf[0::VAL_SIZE] = kind_byte * n
            for lane in range(width):
                buf[PAYLOAD + lane :: VAL_SIZE] = packed[lane::width]
            capi.vallist_new(a + PAYLOAD, n, buffer_address(buf))
        else:
            capi.vallist_new_uninit(a + PAYLOAD, 0)
        _KIND.from_address(a).value = capi.K_LIST

    return lower


def _lower_own(v: Any, a: int, ctx: Any) -> None:
    """Hand a host object to the guest as an ``own`` handle: it joins the request's resource table."""
    rep = ctx.table.push(v)
    host = capi.resource_host_new(True, rep, v.resource_id)
    err = capi.resource_host_to_any(ctx.store_ptr, host, ctx.out_ref)
    capi.resource_host_delete(host)
    if err:
        capi.raise_error(err)
    o = ValPtr.from_address(a)
    o.ptr = ctx.out.value
    o.kind = capi.K_RESOURCE
