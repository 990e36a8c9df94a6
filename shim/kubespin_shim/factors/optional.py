"""The factors an app may not need, and the rule that decides whether it does.

Key-value, sqlite, LLM and outbound Redis cost ~20 ms of a cold start to import (sqlite3, the LLM
engine types, the store backends), and most apps use one of them or none. A factor is loaded when
the app can reach it:

- a served component imports one of its interfaces (any version: the linker matches unversioned
  names), or
- a component declares what it serves (``key_value_stores``, ``sqlite_databases``, ``ai_models``):
  Spin checks those labels at start even when the code never opens them, or
- the runtime config has its section: a broken section fails at start, as in Spin, and not first
  when an app that never reads it is re-linked.

Otherwise nothing would ever call it: the component links without it. A runtime config that gains
such a section later loads the factor then, to validate it (:func:`factors_for_sections`).

The interface names are written here so that the rule needs no import of the factor;
``tests/unit/test_optional_factors.py`` keeps them equal to each factor's ``interfaces``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import NamedTuple

from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime import Factor
from kubespin_shim.runtime_config import RuntimeConfig


class FactorPaths(NamedTuple):
    """What ``kubespin up`` was told about where state lives (the optional factors' shared inputs)."""

    state_dir: Path | None = None
    ai_models_dir: Path | None = None


class OptionalFactor(NamedTuple):
    name: str  # the factor's own ``name``
    interfaces: frozenset[str]  # unversioned WIT interface names it implements
    section: str  # the runtime-config table it reads ("" for none)
    declared: Callable[[ComponentSpec], bool]  # a component declares something only it serves
    build: Callable[[AppManifest, RuntimeConfig, FactorPaths], Factor]  # imports the factor on call


def _key_value(app: AppManifest, rc: RuntimeConfig, paths: FactorPaths) -> Factor:
    from kubespin_shim.factors.key_value import KeyValueFactor

    return KeyValueFactor.from_app(app, rc, state_dir=paths.state_dir)


def _sqlite(app: AppManifest, rc: RuntimeConfig, paths: FactorPaths) -> Factor:
    from kubespin_shim.factors.sqlite import SqliteFactor

    return SqliteFactor.from_app(app, rc, state_dir=paths.state_dir)


def _llm(app: AppManifest, rc: RuntimeConfig, paths: FactorPaths) -> Factor:
    from kubespin_shim.factors.llm import LlmFactor

    return LlmFactor.from_app(app, rc, state_dir=paths.state_dir, ai_models_dir=paths.ai_models_dir)


def _outbound_redis(app: AppManifest, rc: RuntimeConfig, paths: FactorPaths) -> Factor:
    from kubespin_shim.factors.outbound_redis import OutboundRedisFactor

    return OutboundRedisFactor.from_app(app)


OPTIONAL_FACTORS: tuple[OptionalFactor, ...] = (
    OptionalFactor(
        "key-value",
        frozenset({"fermyon:spin/key-value", "wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch"}),
        "key_value_store",
        lambda c: bool(c.key_value_stores),
        _key_value,
    ),
    OptionalFactor(
        "sqlite",
        frozenset({"fermyon:spin/sqlite", "spin:sqlite/sqlite"}),
        "sqlite_database",
        lambda c: bool(c.sqlite_databases),
        _sqlite,
    ),
    OptionalFactor("llm", frozenset({"fermyon:spin/llm"}), "llm_compute", lambda c: bool(c.ai_models), _llm),
    OptionalFactor("outbound-redis", frozenset({"fermyon:spin/redis"}), "", lambda c: False, _outbound_redis),
)


def needed_factors(
    app: AppManifest,
    components: Iterable[ComponentSpec],
    imports: Collection[str],
    rc: RuntimeConfig,
    paths: FactorPaths,
) -> list[Factor]:
    """Build the optional factors that ``components`` (the served ones) can reach; see the module doc.

    ``imports`` are the unversioned interface names the served components import.
    """
    components = list(components)
    out = []
    for opt in OPTIONAL_FACTORS:
        if (
            not opt.interfaces.isdisjoint(imports)
            or any(opt.declared(c) for c in components)
            or (opt.section and opt.section in rc.data)
        ):
            out.append(opt.build(app, rc, paths))
    return out


def factors_for_sections(
    app: AppManifest, rc: RuntimeConfig, loaded: Collection[str], paths: FactorPaths
) -> list[Factor]:
    """The optional factors not in ``loaded`` (names) whose section ``rc`` has: built to validate it.

    Built with ``rc`` itself, so a broken section raises here and the new runtime config is refused.
    """
    return [
        opt.build(app, rc, paths)
        for opt in OPTIONAL_FACTORS
        if opt.name not in loaded and opt.section and opt.section in rc.data
    ]
