"""A read-only view of the cluster, as kopf's indexes hold it.

kopf fills the indexes from its watches and, after a (re)start, finishes the initial listing of every
indexed kind before any event handler runs, so a reconcile never renders an app from half a world (which
would briefly unlink its stores). Index names are defined here and registered in handlers.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubespin_operator.linking import LinkSet
from kubespin_operator.model import LinkView, StoreView

APPS = "kubespin_apps"
LINKS = "kubespin_links"
LINKS_BY_APP = "kubespin_links_by_app"
LINKS_BY_STORE = "kubespin_links_by_store"
STORES = "kubespin_stores"
APP_REFS = "kubespin_app_refs"
STORE_REFS = "kubespin_store_refs"
DEPLOYMENTS = "kubespin_deployments"
ALL_INDEXES = (APPS, LINKS, LINKS_BY_APP, LINKS_BY_STORE, STORES, APP_REFS, STORE_REFS, DEPLOYMENTS)


def slim_body(body: Mapping[str, Any], *, with_status: bool = True) -> dict[str, Any]:
    """The parts of an object the reconcilers read; kept small because it lives in memory."""
    meta = body.get("metadata", {})
    out: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "generation", "creationTimestamp", "deletionTimestamp", "finalizers")
            if k in meta
        },
        "spec": dict(body.get("spec") or {}),
    }
    if with_status:
        out["status"] = dict(body.get("status") or {})
    return out


class World:
    def __init__(self, indices: Mapping[str, Any]) -> None:
        missing = [name for name in ALL_INDEXES if name not in indices]
        if missing:
            raise RuntimeError(f"kopf indexes not registered: {', '.join(missing)}")
        self._idx = indices

    def _one(self, index: str, key: tuple[str, ...]) -> dict[str, Any] | None:
        store = self._idx[index].get(key)
        if not store:
            return None
        return next(iter(store))

    def _many(self, index: str, key: tuple[str, ...]) -> list[Any]:
        store = self._idx[index].get(key)
        return list(store) if store else []

    def app(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._one(APPS, (namespace, name))

    def link(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._one(LINKS, (namespace, name))

    def store(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._one(STORES, (namespace, name))

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._one(DEPLOYMENTS, (namespace, name))

    def link_names_for_app(self, namespace: str, app: str) -> list[str]:
        return self._many(LINKS_BY_APP, (namespace, app))

    def link_names_for_store(self, namespace: str, store: str) -> list[str]:
        return self._many(LINKS_BY_STORE, (namespace, store))

    def referrers(self, kind: str, namespace: str, name: str) -> list[tuple[str, str]]:
        """(referrer kind, referrer name) of apps and stores that read this Secret or ConfigMap."""
        key = (kind, namespace, name)
        return [("app", n) for n in self._many(APP_REFS, key)] + [("store", n) for n in self._many(STORE_REFS, key)]

    def links(self, namespace: str, names: Iterable[str]) -> list[LinkView]:
        out = []
        for name in set(names):
            body = self.link(namespace, name)
            if body is not None:
                out.append(LinkView.from_body(body))
        return out

    def all_keys(self, index: str) -> list[tuple[str, ...]]:
        return list(self._idx[index].keys())

    def linkset_around(self, namespace: str, seed: Iterable[LinkView]) -> LinkSet:
        """The seed links plus everything they compete with: links of the same apps, and the links to
        the same spin stores (a spin store's volume belongs to one app)."""
        names: set[str] = set()
        seed = list(seed)
        for link in seed:
            names.add(link.name)
            names.update(self.link_names_for_app(namespace, link.app))
            store = self.store(namespace, link.store)
            if store is not None and (store.get("spec") or {}).get("spin") is not None:
                for other in self.link_names_for_store(namespace, link.store):
                    names.add(other)
                    other_body = self.link(namespace, other)
                    if other_body is not None:
                        names.update(self.link_names_for_app(namespace, other_body["spec"].get("app", "")))
        return LinkSet(self.links(namespace, names))

    def apps_for(self, namespace: str, links: Iterable[LinkView]) -> dict[str, dict[str, Any]]:
        """App name → spec for the apps these links name that exist and are not being deleted."""
        out: dict[str, dict[str, Any]] = {}
        for link in links:
            body = self.app(namespace, link.app)
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                out[link.app] = body.get("spec") or {}
        return out

    def stores_for(self, namespace: str, links: Iterable[LinkView]) -> dict[str, StoreView]:
        out: dict[str, StoreView] = {}
        for link in links:
            body = self.store(namespace, link.store)
            if body is not None:
                out[link.store] = StoreView.from_body(body)
        return out
