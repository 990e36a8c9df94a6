"""fermyon:spin/llm through `kubespin up` with a real guest (tests/apps/py-llm) and real models.

Local llama.cpp (the tiny random GGUF for speed, SmolLM2-135M for real text), all-MiniLM-L6-v2
embeddings, the remote_http backend against a real `kubespin llm-serve`, and a node where local
inference is off (every other route keeps working).
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest
from kubespin_shim.llm.types import LOCAL_NOT_SUPPORTED

from tests.fixtures.llm import make_models_dir, require_llm, run_llm_serve, smollm2_gguf
from tests.shimproc import copy_app, run_shim

pytestmark = pytest.mark.integration

ACCESS = (
    "invalid-input: The component does not have access to use 'llama2-chat'. To give the component access, "
    "add 'llama2-chat' to the 'ai_models' key for the component in your spin.toml manifest"
)
GREEDY = "temperature=0&top_k=1&repeat_penalty=1.0"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_llm()
    return make_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return copy_app("py-llm", tmp_path)


def infer(c: httpx.Client, model: str, prompt: str, query: str = "") -> httpx.Response:
    return c.post(f"/infer/{model}?{query}", content=prompt.encode(), timeout=120)


def test_node_without_local_inference_keeps_every_other_route(app: Path, tmp_path: Path) -> None:
    """No LLM stack needed: local inference turned off answers Spin's runtime-error, /hello still works."""
    with run_shim(app, tmp_path, env={"KUBESPIN_LLM_LOCAL": "off"}) as shim, shim.client() as c:
        assert c.get("/hello").text == "hello"
        r = infer(c, "tiny", "Hi")
        assert (r.status_code, r.text) == (500, f"runtime-error: {LOCAL_NOT_SUPPORTED}")
        r = c.post("/embed/all-minilm-l6-v2", json=["a"])
        assert (r.status_code, r.text) == (500, f"runtime-error: {LOCAL_NOT_SUPPORTED}")
        assert (infer(c, "llama2-chat", "Hi").text) == ACCESS  # the access check comes first, as in Spin
        assert c.get("/hello").text == "hello"
    log = shim.log()
    assert log.count("local LLM inference: not available") == 1 and "KUBESPIN_LLM_LOCAL=off" in log


def test_local_inference_and_embeddings_through_a_guest(app: Path, tmp_path: Path, models: Path) -> None:
    from kubespin_shim.llm.embeddings import MiniLmEmbedder

    with run_shim(app, tmp_path, ["--ai-models-dir", str(models)]) as shim, shim.client() as c:
        r = infer(c, "tiny", "Hello", f"max_tokens=8&{GREEDY}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prompt_tokens"] == 6 and 1 <= body["generated_tokens"] <= 8
        assert infer(c, "tiny", "Hello", f"max_tokens=8&{GREEDY}").json() == body  # greedy: deterministic
        r = infer(c, "tiny", "Hello", "params=none")  # the host's defaults: max-tokens 100
        assert r.status_code == 200 and r.json()["generated_tokens"] <= 100
        r = infer(c, "tiny", "Hello", "max_tokens=0")
        assert r.json() == {"text": "", "prompt_tokens": 6, "generated_tokens": 0}
        texts = ["The cat sits on the mat.", "A feline rests on a rug."]
        r = c.post("/embed/all-minilm-l6-v2", json=texts)
        assert r.status_code == 200, r.text
        got = r.json()
        direct = MiniLmEmbedder(models / "all-minilm-l6-v2").embed(texts)
        assert got["prompt_tokens"] == direct.prompt_token_count
        assert [len(v) for v in got["embeddings"]] == [384, 384]
        assert max(abs(a - b) for u, v in zip(got["embeddings"], direct.embeddings, strict=True)
                   for a, b in zip(u, v, strict=True)) < 1e-6
        assert infer(c, "llama2-chat", "Hi").text == ACCESS
        r = infer(c, "absent-model", "Hi")
        assert r.text == "invalid-input: no model directory found in registry for model 'absent-model'"
        r = c.post("/embed/tiny", json=["a"])
        assert r.text == "model-not-supported"
        assert c.get("/hello").text == "hello"
    log = shim.log()
    assert log.count("local LLM inference: available") == 1
    assert log.count(f"loaded {models / 'llama' / 'tiny' / 'tiny.gguf'}") == 1  # once per process


def test_concurrent_requests_do_not_corrupt_each_other(app: Path, tmp_path: Path, models: Path) -> None:
    prompts = [f"prompt {i}: " + "abc" * i for i in range(6)]
    with run_shim(app, tmp_path, ["--ai-models-dir", str(models)], env={"KUBESPIN_LLM_CONTEXTS": "2"}) as shim, \
            shim.client() as c:
        sequential = [infer(c, "tiny", p, f"max_tokens=12&{GREEDY}").json() for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            def one(p: str) -> dict:
                with shim.client() as c2:
                    return infer(c2, "tiny", p, f"max_tokens=12&{GREEDY}").json()

            for _round in range(2):
                assert list(pool.map(one, prompts)) == sequential


def test_smollm2_answers_for_real_like_llama_cpp_called_directly(app: Path, tmp_path: Path, models: Path) -> None:
    import llama_cpp
    from kubespin_shim.llm.local_llama import completion_kwargs, llama_kwargs
    from kubespin_shim.llm.types import InferencingParams

    prompt = "The capital of France is"
    params = InferencingParams(max_tokens=8, temperature=0.0, top_k=1, repeat_penalty=1.0)
    direct = llama_cpp.Llama(str(smollm2_gguf()), **llama_kwargs()).create_completion(
        prompt, **completion_kwargs(params, 1)
    )
    with run_shim(app, tmp_path, ["--ai-models-dir", str(models)]) as shim, shim.client() as c:
        r = infer(c, "smollm2", prompt, f"max_tokens=8&{GREEDY}")
        assert r.status_code == 200, r.text
    body = r.json()
    assert "Paris" in body["text"]
    assert body["text"] == direct["choices"][0]["text"]
    assert body["prompt_tokens"] == direct["usage"]["prompt_tokens"]
    assert body["generated_tokens"] == direct["usage"]["completion_tokens"]


def test_remote_http_backend_to_llm_serve(app: Path, tmp_path: Path, models: Path) -> None:
    with run_llm_serve(models, tmp_path, token="s3cret") as (url, _log):
        rc = tmp_path / "runtime-config.toml"
        rc.write_text(f'[llm_compute]\ntype = "remote_http"\nurl = "{url}"\nauth_token = "s3cret"\n')
        with run_shim(app, tmp_path, ["--runtime-config-file", str(rc)]) as shim, shim.client() as c:
            remote = infer(c, "tiny", "Hello", f"max_tokens=8&{GREEDY}")
            assert remote.status_code == 200, remote.text
            r = c.post("/embed/all-minilm-l6-v2", json=["x"])
            assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384
            r = infer(c, "absent-model", "Hi")
            assert r.status_code == 500 and r.text.startswith("runtime-error: POST /infer failed with HTTP 400")
            assert "no model directory found in registry for model 'absent-model'" in r.text
            assert infer(c, "llama2-chat", "Hi").text == ACCESS  # checked in the shim, never sent
        with run_shim(app, tmp_path, ["--ai-models-dir", str(models)]) as shim, shim.client() as c:
            local = infer(c, "tiny", "Hello", f"max_tokens=8&{GREEDY}")
        assert remote.json() == local.json()
        rc.write_text(f'[llm_compute]\ntype = "remote_http"\nurl = "{url}"\nauth_token = "wrong"\n')
        with run_shim(app, tmp_path, ["--runtime-config-file", str(rc)]) as shim, shim.client() as c:
            r = infer(c, "tiny", "Hello")
            assert r.status_code == 500 and "HTTP 401" in r.text and r.text.startswith("runtime-error:")
            assert c.get("/hello").text == "hello"


def test_sentiment_ab_example_with_smollm2(tmp_path: Path, models: Path) -> None:
    """examples/sentiment-ab against the real model: variants, prompts from promptstore, cached results."""
    import shutil

    src = Path(__file__).resolve().parents[2] / "examples" / "sentiment-ab"
    if not (src / "app.wasm").exists():
        pytest.fail("examples/sentiment-ab is not built: run scripts/build-test-apps sentiment-ab", pytrace=False)
    app = tmp_path / "sentiment-ab"
    shutil.copytree(src, app, ignore=shutil.ignore_patterns(".spin", "__pycache__"))
    args = ["--runtime-config-file", str(app / "runtime-config.toml"), "--ai-models-dir", str(models)]
    with run_shim(app, app, args) as shim, httpx.Client(base_url=shim.url, timeout=120) as c:
        prompts = c.get("/api/prompts").json()
        assert {v["source"] for v in prompts.values()} == {"built-in"}
        answers = {}
        for variant in ("a", "b"):
            for sentence in ("I love this place, the food was wonderful!", "This was awful, I hated every minute."):
                r = c.post("/api/sentiment-analysis", json={"sentence": sentence},
                           headers={"x-prompt-variant": variant})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["variant"] == variant and body["cached"] is False
                assert body["sentiment"] in ("positive", "negative", "neutral", "unsure")
                answers[variant, sentence] = body["sentiment"]
                again = c.post("/api/sentiment-analysis", json={"sentence": sentence},
                               headers={"x-prompt-variant": variant}).json()
                assert again == {**body, "cached": True}
        assert answers["a", "I love this place, the food was wonderful!"] == "positive"
        stats = c.get("/api/stats").json()
        for variant in ("a", "b"):
            assert stats[variant]["requests"] == 4 and stats[variant]["cache-hits"] == 2
            assert sum(stats[variant][s] for s in ("positive", "negative", "neutral", "unsure")) == 2
        # variant b now reads its prompt from the store; a new sentence uses it
        template = "Text: {SENTENCE}\nIs this text positive or negative? Answer:"
        assert c.put("/api/prompts/b", content=template.encode()).status_code == 200
        prompts = c.get("/api/prompts").json()
        assert prompts["b"] == {"template": template, "source": "promptstore"} and prompts["a"]["source"] == "built-in"
        r = c.post("/api/sentiment-analysis", json={"sentence": "Best day ever!"}, headers={"x-prompt-variant": "b"})
        assert r.status_code == 200 and r.json()["cached"] is False
        assert c.post("/api/sentiment-analysis", content=b"nope").status_code == 400
