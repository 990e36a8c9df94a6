"""Write a tiny random-weight llama GGUF (about 400 KB) that llama.cpp loads and runs.

Why: no model hub is reachable from CI or from most nodes, the real test model (SmolLM2) costs
~100 MB and ~20 ms per token, and node detection needs *some* model to prove that the llama.cpp
extension really runs on this CPU. The weights are random (seeded, so every file is identical), the
text it generates is noise; what it proves is that loading, tokenizing, sampling, stopping at
``max_tokens`` and counting usage all work.

The vocabulary is SentencePiece-style: ``<unk> <s> </s>``, the 128 ASCII byte tokens ``<0x00>`` …
``<0x7F>`` and ``▁`` (the escaped space). Only ASCII byte tokens: with all 256, the model can emit
an incomplete UTF-8 sequence and llama-cpp-python then keeps generating past ``max_tokens`` until
the context is full (found on this project, see the shared machine notes). ``▁`` must be a token
because llama.cpp escapes every space to it before byte fallback, and its 3 UTF-8 bytes are not in
the vocabulary.

Needs the PyPI ``gguf`` package and numpy (both in the ``kubespin[llm]`` extra).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

N_EMBD = 64
N_FF = 128
N_LAYER = 2
N_HEAD = 4
N_CTX = 2048
SEED = 0
#: The id of the ``</s>`` token.
EOS_ID = 2


def vocabulary() -> tuple[list[str], list[int]]:
    """Tokens and their GGUF token types (``<unk>``, controls, ASCII bytes, ``▁``)."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(128)] + ["\u2581"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 128 + [gguf.TokenType.NORMAL]
    return tokens, [int(t) for t in types]


def write_tiny_llama(path: Path | str, *, seed: int = SEED) -> Path:
    """Write the model to ``path`` atomically (a temp file renamed into place) and return the path."""
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, types = vocabulary()
    n_vocab = len(tokens)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    fd, tmp = tempfile.mkstemp(prefix=".tiny-", suffix=".gguf", dir=path.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name("kubespin-tiny-random-llama")
        w.add_context_length(N_CTX)
        w.add_embedding_length(N_EMBD)
        w.add_block_count(N_LAYER)
        w.add_feed_forward_length(N_FF)
        w.add_rope_dimension_count(N_EMBD // N_HEAD)
        w.add_head_count(N_HEAD)
        w.add_head_count_kv(N_HEAD)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * n_vocab)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(EOS_ID)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(False)
        w.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
        w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor("output.weight", weight(n_vocab, N_EMBD))
        for i in range(N_LAYER):
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
            w.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
            w.add_tensor(f"blk.{i}.attn_k.weight", weight(N_EMBD, N_EMBD))
            w.add_tensor(f"blk.{i}.attn_v.weight", weight(N_EMBD, N_EMBD))
            w.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
            w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
            w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
            w.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
            w.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached_tiny_llama(cache_dir: Path | None = None) -> Path:
    """The tiny model under ``$KUBESPIN_CACHE/llm/`` (written on first use, then reused); where that is
    not writable (a read-only home in a pod), under the temp directory instead."""
    name = f"tiny-random-llama-s{SEED}-v1.gguf"
    if cache_dir is None:
        cache_dir = Path(os.environ.get("KUBESPIN_CACHE") or Path.home() / ".cache" / "kubespin") / "llm"
    path = cache_dir / name
    if path.exists():
        return path
    try:
        return write_tiny_llama(path)
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"kubespin-llm-{os.getuid()}" / name
        return fallback if fallback.exists() else write_tiny_llama(fallback)


if __name__ == "__main__":  # pragma: no cover - a convenience for people
    import sys

    print(write_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-random-llama.gguf"))
