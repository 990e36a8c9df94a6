"""The local backend (``[llm_compute] type = "spin"``, and the default): llama.cpp + the MiniLM encoder.

Models load on first use and stay loaded for the life of the process (Spin does the same); a model
that two requests ask for at once is loaded once (a lock per model name). Where this node cannot run
local inference (see :mod:`.detect`), every call fails with Spin's own
``runtime-error("Local LLM operations are not supported in this version of Spin.")``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubespin_shim.llm import registry
from kubespin_shim.llm.detect import LocalSupport
from kubespin_shim.llm.types import (
    LOCAL_NOT_SUPPORTED,
    MAX_RESULT_BYTES,
    EmbeddingsResult,
    InferencingParams,
    InferencingResult,
    LlmError,
)

log = logging.getLogger("kubespin.shim.llm")

EMBEDDINGS_MODELS = ("all-minilm-l6-v2",)


class _OnceMap:
    """name → value built at most once, even when many threads ask at the same time."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str, build: Callable[[], Any]) -> Any:
        value = self._values.get(name)
        if value is not None:
            return value
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            value = self._values.get(name)
            if value is None:
                value = self._values[name] = build()  # a failed build is not cached: the next call retries
            return value

    def values(self) -> list[Any]:
        return list(self._values.values())

    def clear(self) -> None:
        self._values.clear()


class LocalEngine:
    def __init__(self, models_dir: Path, support: Callable[[], LocalSupport]) -> None:
        self.models_dir = models_dir
        self._support = support
        self._llamas = _OnceMap()
        self._embedders = _OnceMap()

    @property
    def summary(self) -> str:
        return f"local models in {self.models_dir}"

    def _check_supported(self) -> None:
        if not self._support().supported:
            raise LlmError.runtime(LOCAL_NOT_SUPPORTED)

    def llama(self, model: str) -> Any:
        """The loaded model (loading it on first use)."""
        from kubespin_shim.llm.local_llama import LlamaModel

        def build() -> LlamaModel:
            model_dir, _arch = registry.find_model_dir(self.models_dir, model)
            return LlamaModel(registry.find_gguf(model_dir))

        return self._llamas.get(model, build)

    def embedder(self, model: str) -> Any:
        from kubespin_shim.llm.embeddings import MiniLmEmbedder

        if model not in EMBEDDINGS_MODELS:
            raise LlmError.not_supported()
        return self._embedders.get(model, lambda: MiniLmEmbedder(registry.embeddings_dir(self.models_dir, model)))

    def infer(self, model: str, prompt: str, params: InferencingParams) -> InferencingResult:
        self._check_supported()
        return self.llama(model).infer(prompt, params, MAX_RESULT_BYTES)

    def generate_embeddings(self, model: str, texts: list[str]) -> EmbeddingsResult:
        self._check_supported()
        return self.embedder(model).embed(texts, MAX_RESULT_BYTES)

    def close(self) -> None:
        for m in self._llamas.values():
            m.close()
        self._llamas.clear()
        self._embedders.clear()
