"""The variables factor: ``fermyon:spin/variables@2.0.0`` and ``wasi:config/store``.

Values come from ``--variable``, ``SPIN_VARIABLE_*``, runtime-config ``[[variables_provider]]``
and the manifest defaults (resolution order and rules live in ``kubespin_shim.variables``). A
required variable with no value fails at start, not at request time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime_config import RuntimeConfig
from kubespin_shim.variables import CliProvider, EnvProvider, Resolver, VariableError, parse_providers

KEY = "variables.get"


class VariablesFactor:
    name = "variables"

    def __init__(self, resolver: Resolver, app: AppManifest) -> None:
        self.resolver = resolver
        self._getters: dict[str, Callable[[str], str]] = {
            c.id: resolver.component_getter(c.variables) for c in app.components.values()
        }
        self._names: dict[str, tuple[str, ...]] = {c.id: tuple(c.variables) for c in app.components.values()}

    @classmethod
    def from_app(
        cls,
        app: AppManifest,
        runtime_config: RuntimeConfig,
        *,
        cli_variables: Mapping[str, str],
        environ: Mapping[str, str],
    ) -> VariablesFactor:
        providers = [CliProvider(cli_variables), *parse_providers(runtime_config.providers(), environ=environ)]
        if not any(isinstance(p, EnvProvider) for p in providers):
            providers.append(EnvProvider(environ=environ))
        resolver = Resolver(app.variables, providers)
        resolver.validate()
        return cls(resolver, app)

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        ctx.extras[KEY] = (self._getters[component.id], self._names[component.id])

    interfaces: list[Interface] = []


spin_variables = Interface("fermyon:spin/variables")


@spin_variables.func("get")
def spin_get(ctx: CallContext, name: str) -> Ok | Err:
    getter, _ = ctx.extras[KEY]
    try:
        return Ok(getter(name))
    except VariableError as e:
        return Err(Variant(e.kind, e.message))


config_store = Interface("wasi:config/store")


@config_store.func("get")
def config_get(ctx: CallContext, key: str) -> Ok | Err:
    getter, _ = ctx.extras[KEY]
    try:
        return Ok(getter(key))
    except VariableError as e:
        if e.kind in ("undefined", "invalid-name"):
            return Ok(None)
        return Err(Variant("upstream", e.message))


@config_store.func("get-all")
def config_get_all(ctx: CallContext) -> Ok | Err:
    getter, names = ctx.extras[KEY]
    try:
        return Ok([(n, getter(n)) for n in names])
    except VariableError as e:
        return Err(Variant("upstream", e.message))


VariablesFactor.interfaces = [spin_variables, config_store]
