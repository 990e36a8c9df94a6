"""The instance pool: Spin's settings and environment variables, the address-space probe, the fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim import engine as eng
from kubespin_shim.engine import EngineConfigError, WasmEngine, pooling_settings

WAT = Path(__file__).parent / "wat"


POOL = {"SPIN_WASMTIME_POOLING": "1"}


def test_on_demand_unless_asked() -> None:
    assert pooling_settings({}) is None and pooling_settings({"SPIN_WASMTIME_POOLING": "0"}) is None


def test_defaults_are_spins() -> None:
    s = pooling_settings(POOL)
    assert s is not None
    assert s["total_component_instances"] == 1_000 and s["total_memories"] == 1_000 and s["total_tables"] == 2_000
    assert s["max_core_instances_per_component"] == 200 and s["max_memories_per_component"] == 32
    assert s["max_tables_per_component"] == 20 and s["table_elements"] == 30_000
    assert s["max_component_instance_size"] == 10 << 20 and s["max_memory_size"] == 4 << 30
    assert s["linear_memory_keep_resident"] == 2 << 20 and s["table_keep_resident"] == 512 << 10


def test_spins_environment_variables_tune_it() -> None:
    s = pooling_settings({**POOL, "SPIN_WASMTIME_INSTANCE_COUNT": "8", "SPIN_WASMTIME_TOTAL_MEMORIES": "16"})
    assert s is not None and s["total_component_instances"] == 8 and s["total_memories"] == 16


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SPIN_WASMTIME_POOLING": "yes"}, "use 1 (pooling) or 0"),
        ({**POOL, "SPIN_WASMTIME_INSTANCE_COUNT": "many"}, "SPIN_WASMTIME_INSTANCE_COUNT='many' is not a positive"),
        ({**POOL, "SPIN_WASMTIME_TOTAL_TABLES": "0"}, "SPIN_WASMTIME_TOTAL_TABLES='0'"),
        ({**POOL, "SPIN_WASMTIME_INSTANCE_TABLES": str(1 << 32)}, "below 2^32"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(EngineConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^")):
        pooling_settings(environ)


def test_the_probe_reserves_only_what_exists() -> None:
    assert eng.address_space_available(1 << 30)
    assert not eng.address_space_available(1 << 62)  # more than any x86-64/aarch64 user address space


def pool_fits() -> bool:
    return eng.address_space_available(eng.pool_reservation_bytes(pooling_settings(POOL) or {}))


def test_the_pool_is_used_when_asked_for(tmp_path: Path) -> None:
    if not pool_fits():
        pytest.skip("no address space for the instance pool on this machine")
    for environ, pooling in (({}, False), (POOL, True)):
        e = WasmEngine(cache_dir=tmp_path, environ=environ)
        try:
            assert e.pooling is pooling
            component, _ = e.load_component(_wasm(tmp_path))
            assert component is not None
        finally:
            e.close()


def test_without_the_address_space_it_fails_clearly_instead_of_aborting(tmp_path: Path) -> None:
    huge = {**POOL, "SPIN_WASMTIME_TOTAL_MEMORIES": str(4_000_000_000)}  # ~24 EiB of slots: never reservable
    with pytest.raises(EngineConfigError, match=r"cannot reserve .* address space"):
        WasmEngine(cache_dir=tmp_path, environ=huge)


def test_each_allocator_has_its_own_compiled_artifacts(tmp_path: Path) -> None:
    wasm = _wasm(tmp_path)
    cache = tmp_path / "cache"
    if not pool_fits():
        pytest.skip("no address space for the instance pool on this machine")
    engines = [WasmEngine(cache_dir=cache, environ=env) for env in ({}, POOL)]
    try:
        for e in engines:
            _, cached = e.load_component(wasm)
            assert not cached
            _, cached = e.load_component(wasm)
            assert cached
        assert len(list(cache.glob("*.cwasm"))) == 2
    finally:
        for e in engines:
            e.close()


def _wasm(tmp_path: Path) -> Path:
    wasm = tmp_path / "resources.wasm"
    wasm.write_bytes((WAT / "resources.wat").read_bytes())
    return wasm
