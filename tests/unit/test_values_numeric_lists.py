"""Bulk numeric-list conversion checked against wasmtime-py's own element-by-element conversion.

The types come from a real component's import signature; each direction is compared with the
independent implementation in wasmtime-py, through the same C ``val_t`` memory wasmtime uses.
"""

from __future__ import annotations

import ctypes
import math

import pytest
import wasmtime
import wasmtime.component as wc
from kubespin_shim.host.values import lift_for, lower_for
from wasmtime import _ffi as ffi

WAT = """
(component
  (import "test:lists/api" (instance
    (export "f" (func (param "a" (list f32)) (param "b" (list f64)) (param "c" (list s64))
                      (param "d" (list u32)) (param "e" (list s8)) (param "g" (list u16))
                      (param "h" (list (list f32)))))))
)
"""

VALUES = {
    "a": [0.0, -1.5, 3.25, 1e-3, float("inf")],
    "b": [math.pi, -0.0, 1e300, 2.5],
    "c": [0, -1, 2**63 - 1, -(2**63)],
    "d": [0, 1, 2**32 - 1, 12345],
    "e": [-128, 127, 0, -1],
    "g": [0, 65535, 42],
    "h": [[1.0, 2.0], [], [0.5] * 384],
}


@pytest.fixture(scope="module")
def param_types() -> dict[str, object]:
    engine = wasmtime.Engine()
    comp = wc.Component(engine, WAT)
    (inst,) = comp.type.imports(engine).values()
    (func,) = inst.ty.exports(engine).values()
    return dict(func.ty.params)


def approx(a: object, b: object) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(approx(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == pytest.approx(b, rel=1e-6) or (math.isinf(a) and a == b)
    return a == b


@pytest.mark.parametrize("name", sorted(VALUES))
def test_our_lowering_reads_back_with_wasmtime_py(param_types: dict[str, object], name: str) -> None:
    ty = param_types[name]
    val = ffi.wasmtime_component_val_t()
    lower_for(ty)(VALUES[name], ctypes.addressof(val), None)
    assert approx(ty.convert_from_c(val), VALUES[name])  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_wasmtime_py_lowering_reads_back_with_our_lift(param_types: dict[str, object], name: str) -> None:
    ty = param_types[name]
    val = ffi.wasmtime_component_val_t()
    ty.convert_to_c(None, VALUES[name], ctypes.pointer(val))  # type: ignore[attr-defined]
    try:
        assert approx(lift_for(ty)(ctypes.addressof(val), None), VALUES[name])
    finally:  # a lift copies and frees nothing (wasmtime frees a host call's arguments itself)
        ffi.wasmtime_component_vallist_delete(ctypes.byref(val.of.list))


def test_out_of_range_value_is_an_error_not_a_wrap(param_types: dict[str, object]) -> None:
    val = ffi.wasmtime_component_val_t()
    with pytest.raises(OverflowError):
        lower_for(param_types["d"])([2**32], ctypes.addressof(val), None)
