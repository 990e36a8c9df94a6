"""The key-value host functions across the real canonical ABI, with a hand-written guest
(tests/unit/wat/kv_atomics.wat): CAS handles as own/borrow resources, a `cas-failed` error that
carries a fresh own<cas> inside a variant inside a result, option<list<u8>> and s64 results.
The SDK test apps do not call CAS, so this is where its ABI is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
import wasmtime.component as wc
from kubespin_shim.factors.key_value import KeyValueFactor
from kubespin_shim.host.binding import CallContext, build_linker, set_current_context
from kubespin_shim.manifest import AppManifest, load_app
from kubespin_shim.runtime_config import parse_runtime_config

WAT = Path(__file__).parent / "wat" / "kv_atomics.wat"


@pytest.fixture
def app(tmp_path: Path) -> AppManifest:
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(
        'spin_manifest_version = 2\n[application]\nname = "abi"\n[[trigger.http]]\nroute = "/..."\n'
        'component = "c"\n[component.c]\nsource = "app.wasm"\nkey_value_stores = ["default"]\n'
    )
    return load_app(d, work_dir=tmp_path / "work")


def run_guest(factor: KeyValueFactor, app: AppManifest, export: str) -> tuple[int, CallContext]:
    engine = wasmtime.Engine()
    component = wc.Component(engine, WAT.read_text())
    linker = build_linker(engine, component, {i.name: i for i in factor.interfaces})
    store = wasmtime.Store(engine)
    ctx = CallContext("c")
    factor.prepare(ctx, app.components["c"])
    set_current_context(ctx)
    try:
        func = linker.instantiate(store, component).get_func(store, export)
        assert func is not None
        out = func(store)
        func.post_return(store)
    finally:
        set_current_context(None)
    return out, ctx


def test_cas_conflict_and_increment_through_the_abi(app: AppManifest, tmp_path: Path) -> None:
    factor = KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=tmp_path / "state")
    code, ctx = run_guest(factor, app, "run")
    assert code == 42, f"guest step {code} saw an unexpected value (see kv_atomics.wat)"
    assert ctx.host_error is None
    store = factor.live.current.backend("default").store("default")
    assert store.get("k") == b"three"  # the retried swap won
    assert store.get("n") == (-2).to_bytes(8, "little", signed=True)
    factor.close()


def test_access_denied_reaches_the_guest_as_the_error_case(app: AppManifest, tmp_path: Path) -> None:
    factor = KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=tmp_path / "state")
    code, _ = run_guest(factor, app, "open-gamma")
    assert code == 1 + 1  # error case index 1 = access-denied (no-such-store is 0)
    factor.close()
