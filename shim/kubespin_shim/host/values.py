"""Typed conversion between component-model values (wasmtime's C ``val_t``) and Python.

wasmtime-py converts values by reflecting on the function type at every call and guesses variant
tags from Python types; it also converts ``list<u8>`` one byte at a time. Both are measurable costs
on the per-request path (see shared notes). Here each WIT type is compiled once, when a host
function is first called, into a pair of closures that know the exact shape:

- ``lift(val_t, ctx) -> python`` for values the guest passes to the host,
- ``lower(python, val_t_ptr, store, ctx)`` for values the host returns.

Python representations:
``bool/int/float/str`` as is; ``char`` as a one-character ``str``; ``list<u8>`` as ``bytes``;
other lists as ``list``; records as ``dict`` keyed by WIT field name; tuples as ``tuple``;
variants as :class:`Variant`; enums as ``str``; flags as ``set[str]``; ``option<T>`` as ``None`` or
the value; ``result`` as :class:`Ok` / :class:`Err` (a bare value lowers as ``ok``); ``own``/
``borrow`` of host resources as the Python object held in the request's resource table.
"""

from __future__ import annotations

import ctypes
from array import array
from collections.abc import Callable
from ctypes import byref
from typing import Any, NamedTuple

import wasmtime
import wasmtime.component as wc
from wasmtime import _bindings
from wasmtime import _ffi as ffi

Lift = Callable[[Any, Any], Any]
Lower = Callable[[Any, Any, Any, Any], None]

_VAL = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_KIND_OFFSET = _VAL.kind.offset
_PAYLOAD_OFFSET = _VAL.of.offset

KIND_BOOL = ffi.WASMTIME_COMPONENT_BOOL.value
KIND_U8 = ffi.WASMTIME_COMPONENT_U8.value


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

    __slots__ = ("_items", "_next")

    def __init__(self) -> None:
        self._next = 1
        self._items: dict[int, Any] = {}

    def push(self, obj: Any) -> int:
        rep = self._next
        self._next = rep + 1
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
    """Compile the guest→host conversion for one WIT type."""
    return _lift_for(ty)


def lower_for(ty: Any) -> Lower:
    """Compile the host→guest conversion for one WIT type."""
    return _lower_for(ty)


def _scalar(field: str, kind: int) -> tuple[Lift, Lower]:
    def lift(c: Any, ctx: Any) -> Any:
        return getattr(c.of, field)

    def lower(v: Any, p: Any, store: Any, ctx: Any) -> None:
        p.contents.kind = kind
        setattr(p.contents.of, field, v)

    return lift, lower


_SCALARS: dict[type, tuple[str, str]] = {
    wc.Bool: ("boolean", "WASMTIME_COMPONENT_BOOL"),
    wc.S8: ("s8", "WASMTIME_COMPONENT_S8"),
    wc.U8: ("u8", "WASMTIME_COMPONENT_U8"),
    wc.S16: ("s16", "WASMTIME_COMPONENT_S16"),
    wc.U16: ("u16", "WASMTIME_COMPONENT_U16"),
    wc.S32: ("s32", "WASMTIME_COMPONENT_S32"),
    wc.U32: ("u32", "WASMTIME_COMPONENT_U32"),
    wc.S64: ("s64", "WASMTIME_COMPONENT_S64"),
    wc.U64: ("u64", "WASMTIME_COMPONENT_U64"),
    wc.F32: ("f32", "WASMTIME_COMPONENT_F32"),
    wc.F64: ("f64", "WASMTIME_COMPONENT_F64"),
}


def _lift_for(ty: Any) -> Lift:
    t = type(ty)
    if t in _SCALARS:
        return _scalar(_SCALARS[t][0], getattr(ffi, _SCALARS[t][1]).value)[0]
    if t is wc.Char:
        return lambda c, ctx: chr(c.of.character)
    if t is wc.String:
        return _lift_string
    if t is wc.ListType:
        elem = ty.element
        if type(elem) is wc.U8:
            return _lift_bytes
        if type(elem) in _NUMERIC:
            return _numeric_lift(_NUMERIC[type(elem)][0])
        elem_lift = _lift_for(elem)

        def lift_list(c: Any, ctx: Any) -> Any:
            lst = c.of.list
            try:
                return [elem_lift(lst.data[i], ctx) for i in range(lst.size)]
            finally:
                ffi.wasmtime_component_vallist_delete(byref(lst))

        return lift_list
    if t is wc.RecordType:
        fields = [(name, _lift_for(fty)) for name, fty in ty.fields]

        def lift_record(c: Any, ctx: Any) -> Any:
            rec = c.of.record
            try:
                return {name: lf(rec.data[i].val, ctx) for i, (name, lf) in enumerate(fields)}
            finally:
                ffi.wasmtime_component_valrecord_delete(byref(rec))

        return lift_record
    if t is wc.TupleType:
        elems = [_lift_for(e) for e in ty.elements]

        def lift_tuple(c: Any, ctx: Any) -> Any:
            tup = c.of.tuple
            try:
                return tuple(lf(tup.data[i], ctx) for i, lf in enumerate(elems))
            finally:
                ffi.wasmtime_component_valtuple_delete(byref(tup))

        return lift_tuple
    if t is wc.VariantType:
        cases = {name: (_lift_for(cty) if cty is not None else None) for name, cty in ty.cases}

        def lift_variant(c: Any, ctx: Any) -> Any:
            var = c.of.variant
            tag = ffi.to_str(var.discriminant)
            ffi.wasm_byte_vec_delete(byref(var.discriminant))
            lf = cases[tag]
            if lf is None:
                return Variant(tag)
            return Variant(tag, _lift_boxed(var.val, lf, ctx))

        return lift_variant
    if t is wc.EnumType:
        def lift_enum(c: Any, ctx: Any) -> Any:
            s = ffi.to_str(c.of.enumeration)
            ffi.wasm_byte_vec_delete(byref(c.of.enumeration))
            return s

        return lift_enum
    if t is wc.OptionType:
        inner = _lift_for(ty.payload)

        def lift_option(c: Any, ctx: Any) -> Any:
            if not c.of.option:
                return None
            return _lift_boxed(c.of.option, inner, ctx)

        return lift_option
    if t is wc.ResultType:
        ok_ty, err_ty = ty.ok, ty.err
        ok_lift = _lift_for(ok_ty) if ok_ty is not None else None
        err_lift = _lift_for(err_ty) if err_ty is not None else None

        def lift_result(c: Any, ctx: Any) -> Any:
            r = c.of.result
            if r.is_ok:
                return Ok(_lift_boxed(r.val, ok_lift, ctx) if ok_lift is not None else None)
            return Err(_lift_boxed(r.val, err_lift, ctx) if err_lift is not None else None)

        return lift_result
    if t is wc.FlagsType:
        def lift_flags(c: Any, ctx: Any) -> Any:
            fl = c.of.flags
            out = {ffi.to_str(fl.data[i]) for i in range(fl.size)}
            ffi.wasmtime_component_valflags_delete(byref(fl))
            return out

        return lift_flags
    if t is wc.BorrowType:
        return _lift_borrow
    if t is wc.OwnType:
        return _lift_own
    raise TypeError(f"unsupported component value type {ty!r}")


def _lift_boxed(ptr: Any, lf: Lift | None, ctx: Any) -> Any:
    """Lift a heap-boxed payload (variant/option/result) and free the box."""
    if not ptr:
        return None
    assert lf is not None
    try:
        return lf(ptr.contents, ctx)
    finally:
        # the payload's own storage was consumed by the lift; free only the box
        ptr.contents.kind = KIND_BOOL
        ptr.contents.of.boolean = False
        ffi.wasmtime_component_val_delete(ptr)


def _lift_string(c: Any, ctx: Any) -> str:
    vec = c.of.string
    s = ctypes.string_at(vec.data, vec.size).decode("utf-8") if vec.size else ""
    ffi.wasm_byte_vec_delete(byref(vec))
    return s


def _lift_bytes(c: Any, ctx: Any) -> bytes:
    """list<u8> in one copy: each element is a val_t; take the payload byte with a strided slice."""
    lst = c.of.list
    n = lst.size
    try:
        if n == 0:
            return b""
        raw = ctypes.string_at(lst.data, n * _VAL_SIZE)
        return raw[_PAYLOAD_OFFSET::_VAL_SIZE]
    finally:
        ffi.wasmtime_component_vallist_delete(byref(lst))


# Raw C entry points: they skip wasmtime-py's wrapper objects and their finalizers on the hot path.
_any_to_host = _bindings._wasmtime_component_resource_any_to_host
_host_rep = _bindings._wasmtime_component_resource_host_rep
_host_delete = _bindings._wasmtime_component_resource_host_delete
_any_delete = _bindings._wasmtime_component_resource_any_delete
_host_new = _bindings._wasmtime_component_resource_host_new
_host_to_any = _bindings._wasmtime_component_resource_host_to_any
_HOST_PTR = ctypes.POINTER(ffi.wasmtime_component_resource_host_t)
_ANY_PTR = ctypes.POINTER(ffi.wasmtime_component_resource_any_t)


def _take_rep(c: Any, ctx: Any) -> int:
    """The host ``rep`` of a resource handle the guest passed in; releases the handle.

    Every borrow must be released before the call returns or wasmtime traps ("borrow handles still
    remain"); converting to a host resource does that, and for an ``own`` it consumes the handle.
    """
    any_ptr = c.of.resource
    host = _HOST_PTR()
    err = _any_to_host(ctx.store_ptr, any_ptr, byref(host))
    _any_delete(any_ptr)
    c.of.resource = None
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    rep = _host_rep(host)
    _host_delete(host)
    return rep


def _lift_borrow(c: Any, ctx: Any) -> Any:
    return ctx.table.get(_take_rep(c, ctx))


def _lift_own(c: Any, ctx: Any) -> Any:
    return ctx.table.pop(_take_rep(c, ctx))


# ---- lowering


def _lower_for(ty: Any) -> Lower:
    t = type(ty)
    if t in _SCALARS:
        return _scalar(_SCALARS[t][0], getattr(ffi, _SCALARS[t][1]).value)[1]
    if t is wc.Char:
        kind = ffi.WASMTIME_COMPONENT_CHAR.value

        def lower_char(v: Any, p: Any, store: Any, ctx: Any) -> None:
            p.contents.kind = kind
            p.contents.of.character = ord(v)

        return lower_char
    if t is wc.String:
        kind = ffi.WASMTIME_COMPONENT_STRING.value

        def lower_string(v: Any, p: Any, store: Any, ctx: Any) -> None:
            p.contents.of.string = ffi.bytes_to_capi(v.encode("utf-8"))
            p.contents.kind = kind

        return lower_string
    if t is wc.ListType:
        elem = ty.element
        kind = ffi.WASMTIME_COMPONENT_LIST.value
        if type(elem) is wc.U8:
            return _lower_bytes
        if type(elem) in _NUMERIC:
            typecode, kind_name = _NUMERIC[type(elem)]
            return _numeric_lower(typecode, getattr(ffi, kind_name).value)
        elem_lower = _lower_for(elem)

        def lower_list(v: Any, p: Any, store: Any, ctx: Any) -> None:
            raw = ffi.wasmtime_component_vallist_t()
            n = len(v)
            ffi.wasmtime_component_vallist_new_uninit(raw, n)
            for i, item in enumerate(v):
                elem_lower(item, ctypes.pointer(raw.data[i]), store, ctx)
            p.contents.of.list = raw
            p.contents.kind = kind

        return lower_list
    if t is wc.RecordType:
        fields = [(name, ffi.str_to_capi, _lower_for(fty)) for name, fty in ty.fields]
        kind = ffi.WASMTIME_COMPONENT_RECORD.value

        def lower_record(v: Any, p: Any, store: Any, ctx: Any) -> None:
            raw = ffi.wasmtime_component_valrecord_t()
            ffi.wasmtime_component_valrecord_new_uninit(raw, len(fields))
            for i, (name, to_capi, lw) in enumerate(fields):
                entry = raw.data[i]
                entry.name = to_capi(name)
                lw(v[name], ctypes.pointer(entry.val), store, ctx)
            p.contents.of.record = raw
            p.contents.kind = kind

        return lower_record
    if t is wc.TupleType:
        elems = [_lower_for(e) for e in ty.elements]
        kind = ffi.WASMTIME_COMPONENT_TUPLE.value

        def lower_tuple(v: Any, p: Any, store: Any, ctx: Any) -> None:
            raw = ffi.wasmtime_component_valtuple_t()
            ffi.wasmtime_component_valtuple_new_uninit(raw, len(elems))
            for i, lw in enumerate(elems):
                lw(v[i], ctypes.pointer(raw.data[i]), store, ctx)
            p.contents.of.tuple = raw
            p.contents.kind = kind

        return lower_tuple
    if t is wc.VariantType:
        cases = {name: (_lower_for(cty) if cty is not None else None) for name, cty in ty.cases}
        kind = ffi.WASMTIME_COMPONENT_VARIANT.value

        def lower_variant(v: Any, p: Any, store: Any, ctx: Any) -> None:
            if isinstance(v, str):
                v = Variant(v)
            try:
                lw = cases[v.tag]
            except KeyError:
                raise TypeError(f"variant has no case {v.tag!r}; cases: {sorted(cases)}") from None
            p.contents.of.variant.discriminant = ffi.str_to_capi(v.tag)
            p.contents.of.variant.val = _box(v.value, lw, store, ctx) if lw is not None else None
            p.contents.kind = kind

        return lower_variant
    if t is wc.EnumType:
        kind = ffi.WASMTIME_COMPONENT_ENUM.value

        def lower_enum(v: Any, p: Any, store: Any, ctx: Any) -> None:
            p.contents.of.enumeration = ffi.str_to_capi(v)
            p.contents.kind = kind

        return lower_enum
    if t is wc.OptionType:
        inner = _lower_for(ty.payload)
        kind = ffi.WASMTIME_COMPONENT_OPTION.value

        def lower_option(v: Any, p: Any, store: Any, ctx: Any) -> None:
            p.contents.of.option = None if v is None else _box(v, inner, store, ctx)
            p.contents.kind = kind

        return lower_option
    if t is wc.ResultType:
        ok_ty, err_ty = ty.ok, ty.err
        ok_lower = _lower_for(ok_ty) if ok_ty is not None else None
        err_lower = _lower_for(err_ty) if err_ty is not None else None
        kind = ffi.WASMTIME_COMPONENT_RESULT.value

        def lower_result(v: Any, p: Any, store: Any, ctx: Any) -> None:
            if isinstance(v, Err):
                res = p.contents.of.result
                res.is_ok = False
                res.val = _box(v.value, err_lower, store, ctx) if err_lower is not None else None
            else:
                if isinstance(v, Ok):
                    v = v.value
                res = p.contents.of.result
                res.is_ok = True
                res.val = _box(v, ok_lower, store, ctx) if ok_lower is not None else None
            p.contents.kind = kind

        return lower_result
    if t is wc.FlagsType:
        kind = ffi.WASMTIME_COMPONENT_FLAGS.value

        def lower_flags(v: Any, p: Any, store: Any, ctx: Any) -> None:
            raw = ffi.wasmtime_component_valflags_t()
            ffi.wasmtime_component_valflags_new_uninit(raw, len(v))
            for i, s in enumerate(v):
                raw.data[i] = ffi.str_to_capi(s)
            p.contents.of.flags = raw
            p.contents.kind = kind

        return lower_flags
    if t is wc.OwnType:
        return _lower_own
    if t is wc.BorrowType:
        raise TypeError("the host never lends borrowed handles to guests in these interfaces")
    raise TypeError(f"unsupported component value type {ty!r}")


def _box(v: Any, lw: Lower, store: Any, ctx: Any) -> Any:
    tmp = _VAL()
    lw(v, ctypes.pointer(tmp), store, ctx)
    return ffi.wasmtime_component_val_new(byref(tmp))


_U8_KIND_BYTE = bytes([KIND_U8])


def _lower_bytes(v: Any, p: Any, store: Any, ctx: Any) -> None:
    """bytes → list<u8> in one copy: lay out val_t records with a strided slice assignment."""
    n = len(v)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        buf = bytearray(n * _VAL_SIZE)
        buf[_KIND_OFFSET::_VAL_SIZE] = _U8_KIND_BYTE * n
        buf[_PAYLOAD_OFFSET::_VAL_SIZE] = v
        ctypes.memmove(raw.data, (ctypes.c_char * len(buf)).from_buffer(buf), len(buf))
    p.contents.of.list = raw
    p.contents.kind = ffi.WASMTIME_COMPONENT_LIST.value


# Numeric lists (embeddings are list<list<f32>>) in bulk, like list<u8>: each val_t holds its payload
# at _PAYLOAD_OFFSET; the payload's bytes are moved lane by lane with strided slices.
_NUMERIC: dict[type, tuple[str, str]] = {
    wc.S8: ("b", "WASMTIME_COMPONENT_S8"),
    wc.S16: ("h", "WASMTIME_COMPONENT_S16"),
    wc.U16: ("H", "WASMTIME_COMPONENT_U16"),
    wc.S32: ("i", "WASMTIME_COMPONENT_S32"),
    wc.U32: ("I", "WASMTIME_COMPONENT_U32"),
    wc.S64: ("q", "WASMTIME_COMPONENT_S64"),
    wc.U64: ("Q", "WASMTIME_COMPONENT_U64"),
    wc.F32: ("f", "WASMTIME_COMPONENT_F32"),
    wc.F64: ("d", "WASMTIME_COMPONENT_F64"),
}


def _numeric_lift(typecode: str) -> Lift:
    width = array(typecode).itemsize

    def lift(c: Any, ctx: Any) -> list[Any]:
        lst = c.of.list
        n = lst.size
        try:
            if n == 0:
                return []
            raw = ctypes.string_at(lst.data, n * _VAL_SIZE)
            packed = bytearray(n * width)
            for lane in range(width):
                packed[lane::width] = raw[_PAYLOAD_OFFSET + lane :: _VAL_SIZE]
            return array(typecode, bytes(packed)).tolist()
        finally:
            ffi.wasmtime_component_vallist_delete(byref(lst))

    return lift


def _numeric_lower(typecode: str, kind: int) -> Lower:
    width = array(typecode).itemsize
    kind_byte = bytes([kind])

    def lower(v: Any, p: Any, store: Any, ctx: Any) -> None:
        n = len(v)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            packed = array(typecode, v).tobytes()
            buf = bytearray(n * _VAL_SIZE)
            buf[_KIND_OFFSET::_VAL_SIZE] = kind_byte * n
            for lane in range(width):
                buf[_PAYLOAD_OFFSET + lane :: _VAL_SIZE] = packed[lane::width]
            ctypes.memmove(raw.data, (ctypes.c_char * len(buf)).from_buffer(buf), len(buf))
        p.contents.of.list = raw
        p.contents.kind = ffi.WASMTIME_COMPONENT_LIST.value

    return lower


_OWN_KIND = ffi.WASMTIME_COMPONENT_RESOURCE.value


def _lower_own(v: Any, p: Any, store: Any, ctx: Any) -> None:
    rep = ctx.table.push(v)
    host = _host_new(True, rep, v.resource_id)
    out = _ANY_PTR()
    err = _host_to_any(ctx.store_ptr, host, byref(out))
    _host_delete(host)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    p.contents.of.resource = out
    p.contents.kind = _OWN_KIND
