"""The host-call layer against small hand-written components: every value crosses the real
canonical ABI (wasmtime lowers into guest memory and lifts back), so these fail if a conversion
is wrong, not just if a Python function is."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc
from kubespin_shim.engine import WasmEngine
from kubespin_shim.host.binding import CallContext, Interface, build_linker, set_current_context
from kubespin_shim.host.values import Err, HostResource, Ok, Variant

WAT = Path(__file__).parent / "wat"


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True
    return wasmtime.Engine(cfg)


def instantiate(engine: wasmtime.Engine, name: str, interfaces: dict[str, Interface]):
    comp = wc.Component(engine, (WAT / name).read_text())
    linker = build_linker(engine, comp, interfaces)
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1_000_000)
    ctx = CallContext("test")
    set_current_context(ctx)
    return store, linker.instantiate(store, comp), ctx


def call(store: wasmtime.Store, inst: wc.Instance, name: str, *args: object) -> object:
    f = inst.get_func(store, name)
    assert f is not None
    out = f(store, *args)
    f.post_return(store)
    return out


def api_interface(calls: list[object]) -> Interface:
    api = Interface("test:host/api")

    @api.func("echo")
    def echo(ctx: CallContext, data: bytes) -> bytes:
        calls.append(data)
        return data[::-1]

    @api.func("greet")
    def greet(ctx: CallContext, name: str) -> Ok | Err:
        calls.append(name)
        if name == "":
            return Err(Variant("not-found"))
        if name == "x":
            return Err(Variant("other", "bad x"))
        return Ok(f"hello {name}")

    return api


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 300_000])
def test_list_u8_round_trips_in_bulk(engine: wasmtime.Engine, size: int, each_host_path: str) -> None:
    calls: list[object] = []
    store, inst, _ = instantiate(engine, "echo_bytes.wat", {"test:host/api": api_interface(calls)})
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    assert call(store, inst, "echo", data) == data[::-1]
    assert calls == [data]  # the host saw exactly the guest's bytes


def test_string_and_result_variant_lowering(engine: wasmtime.Engine, each_host_path: str) -> None:
    calls: list[object] = []
    store, inst, _ = instantiate(engine, "echo_bytes.wat", {"test:host/api": api_interface(calls)})
    ok = call(store, inst, "greet", "wörld ✓")
    assert (ok.tag, ok.payload) == ("ok", "hello wörld ✓")
    other = call(store, inst, "greet", "x")
    assert (other.tag, other.payload) == ("err", "bad x")
    not_found = call(store, inst, "greet", "")
    assert not_found.tag == "err" and not_found.payload is None
    assert calls == ["wörld ✓", "x", ""]


def test_missing_feature_returns_the_interfaces_own_error(engine: wasmtime.Engine, each_host_path: str) -> None:
    store, inst, _ = instantiate(engine, "echo_bytes.wat", {})
    r = call(store, inst, "greet", "bob")
    assert r.tag == "err"
    assert "test:host/api" in r.payload and "not supported" in r.payload


def test_missing_function_without_error_type_traps(engine: wasmtime.Engine, each_host_path: str) -> None:
    store, inst, ctx = instantiate(engine, "echo_bytes.wat", {})
    with pytest.raises(wasmtime.WasmtimeError):
        call(store, inst, "echo", b"abc")
    assert "not supported" in str(ctx.host_error)


class Thing(HostResource):
    closed: list[int] = []

    def __init__(self, v: int) -> None:
        self.v = v

    def get(self) -> int:
        return self.v * 2

    def close(self) -> None:
        Thing.closed.append(self.v)


def res_interface() -> Interface:
    res = Interface("test:host/res")
    res.resource("thing", Thing, ["get"])
    res.func("[constructor]thing", needs_ctx=False)(Thing)
    return res


def test_resources_own_borrow_and_drop(engine: wasmtime.Engine, each_host_path: str) -> None:
    Thing.closed.clear()
    store, inst, ctx = instantiate(engine, "resources.wat", {"test:host/res": res_interface()})
    assert call(store, inst, "run", 21) == 42
    assert Thing.closed == [21]  # the guest's resource.drop reached the host destructor
    assert len(ctx.table) == 0  # and removed the object from the request's table


def test_semver_compatible_import_links(engine: wasmtime.Engine) -> None:
    # resources.wat imports test:host/res@0.2.3; the interface is registered unversioned
    store, inst, _ = instantiate(engine, "resources.wat", {"test:host/res": res_interface()})
    assert call(store, inst, "run", 1) == 2


def test_epoch_deadline_stops_endless_loop(engine: wasmtime.Engine) -> None:
    store, inst, _ = instantiate(engine, "resources.wat", {"test:host/res": res_interface()})
    store.set_epoch_deadline(1)
    stopper = __import__("threading").Timer(0.05, engine.increment_epoch)
    stopper.start()
    t0 = time.monotonic()
    with pytest.raises(wasmtime.WasmtimeError, match="interrupt"):
        call(store, inst, "spin")
    assert time.monotonic() - t0 < 10


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_the_engines_ticker_stops_an_endless_loop_and_ends_with_the_engine(
    each_host_path: str, tmp_path: Path
) -> None:
    # The C ticker (a thread of its own, no GIL) on the "c" path, a Python thread on the other: both
    # must advance the epoch on their own, so a deadline in ticks stops the guest, and close() ends them.
    before = _threads()
    we = WasmEngine(cache_dir=tmp_path)
    assert (we._native_ticker is not None) == (each_host_path == "c")
    assert _threads() == before + 1
    store, inst, _ = instantiate(we.engine, "resources.wat", {"test:host/res": res_interface()})
    store.set_epoch_deadline(WasmEngine.ticks_for(0.1))
    t0 = time.monotonic()
    with pytest.raises(wasmtime.WasmtimeError, match="interrupt"):
        call(store, inst, "spin")
    assert time.monotonic() - t0 < 10  # a hang guard, not a timing assertion
    we.close()
    deadline = time.monotonic() + 5
    while _threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)  # the Python ticker ends at its next wake-up; the C one is joined by close()
    assert _threads() == before
