"""The values of ``fermyon:spin/llm@2.0.0`` in Python, shared by every backend.

Backends raise :class:`LlmError` with one of the WIT error cases; the factor turns it into the
guest's ``error`` variant. Results are plain dataclasses so that the HTTP server (``llm-serve``)
and the remote client can share one JSON mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ErrorKind = Literal["model-not-supported", "runtime-error", "invalid-input"]

#: Spin's text when local inference is not available (its noop engine says exactly this).
LOCAL_NOT_SUPPORTED = "Local LLM operations are not supported in this version of Spin."

#: Spin's MAX_HOST_BUFFERED_BYTES: the most bytes a host call buffers for one result.
MAX_RESULT_BYTES = 128 * 1024 * 1024


class LlmError(Exception):
    """An expected failure of an llm call; ``kind`` is the WIT error case, ``message`` its payload."""

    def __init__(self, kind: ErrorKind, message: str | None = None) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}" if message is not None else kind)

    @classmethod
    def runtime(cls, message: str) -> LlmError:
        return cls("runtime-error", message)

    @classmethod
    def invalid_input(cls, message: str) -> LlmError:
        return cls("invalid-input", message)

    @classmethod
    def not_supported(cls) -> LlmError:
        return cls("model-not-supported")


@dataclass(frozen=True)
class InferencingParams:
    """``inferencing-params``; the defaults are the ones Spin's host uses when the guest passes none."""

    max_tokens: int = 100
    repeat_penalty: float = 1.1
    repeat_penalty_last_n_token_count: int = 64
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9

    @classmethod
    def from_wit(cls, record: dict[str, Any] | None) -> InferencingParams:
        if record is None:
            return DEFAULT_PARAMS
        return cls(
            max_tokens=record["max-tokens"],
            repeat_penalty=record["repeat-penalty"],
            repeat_penalty_last_n_token_count=record["repeat-penalty-last-n-token-count"],
            temperature=record["temperature"],
            top_k=record["top-k"],
            top_p=record["top-p"],
        )

    def to_wire(self) -> dict[str, Any]:
        """The ``options`` object of Spin's remote ``/infer`` body (camelCase, as its serde renames)."""
        return {
            "maxTokens": self.max_tokens,
            "repeatPenalty": self.repeat_penalty,
            "repeatPenaltyLastNTokenCount": self.repeat_penalty_last_n_token_count,
            "temperature": self.temperature,
            "topK": self.top_k,
            "topP": self.top_p,
        }

    @classmethod
    def from_wire(cls, options: Any) -> InferencingParams:
        """Parse an ``options`` object; absent fields take Spin's defaults. Raises ``ValueError``."""
        if options is None:
            return DEFAULT_PARAMS
        if not isinstance(options, dict):
            raise ValueError("`options` must be a JSON object")
        d = DEFAULT_PARAMS
        return cls(
            max_tokens=_uint(options, "maxTokens", d.max_tokens),
            repeat_penalty=_float(options, "repeatPenalty", d.repeat_penalty),
            repeat_penalty_last_n_token_count=_uint(
                options, "repeatPenaltyLastNTokenCount", d.repeat_penalty_last_n_token_count
            ),
            temperature=_float(options, "temperature", d.temperature),
            top_k=_uint(options, "topK", d.top_k),
            top_p=_float(options, "topP", d.top_p),
        )


DEFAULT_PARAMS = InferencingParams()


def _uint(obj: dict[str, Any], key: str, default: int) -> int:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"`options.{key}` must be an unsigned 32-bit integer, got {v!r}")
    return v


def _float(obj: dict[str, Any], key: str, default: float) -> float:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"`options.{key}` must be a number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class InferencingResult:
    text: str
    prompt_token_count: int
    generated_token_count: int

    def to_wit(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "usage": {
                "prompt-token-count": self.prompt_token_count,
                "generated-token-count": self.generated_token_count,
            },
        }

    def to_wire(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "usage": {
                "promptTokenCount": self.prompt_token_count,
                "generatedTokenCount": self.generated_token_count,
            },
        }


@dataclass(frozen=True)
class EmbeddingsResult:
    embeddings: list[list[float]] = field(default_factory=list)
    prompt_token_count: int = 0

    def to_wit(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "usage": {"prompt-token-count": self.prompt_token_count}}

    def to_wire(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "usage": {"promptTokenCount": self.prompt_token_count}}


class LlmEngine(Protocol):
    """What the factor (and ``llm-serve``) needs from a backend. Methods are called from many threads."""

    def infer(self, model: str, prompt: str, params: InferencingParams) -> InferencingResult: ...

    def generate_embeddings(self, model: str, texts: list[str]) -> EmbeddingsResult: ...

    @property
    def summary(self) -> str: ...

    def close(self) -> None: ...
