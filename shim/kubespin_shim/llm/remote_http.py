"""The remote backend (``[llm_compute] type = "remote_http"``): Spin's wire format, or OpenAI's.

``api_type = "default"`` (Spin's llm-remote-http ``default`` worker; what ``kubespin llm-serve``
serves):

* ``POST <url>/infer`` body ``{"model", "prompt", "options": {maxTokens, repeatPenalty,
  repeatPenaltyLastNTokenCount, temperature, topK, topP}}`` → ``{"text", "usage": {promptTokenCount,
  generatedTokenCount}}``
* ``POST <url>/embed`` body ``{"model", "input": [..]}`` → ``{"embeddings", "usage": {promptTokenCount}}``

``api_type = "open_ai"``: ``POST <url>/v1/chat/completions`` (one user message, ``max_completion_tokens``,
``frequency_penalty`` = repeat-penalty, as Spin sends them) and ``POST <url>/v1/embeddings``.

Both send ``authorization: bearer <auth_token>``. As in Spin the endpoint path replaces the URL's
path (``Url::join("/infer")``). Unlike Spin, which parses any reply as JSON whatever its status, an
HTTP error status becomes ``runtime-error`` naming the status with a short excerpt of the body, and a
reply that is not the expected JSON becomes ``runtime-error`` with an excerpt too; nothing here raises
anything else, so a broken backend never traps the guest.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urljoin, urlsplit

from kubespin_shim.llm.types import (
    MAX_RESULT_BYTES,
    EmbeddingsResult,
    InferencingParams,
    InferencingResult,
    LlmError,
)

API_TYPES = ("default", "open_ai")
TIMEOUT_ENV = "KUBESPIN_LLM_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
EXCERPT = 200
U32 = 0xFFFFFFFF


def _excerpt(body: bytes) -> str:
    text = body[:EXCERPT].decode("utf-8", "replace")
    return text + ("…" if len(body) > EXCERPT else "")


def _u32(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32:
        raise ValueError(f"{what} is not an unsigned 32-bit integer: {value!r}")
    return value


def _vectors(value: Any, what: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    out = []
    for v in value:
        if not isinstance(v, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            raise ValueError(f"{what} holds something that is not a list of numbers")
        out.append([float(x) for x in v])
    return out


class RemoteHttpEngine:
    def __init__(self, url: str, auth_token: str, api_type: str = "default", *, timeout: float | None = None) -> None:
        import httpx

        if api_type not in API_TYPES:
            raise ValueError(f"api_type must be one of {API_TYPES}, got {api_type!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an absolute http(s) URL, got {url!r}")
        self.url = url
        self.api_type = api_type
        self._auth = f"bearer {auth_token}".strip()  # an empty token: "bearer" (HTTP forbids a trailing space)
        if timeout is None:
            timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    @property
    def summary(self) -> str:
        return f"model at {self.url}" + (" (OpenAI API)" if self.api_type == "open_ai" else "")

    def _post(self, endpoint: str, payload: dict[str, Any]) -> Any:
        """POST JSON; the parsed reply, or LlmError(runtime-error) for every failure."""
        import httpx

        target = urljoin(self.url, endpoint)
        headers = {"authorization": self._auth}
        body = json.dumps(payload).encode("utf-8")
        if self.api_type == "open_ai":
            headers["content-type"] = "application/json"
        try:
            with self._client.stream("POST", target, content=body, headers=headers) as resp:
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_RESULT_BYTES:
                        raise LlmError.runtime(f"query result exceeds limit of {MAX_RESULT_BYTES} bytes")
                    chunks.append(chunk)
                status = resp.status_code
        except httpx.HTTPError as e:
            raise LlmError.runtime(f"POST {endpoint} request error: {type(e).__name__}: {e}") from None
        raw = b"".join(chunks)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if self.api_type == "open_ai" and isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = data["error"].get("message")
            if isinstance(message, str):
                raise LlmError.runtime(message)  # as Spin: the OpenAI error's message
        if status >= 400:
            raise LlmError.runtime(f"POST {endpoint} failed with HTTP {status}: {_excerpt(raw)}")
        if data is None:
            raise LlmError.runtime(f"POST {endpoint} replied with something that is not JSON: {_excerpt(raw)!r}")
        return data, raw

    def _bad_reply(self, endpoint: str, e: Exception, raw: bytes) -> LlmError:
        return LlmError.runtime(f"POST {endpoint} replied with unexpected JSON ({e}): {_excerpt(raw)}")

    def infer(self, model: str, prompt: str, params: InferencingParams) -> InferencingResult:
        if self.api_type == "open_ai":
            endpoint = "/v1/chat/completions"
            payload = {
                "messages": [{"role": "user", "content": prompt}],
                "model": model,
                "max_completion_tokens": params.max_tokens,
                "frequency_penalty": params.repeat_penalty,
            }
        else:
            endpoint = "/infer"
            payload = {"model": model, "prompt": prompt, "options": params.to_wire()}
        data, raw = self._post(endpoint, payload)
        try:
            if self.api_type == "open_ai":
                choices = data["choices"]
                text = choices[0]["message"]["content"] if choices else ""
                usage = data["usage"]
                prompt_n, gen_n = usage["prompt_tokens"], usage["completion_tokens"]
            else:
                text = data["text"]
                usage = data["usage"]
                prompt_n, gen_n = usage["promptTokenCount"], usage["generatedTokenCount"]
            if not isinstance(text, str):
                raise ValueError("text is not a string")
            return InferencingResult(text, _u32(prompt_n, "prompt token count"), _u32(gen_n, "generated token count"))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise self._bad_reply(endpoint, e, raw) from None

    def generate_embeddings(self, model: str, texts: list[str]) -> EmbeddingsResult:
        if self.api_type == "open_ai":
            endpoint = "/v1/embeddings"
            payload: dict[str, Any] = {"input": texts, "model": model}
        else:
            endpoint = "/embed"
            payload = {"model": model, "input": texts}
        data, raw = self._post(endpoint, payload)
        try:
            if self.api_type == "open_ai":
                vectors = _vectors([d["embedding"] for d in data["data"]], "data[].embedding")
                n = data["usage"]["prompt_tokens"]
            else:
                vectors = _vectors(data["embeddings"], "embeddings")
                n = data["usage"]["promptTokenCount"]
            return EmbeddingsResult(vectors, _u32(n, "prompt token count"))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise self._bad_reply(endpoint, e, raw) from None

    def close(self) -> None:
        self._client.close()
