"""`kubespin llm-serve` over 127.0.0.1, through the real client path (the shim's remote_http engine)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from kubespin_shim.llm.remote_http import RemoteHttpEngine
from kubespin_shim.llm.types import InferencingParams, LlmError

from tests.fixtures.llm import make_models_dir, require_llm, run_llm_serve
from tests.shimproc import KUBESPIN

pytestmark = pytest.mark.integration

GREEDY = InferencingParams(max_tokens=10, temperature=0.0, top_k=1, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    require_llm()
    tmp = tmp_path_factory.mktemp("serve")
    models = make_models_dir(tmp, smollm2=False)
    with run_llm_serve(models, tmp, token="tok", args=("--preload", "tiny")) as (url, log):
        yield url, models, log


def test_infer_and_embed_match_the_local_engine(served) -> None:
    from kubespin_shim.llm.detect import detect_local_support
    from kubespin_shim.llm.local import LocalEngine

    url, models, _ = served
    client = RemoteHttpEngine(url, "tok")
    local = LocalEngine(models, detect_local_support)
    try:
        assert client.infer("tiny", "Hello there", GREEDY) == local.infer("tiny", "Hello there", GREEDY)
        texts = ["one sentence", "and another one"]
        r = client.generate_embeddings("all-minilm-l6-v2", texts)
        d = local.generate_embeddings("all-minilm-l6-v2", texts)
        assert r.prompt_token_count == d.prompt_token_count
        assert max(abs(a - b) for u, v in zip(r.embeddings, d.embeddings, strict=True)
                   for a, b in zip(u, v, strict=True)) < 1e-6
    finally:
        client.close()
        local.close()


def test_open_ai_api_type_is_served_too(served) -> None:
    url, _, _ = served
    client = RemoteHttpEngine(url, "tok", "open_ai")
    spin = RemoteHttpEngine(url, "tok")
    try:
        r = client.infer("tiny", "Hello there", InferencingParams(max_tokens=10, repeat_penalty=1.0))
        assert 1 <= r.generated_token_count <= 10 and r.prompt_token_count > 0
        e = client.generate_embeddings("all-minilm-l6-v2", ["x", "y"])
        assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 384
        assert e == spin.generate_embeddings("all-minilm-l6-v2", ["x", "y"])
    finally:
        client.close()
        spin.close()


def test_auth_and_errors(served) -> None:
    url, _, _ = served
    for token in ("wrong", ""):
        with pytest.raises(LlmError) as e:
            RemoteHttpEngine(url, token).infer("tiny", "x", GREEDY)
        assert e.value.kind == "runtime-error" and "HTTP 401" in (e.value.message or "")
    r = httpx.post(f"{url}/infer", content=b'{"model": "tiny", "prompt": "x"}')
    assert r.status_code == 401
    r = httpx.post(f"{url}/infer", content=b"{oops", headers={"authorization": "Bearer tok"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/infer", json={"model": "tiny", "prompt": "x", "options": {"maxTokens": -3}},
                   headers={"authorization": "bearer tok"})
    assert r.status_code == 400 and "maxTokens" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/embed", json={"model": "tiny", "input": ["x"]}, headers={"authorization": "bearer tok"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "model-not-supported"
    r = httpx.post(f"{url}/infer", json={"model": "nope", "prompt": "x"}, headers={"authorization": "bearer tok"})
    assert r.status_code == 400 and r.json()["error"] == {
        "type": "invalid-input", "message": "no model directory found in registry for model 'nope'"}
    assert httpx.get(f"{url}/nothing").status_code == 404
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and "loads and runs a model" in health["local"]


def test_concurrent_clients(served) -> None:
    url, _, _ = served
    prompts = [f"p{i} " + "xy" * i for i in range(8)]
    client = RemoteHttpEngine(url, "tok")
    try:
        expected = [client.infer("tiny", p, GREEDY) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda p: client.infer("tiny", p, GREEDY), prompts)) == expected
    finally:
        client.close()


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBESPIN_LLM_AUTH_TOKEN"}
    r = subprocess.run([*KUBESPIN, "llm-serve", "--ai-models-dir", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0 and "an auth token is required" in r.stderr
