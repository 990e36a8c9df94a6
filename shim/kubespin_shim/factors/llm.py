"""The LLM factor: ``fermyon:spin/llm@2.0.0`` (and Spin 1's unversioned ``fermyon:spin/llm``).

As Spin's factor-llm: a component may use only the models in its ``ai_models`` (any other is
``invalid-input`` with Spin's text telling the user to add it); absent params take Spin's defaults;
the engine comes from ``[llm_compute]`` (:mod:`kubespin_shim.llm.config`), local when there is none.

Local engines load each model once per shim process and share it between requests. Whether this node
can run local inference is decided once (:mod:`kubespin_shim.llm.detect`), in the background at start
when some component lists ``ai_models`` (the first llm call waits for it), and logged with its reason;
where it cannot, local calls return Spin's ``runtime-error("Local LLM operations are not supported in
this version of Spin.")`` and nothing else about the app changes.

Runtime-config reloads switch engines through ``stage``/commit; requests keep the engine they started
with. Engines are kept by their spec for the life of the process, so switching back and forth does
not reload models.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.http.workers import about_to_block
from kubespin_shim.llm.config import EngineSpec, LocalSpec, RemoteSpec, engine_spec, models_dir
from kubespin_shim.llm.types import InferencingParams, LlmEngine, LlmError
from kubespin_shim.manifest import AppManifest, ComponentSpec
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError

log = logging.getLogger("kubespin.shim.llm")

KEY = "llm"


def access_denied(model: str) -> Err:
    """Spin's error for a model that is not in the component's ``ai_models``."""
    return Err(
        Variant(
            "invalid-input",
            f"The component does not have access to use '{model}'. To give the component access, add "
            f"'{model}' to the 'ai_models' key for the component in your spin.toml manifest",
        )
    )


def make_engine(spec: EngineSpec) -> LlmEngine:
    if isinstance(spec, RemoteSpec):
        from kubespin_shim.llm.remote_http import RemoteHttpEngine

        return RemoteHttpEngine(spec.url, spec.auth_token, spec.api_type)
    from kubespin_shim.llm.detect import detect_local_support
    from kubespin_shim.llm.local import LocalEngine

    return LocalEngine(spec.models_dir, detect_local_support)


class LlmFactor:
    name = "llm"
    interfaces: list[Interface] = []

    def __init__(
        self,
        app: AppManifest,
        *,
        state_dir: Path | None = None,
        ai_models_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        engine_factory: Callable[[EngineSpec], LlmEngine] = make_engine,
    ) -> None:
        self.app = app
        self._cli_state_dir = state_dir
        self._ai_models_dir = ai_models_dir
        self._environ = os.environ if environ is None else environ
        self._factory = engine_factory
        self._allowed = {c.id: frozenset(c.ai_models) for c in app.components.values()}
        self._uses_llm = any(self._allowed.values())
        self._engines: dict[EngineSpec, LlmEngine] = {}
        self._lock = threading.Lock()
        self.spec: EngineSpec | None = None
        self.engine: LlmEngine | None = None

    @classmethod
    def from_app(
        cls,
        app: AppManifest,
        runtime_config: RuntimeConfig,
        *,
        state_dir: Path | None = None,
        ai_models_dir: Path | None = None,
    ) -> LlmFactor:
        factor = cls(app, state_dir=state_dir, ai_models_dir=ai_models_dir)
        factor.stage(runtime_config)()
        return factor

    def stage(self, rc: RuntimeConfig) -> Callable[[], None]:
        from kubespin_shim.kv.config import resolve_state_dir

        spec = engine_spec(rc, models_dir(resolve_state_dir(rc, self._cli_state_dir, self.app.base_dir),
                                          self._ai_models_dir, self._environ))
        with self._lock:
            engine = self._engines.get(spec)
        if engine is None and self._uses_llm:  # no component may call llm: no engine (and nothing imported)
            try:
                engine = self._factory(spec)
            except ValueError as e:
                raise RuntimeConfigError(rc.path, "llm_compute", str(e)) from None

        def commit() -> None:
            with self._lock:
                if engine is not None:
                    self._engines.setdefault(spec, engine)
                changed = spec != self.spec
                self.spec, self.engine = spec, self._engines.get(spec)
            if changed and self.engine is not None:
                users = sorted(c for c, models in self._allowed.items() if models)
                log.info("llm: %s for components %s", self.engine.summary, users)
                if isinstance(spec, LocalSpec):
                    from kubespin_shim.llm.detect import detect_local_support

                    threading.Thread(target=detect_local_support, name="llm-detect", daemon=True).start()

        return commit

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        allowed = self._allowed.get(component.id)
        if allowed is None:
            allowed = self._allowed[component.id] = frozenset(component.ai_models)
        ctx.extras[KEY] = (allowed, self.engine)

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for e in engines:
            e.close()


def _error(e: LlmError) -> Err:
    return Err(Variant(e.kind, e.message) if e.message is not None else Variant(e.kind))


spin_llm = Interface("fermyon:spin/llm")


@spin_llm.func("infer")
def infer(ctx: CallContext, model: str, prompt: str, params: dict[str, Any] | None) -> Ok | Err:
    allowed, engine = ctx.extras[KEY]
    if model not in allowed:
        return access_denied(model)
    about_to_block()  # an inference takes its worker for seconds: another takes new requests
    try:
        return Ok(engine.infer(model, prompt, InferencingParams.from_wit(params)).to_wit())
    except LlmError as e:
        return _error(e)


@spin_llm.func("generate-embeddings")
def generate_embeddings(ctx: CallContext, model: str, text: list[str]) -> Ok | Err:
    allowed, engine = ctx.extras[KEY]
    if model not in allowed:
        return access_denied(model)
    about_to_block()
    try:
        return Ok(engine.generate_embeddings(model, text).to_wit())
    except LlmError as e:
        return _error(e)


LlmFactor.interfaces = [spin_llm]
