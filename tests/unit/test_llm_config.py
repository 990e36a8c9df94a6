"""[llm_compute] parsing, the models directory, params on the wire, and the models registry layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubespin_shim.llm import registry
from kubespin_shim.llm.config import LocalSpec, RemoteSpec, engine_spec, models_dir
from kubespin_shim.llm.types import DEFAULT_PARAMS, InferencingParams, LlmError
from kubespin_shim.runtime_config import RuntimeConfigError, parse_runtime_config


def rc(text: str):
    return parse_runtime_config(text.encode(), Path("/x/runtime-config.toml"))


M = Path("/models")


def test_no_section_and_type_spin_are_local() -> None:
    assert engine_spec(rc(""), M) == LocalSpec(M)
    assert engine_spec(rc('[llm_compute]\ntype = "spin"\n'), M) == LocalSpec(M)


def test_remote_http_defaults_to_spin_protocol_and_accepts_open_ai() -> None:
    spec = engine_spec(rc('[llm_compute]\ntype = "remote_http"\nurl = "http://h:1"\nauth_token = "s3cr3t"\n'), M)
    assert spec == RemoteSpec("http://h:1", "s3cr3t", "default")
    assert "s3cr3t" not in repr(spec)  # the token never shows in logs
    spec = engine_spec(
        rc('[llm_compute]\ntype = "remote_http"\nurl = "https://h/"\nauth_token = "t"\napi_type = "open_ai"\n'), M
    )
    assert spec.api_type == "open_ai"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[llm_compute]\n", "llm_compute", "missing field `type`"),
        ('[llm_compute]\ntype = "gpu"\n', "llm_compute.type", "unknown variant 'gpu'"),
        ('[llm_compute]\ntype = "remote_http"\nauth_token = "t"\n', "llm_compute.url", "missing"),
        ('[llm_compute]\ntype = "remote_http"\nurl = "http://h"\n', "llm_compute.auth_token", "missing"),
        ('[llm_compute]\ntype = "remote_http"\nurl = "h:1"\nauth_token = "t"\n', "llm_compute.url", "absolute"),
        (
            '[llm_compute]\ntype = "remote_http"\nurl = "http://h"\nauth_token = "t"\napi_type = "x"\n',
            "llm_compute.api_type",
            "unknown variant",
        ),
        ('[llm_compute]\ntype = "spin"\nurl = "http://h"\n', "llm_compute", "unknown field"),
        ('llm_compute = 3\n', "llm_compute", "expected a table"),
    ],
)
def test_malformed_sections_are_refused_with_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(RuntimeConfigError) as e:
        engine_spec(rc(text), M)
    assert e.value.key == key and fragment in e.value.message


def test_models_dir_precedence(tmp_path: Path) -> None:
    state = tmp_path / ".spin"
    assert models_dir(state, None, {}) == state / "ai-models"
    assert models_dir(state, None, {"KUBESPIN_AI_MODELS_DIR": str(tmp_path / "env")}) == tmp_path / "env"
    assert models_dir(state, tmp_path / "flag", {"KUBESPIN_AI_MODELS_DIR": "/env"}) == tmp_path / "flag"
    assert models_dir(None, None, {}) == Path.cwd() / "ai-models"


def test_params_wire_round_trip_and_defaults() -> None:
    p = InferencingParams(7, 1.3, 12, 0.0, 5, 0.5)
    wire = p.to_wire()
    assert wire == {
        "maxTokens": 7, "repeatPenalty": 1.3, "repeatPenaltyLastNTokenCount": 12,
        "temperature": 0.0, "topK": 5, "topP": 0.5,
    }
    assert InferencingParams.from_wire(wire) == p
    assert InferencingParams.from_wire(None) == DEFAULT_PARAMS == InferencingParams.from_wit(None)
    assert InferencingParams.from_wire({"maxTokens": 3}) == InferencingParams(max_tokens=3)
    assert (DEFAULT_PARAMS.max_tokens, DEFAULT_PARAMS.repeat_penalty, DEFAULT_PARAMS.repeat_penalty_last_n_token_count,
            DEFAULT_PARAMS.temperature, DEFAULT_PARAMS.top_k, DEFAULT_PARAMS.top_p) == (100, 1.1, 64, 0.8, 40, 0.9)
    for bad in ({"maxTokens": -1}, {"maxTokens": 1.5}, {"topP": "x"}, {"topK": True}, [1]):
        with pytest.raises(ValueError):
            InferencingParams.from_wire(bad)


def test_registry_layout(tmp_path: Path) -> None:
    (tmp_path / "llama" / "m1").mkdir(parents=True)
    (tmp_path / "llama" / "m1" / "m1.Q4.gguf").write_bytes(b"x")
    (tmp_path / "gptneox" / "m2").mkdir(parents=True)
    (tmp_path / "README").write_text("a file among the architecture dirs is ignored")
    assert registry.find_model_dir(tmp_path, "m1") == (tmp_path / "llama" / "m1", "llama")
    with pytest.raises(LlmError) as e:
        registry.find_model_dir(tmp_path, "m2")
    assert e.value.kind == "model-not-supported"
    with pytest.raises(LlmError) as e:
        registry.find_model_dir(tmp_path, "m3")
    assert (e.value.kind, e.value.message) == ("invalid-input", "no model directory found in registry for model 'm3'")
    with pytest.raises(LlmError) as e:
        registry.find_model_dir(tmp_path / "nope", "m1")
    assert e.value.kind == "runtime-error" and "Could not read model registry directory" in str(e.value.message)


def test_registry_gguf_choice(tmp_path: Path) -> None:
    with pytest.raises(LlmError, match=r"no \.gguf file"):
        registry.find_gguf(tmp_path)
    (tmp_path / "a.gguf").write_bytes(b"x")
    assert registry.find_gguf(tmp_path) == tmp_path / "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(LlmError, match="keep exactly one"):
        registry.find_gguf(tmp_path)
    split = tmp_path / "split"
    split.mkdir()
    for i in (1, 2):
        (split / f"m-0000{i}-of-00002.gguf").write_bytes(b"x")
    assert registry.find_gguf(split).name == "m-00001-of-00002.gguf"


def test_embeddings_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(LlmError) as e:
        registry.embeddings_dir(tmp_path, "all-minilm-l6-v2")
    assert e.value.message == (
        f"The directory expected to house the embeddings models '{tmp_path / 'all-minilm-l6-v2'}' does not exist."
    )


def test_needs_local_inference() -> None:
    from kubespin_shim.llm.config import needs_local_inference

    assert needs_local_inference(["llama2-chat"], rc(""))
    assert needs_local_inference(["m"], rc('[llm_compute]\ntype = "spin"\n'))
    remote = '[llm_compute]\ntype = "remote_http"\nurl = "http://h"\nauth_token = "t"\n'
    assert not needs_local_inference(["m"], rc(remote))
    assert not needs_local_inference([], rc(""))
