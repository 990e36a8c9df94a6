"""One GGUF model in llama.cpp (through llama-cpp-python), shared by every request of the process.

A ``llama_cpp.Llama`` owns one llama.cpp context (KV cache, sampler, token history) and is not
thread-safe, so requests take a context from a small pool and give it back: ``KUBESPIN_LLM_CONTEXTS``
contexts per model (default 1: on a node with few cores, two generations at once are each slower and
together no faster). The weights are mmapped, so extra contexts share them; each costs its KV cache.

Sampling follows Spin's parameters exactly: top-k, then top-p, then temperature (llama-cpp-python's
extra min-p and typical-p filters are turned off), a repeat penalty over the last N tokens, and a
temperature <= 0 means greedy. ``max-tokens`` 0 generates nothing (llama-cpp-python would read it as
"until the context is full"). Only the generated text is returned, with the prompt and generated
token counts as usage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from kubespin_shim.llm.types import MAX_RESULT_BYTES, InferencingParams, InferencingResult, LlmError

log = logging.getLogger("kubespin.shim.llm")

CONTEXTS_ENV = "KUBESPIN_LLM_CONTEXTS"
CTX_ENV = "KUBESPIN_LLM_CONTEXT_SIZE"
THREADS_ENV = "KUBESPIN_LLM_THREADS"
DEFAULT_CONTEXT_SIZE = 2048


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise LlmError.runtime(f"{name}={value!r} is not a whole number") from None
    if n <= 0:
        raise LlmError.runtime(f"{name} must be positive, got {n}")
    return n


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def llama_kwargs() -> dict[str, Any]:
    """Constructor arguments for ``llama_cpp.Llama`` (also used by the benchmark's direct calls)."""
    threads = _env_int(THREADS_ENV, default_threads())
    return {
        "n_ctx": _env_int(CTX_ENV, DEFAULT_CONTEXT_SIZE),
        "n_threads": threads,
        "n_threads_batch": threads,
        "verbose": False,
    }


def completion_kwargs(params: InferencingParams, seed: int) -> dict[str, Any]:
    """``create_completion`` arguments that make llama-cpp-python sample the way Spin's params say."""
    return {
        "max_tokens": params.max_tokens,
        "temperature": max(params.temperature, 0.0),
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": params.repeat_penalty,
        "seed": seed,
    }


class LlamaModel:
    """A GGUF model and its pool of contexts."""

    def __init__(self, path: Path, *, contexts: int | None = None) -> None:
        try:
            import llama_cpp
        except Exception as e:
            raise LlmError.runtime(f"llama-cpp-python cannot be imported: {e}") from None
        self._llama_cpp = llama_cpp
        self.path = path
        self.max_contexts = contexts if contexts is not None else _env_int(CONTEXTS_ENV, 1)
        self._kwargs = llama_kwargs()
        self._free: list[Any] = []
        self._created = 0
        self._cond = threading.Condition()
        t0 = time.perf_counter()
        self._free.append(self._build())  # fail at load, not at the first request
        self._created = 1
        log.info(
            "loaded %s in %.2f s (n_ctx %d, %d threads, up to %d context(s))",
            path, time.perf_counter() - t0, self._kwargs["n_ctx"], self._kwargs["n_threads"], self.max_contexts,
        )

    def _build(self) -> Any:
        try:
            return self._llama_cpp.Llama(str(self.path), **self._kwargs)
        except Exception as e:
            raise LlmError.runtime(f"Failed to load model '{self.path}': {e}") from None

    def _acquire(self) -> Any:
        with self._cond:
            while True:
                if self._free:
                    return self._free.pop()
                if self._created < self.max_contexts:
                    self._created += 1  # reserve the slot; build outside the lock
                    break
                self._cond.wait()
        try:
            return self._build()
        except LlmError:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def _release(self, llm: Any) -> None:
        with self._cond:
            self._free.append(llm)
            self._cond.notify()

    def infer(
        self, prompt: str, params: InferencingParams, max_result_bytes: int = MAX_RESULT_BYTES
    ) -> InferencingResult:
        llm = self._acquire()
        try:
            return self._infer(llm, prompt, params, max_result_bytes)
        finally:
            self._release(llm)

    def _infer(self, llm: Any, prompt: str, params: InferencingParams, max_result_bytes: int) -> InferencingResult:
        if params.max_tokens == 0:
            n_prompt = len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))
            return InferencingResult("", n_prompt, 0)
        llm.last_n_tokens_size = params.repeat_penalty_last_n_token_count  # read when the sampler is built
        try:
            out = llm.create_completion(prompt, **completion_kwargs(params, random.getrandbits(32)))
        except ValueError as e:  # e.g. "Requested tokens (N) exceed context window of M"
            raise LlmError.runtime(str(e)) from None
        except RuntimeError as e:
            raise LlmError.runtime(f"llama.cpp failed: {e}") from None
        text = out["choices"][0]["text"]
        if len(text.encode("utf-8")) > max_result_bytes:
            raise LlmError.runtime(f"query result exceeds limit of {max_result_bytes} bytes")
        usage = out["usage"]
        return InferencingResult(text, usage["prompt_tokens"], usage["completion_tokens"])

    def close(self) -> None:
        with self._cond:
            free, self._free = self._free, []
        for llm in free:
            with contextlib.suppress(Exception):  # best effort at shutdown
                llm.close()
