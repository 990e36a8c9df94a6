"""wasmtime's C ``val_t`` layout and the C entry points the host-call path uses, with untyped pointers.

Why not wasmtime-py's own ctypes declarations: they type every pointer (``POINTER(val_t)`` …), so
each call converts and type-checks its arguments through ctypes' pointer classes, and each field
access builds a chain of wrapper objects (``p.contents.of.list.data``). On the per-request path
(tens of host calls per request) that bookkeeping costs more than the work. Here pointers are plain
``int`` addresses; a value is read or written through one small *overlay* structure (kind byte +
payload fields at their C offsets) created with ``from_address``, and the C functions take
``c_void_p``, the cheapest conversion ctypes has.

The overlays restate wasmtime's C layout; :func:`_check_layout` compares them with wasmtime-py's
declarations (generated from the C headers) at import, so a layout change in a new wasmtime fails
loudly at startup instead of corrupting memory.

Ownership follows wasmtime's C API: a host function's arguments belong to wasmtime, which frees them
after the call; what the host writes into a result slot belongs to wasmtime once the call returns, so
it must be allocated by wasmtime's constructors (``wasm_byte_vec_new``, ``*_new_uninit``,
``wasmtime_component_val_new``).
"""

from __future__ import annotations

import ctypes
from ctypes import c_bool, c_char_p, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p
from typing import Any, NoReturn

import wasmtime
from wasmtime import _ffi as ffi

VAL = ffi.wasmtime_component_val_t
VAL_SIZE = ctypes.sizeof(VAL)
PAYLOAD = VAL.of.offset
_ENTRY = ffi.wasmtime_component_valrecord_entry_t
ENTRY_SIZE = ctypes.sizeof(_ENTRY)
ENTRY_VAL = _ENTRY.val.offset
NAME_SIZE = ctypes.sizeof(ffi.wasm_name_t)

K_BOOL = ffi.WASMTIME_COMPONENT_BOOL.value
K_U8 = ffi.WASMTIME_COMPONENT_U8.value
K_U64 = ffi.WASMTIME_COMPONENT_U64.value
K_CHAR = ffi.WASMTIME_COMPONENT_CHAR.value
K_STRING = ffi.WASMTIME_COMPONENT_STRING.value
K_LIST = ffi.WASMTIME_COMPONENT_LIST.value
K_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
K_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value
K_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT.value
K_ENUM = ffi.WASMTIME_COMPONENT_ENUM.value
K_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
K_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
K_FLAGS = ffi.WASMTIME_COMPONENT_FLAGS.value
K_RESOURCE = ffi.WASMTIME_COMPONENT_RESOURCE.value

_PAD = ("_pad", c_uint8 * (PAYLOAD - 1))  # payload fields start where the C union does


def scalar_overlay(ctype: Any) -> type[ctypes.Structure]:
    """A ``val_t`` holding one scalar: ``kind`` and ``v``."""
    return type(f"ValOf_{ctype.__name__}", (ctypes.Structure,), {"_fields_": [("kind", c_uint8), _PAD, ("v", ctype)]})


class ValVec(ctypes.Structure):
    """string, enum, list, record, tuple, flags: a (size, data) vector in the payload."""

    _fields_ = [("kind", c_uint8), _PAD, ("size", c_size_t), ("data", c_void_p)]


class ValVariant(ctypes.Structure):
    """variant: the case name as a (size, data) vector, then the boxed payload (or NULL)."""

    _fields_ = [("kind", c_uint8), _PAD, ("size", c_size_t), ("data", c_void_p), ("val", c_void_p)]


class ValResult(ctypes.Structure):
    _fields_ = [("kind", c_uint8), _PAD, ("is_ok", c_bool), ("val", c_void_p)]


class ValPtr(ctypes.Structure):
    """option (boxed payload or NULL) and resource (a ``resource_any_t*``)."""

    _fields_ = [("kind", c_uint8), _PAD, ("ptr", c_void_p)]


class Name(ctypes.Structure):
    """``wasm_name_t``: a flags element, a record field name."""

    _fields_ = [("size", c_size_t), ("data", c_void_p)]


def _check_layout() -> None:
    union = ffi.wasmtime_component_valunion_t
    expected = {
        "ValVec.size": (ValVec.size.offset, PAYLOAD + ffi.wasm_name_t.size.offset),
        "ValVec.data": (ValVec.data.offset, PAYLOAD + ffi.wasm_name_t.data.offset),
        "list.data": (ValVec.data.offset, PAYLOAD + ffi.wasmtime_component_vallist_t.data.offset),
        "record.data": (ValVec.data.offset, PAYLOAD + ffi.wasmtime_component_valrecord_t.data.offset),
        "tuple.data": (ValVec.data.offset, PAYLOAD + ffi.wasmtime_component_valtuple_t.data.offset),
        "flags.data": (ValVec.data.offset, PAYLOAD + ffi.wasmtime_component_valflags_t.data.offset),
        "variant.val": (ValVariant.val.offset, PAYLOAD + ffi.wasmtime_component_valvariant_t.val.offset),
        "result.is_ok": (ValResult.is_ok.offset, PAYLOAD + ffi.wasmtime_component_valresult_t.is_ok.offset),
        "result.val": (ValResult.val.offset, PAYLOAD + ffi.wasmtime_component_valresult_t.val.offset),
        "option": (ValPtr.ptr.offset, PAYLOAD + union.option.offset),
        "resource": (ValPtr.ptr.offset, PAYLOAD + union.resource.offset),
        "kind": (ValVec.kind.offset, VAL.kind.offset),
        "Name.data": (Name.data.offset, ffi.wasm_name_t.data.offset),
    }
    wrong = {k: v for k, v in expected.items() if v[0] != v[1]}
    if wrong or ctypes.sizeof(Name) != NAME_SIZE or ValVariant.val.offset + 8 > VAL_SIZE:
        raise ImportError(
            f"wasmtime's C value layout differs from kubespin's overlays {wrong}: the installed "
            "wasmtime-py is not the version kubespin supports (see the pin in pyproject.toml)"
        )


_check_layout()


def _c(name: str, restype: Any, *argtypes: Any) -> Any:
    """A private ctypes function object for a short C call, made *without* releasing the GIL.

    (wasmtime-py's function objects are shared and typed; never retype those.) ctypes normally drops
    the GIL around every foreign call and takes it back after: for calls of a microsecond that is
    pure overhead, and with several requests in flight each re-take is a chance to lose the GIL to
    another thread, i.e. a context switch. Guest code never runs inside these calls.
    """
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ffi.dll))


def _c_releasing(name: str, restype: Any, *argtypes: Any) -> Any:
    """A C call that runs guest code or takes long (instantiate, call, store teardown): it releases
    the GIL so that guests of other requests run in parallel and its host calls can take it back."""
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, ffi.dll))


byte_vec_new = _c("wasm_byte_vec_new", None, c_void_p, c_size_t, c_char_p)
vallist_new = _c("wasmtime_component_vallist_new", None, c_void_p, c_size_t, c_void_p)
vallist_new_uninit = _c("wasmtime_component_vallist_new_uninit", None, c_void_p, c_size_t)
valrecord_new_uninit = _c("wasmtime_component_valrecord_new_uninit", None, c_void_p, c_size_t)
valtuple_new_uninit = _c("wasmtime_component_valtuple_new_uninit", None, c_void_p, c_size_t)
valflags_new_uninit = _c("wasmtime_component_valflags_new_uninit", None, c_void_p, c_size_t)
val_new = _c("wasmtime_component_val_new", c_void_p, c_void_p)  # moves *arg into a new box
val_drop = _c("wasmtime_component_val_delete", None, c_void_p)  # drops the value in place (not a box)
resource_any_to_host = _c("wasmtime_component_resource_any_to_host", c_void_p, c_void_p, c_void_p, c_void_p)
resource_host_rep = _c("wasmtime_component_resource_host_rep", c_uint32, c_void_p)
resource_host_delete = _c("wasmtime_component_resource_host_delete", None, c_void_p)
resource_host_new = _c("wasmtime_component_resource_host_new", c_void_p, c_bool, c_uint32, c_uint32)
resource_host_to_any = _c("wasmtime_component_resource_host_to_any", c_void_p, c_void_p, c_void_p, c_void_p)

# The per-request store and call (runtime.py): the same C calls wasmtime-py's Store, Linker.instantiate,
# Instance.get_func and Func.__call__ make, without their wrapper objects and finalizers.
store_new = _c("wasmtime_store_new", c_void_p, c_void_p, c_void_p, c_void_p)
store_context = _c("wasmtime_store_context", c_void_p, c_void_p)
store_limiter = _c("wasmtime_store_limiter", None, c_void_p, c_int64, c_int64, c_int64, c_int64, c_int64)
store_delete = _c_releasing("wasmtime_store_delete", None, c_void_p)
context_set_epoch_deadline = _c("wasmtime_context_set_epoch_deadline", None, c_void_p, c_uint64)
_P = c_void_p
linker_instantiate = _c_releasing("wasmtime_component_linker_instantiate", _P, _P, _P, _P, _P)
instance_get_func = _c("wasmtime_component_instance_get_func", c_bool, c_void_p, c_void_p, c_void_p, c_void_p)
func_call = _c_releasing("wasmtime_component_func_call", _P, _P, _P, _P, c_size_t, _P, c_size_t)
func_post_return = _c_releasing("wasmtime_component_func_post_return", c_void_p, c_void_p, c_void_p)


class CallFrame(ctypes.Structure):
    """Out-parameters of one guest call: the instance, the exported function, two arguments."""

    _fields_ = [
        ("instance", ffi.wasmtime_component_instance_t),
        ("func", ffi.wasmtime_component_func_t),
        ("args", VAL * 2),
    ]


INSTANCE_OFFSET = CallFrame.instance.offset
FUNC_OFFSET = CallFrame.func.offset
ARGS_OFFSET = CallFrame.args.offset


def address(ptr: Any) -> int:
    """The address behind a wasmtime-py object's typed pointer (``engine.ptr()``, ``linker.ptr()`` …)."""
    return ctypes.cast(ptr, c_void_p).value or 0


_ERROR_PTR = ctypes.POINTER(ffi.wasmtime_error_t)


def raise_error(err: int) -> NoReturn:
    """Raise the ``wasmtime_error_t*`` a C call returned (taking ownership of it)."""
    raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, _ERROR_PTR))


def error_ptr(message: str) -> int:
    """A new ``wasmtime_error_t*`` for a host function to return: wasmtime turns it into a trap."""
    err = wasmtime.WasmtimeError(message)
    return ctypes.cast(err._consume(), c_void_p).value or 0


_SMALL = 256


def read_bytes(addr: int, size: int) -> bytes:
    """Copy ``size`` bytes at ``addr``.

    Small reads (names, tags, short strings: most of them) go through an array view, cheaper than
    ``ctypes.string_at``'s C call; ctypes caches one array type per length forever, so only lengths
    up to ``_SMALL`` take that path.
    """
    if size <= _SMALL:
        return (ctypes.c_char * size).from_address(addr).raw if size else b""
    return ctypes.string_at(addr, size)


def buffer_address(buf: bytearray) -> int:
    """The address of a non-empty bytearray's storage (no per-length ctypes array type is created)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
