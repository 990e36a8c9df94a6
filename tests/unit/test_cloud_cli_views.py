"""`kv list` / `apps list` views: rows from specs, state from the operator's status, URLs from the local node."""

from __future__ import annotations

import json
from typing import Any

from kubespin.cloud_cli.views import apps_listing, kv_listing, render_apps, render_kv, table


def obj(name: str, spec: dict[str, Any], conditions: list[dict[str, str]] | None = None, **meta: Any) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns", **meta},
        "spec": spec,
        "status": {"conditions": conditions or []},
    }


READY = [{"type": "Ready", "status": "True"}]
STORES = [
    obj("case-a", {"redis": {"url": "redis://a"}}, READY),
    obj("case-b", {"redis": {}}),
    obj("db", {"spin": {"size": "1Gi"}}),
]
LINKS = [
    obj("l1", {"app": "chat", "label": "promptstore", "store": "case-a"}, READY),
    obj("l2", {"app": "chat", "label": "cache", "store": "case-a"}, [{"type": "Conflict", "status": "True"}]),
    obj("l3", {"app": "other", "label": "x", "store": "missing"}),
]


def test_kv_listing_rows_and_unlinked_stores() -> None:
    listing = kv_listing(STORES, LINKS)
    assert [(r["app"], r["label"], r["store"], r["state"]) for r in listing["links"]] == [
        ("chat", "cache", "case-a", "Conflict"),
        ("chat", "promptstore", "case-a", "Linked"),
        ("other", "x", "missing", "Pending"),
    ]
    assert listing["unlinkedStores"] == [
        {"store": "case-b", "backend": "redis", "ready": False},
        {"store": "db", "backend": "spin", "ready": False},
    ]
    text = render_kv(listing, "table")
    assert text.splitlines()[0].split() == ["APP", "LABEL", "STORE", "STATE"]
    assert "Stores linked to no app:" in text
    assert json.loads(render_kv(listing, "json")) == listing
    assert "No links" in render_kv(kv_listing(STORES, []), "table")


def pod(app: str, url: str | None, ready: bool, deleting: bool = False) -> dict:
    meta: dict[str, Any] = {"name": f"{app}-x", "labels": {"kubespin.dev/app": app}, "annotations": {}}
    if url:
        meta["annotations"]["kubespin.dev/local-url"] = url
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_apps_listing_with_local_urls_of_ready_pods_only() -> None:
    apps = [
        {
            **obj("chat", {"image": "/apps/chat", "replicas": 2}, READY),
            "status": {"readyReplicas": 1, "conditions": READY},
        },
        obj(
            "idle",
            {"image": "x", "enableAutoscaling": True},
            [{"type": "Ready", "status": "False", "reason": "Blocked"}],
        ),
    ]
    pods = [
        pod("chat", "http://127.0.0.1:2", True),
        pod("chat", "http://127.0.0.1:1", True),
        pod("chat", "http://127.0.0.1:3", False),
        pod("chat", "http://127.0.0.1:4", True, deleting=True),
        pod("idle", None, True),
    ]
    rows = apps_listing(apps, LINKS, pods)
    chat, idle = rows
    assert chat["urls"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert chat["keyValueStores"] == {"cache": "case-a", "promptstore": "case-a"}
    assert (chat["ready"], chat["desired"], chat["state"]) == (1, 2, "Ready")
    assert (idle["desired"], idle["state"], idle["urls"]) == (None, "Blocked", [])
    text = render_apps(rows, "table")
    assert "1/2" in text and "0/-" in text and "no Ready pod" in text


def test_table_pads_columns() -> None:
    assert table(["A", "BB"], [("xxx", None)]) == "A     BB\nxxx"
