"""The local llama.cpp backend on the tiny random GGUF: limits, usage, sampling knobs, the context pool,
loading once, and the errors Spin gives (the real-model check is in tests/integration/test_shim_llm.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kubespin_shim.llm.detect import PlatformFacts, decide
from kubespin_shim.llm.local import LocalEngine
from kubespin_shim.llm.types import LOCAL_NOT_SUPPORTED, InferencingParams, LlmError

from tests.fixtures.llm import make_models_dir, require_llm, tiny_gguf

GREEDY = InferencingParams(max_tokens=16, temperature=0.0, top_k=1, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def supported():
    require_llm()
    from kubespin_shim.llm.detect import detect_local_support

    support = detect_local_support()
    assert support.supported, support.reason
    return support


@pytest.fixture(scope="module")
def engine(supported, tmp_path_factory: pytest.TempPathFactory):
    models = make_models_dir(tmp_path_factory.mktemp("models"), smollm2=False, embeddings=False)
    e = LocalEngine(models, lambda: supported)
    yield e
    e.close()


def test_max_tokens_and_usage(engine: LocalEngine) -> None:
    r = engine.infer("tiny", "Hello", GREEDY)
    assert r.prompt_token_count == 6  # <s> + five ASCII byte tokens
    assert 1 <= r.generated_token_count <= 16
    assert r.text.isascii()
    for n in (1, 5):
        r = engine.infer("tiny", "Hello", InferencingParams(max_tokens=n, temperature=0.0))
        assert r.generated_token_count <= n
    zero = engine.infer("tiny", "Hello", InferencingParams(max_tokens=0))
    assert (zero.text, zero.prompt_token_count, zero.generated_token_count) == ("", 6, 0)


def test_greedy_is_deterministic_and_sampling_varies(engine: LocalEngine) -> None:
    first = engine.infer("tiny", "Once upon a time", GREEDY)
    assert all(engine.infer("tiny", "Once upon a time", GREEDY) == first for _ in range(3))
    hot = InferencingParams(max_tokens=16, temperature=1.5, top_k=100, top_p=1.0)
    texts = {engine.infer("tiny", "Once upon a time", hot).text for _ in range(6)}
    assert len(texts) > 1  # a random seed per request, as Spin


def test_repeat_penalty_changes_the_output(engine: LocalEngine) -> None:
    plain = engine.infer("tiny", "abababab", InferencingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0))
    penalised = engine.infer("tiny", "abababab", InferencingParams(max_tokens=24, temperature=0.0, repeat_penalty=5.0,
                                                                    repeat_penalty_last_n_token_count=64))
    none_counted = engine.infer("tiny", "abababab", InferencingParams(
        max_tokens=24, temperature=0.0, repeat_penalty=5.0, repeat_penalty_last_n_token_count=0))
    assert penalised.text != plain.text
    assert none_counted.text == plain.text  # last-n 0: no token is penalised


def test_prompt_longer_than_the_context_is_a_runtime_error(engine: LocalEngine) -> None:
    with pytest.raises(LlmError) as e:
        engine.infer("tiny", "x" * 5000, GREEDY)
    assert e.value.kind == "runtime-error" and "context window" in (e.value.message or "")


def test_model_errors(engine: LocalEngine) -> None:
    with pytest.raises(LlmError) as e:
        engine.infer("nope", "x", GREEDY)
    assert (e.value.kind, e.value.message) == ("invalid-input", "no model directory found in registry for model 'nope'")
    with pytest.raises(LlmError) as e:
        engine.generate_embeddings("bert-large", ["x"])
    assert e.value.kind == "model-not-supported"
    with pytest.raises(LlmError) as e:
        engine.generate_embeddings("all-minilm-l6-v2", ["x"])  # not in this models dir
    assert e.value.kind == "runtime-error" and "does not exist" in (e.value.message or "")


def test_a_file_that_is_not_a_model(supported, tmp_path: Path) -> None:
    (tmp_path / "llama" / "broken").mkdir(parents=True)
    (tmp_path / "llama" / "broken" / "broken.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(LlmError) as e:
        LocalEngine(tmp_path, lambda: supported).infer("broken", "x", GREEDY)
    assert e.value.kind == "runtime-error" and "Failed to load model" in (e.value.message or "")


def test_unsupported_node(tmp_path: Path) -> None:
    engine = LocalEngine(tmp_path, lambda: decide(PlatformFacts("s390x", "glibc")))
    for call in (lambda: engine.infer("tiny", "x", GREEDY), lambda: engine.generate_embeddings("all-minilm-l6-v2", [])):
        with pytest.raises(LlmError) as e:
            call()
        assert (e.value.kind, e.value.message) == ("runtime-error", LOCAL_NOT_SUPPORTED)


def test_loaded_once_under_concurrent_first_use(supported, tmp_path: Path) -> None:
    engine = LocalEngine(make_models_dir(tmp_path, smollm2=False, embeddings=False), lambda: supported)
    got: list[object] = []
    barrier = threading.Barrier(6)

    def first_use() -> None:
        barrier.wait()
        got.append(engine.llama("tiny"))

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and all(m is got[0] for m in got)
    engine.close()


@pytest.mark.parametrize("contexts", [1, 3])
def test_concurrent_requests_get_their_own_results(supported, contexts: int) -> None:
    from kubespin_shim.llm.local_llama import LlamaModel

    model = LlamaModel(tiny_gguf(), contexts=contexts)
    prompts = [f"prompt {i} " + "z" * (i * 7) for i in range(8)]
    expected = [model.infer(p, GREEDY) for p in prompts]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        for _ in range(3):
            r = model.infer(prompts[i], GREEDY)
            if results.setdefault(i, r) != r:
                results[i] = "diverged"

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(prompts))] == expected
    assert model._created <= contexts
    model.close()
