"""The C host functions (host/_native.c) against a real component, and their Python fallbacks.

The WAT fixture imports the natively implemented WASI functions and one test import whose type
does not fit them; each import is called through the real canonical ABI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc
from kubespin_shim.host import native
from kubespin_shim.host.binding import CallContext, Interface, build_linker, set_current_context
from kubespin_shim.wasi import clocks

WAT = Path(__file__).parent / "wat" / "clocks.wat"


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine(wasmtime.Config())


@pytest.fixture
def native_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    native.reset_for_tests()
    yield monkeypatch
    monkeypatch.undo()
    native.reset_for_tests()


def counting_interfaces(calls: list[str]) -> dict[str, Interface]:
    """The real WASI interfaces' native mapping, with Python fallbacks that record being called."""

    def recorded(label: str, fn: Callable[..., int]) -> Callable[..., int]:
        def fallback(*args: int) -> int:
            calls.append(label)
            return fn(*args)

        return fallback

    mono = Interface("wasi:clocks/monotonic-clock")
    mono.func("now", needs_ctx=False)(recorded("now", time.monotonic_ns))
    mono.func("resolution", needs_ctx=False)(recorded("resolution", lambda: 1))
    mono.natives.update(clocks.monotonic.natives)
    rand = Interface("wasi:random/random")
    rand.func("get-random-u64", needs_ctx=False)(recorded("random", lambda: 7))
    rand.natives.update(clocks.random_iface.natives)
    odd = Interface("test:host/odd")
    odd.func("now", needs_ctx=False)(recorded("odd", lambda x: x + 1))
    odd.native("now", "monotonic_now")  # wrong shape for it (takes a u32): must stay in Python
    return {i.name: i for i in (mono, rand, odd, clocks.insecure)}


class Guest:
    def __init__(self, engine: wasmtime.Engine, interfaces: dict[str, Interface]) -> None:
        comp = wc.Component(engine, WAT.read_text())
        self.store = wasmtime.Store(engine)
        set_current_context(CallContext("native-test"))
        self.inst = build_linker(engine, comp, interfaces).instantiate(self.store, comp)

    def __call__(self, name: str, *args: object) -> int:
        f = self.inst.get_func(self.store, name)
        assert f is not None
        out = f(self.store, *args)
        f.post_return(self.store)
        assert isinstance(out, int)
        return out


def test_the_wasi_interfaces_map_their_hot_functions_to_c() -> None:
    assert clocks.monotonic.natives == {"now": "monotonic_now", "resolution": "monotonic_resolution"}
    assert clocks.random_iface.natives == {"get-random-u64": "random_u64"}


def test_native_functions_answer_without_entering_python(
    engine: wasmtime.Engine, native_switch: pytest.MonkeyPatch
) -> None:
    native_switch.delenv(native.ENV_SWITCH, raising=False)
    if not native.available():
        pytest.skip("the C accelerator is not built here (no compiler or Python headers at install)")
    calls: list[str] = []
    guest = Guest(engine, counting_interfaces(calls))
    before = time.monotonic_ns()
    readings = [guest("now") for _ in range(50)]
    after = time.monotonic_ns()
    assert before <= readings[0] and readings[-1] <= after
    assert readings == sorted(readings) and len(set(readings)) > 1
    assert guest("resolution") == max(1, round(time.get_clock_info("monotonic").resolution * 1e9))
    randoms = {guest("random") for _ in range(20)}
    assert len(randoms) == 20 and all(0 <= r < 2**64 for r in randoms)
    assert calls == []  # not one of these reached a Python function
    assert guest("odd", 41) == 42 and calls == ["odd"]  # the misfit import used its Python function
    assert 0 <= guest("insecure") < 2**64  # no native mapping: Python, as before


def test_switched_off_the_python_fallbacks_run(engine: wasmtime.Engine, native_switch: pytest.MonkeyPatch) -> None:
    native_switch.setenv(native.ENV_SWITCH, "0")
    assert not native.available()
    calls: list[str] = []
    guest = Guest(engine, counting_interfaces(calls))
    before = time.monotonic_ns()
    assert before <= guest("now") <= time.monotonic_ns()
    assert guest("resolution") == 1 and guest("random") == 7
    assert calls == ["now", "resolution", "random"]


def test_the_real_fallbacks_agree_with_the_c_functions(
    engine: wasmtime.Engine, native_switch: pytest.MonkeyPatch
) -> None:
    interfaces = {i.name: i for i in clocks.INTERFACES}
    results = {}
    for switch in ("0", "1"):
        native_switch.setenv(native.ENV_SWITCH, switch)
        native.reset_for_tests()
        interfaces["test:host/odd"] = counting_interfaces([])["test:host/odd"]
        guest = Guest(engine, interfaces)
        before = time.monotonic_ns()
        now = guest("now")
        assert before <= now <= time.monotonic_ns()
        results[switch] = (guest("resolution"), guest("random") != guest("random"))
    assert results["0"] == results["1"]


def test_ci_builds_the_accelerator(native_switch: pytest.MonkeyPatch) -> None:
    """Under scripts/test (KUBESPIN_REQUIRE_NATIVE=1) a build that silently fell back is a failure."""
    native_switch.delenv(native.ENV_SWITCH, raising=False)
    if os.environ.get("KUBESPIN_REQUIRE_NATIVE") != "1":
        pytest.skip("KUBESPIN_REQUIRE_NATIVE is not set")
    assert native.available(), "kubespin_shim.host._native was not built: is a C compiler and Python.h installed?"


def test_an_unknown_symbol_is_refused_at_registration() -> None:
    iface = Interface("wasi:clocks/monotonic-clock")
    with pytest.raises(ValueError, match="register the Python implementation first"):
        iface.native("now", "monotonic_now")
    iface.func("now", needs_ctx=False)(time.monotonic_ns)
    with pytest.raises(ValueError, match="no native host function"):
        iface.native("now", "monotonic_later")
