"""Pure views for `kv list` and `apps list`: API objects in, rows (table or JSON) out.

They read the specs (what the user asked for) and add the operator's status where it exists, so the
listing is right even before the operator has caught up, and says so (``state``) when it has not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubespin_operator import constants as c

from kubespin.node.registration import POD_URL_ANNOTATION

Body = Mapping[str, Any]


def condition(obj: Body, kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _link_state(link: Body) -> str:
    if (cond := condition(link, "Conflict")) and cond.get("status") == "True":
        return "Conflict"
    ready = condition(link, "Ready")
    if ready is None:
        return "Pending"
    return "Linked" if ready.get("status") == "True" else str(ready.get("reason") or "NotReady")


def store_backend(store: Body) -> str:
    spec = store.get("spec") or {}
    if "spin" in spec:
        return "spin"
    return "redis" if "redis" in spec else "?"


def kv_listing(stores: Sequence[Body], links: Sequence[Body]) -> dict[str, Any]:
    """``{"links": [...], "unlinkedStores": [...]}``: one row per StoreLink; stores no link names."""
    rows = []
    linked: set[str] = set()
    for link in sorted(links, key=lambda x: (x["spec"].get("app", ""), x["spec"].get("label", ""))):
        spec = link.get("spec") or {}
        linked.add(spec.get("store", ""))
        rows.append(
            {
                "app": spec.get("app", ""),
                "label": spec.get("label", ""),
                "store": spec.get("store", ""),
                "storeLink": link["metadata"]["name"],
                "state": _link_state(link),
            }
        )
    unlinked = [
        {"store": s["metadata"]["name"], "backend": store_backend(s), "ready": _ready(s)}
        for s in sorted(stores, key=lambda s: s["metadata"]["name"])
        if s["metadata"]["name"] not in linked
    ]
    return {"links": rows, "unlinkedStores": unlinked}


def _ready(obj: Body) -> bool:
    cond = condition(obj, "Ready")
    return bool(cond and cond.get("status") == "True")


def pod_urls(pods: Iterable[Body], app: str) -> list[str]:
    """URLs where Ready pods of the app answer on this machine (set by `kubespin node`)."""
    urls = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(c.APP_LABEL) != app or meta.get("deletionTimestamp"):
            continue
        url = (meta.get("annotations") or {}).get(POD_URL_ANNOTATION)
        ready = any(
            cond.get("type") == "Ready" and cond.get("status") == "True"
            for cond in (pod.get("status") or {}).get("conditions") or []
        )
        if url and ready:
            urls.append(url)
    return sorted(urls)


def apps_listing(apps: Sequence[Body], links: Sequence[Body], pods: Sequence[Body]) -> list[dict[str, Any]]:
    out = []
    for app in sorted(apps, key=lambda a: a["metadata"]["name"]):
        name = app["metadata"]["name"]
        spec = app.get("spec") or {}
        status = app.get("status") or {}
        stores = {
            (lk.get("spec") or {}).get("label", ""): (lk.get("spec") or {}).get("store", "")
            for lk in links
            if (lk.get("spec") or {}).get("app") == name
        }
        out.append(
            {
                "name": name,
                "image": spec.get("image", ""),
                "desired": spec.get("replicas", 1) if not spec.get("enableAutoscaling") else None,
                "ready": int(status.get("readyReplicas", 0)),
                "state": "Ready" if _ready(app) else str((condition(app, "Ready") or {}).get("reason") or "Pending"),
                "keyValueStores": dict(sorted(stores.items())),
                "urls": pod_urls(pods, name),
                "service": f"http://{name}.{app['metadata'].get('namespace', '')}.svc.cluster.local",
            }
        )
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell (kubectl's plain style)."""
    cells = [[str(h) for h in headers], *([("" if v is None else str(v)) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def render_kv(listing: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(listing, indent=2)
    parts = []
    if listing["links"]:
        parts.append(
            table(
                ["APP", "LABEL", "STORE", "STATE"],
                [(r["app"], r["label"], r["store"], r["state"]) for r in listing["links"]],
            )
        )
    else:
        parts.append("No links. Link a store with: kubespin link key-value LABEL --app APP --store STORE")
    if listing["unlinkedStores"]:
        parts.append(
            "Stores linked to no app:\n"
            + table(
                ["STORE", "BACKEND", "READY"],
                [(r["store"], r["backend"], r["ready"]) for r in listing["unlinkedStores"]],
            )
        )
    return "\n\n".join(parts)


def render_apps(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if not rows:
        return "No apps. Create a SpinApp with kubectl apply -f app.yaml"
    return table(
        ["NAME", "READY", "STATE", "KEY-VALUE", "URL"],
        [
            (
                r["name"],
                f"{r['ready']}/{'-' if r['desired'] is None else r['desired']}",
                r["state"],
                ",".join(f"{k}={v}" for k, v in r["keyValueStores"].items()) or "-",
                " ".join(r["urls"]) or "- (no Ready pod on a kubespin local node)",
            )
            for r in rows
        ],
    )
