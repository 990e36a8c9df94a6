"""LLM probe (Python): ``fermyon:spin/llm@2.0.0`` through spin-sdk's generated bindings.

The component lists ``ai_models = ["tiny", "smollm2", "all-minilm-l6-v2", "absent-model"]``.
Errors from the host are answered as 500 with ``<case>[: <payload>]`` (``invalid-input: ...``,
``runtime-error: ...``, ``model-not-supported``) so that tests can check Spin's exact texts.

Routes:
  POST /infer/<model>   body = prompt. Query: ``params=none`` passes no params (the host's defaults),
                        else any of max_tokens, repeat_penalty, repeat_penalty_last_n, temperature,
                        top_k, top_p override the SDK defaults. → JSON {text, prompt_tokens, generated_tokens}
  POST /embed/<model>   body = JSON list of strings → JSON {embeddings, prompt_tokens}; with ``summary=1``
                        only {count, dims, prompt_tokens} (the benchmark's view: the guest's JSON encoding
                        of thousands of floats would otherwise dominate what is measured)
  GET  /hello           200 "hello" (a route that never touches the llm interface)
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

from spin_sdk import http
from spin_sdk.http import Request, Response
from spin_sdk.wit.imports import llm
from spin_sdk.wit.types import Err

FLOATS = {"repeat_penalty": "repeat_penalty", "temperature": "temperature", "top_p": "top_p"}
INTS = {"max_tokens": "max_tokens", "repeat_penalty_last_n": "repeat_penalty_last_n_token_count", "top_k": "top_k"}


def error_text(err: Err) -> str:
    value = err.value
    case = type(value).__name__.split("_", 1)[-1]
    name = "".join("-" + c.lower() if c.isupper() else c for c in case).lstrip("-")
    payload = getattr(value, "value", None)
    return name if payload is None else f"{name}: {payload}"


def reply(status: int, body: object) -> Response:
    if isinstance(body, str):
        return Response(status, {"content-type": "text/plain"}, body.encode())
    return Response(status, {"content-type": "application/json"}, json.dumps(body).encode())


def params_from(query: dict[str, list[str]]) -> llm.InferencingParams | None:
    if query.get("params") == ["none"]:
        return None
    values = {
        "max_tokens": 100,
        "repeat_penalty": 1.1,
        "repeat_penalty_last_n_token_count": 64,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.9,
    }
    for key, field in FLOATS.items():
        if key in query:
            values[field] = float(query[key][0])
    for key, field in INTS.items():
        if key in query:
            values[field] = int(query[key][0])
    return llm.InferencingParams(**values)


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        parts = urlsplit(request.uri)
        path = parts.path
        query = parse_qs(parts.query)
        try:
            if path == "/hello":
                return reply(200, "hello")
            if path.startswith("/infer/") and request.method == "POST":
                model = unquote(path[len("/infer/") :])
                prompt = (request.body or b"").decode()
                r = llm.infer(model, prompt, params_from(query))
                return reply(
                    200,
                    {
                        "text": r.text,
                        "prompt_tokens": r.usage.prompt_token_count,
                        "generated_tokens": r.usage.generated_token_count,
                    },
                )
            if path.startswith("/embed/") and request.method == "POST":
                model = unquote(path[len("/embed/") :])
                texts = json.loads(request.body or b"[]")
                r = llm.generate_embeddings(model, texts)
                if query.get("summary") == ["1"]:
                    dims = sorted({len(v) for v in r.embeddings})
                    return reply(200, {"count": len(r.embeddings), "dims": dims,
                                       "prompt_tokens": r.usage.prompt_token_count})
                return reply(200, {"embeddings": r.embeddings, "prompt_tokens": r.usage.prompt_token_count})
        except Err as e:
            return reply(500, error_text(e))
        return reply(404, "no such route")
