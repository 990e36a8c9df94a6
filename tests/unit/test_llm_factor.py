"""The llm factor's host functions and runtime-config switching, called as the binding layer calls them.

The canonical-ABI side (a real guest calling fermyon:spin/llm) is in tests/integration/test_shim_llm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim.factors import llm as llm_factor
from kubespin_shim.host.binding import CallContext
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.llm.config import LocalSpec, RemoteSpec
from kubespin_shim.llm.local import LocalEngine
from kubespin_shim.llm.remote_http import RemoteHttpEngine
from kubespin_shim.llm.types import LOCAL_NOT_SUPPORTED
from kubespin_shim.manifest import AppManifest, load_app
from kubespin_shim.runtime_config import RuntimeConfig, RuntimeConfigError, parse_runtime_config

from tests.fixtures.llm import make_models_dir, require_llm

MANIFEST = """
spin_manifest_version = 2
[application]
name = "llm-test"
[[trigger.http]]
route = "/..."
component = "c"
[[trigger.http]]
route = "/plain/..."
component = "plain"
[component.c]
source = "app.wasm"
ai_models = ["tiny", "all-minilm-l6-v2", "missing-model"]
[component.plain]
source = "app.wasm"
"""


@pytest.fixture
def app(tmp_path: Path) -> AppManifest:
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(MANIFEST)
    return load_app(d, work_dir=tmp_path / "work")


def rc(text: str) -> RuntimeConfig:
    return parse_runtime_config(text.encode(), Path("runtime-config.toml"))


def call_infer(factor: llm_factor.LlmFactor, app: AppManifest, component: str, model: str,
               params: dict | None = None) -> Ok | Err:
    ctx = CallContext(component)
    factor.prepare(ctx, app.components[component])
    return llm_factor.infer(ctx, model, "Hello", params)


def test_default_engine_is_local_beside_the_manifest(app: AppManifest) -> None:
    f = llm_factor.LlmFactor(app, environ={})
    f.stage(RuntimeConfig(None))()
    assert f.spec == LocalSpec(app.base_dir / ".spin" / "ai-models")
    f2 = llm_factor.LlmFactor(app, ai_models_dir=Path("/srv/models"), environ={})
    f2.stage(RuntimeConfig(None))()
    assert f2.spec == LocalSpec(Path("/srv/models"))


def test_model_outside_ai_models_is_invalid_input_with_spins_text(app: AppManifest) -> None:
    f = llm_factor.LlmFactor(app, environ={})
    f.stage(RuntimeConfig(None))()
    r = call_infer(f, app, "c", "llama2-chat")
    assert r == Err(Variant(
        "invalid-input",
        "The component does not have access to use 'llama2-chat'. To give the component access, add "
        "'llama2-chat' to the 'ai_models' key for the component in your spin.toml manifest",
    ))
    # a component with no ai_models at all gets the same answer, for embeddings too
    ctx = CallContext("plain")
    f.prepare(ctx, app.components["plain"])
    r = llm_factor.generate_embeddings(ctx, "all-minilm-l6-v2", ["x"])
    assert isinstance(r, Err) and r.value.tag == "invalid-input" and "'all-minilm-l6-v2'" in r.value.value


def test_unsupported_node_answers_spins_runtime_error(app: AppManifest, tmp_path: Path) -> None:
    from kubespin_shim.llm.detect import PlatformFacts, decide

    unsupported = decide(PlatformFacts("riscv64", "glibc"))
    f = llm_factor.LlmFactor(app, environ={}, engine_factory=lambda spec: LocalEngine(tmp_path, lambda: unsupported))
    f.stage(RuntimeConfig(None))()
    assert call_infer(f, app, "c", "tiny") == Err(Variant("runtime-error", LOCAL_NOT_SUPPORTED))
    ctx = CallContext("c")
    f.prepare(ctx, app.components["c"])
    assert llm_factor.generate_embeddings(ctx, "all-minilm-l6-v2", ["x"]) == Err(
        Variant("runtime-error", LOCAL_NOT_SUPPORTED)
    )


def test_runtime_config_switches_engines_and_reuses_them(app: AppManifest) -> None:
    f = llm_factor.LlmFactor(app, environ={})
    f.stage(RuntimeConfig(None))()
    local = f.engine
    assert isinstance(local, LocalEngine)
    f.stage(rc('[llm_compute]\ntype = "remote_http"\nurl = "http://127.0.0.1:9"\nauth_token = "t"\n'))()
    assert isinstance(f.engine, RemoteHttpEngine) and f.spec == RemoteSpec("http://127.0.0.1:9", "t")
    # a request prepared now keeps its engine even if the config changes before it calls
    ctx = CallContext("c")
    f.prepare(ctx, app.components["c"])
    f.stage(rc('[llm_compute]\ntype = "spin"\n'))()
    assert f.engine is local  # loaded models are kept
    assert isinstance(ctx.extras["llm"][1], RemoteHttpEngine)
    # a malformed section is refused at stage time and changes nothing
    with pytest.raises(RuntimeConfigError):
        f.stage(rc('[llm_compute]\ntype = "remote_http"\n'))
    assert f.engine is local
    f.close()


def test_params_none_takes_spins_defaults_and_usage_is_filled(app: AppManifest, tmp_path: Path) -> None:
    require_llm()
    models = make_models_dir(tmp_path, smollm2=False, embeddings=False)
    f = llm_factor.LlmFactor(app, ai_models_dir=models, environ={})
    f.stage(RuntimeConfig(None))()
    r = call_infer(f, app, "c", "tiny", None)
    assert isinstance(r, Ok)
    usage = r.value["usage"]
    assert usage["prompt-token-count"] == 6  # <s> + 5 ASCII bytes of "Hello"
    assert 1 <= usage["generated-token-count"] <= 100  # Spin's default max-tokens
    r = call_infer(f, app, "c", "tiny", {"max-tokens": 3, "repeat-penalty": 1.0, "repeat-penalty-last-n-token-count": 0,
                                         "temperature": 0.0, "top-k": 1, "top-p": 1.0})
    assert isinstance(r, Ok) and r.value["usage"]["generated-token-count"] <= 3
    missing = call_infer(f, app, "c", "missing-model")
    assert missing == Err(Variant("invalid-input", "no model directory found in registry for model 'missing-model'"))
    f.close()
