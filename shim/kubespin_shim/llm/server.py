"""``kubespin llm-serve``: Spin's remote_http LLM protocol on top of the local llama.cpp backend.

One node that can infer (a big CPU node, a GPU node) serves the apps on nodes that cannot: point their
runtime config at it with ``[llm_compute] type = "remote_http"``, ``url = "http://<this>:<port>"``,
``auth_token = "<token>"``. Routes (all but /healthz need ``authorization: bearer <token>``):

* ``POST /infer`` and ``POST /embed``: Spin's protocol (see :mod:`.remote_http`), what Spin's own
  ``remote_http`` client and the shim's send;
* ``POST /v1/chat/completions`` and ``POST /v1/embeddings``: the subset of OpenAI's API that Spin's
  ``api_type = "open_ai"`` client uses (the messages' contents, joined by newlines, are the prompt;
  ``max_completion_tokens`` and ``frequency_penalty`` map to max-tokens and repeat-penalty as Spin
  maps them the other way; the other parameters take Spin's defaults);
* ``GET /healthz``: 200 and the node's detection decision.

Errors: 401 for a missing or wrong token, 400 for a malformed body, 404 for an unknown route, and the
llm error cases as 400 (invalid-input), 404 (model-not-supported) and 500 (runtime-error), with
``{"error": {"type": <case>, "message": <text>}}``. Built on the standard library's threading HTTP
server (HTTP/1.1 keep-alive): the work is in llama.cpp, one thread per connection is plenty, and the
shim stays free of a web framework dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubespin_shim.llm.types import InferencingParams, LlmEngine, LlmError

log = logging.getLogger("kubespin.llm.serve")

MAX_BODY = 16 * 1024 * 1024
_STATUS = {"invalid-input": 400, "model-not-supported": 404, "runtime-error": 500}


class BadRequest(Exception):
    """A request body that does not follow the protocol."""


def _string_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"`{what}` must be a list of strings")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str):
        raise BadRequest(f"`{key}` must be a string")
    return v


class LlmApi:
    """The protocol logic, independent of the HTTP server: (method, path, headers, body) → (status, json)."""

    def __init__(self, engine: LlmEngine, token: str, health: dict[str, Any] | None = None) -> None:
        if not token:
            raise ValueError("an auth token is required")
        self.engine = engine
        self._expected = f"bearer {token}".encode()
        self.health = health or {}

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        return hmac.compare_digest(f"{scheme.lower()} {value.strip()}".encode(), self._expected)

    def handle(self, method: str, path: str, authorization: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        if path == "/healthz" and method == "GET":
            return 200, {"status": "ok", **self.health}
        routes = {
            "/infer": self._infer,
            "/embed": self._embed,
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
        }
        route = routes.get(path)
        if route is None:
            return 404, _err("not-found", f"no route {path}")
        if method != "POST":
            return 405, _err("method-not-allowed", f"{path} takes POST")
        if not self.authorized(authorization):
            return 401, _err("unauthorized", "missing or wrong `authorization: bearer <token>` header")
        try:
            data = json.loads(body) if body else None
        except ValueError as e:
            return 400, _err("invalid-request", f"the body is not JSON: {e}")
        if not isinstance(data, dict):
            return 400, _err("invalid-request", "the body must be a JSON object")
        try:
            return 200, route(data)
        except BadRequest as e:
            return 400, _err("invalid-request", str(e))
        except LlmError as e:
            return _STATUS.get(e.kind, 500), _err(e.kind, e.message or e.kind)

    def _infer(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            params = InferencingParams.from_wire(body.get("options"))
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return self.engine.infer(_string(body, "model"), _string(body, "prompt"), params).to_wire()

    def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = _string_list(body.get("input"), "input")
        return self.engine.generate_embeddings(_string(body, "model"), texts).to_wire()

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list")
        parts = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise BadRequest("each message needs a string `content`")
            parts.append(m["content"])
        d = InferencingParams()
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", d.max_tokens))
        penalty = body.get("frequency_penalty", d.repeat_penalty)
        try:
            params = InferencingParams.from_wire({"maxTokens": max_tokens, "repeatPenalty": penalty})
        except ValueError as e:
            raise BadRequest(str(e)) from None
        model = _string(body, "model")
        r = self.engine.infer(model, "\n".join(parts), params)
        return {
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": "length" if r.generated_token_count >= params.max_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": r.prompt_token_count,
                "completion_tokens": r.generated_token_count,
                "total_tokens": r.prompt_token_count + r.generated_token_count,
            },
        }

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = _string_list(body.get("input"), "input")
        model = _string(body, "model")
        r = self.engine.generate_embeddings(model, texts)
        return {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(r.embeddings)],
            "usage": {"prompt_tokens": r.prompt_token_count, "total_tokens": r.prompt_token_count},
        }


def _err(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LlmHttpServer

    def _serve(self) -> None:
        length = self.headers.get("content-length")
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            self._reply(411, _err("length-required", "send a content-length (chunked bodies are not accepted)"))
            return
        try:
            n = int(length) if length else 0
        except ValueError:
            self._reply(400, _err("invalid-request", "bad content-length"))
            return
        if n > MAX_BODY:
            self._reply(413, _err("too-large", f"the body is over {MAX_BODY} bytes"))
            return
        body = self.rfile.read(n) if n else b""
        status, payload = self.server.api.handle(self.command, self.path, self.headers.get("authorization"), body)
        self._reply(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 413 or status == 411:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class LlmHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: LlmApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def serve_in_thread(server: LlmHttpServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="llm-serve", daemon=True)
    t.start()
    return t
