"""Link resolution rules: conflicts, missing objects, invalid stores, spin-store refusals."""

from __future__ import annotations

from typing import Any

from kubespin_operator.linking import (
    APP_NOT_FOUND,
    BOUND,
    CONFLICT,
    REFUSED,
    STORE_NOT_FOUND,
    bindings_for_app,
    evaluate_link,
)
from kubespin_operator.model import LinkView, RedisBackend, SpinBackend, StoreView


def link(name: str, app: str, label: str, store: str, created: str = "2026-01-01T00:00:00Z") -> LinkView:
    return LinkView(name, "ns", f"uid-{name}", app, label, store, created)


def redis_store(name: str, url: str | None = "redis://127.0.0.1:6379", **kw: Any) -> StoreView:
    return StoreView(name, "ns", f"uid-{name}", False, "Retain", redis_url=url, **kw)


def spin_store(name: str) -> StoreView:
    return StoreView(name, "ns", f"uid-{name}", False, "Retain", spin_size="1Gi")


APPS = {"chat": {"replicas": 1}}
STORES = {"case-a": redis_store("case-a", "redis://a:6379"), "case-b": redis_store("case-b", "redis://b:6379")}


def test_prompt_ab_story_bindings() -> None:
    links = [link("l1", "chat", "promptstore", "case-a")]
    bindings, _ = bindings_for_app("chat", links, APPS, STORES, {})
    assert [(b.label, b.store) for b in bindings] == [("promptstore", "case-a")]

    links = [link("l1", "chat", "promptstore", "case-b")]
    bindings, _ = bindings_for_app("chat", links, APPS, STORES, {})
    assert bindings[0].backend == RedisBackend("redis://b:6379")

    links = [link("l1", "chat", "promptstore", "case-a"), link("l2", "chat", "promptstore-b", "case-b")]
    bindings, _ = bindings_for_app("chat", links, APPS, STORES, {})
    assert [(b.label, b.store) for b in bindings] == [("promptstore", "case-a"), ("promptstore-b", "case-b")]

    bindings, outcomes = bindings_for_app("chat", [], APPS, STORES, {})
    assert bindings == [] and outcomes == {}


def test_second_link_for_same_label_conflicts_and_has_no_effect() -> None:
    first = link("first", "chat", "promptstore", "case-a", "2026-01-01T00:00:00Z")
    second = link("second", "chat", "promptstore", "case-b", "2026-01-01T00:00:05Z")
    bindings, outcomes = bindings_for_app("chat", [second, first], APPS, STORES, {})
    assert [(b.store, b.link) for b in bindings] == [("case-a", "first")]
    assert outcomes["second"].reason == CONFLICT and outcomes["second"].winner == "first"
    assert "first" in outcomes["second"].message
    # The winner is deleted: the other link takes effect by itself.
    bindings, outcomes = bindings_for_app("chat", [second], APPS, STORES, {})
    assert [(b.store, b.link) for b in bindings] == [("case-b", "second")]


def test_missing_app_or_store_is_reported() -> None:
    assert evaluate_link(link("l", "ghost", "x", "case-a"), [], APPS, STORES, {}).reason == APP_NOT_FOUND
    assert evaluate_link(link("l", "chat", "x", "nope"), [], APPS, STORES, {}).reason == STORE_NOT_FOUND
    assert evaluate_link(link("l", "chat", "x", "case-a"), [], APPS, STORES, {}).reason == BOUND


def test_invalid_redis_url_binds_nothing_and_never_echoes_the_url() -> None:
    stores = {"bad": redis_store("bad", "http://user:hunter2@host")}
    outcome = evaluate_link(link("l", "chat", "x", "bad"), [], APPS, stores, {})
    assert outcome.reason == "InvalidRedisURL" and not outcome.bound
    assert "hunter2" not in outcome.message


def test_redis_url_from_secret() -> None:
    from kubespin_operator.model import SecretKeyRef

    store = redis_store("s", None, redis_url_ref=SecretKeyRef("redis-cred", "url"))
    missing = evaluate_link(link("l", "chat", "x", "s"), [], APPS, {"s": store}, {})
    assert missing.reason == "SecretNotFound"
    ok = evaluate_link(
        link("l", "chat", "x", "s"), [], APPS, {"s": store}, {"redis-cred": {"url": "redis://:pw@h:1\n"}}
    )
    assert ok.binding is not None and ok.binding.backend == RedisBackend("redis://:pw@h:1")


def test_spin_store_is_refused_for_scaled_apps_and_second_apps() -> None:
    stores = {"local": spin_store("local")}
    apps = {"one": {"replicas": 1}, "many": {"replicas": 3}, "auto": {"enableAutoscaling": True}}
    ok = evaluate_link(link("l1", "one", "kv", "local"), [], apps, stores, {})
    assert ok.reason == BOUND and isinstance(ok.binding.backend, SpinBackend)
    assert evaluate_link(link("l2", "many", "kv", "local"), [], apps, stores, {}).reason == REFUSED
    assert evaluate_link(link("l3", "auto", "kv", "local"), [], apps, stores, {}).reason == REFUSED
    first = link("l1", "one", "kv", "local", "2026-01-01T00:00:00Z")
    later = link("l4", "other", "kv", "local", "2026-01-02T00:00:00Z")
    outcome = evaluate_link(later, [first, later], {**apps, "other": {"replicas": 1}}, stores, {})
    assert outcome.reason == REFUSED and "one" in outcome.message


def test_bindings_for_app_accepts_a_precomputed_linkset() -> None:
    from kubespin_operator.linking import LinkSet

    links = LinkSet([link("l1", "chat", "promptstore", "case-a"), link("l2", "other", "kv", "case-b")])
    bindings, outcomes = bindings_for_app("chat", links, APPS, STORES, {})
    assert [(b.label, b.store) for b in bindings] == [("promptstore", "case-a")]
    assert set(outcomes) == {"l1"}


def test_a_refused_link_does_not_take_a_spin_store_from_an_eligible_app() -> None:
    stores = {"local": spin_store("local")}
    apps = {"single": {"replicas": 1}, "many": {"replicas": 3}}
    # Same creation second: the name orders them, and "many-kv" sorts first but cannot use the store.
    many = link("many-kv", "many", "kv", "local")
    single = link("single-kv", "single", "kv", "local")
    assert evaluate_link(single, [many, single], apps, stores, {}).reason == BOUND
    assert evaluate_link(many, [many, single], apps, stores, {}).reason == REFUSED
