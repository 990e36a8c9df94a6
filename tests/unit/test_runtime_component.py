"""ComponentRuntime refuses what it cannot serve, at start, with a message naming what it found."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim.engine import WasmEngine
from kubespin_shim.manifest import ComponentSpec
from kubespin_shim.runtime import ComponentRuntime, UnsupportedComponent

WAT = Path(__file__).parent / "wat"


def spec_for(tmp_path: Path, wat_name: str) -> ComponentSpec:
    wasm = tmp_path / (wat_name + ".wasm")
    wasm.write_bytes((WAT / wat_name).read_bytes())  # wasmtime accepts component WAT text as the source
    return ComponentSpec(
        id="c", source=wasm, files=(), environment={}, allowed_outbound_hosts=(), key_value_stores=(),
        sqlite_databases=(), ai_models=(), variables={},
    )


@pytest.fixture
def engine(tmp_path: Path) -> WasmEngine:
    e = WasmEngine(cache_dir=tmp_path / "cache")
    yield e
    e.close()


def test_wasip3_component_is_refused_with_the_world_it_exports(tmp_path: Path, engine: WasmEngine) -> None:
    with pytest.raises(UnsupportedComponent) as err:
        ComponentRuntime(spec_for(tmp_path, "p3_handler.wat"), engine, {}, [], 1.0, None)
    msg = str(err.value)
    assert "WASIp3" in msg and "wasi:http/handler@0.3.0-rc-2025-09-16" in msg


def test_component_without_http_handler_is_refused(tmp_path: Path, engine: WasmEngine) -> None:
    with pytest.raises(UnsupportedComponent, match="incoming-handler"):
        ComponentRuntime(spec_for(tmp_path, "resources.wat"), engine, {}, [], 1.0, None)


def test_compile_cache_is_reused(tmp_path: Path, engine: WasmEngine) -> None:
    spec = spec_for(tmp_path, "resources.wat")
    _, cached = engine.load_component(spec.source)
    assert not cached
    _, cached = engine.load_component(spec.source)
    assert cached
    assert len(list((tmp_path / "cache").glob("*.cwasm"))) == 1


def test_start_up_loads_each_source_once(tmp_path: Path, engine: WasmEngine) -> None:
    # build_server reads the imports, then ComponentRuntime links: one deserialization for both
    spec = spec_for(tmp_path, "resources.wat")
    first = engine.component(spec.source)
    assert engine.component(spec.source) is first
    assert first[1] is False  # this start compiled it (the cache was empty)
