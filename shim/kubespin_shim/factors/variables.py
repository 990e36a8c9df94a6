"""The variables factor: ``fermyon:spin/variables@2.0.0``, ``wasi:config/store`` and Spin 1's
``fermyon:spin/config``.

Values come from ``--variable``, runtime-config ``[[variables_provider]]``, ``SPIN_VARIABLE_*`` and
manifest defaults, in ``spin up``'s order (``kubespin_shim.variables.provider_chain``). A required
variable with no value fails at start, not at request time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime_config import RuntimeConfig
from kubespin_shim.variables import (
    ComponentVariables,
    ConfigStoreError,
    Resolver,
    SpinConfigError,
    VariableError,
    provider_chain,
)

KEY = "variables"


class VariablesFactor:
    name = "variables"

    def __init__(self, app: AppManifest, cli_variables: Iterable[str], environ: Mapping[str, str]) -> None:
        self.app = app
        self._cli_variables = list(cli_variables)
        self._environ = environ
        self._components: dict[str, ComponentVariables] = {}

    def _build(self, runtime_config: RuntimeConfig) -> dict[str, ComponentVariables]:
        providers = provider_chain(
            runtime_config.providers(),
            cli_variables=self._cli_variables,
            environ=self._environ,
            base_dir=self.app.base_dir,
        )
        resolver = Resolver(self.app.variables, providers)
        resolver.validate()
        return {
            c.id: resolver.component_getter(c.variables, component_id=c.id) for c in self.app.components.values()
        }

    def stage(self, runtime_config: RuntimeConfig) -> Callable[[], None]:
        """Validate the providers of a new runtime config; the returned commit switches to them."""
        components = self._build(runtime_config)

        def commit() -> None:
            self._components = components

        return commit

    @classmethod
    def from_app(
        cls,
        app: AppManifest,
        runtime_config: RuntimeConfig,
        *,
        cli_variables: Iterable[str],
        environ: Mapping[str, str],
    ) -> VariablesFactor:
        factor = cls(app, cli_variables, environ)
        factor.stage(runtime_config)()
        return factor

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        ctx.extras[KEY] = self._components[component.id]

    interfaces: list[Interface] = []


spin_variables = Interface("fermyon:spin/variables")


@spin_variables.func("get")
def spin_get(ctx: CallContext, name: str) -> Ok | Err:
    try:
        return Ok(ctx.extras[KEY].get(name))
    except VariableError as e:
        return Err(Variant(e.kind, e.message))


config_store = Interface("wasi:config/store")


@config_store.func("get")
def config_get(ctx: CallContext, key: str) -> Ok | Err:
    try:
        return Ok(ctx.extras[KEY].config_get(key))
    except ConfigStoreError as e:
        return Err(Variant(e.kind, e.message))


@config_store.func("get-all")
def config_get_all(ctx: CallContext) -> Ok | Err:
    try:
        return Ok(ctx.extras[KEY].config_get_all())
    except ConfigStoreError as e:
        return Err(Variant(e.kind, e.message))


spin_config = Interface("fermyon:spin/config")


@spin_config.func("get-config")
def spin_config_get(ctx: CallContext, key: str) -> Ok | Err:
    try:
        return Ok(ctx.extras[KEY].spin_config_get(key))
    except SpinConfigError as e:
        return Err(Variant(e.kind, e.message))


VariablesFactor.interfaces = [spin_variables, config_store, spin_config]
