"""The remote_http client against a scripted HTTP server on 127.0.0.1: Spin's wire format, OpenAI's,
and every way a backend can fail (status, non-JSON, wrong shape, refused connection)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubespin_shim.llm.remote_http import RemoteHttpEngine
from kubespin_shim.llm.types import InferencingParams, LlmError

from tests.shimproc import free_port


class Scripted:
    """Replies with ``(status, body bytes)`` from ``self.reply`` and records each request."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes] = (200, b"{}")
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
def backend() -> Iterator[tuple[Scripted, str]]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            state.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "body": json.loads(body)})
            status, data = state.reply
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_infer_sends_spins_wire_format(backend: tuple[Scripted, str]) -> None:
    state, url = backend
    state.reply = (200, json.dumps({"text": "hi", "usage": {"promptTokenCount": 3, "generatedTokenCount": 1}}).encode())
    engine = RemoteHttpEngine(url + "/some/base/path", "tok-1")
    r = engine.infer("llama2-chat", "Say hi", InferencingParams(max_tokens=5, temperature=0.0))
    assert (r.text, r.prompt_token_count, r.generated_token_count) == ("hi", 3, 1)
    req = state.requests[-1]
    assert req["path"] == "/infer"  # as Spin's Url::join("/infer"): the path replaces the base's path
    assert req["headers"]["authorization"] == "bearer tok-1"
    assert req["body"] == {
        "model": "llama2-chat",
        "prompt": "Say hi",
        "options": {"maxTokens": 5, "repeatPenalty": 1.1, "repeatPenaltyLastNTokenCount": 64,
                    "temperature": 0.0, "topK": 40, "topP": 0.9},
    }
    assert engine.summary == f"model at {url}/some/base/path"


def test_embed_sends_spins_wire_format(backend: tuple[Scripted, str]) -> None:
    state, url = backend
    state.reply = (200, json.dumps({"embeddings": [[0.5, 1], [2, 3.25]], "usage": {"promptTokenCount": 9}}).encode())
    r = RemoteHttpEngine(url, "tok").generate_embeddings("all-minilm-l6-v2", ["a", "b"])
    assert r.embeddings == [[0.5, 1.0], [2.0, 3.25]] and r.prompt_token_count == 9
    assert state.requests[-1]["path"] == "/embed"
    assert state.requests[-1]["body"] == {"model": "all-minilm-l6-v2", "input": ["a", "b"]}


def test_open_ai_api_type(backend: tuple[Scripted, str]) -> None:
    state, url = backend
    engine = RemoteHttpEngine(url, "k", "open_ai")
    state.reply = (200, json.dumps({"choices": [{"message": {"role": "assistant", "content": "yo"}}],
                                    "usage": {"prompt_tokens": 4, "completion_tokens": 2}}).encode())
    r = engine.infer("gpt-x", "hello", InferencingParams(max_tokens=9, repeat_penalty=1.5))
    assert (r.text, r.prompt_token_count, r.generated_token_count) == ("yo", 4, 2)
    req = state.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["authorization"] == "bearer k"
    assert req["body"] == {"messages": [{"role": "user", "content": "hello"}], "model": "gpt-x",
                           "max_completion_tokens": 9, "frequency_penalty": 1.5}
    state.reply = (200, json.dumps({"data": [{"embedding": [1, 2]}], "usage": {"prompt_tokens": 2}}).encode())
    e = engine.generate_embeddings("emb", ["x"])
    assert e.embeddings == [[1.0, 2.0]] and e.prompt_token_count == 2
    assert state.requests[-1]["path"] == "/v1/embeddings"
    assert state.requests[-1]["body"] == {"input": ["x"], "model": "emb"}
    # an OpenAI error object is runtime-error(message), as in Spin, whatever the status
    state.reply = (429, json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode())
    with pytest.raises(LlmError) as err:
        engine.infer("gpt-x", "hello", InferencingParams())
    assert (err.value.kind, err.value.message) == ("runtime-error", "Rate limit reached")


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ((500, b"model exploded" * 40), "HTTP 500: model explodedmodel"),
        ((401, b'{"error": "no"}'), "HTTP 401"),
        ((200, b"<html>gateway</html>"), "not JSON"),
        ((200, b'{"text": 5, "usage": {"promptTokenCount": 1, "generatedTokenCount": 1}}'), "unexpected JSON"),
        ((200, b'{"text": "x", "usage": {"promptTokenCount": -1, "generatedTokenCount": 1}}'), "unexpected JSON"),
        ((200, b'{"text": "x"}'), "unexpected JSON"),
        ((200, b""), "not JSON"),
    ],
)
def test_backend_failures_are_runtime_errors(backend: tuple[Scripted, str], reply: tuple[int, bytes],
                                             fragment: str) -> None:
    state, url = backend
    state.reply = reply
    with pytest.raises(LlmError) as e:
        RemoteHttpEngine(url, "t").infer("m", "p", InferencingParams())
    assert e.value.kind == "runtime-error" and fragment in (e.value.message or "")
    assert len(e.value.message or "") < 400  # an excerpt, not the whole body


def test_bad_embeddings_reply(backend: tuple[Scripted, str]) -> None:
    state, url = backend
    state.reply = (200, b'{"embeddings": [["a"]], "usage": {"promptTokenCount": 1}}')
    with pytest.raises(LlmError, match="unexpected JSON"):
        RemoteHttpEngine(url, "t").generate_embeddings("m", ["x"])


def test_unreachable_backend_is_a_runtime_error() -> None:
    engine = RemoteHttpEngine(f"http://127.0.0.1:{free_port()}", "t", timeout=5)
    with pytest.raises(LlmError) as e:
        engine.infer("m", "p", InferencingParams())
    assert e.value.kind == "runtime-error" and "POST /infer request error" in (e.value.message or "")


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        RemoteHttpEngine("ftp://h", "t")
    with pytest.raises(ValueError):
        RemoteHttpEngine("http://h", "t", "anthropic")
