"""Which optional factors `kubespin up` loads (factors/optional.py): the rule and its registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim.factors.key_value import KeyValueFactor
from kubespin_shim.factors.llm import LlmFactor
from kubespin_shim.factors.optional import OPTIONAL_FACTORS, FactorPaths, factors_for_sections, needed_factors
from kubespin_shim.factors.outbound_redis import OutboundRedisFactor
from kubespin_shim.factors.sqlite import SqliteFactor
from kubespin_shim.manifest import AppManifest, load_app
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError, parse_runtime_config

NO_CONFIG = RuntimeConfig(None)


def app_with(tmp_path: Path, component_keys: str = "") -> AppManifest:
    d = tmp_path / "app"
    d.mkdir(exist_ok=True)
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(
        'spin_manifest_version = 2\n[application]\nname = "t"\n'
        '[[trigger.http]]\nroute = "/..."\ncomponent = "c"\n'
        f'[component.c]\nsource = "app.wasm"\n{component_keys}\n'
    )
    return load_app(d, work_dir=tmp_path / "work")


def names(
    app: AppManifest, imports: set[str], rc: RuntimeConfig = NO_CONFIG, tmp_path: Path | None = None
) -> list[str]:
    paths = FactorPaths(state_dir=tmp_path / "state" if tmp_path else None)
    return [f.name for f in needed_factors(app, app.components.values(), imports, rc, paths)]


@pytest.mark.parametrize(
    "cls", [KeyValueFactor, SqliteFactor, LlmFactor, OutboundRedisFactor], ids=lambda c: c.__name__
)
def test_registry_names_the_interfaces_each_factor_implements(cls: type) -> None:
    entry = next(o for o in OPTIONAL_FACTORS if o.name == cls.name)
    assert entry.interfaces == {iface.name for iface in cls.interfaces}


def test_an_app_that_reaches_none_of_them_loads_none(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    wasi_only = {"wasi:http/types", "wasi:http/outgoing-handler", "wasi:cli/environment", "fermyon:spin/variables"}
    assert names(app, wasi_only) == []


@pytest.mark.parametrize(
    ("imported", "expected"),
    [
        ("fermyon:spin/key-value", "key-value"),
        ("wasi:keyvalue/atomics", "key-value"),
        ("spin:sqlite/sqlite", "sqlite"),
        ("fermyon:spin/sqlite", "sqlite"),
        ("fermyon:spin/llm", "llm"),
        ("fermyon:spin/redis", "outbound-redis"),
    ],
)
def test_an_imported_interface_loads_its_factor(tmp_path: Path, imported: str, expected: str) -> None:
    # A component may import the interface without declaring labels: it must still link to the real
    # factor, which answers "access denied" / "no such store" as Spin does, not "not supported".
    assert names(app_with(tmp_path), {imported}, tmp_path=tmp_path) == [expected]


def test_declared_labels_load_their_factor_even_without_the_import(tmp_path: Path) -> None:
    declared = 'key_value_stores = ["default"]\nsqlite_databases = ["default"]\nai_models = ["llama2-chat"]'
    app = app_with(tmp_path, declared)
    assert names(app, set(), tmp_path=tmp_path) == ["key-value", "sqlite", "llm"]


def test_a_declared_label_is_checked_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The label is not defined (yet): the factor says so at start, as it does for an app that imports it.
    app = app_with(tmp_path, 'key_value_stores = ["nowhere"]')
    assert names(app, set(), tmp_path=tmp_path) == ["key-value"]
    assert "lists key-value store 'nowhere', which the runtime config does not define" in caplog.text


def test_a_runtime_config_section_loads_its_factor_and_a_broken_one_fails(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    ok = parse_runtime_config(b'[sqlite_database.default]\ntype = "spin"\n', tmp_path / "rc.toml")
    assert names(app, set(), ok, tmp_path) == ["sqlite"]
    broken = parse_runtime_config(b'[key_value_store.x]\ntype = "nope"\n', tmp_path / "rc.toml")
    with pytest.raises(RuntimeConfigError, match="unknown type 'nope'"):
        names(app, set(), broken, tmp_path)


def test_a_later_section_builds_only_the_factors_not_loaded(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    rc = parse_runtime_config(
        b'[key_value_store.x]\ntype = "spin"\npath = "x.db"\n[sqlite_database.default]\ntype = "spin"\n',
        tmp_path / "rc.toml",
    )
    paths = FactorPaths(state_dir=tmp_path / "state")
    assert [f.name for f in factors_for_sections(app, rc, {"key-value"}, paths)] == ["sqlite"]
    assert factors_for_sections(app, rc, {"key-value", "sqlite"}, paths) == []
    broken = parse_runtime_config(b'[llm_compute]\ntype = "nope"\n', tmp_path / "rc.toml")
    with pytest.raises(RuntimeConfigError, match="llm_compute"):
        factors_for_sections(app, broken, set(), paths)
