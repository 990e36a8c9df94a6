"""Which keys a change enqueues: only the affected apps, links and stores (no cluster needed: the world is
a plain mapping shaped like kopf's indexes)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from kubespin_operator.context import Context
from kubespin_operator.controller import Controller
from kubespin_operator.render import RenderConfig
from kubespin_operator.world import (
    APP_REFS,
    APPS,
    DEPLOYMENTS,
    LINKS,
    LINKS_BY_APP,
    LINKS_BY_STORE,
    STORE_REFS,
    STORES,
    World,
)


class RecordingQueue:
    def __init__(self) -> None:
        self.keys: set[Hashable] = set()

    def add(self, key: Hashable) -> None:
        self.keys.add(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        self.keys.add(key)


def body(kind: str, name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "generation": generation},
        "spec": spec,
    }


def make(indices: dict[str, dict[tuple[str, ...], list[Any]]]) -> tuple[Controller, RecordingQueue]:
    full = {name: {} for name in (APPS, LINKS, LINKS_BY_APP, LINKS_BY_STORE, STORES, APP_REFS, STORE_REFS, DEPLOYMENTS)}
    full.update(indices)
    controller = Controller()
    queue = RecordingQueue()
    controller.queue = queue  # type: ignore[assignment]
    controller.ctx = Context(world=World(full), kube=None, render_config=RenderConfig())  # type: ignore[arg-type]
    return controller, queue


def test_relinking_enqueues_old_and_new_app_and_store_only() -> None:
    link_v1 = body("StoreLink", "l1", app="chat", label="kv", store="case-a")
    link_v2 = body("StoreLink", "l1", generation=2, app="chat", label="kv", store="case-b")
    controller, queue = make({LINKS_BY_APP: {("ns", "chat"): ["l1"]}})
    controller.on_link(None, link_v1)
    queue.keys.clear()
    controller.on_link("MODIFIED", link_v2)
    assert queue.keys == {
        ("link", "ns", "l1"),
        ("app", "ns", "chat"),
        ("store", "ns", "case-a"),
        ("store", "ns", "case-b"),
    }


def test_moving_a_link_to_another_app_re_renders_both_apps() -> None:
    controller, queue = make({})
    controller.on_link(None, body("StoreLink", "l1", app="a", label="kv", store="s"))
    queue.keys.clear()
    controller.on_link("MODIFIED", body("StoreLink", "l1", generation=2, app="b", label="kv", store="s"))
    assert {k for k in queue.keys if k[0] == "app"} == {("app", "ns", "a"), ("app", "ns", "b")}


def test_status_only_events_enqueue_nothing() -> None:
    controller, queue = make({})
    app = body("SpinApp", "chat", image="x")
    controller.on_app(None, app)
    queue.keys.clear()
    controller.on_app("MODIFIED", {**app, "status": {"readyReplicas": 1}})  # our own status write
    assert queue.keys == set()
    controller.on_app("MODIFIED", body("SpinApp", "chat", generation=2, image="y"))
    assert ("app", "ns", "chat") in queue.keys


def test_secret_change_reaches_only_its_referrers() -> None:
    link = body("StoreLink", "l1", app="chat", label="kv", store="private")
    controller, queue = make(
        {
            STORE_REFS: {("Secret", "ns", "redis-cred"): ["private"]},
            APP_REFS: {("Secret", "ns", "api-token"): ["other"]},
            LINKS_BY_STORE: {("ns", "private"): ["l1"]},
            LINKS: {("ns", "l1"): [link]},
        }
    )
    controller.on_referenced("Secret", "MODIFIED", body("Secret", "redis-cred"))
    assert queue.keys == {("store", "ns", "private"), ("link", "ns", "l1"), ("app", "ns", "chat")}
    queue.keys.clear()
    controller.on_referenced("Secret", "MODIFIED", body("Secret", "api-token"))
    assert queue.keys == {("app", "ns", "other")}
    queue.keys.clear()
    controller.on_referenced("Secret", "MODIFIED", body("Secret", "unrelated"))
    assert queue.keys == set()
