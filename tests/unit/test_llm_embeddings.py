"""all-minilm-l6-v2 embeddings: the numpy encoder against sentence-transformers' own vectors."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from kubespin_shim.llm.types import LlmError

from tests.fixtures.llm import minilm_dir, require_llm

REFERENCE = Path(__file__).resolve().parent.parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def embedder():
    require_llm()
    from kubespin_shim.llm.embeddings import MiniLmEmbedder

    return MiniLmEmbedder(minilm_dir())


def test_vectors_match_sentence_transformers(embedder) -> None:
    import numpy as np

    ref = json.loads(REFERENCE.read_text())
    got = embedder.embed(ref["sentences"])
    assert len(got.embeddings) == len(ref["sentences"])
    for sentence, mine, theirs in zip(ref["sentences"], got.embeddings, ref["embeddings"], strict=True):
        a, b = np.array(mine), np.array(theirs)
        assert a.shape == (384,)
        assert abs(np.linalg.norm(a) - 1) < 1e-5
        assert float(a @ b) > 0.99999, sentence
        assert float(np.abs(a - b).max()) < 1e-4, sentence


def test_a_sentence_gets_the_same_vector_alone_and_in_a_batch(embedder) -> None:
    import numpy as np

    alone = embedder.embed(["short"]).embeddings[0]
    batched = embedder.embed(["a much longer sentence that forces padding of the short one", "short"]).embeddings[1]
    assert float(np.abs(np.array(alone) - np.array(batched)).max()) < 1e-5


def test_usage_counts_real_tokens(embedder) -> None:
    r = embedder.embed(["hello world", "hi"])
    # [CLS] hello world [SEP] + [CLS] hi [SEP]
    assert r.prompt_token_count == 7
    assert embedder.embed([]).embeddings == []


def test_similar_sentences_are_closer(embedder) -> None:
    import numpy as np

    texts = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock prices fell."]
    v = np.array(embedder.embed(texts).embeddings)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_threads_share_one_encoder(embedder) -> None:
    import numpy as np

    texts = [f"sentence number {i} about topic {i % 3}" for i in range(8)]
    expected = [embedder.embed([t]).embeddings[0] for t in texts]
    results: dict[int, list[float]] = {}

    def work(i: int) -> None:
        results[i] = embedder.embed([texts[i]]).embeddings[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        assert float(np.abs(np.array(results[i]) - np.array(e)).max()) < 1e-6


def test_broken_model_files_give_spins_errors(tmp_path: Path) -> None:
    require_llm()
    from kubespin_shim.llm.embeddings import MiniLmEmbedder

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LlmError) as e:
        MiniLmEmbedder(tmp_path)
    assert e.value.message == f"Failed to load embeddings tokenizer from '{tmp_path / 'tokenizer.json'}'"
    shutil.copy(minilm_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(LlmError) as e:
        MiniLmEmbedder(tmp_path)
    assert e.value.message == f"Failed to load embeddings model from '{tmp_path / 'model.safetensors'}'"
