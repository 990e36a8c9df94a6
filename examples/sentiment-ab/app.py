"""Sentiment analysis with A/B-tested prompts (Spin's ai-sentiment-analysis example, plus an A/B test).

POST /api/sentiment-analysis  {"sentence": "..."}  → {"sentence", "sentiment", "variant", "cached"}
    The variant (``a`` or ``b``) is the ``x-prompt-variant`` header, else chosen by a hash of the
    sentence (a stable 50/50 split). Its prompt template is key ``prompt-<variant>`` in the
    ``promptstore`` key-value store, else the built-in fallback below. ``{SENTENCE}`` in the template
    is replaced by the sentence; ``llm.infer`` runs with max-tokens 6, and the first word of the answer
    that is positive/negative/neutral is the sentiment (``unsure`` when there is none). Answers are
    cached in the ``default`` store per (variant, sentence); per-variant counters go there too.
GET  /api/prompts               → the template each variant uses now, and where it came from
PUT  /api/prompts/<a|b>         body = a new template for that variant (stored in ``promptstore``)
GET  /api/stats                 → per variant: requests, cache hits, and counts per sentiment
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

from spin_sdk import http, key_value, llm
from spin_sdk.http import Request, Response
from spin_sdk.wit.types import Err

MODEL = "smollm2"
VARIANTS = ("a", "b")
SENTIMENTS = ("positive", "negative", "neutral")
# SmolLM2-Instruct's chat format, with few-shot examples: the fallback when the store has no prompt.
FALLBACK_PROMPTS = {
    "a": (
        "<|im_start|>system\nYou classify the sentiment of a sentence. Answer with one word: positive, negative "
        "or neutral.<|im_end|>\n<|im_start|>user\nI love this, it made my day!<|im_end|>\n<|im_start|>assistant\n"
        "positive<|im_end|>\n<|im_start|>user\nThis is terrible, I want my money back.<|im_end|>\n"
        "<|im_start|>assistant\nnegative<|im_end|>\n<|im_start|>user\nThe meeting is at noon.<|im_end|>\n"
        "<|im_start|>assistant\nneutral<|im_end|>\n<|im_start|>user\n{SENTENCE}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "b": (
        "Classify the sentiment of each text as positive, negative or neutral.\n\n"
        "Text: I love this, it made my day!\nSentiment: positive\n\n"
        "Text: This is terrible, I want my money back.\nSentiment: negative\n\n"
        "Text: The meeting is at noon.\nSentiment: neutral\n\n"
        "Text: {SENTENCE}\nSentiment:"
    ),
}


def reply(status: int, body: object) -> Response:
    return Response(status, {"content-type": "application/json"}, json.dumps(body).encode())


def pick_variant(request: Request, sentence: str) -> str:
    wanted = request.headers.get("x-prompt-variant", "").strip().lower()
    if wanted in VARIANTS:
        return wanted
    return VARIANTS[hashlib.sha256(sentence.encode()).digest()[0] % 2]


def prompt_for(variant: str) -> tuple[str, str]:
    """(template, source): the store's prompt-<variant>, else the fallback."""
    try:
        with key_value.open("promptstore") as store:
            stored = store.get(f"prompt-{variant}")
    except Err:
        stored = None  # an unbound or unreachable promptstore must not break the app: use the fallback
    if stored:
        return stored.decode(), "promptstore"
    return FALLBACK_PROMPTS[variant], "built-in"


def parse_sentiment(text: str) -> str:
    for word in text.lower().replace(".", " ").replace(",", " ").split():
        if word in SENTIMENTS:
            return word
    return "unsure"


def count(store: key_value.Store, key: str) -> None:
    current = store.get(key)
    store.set(key, str(int(current or b"0") + 1).encode())


def analyse(request: Request) -> Response:
    try:
        sentence = json.loads(request.body or b"{}")["sentence"].strip()
    except (ValueError, KeyError, TypeError, AttributeError):
        return reply(400, {"error": 'send {"sentence": "..."}'})
    if not sentence:
        return reply(400, {"error": "the sentence is empty"})
    variant = pick_variant(request, sentence)
    cache_key = f"cache-{variant}-{hashlib.sha256(sentence.encode()).hexdigest()}"
    with key_value.open_default() as store:
        count(store, f"stats-{variant}-requests")
        cached = store.get(cache_key)
        if cached is not None:
            count(store, f"stats-{variant}-cache-hits")
            return reply(200, {"sentence": sentence, "sentiment": cached.decode(), "variant": variant, "cached": True})
        template, _source = prompt_for(variant)
        params = llm.InferencingParams(max_tokens=6, temperature=0.0)
        try:
            result = llm.infer_with_options(MODEL, template.replace("{SENTENCE}", sentence), params)
        except Err as e:
            return reply(503, {"error": f"inference failed: {e.value}"})
        sentiment = parse_sentiment(result.text)
        store.set(cache_key, sentiment.encode())
        count(store, f"stats-{variant}-{sentiment}")
        return reply(200, {"sentence": sentence, "sentiment": sentiment, "variant": variant, "cached": False})


def stats() -> Response:
    out: dict[str, dict[str, int]] = {}
    with key_value.open_default() as store:
        for v in VARIANTS:
            names = ("requests", "cache-hits", *SENTIMENTS, "unsure")
            out[v] = {n: int(store.get(f"stats-{v}-{n}") or b"0") for n in names}
    return reply(200, out)


class IncomingHandler(http.IncomingHandler):
    def handle_request(self, request: Request) -> Response:
        path = urlsplit(request.uri).path.rstrip("/")
        if path == "/api/sentiment-analysis" and request.method == "POST":
            return analyse(request)
        if path == "/api/prompts" and request.method == "GET":
            return reply(200, {v: dict(zip(("template", "source"), prompt_for(v), strict=True)) for v in VARIANTS})
        if path.startswith("/api/prompts/") and request.method == "PUT":
            variant = path.rsplit("/", 1)[1]
            if variant not in VARIANTS:
                return reply(404, {"error": f"variants are {list(VARIANTS)}"})
            with key_value.open("promptstore") as store:
                store.set(f"prompt-{variant}", request.body or b"")
            return reply(200, {"variant": variant, "stored": True})
        if path == "/api/stats" and request.method == "GET":
            return stats()
        return reply(404, {"error": "not found"})
