"""Sentence embeddings for ``all-minilm-l6-v2``: a BERT encoder in numpy over Spin's model files.

Spin reads ``<models dir>/all-minilm-l6-v2/{tokenizer.json, model.safetensors}`` and runs the BERT
encoder itself (candle), then mean-pools and L2-normalizes, as sentence-transformers does. We do the
same with the libraries made for each file: ``tokenizers`` for tokenizer.json, ``safetensors`` for
the weights; the six-layer encoder forward pass is written here in numpy (~40 lines) because the
library that ships it, PyTorch + sentence-transformers, is a 1.5 GB install with a 7-10 s import,
which a node shim should not carry for one small model. Its output is checked against
sentence-transformers' own vectors in tests/unit/test_llm_embeddings.py.

Differences from Spin, on purpose: mean pooling skips padding (Spin's averages over padding too, so a
sentence's vector there depends on the other sentences in the batch; sentence-transformers' does not),
and ``prompt-token-count`` is the number of real tokens over all inputs (Spin reports the padded length
of the batch). Inputs are truncated to 256 tokens (the model's ``max_seq_length``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from kubespin_shim.llm.types import MAX_RESULT_BYTES, EmbeddingsResult, LlmError

MODEL_NAME = "all-minilm-l6-v2"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
MAX_SEQ_LEN = 256
#: Sentences encoded per forward pass (bounds the attention matrices' memory).
BATCH = 32
#: BLAS threads for the encoder. OpenBLAS's threads busy-wait; on a loaded 2-core node they made one
#: sentence take 0.8 s instead of 25 ms (measured), and concurrent requests already use the cores.
THREADS_ENV = "KUBESPIN_EMBEDDINGS_THREADS"

# Spin's bert.rs Config::default(), which is all-MiniLM-L6-v2's config.json.
_DEFAULT_CONFIG = {"num_attention_heads": 12, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def _erf(x: Any) -> Any:
    """erf in numpy (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none, scipy is not a dep."""
    import numpy as np

    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    y = 1.0 - poly * t * np.exp(-a * a)
    return sign * y


def _gelu(x: Any) -> Any:
    return 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))


def _layer_norm(x: Any, w: Any, b: Any, eps: float) -> Any:
    import numpy as np

    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class _Layer:
    __slots__ = ("ao_b", "ao_w", "ln1_b", "ln1_w", "ln2_b", "ln2_w", "o_b", "o_w", "qkv_b", "qkv_w", "up_b", "up_w")


class MiniLmEmbedder:
    """Loaded once; ``embed`` may be called from many threads (the weights are read-only)."""

    def __init__(self, model_dir: Path) -> None:
        try:
            import numpy as np
            from safetensors.numpy import load_file
            from threadpoolctl import threadpool_limits
            from tokenizers import Tokenizer
        except ImportError as e:
            raise LlmError.runtime(
                f"embeddings need numpy, tokenizers, safetensors and threadpoolctl (the kubespin[llm] extra): {e}"
            ) from None
        self.model_dir = model_dir
        threadpool_limits(limits=int(os.environ.get(THREADS_ENV) or 1), user_api="blas")
        tok_file = model_dir / TOKENIZER_FILE
        weights_file = model_dir / WEIGHTS_FILE
        try:
            tokenizer = Tokenizer.from_file(str(tok_file))
        except Exception:
            raise LlmError.runtime(f"Failed to load embeddings tokenizer from '{tok_file}'") from None
        tokenizer.enable_truncation(MAX_SEQ_LEN)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self.tokenizer = tokenizer
        self._local = threading.local()  # Tokenizer objects are not documented as thread-safe
        config = dict(_DEFAULT_CONFIG)
        cfg_file = model_dir / "config.json"
        if cfg_file.exists():
            with contextlib.suppress(OSError, ValueError):
                config.update({k: v for k, v in json.loads(cfg_file.read_text()).items() if k in _DEFAULT_CONFIG})
        try:
            t = load_file(str(weights_file))
            self._load(t, config, np)
        except Exception:
            raise LlmError.runtime(f"Failed to load embeddings model from '{weights_file}'") from None

    def _load(self, t: dict[str, Any], config: dict[str, Any], np: Any) -> None:
        def get(name: str) -> Any:
            return t[name] if name in t else t[f"bert.{name}"]

        f32 = np.float32
        self.word = get("embeddings.word_embeddings.weight").astype(f32)
        self.pos = get("embeddings.position_embeddings.weight").astype(f32)
        self.type0 = get("embeddings.token_type_embeddings.weight")[0].astype(f32)
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self.hidden = self.word.shape[1]
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {config['hidden_act']!r}")
        self.layers: list[_Layer] = []
        i = 0
        while any(f"{pre}encoder.layer.{i}.attention.self.query.weight" in t for pre in ("", "bert.")):
            p = f"encoder.layer.{i}."
            L = _Layer()
            qkv = [get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")]
            L.qkv_w = np.ascontiguousarray(np.concatenate(qkv, 0).T.astype(f32))
            qkv_b = [get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]
            L.qkv_b = np.concatenate(qkv_b).astype(f32)
            L.ao_w = np.ascontiguousarray(get(p + "attention.output.dense.weight").T.astype(f32))
            L.ao_b = get(p + "attention.output.dense.bias").astype(f32)
            L.ln1_w, L.ln1_b = get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias")
            L.up_w = np.ascontiguousarray(get(p + "intermediate.dense.weight").T.astype(f32))
            L.up_b = get(p + "intermediate.dense.bias").astype(f32)
            L.o_w = np.ascontiguousarray(get(p + "output.dense.weight").T.astype(f32))
            L.o_b = get(p + "output.dense.bias").astype(f32)
            L.ln2_w, L.ln2_b = get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias")
            self.layers.append(L)
            i += 1
        if not self.layers:
            raise ValueError("no encoder layers in the weights")

    def _tokenizer(self) -> Any:
        tok = getattr(self._local, "tok", None)
        if tok is None:
            from tokenizers import Tokenizer

            tok = self._local.tok = Tokenizer.from_str(self.tokenizer.to_str())
        return tok

    def _forward(self, ids: Any, mask: Any) -> Any:
        """Token ids (B, L) and attention mask (B, L) → normalized sentence vectors (B, hidden)."""
        import numpy as np

        b, n = ids.shape
        h, d = self.heads, self.hidden // self.heads
        x = self.word[ids] + self.pos[:n] + self.type0
        x = _layer_norm(x, *self.emb_ln, self.eps)
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(d))
        for L in self.layers:
            qkv = (x @ L.qkv_w + L.qkv_b).reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, self.hidden)
            x = _layer_norm(x + (ctx @ L.ao_w + L.ao_b), L.ln1_w, L.ln1_b, self.eps)
            up = _gelu(x @ L.up_w + L.up_b)
            x = _layer_norm(x + (up @ L.o_w + L.o_b), L.ln2_w, L.ln2_b, self.eps)
        m = mask[:, :, None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str], max_result_bytes: int = MAX_RESULT_BYTES) -> EmbeddingsResult:
        import numpy as np

        if not texts:
            return EmbeddingsResult([], 0)
        if len(texts) * (self.hidden * 4 + 24) > max_result_bytes:
            raise LlmError.runtime(
                f"Error occurred generating embeddings: query result exceeds limit of {max_result_bytes} bytes"
            )
        tok = self._tokenizer()
        vectors: list[list[float]] = []
        n_tokens = 0
        try:
            for start in range(0, len(texts), BATCH):
                encs = tok.encode_batch(texts[start : start + BATCH])
                ids = np.array([e.ids for e in encs], dtype=np.int64)
                mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
                n_tokens += int(mask.sum())
                vectors.extend(self._forward(ids, mask).tolist())
        except Exception as e:
            raise LlmError.runtime(f"Error occurred generating embeddings: {e}") from None
        return EmbeddingsResult(vectors, n_tokens)
