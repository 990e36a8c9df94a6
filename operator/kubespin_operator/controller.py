"""Which objects a change affects, and the queue that reconciles them.

Every watch event ends here as "this object changed"; the controller turns it into the set of keys to
reconcile (an app, its links, its stores) and the work queue reconciles each key once, however many
events named it. A change to a StoreLink re-renders only the app it names (and the app it named before);
a change to a Secret re-renders only the apps and stores that read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from typing import Any

import httpx2
from lightkube import ApiError

from kubespin_operator import constants as c
from kubespin_operator.context import Context
from kubespin_operator.reconcile_app import reconcile_app
from kubespin_operator.reconcile_link import reconcile_link
from kubespin_operator.reconcile_store import reconcile_store
from kubespin_operator.workqueue import WorkQueue
from kubespin_operator.world import APPS, LINKS, STORES

log = logging.getLogger(__name__)

APP, LINK, STORE = "app", "link", "store"

#: Store reconciles (a Redis PING and a status listing every linked app) are batched: during a burst of
#: link changes a store is reconciled at most about this often, not once per link.
STORE_BATCH_SECONDS = 0.5
#: Link status is batched briefly too: a link created just before its app then reports Bound once,
#: instead of AppNotFound and Bound a moment later (one status write less per link in a burst).
LINK_BATCH_SECONDS = 0.2


class Controller:
    def __init__(self, *, workers: int = 8, resync_seconds: float = 0.0) -> None:
        # API errors (a namespace being deleted, a conflict, a timeout) are retried and logged in one line.
        self.queue = WorkQueue(self._reconcile, workers=workers, expected_errors=(ApiError, httpx2.HTTPError))
        self.ctx: Context | None = None
        self.resync_seconds = resync_seconds
        self._resync_task: asyncio.Task[None] | None = None
        self._fingerprints: dict[tuple[str, str, str], Hashable] = {}
        #: (namespace, link) → (app, store) as last seen, to re-render the app a link no longer names.
        self._link_targets: dict[tuple[str, str], tuple[str, str]] = {}

    def start(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue.start()
        if self.resync_seconds > 0:
            self._resync_task = asyncio.create_task(self._resync_loop(), name="kubespin-resync")

    async def stop(self) -> None:
        if self._resync_task:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        await self.queue.stop()

    async def _reconcile(self, key: Hashable) -> float | None:
        assert self.ctx is not None, "controller used before start()"
        kind, namespace, name = key  # type: ignore[misc]
        if kind == APP:
            return await reconcile_app(self.ctx, namespace, name)
        if kind == LINK:
            return await reconcile_link(self.ctx, namespace, name)
        if kind == STORE:
            return await reconcile_store(self.ctx, namespace, name)
        raise ValueError(f"unknown work item kind {kind!r}")

    async def _resync_loop(self) -> None:
        """Reconcile everything now and then: a safety net for missed events (writes only on change)."""
        while True:
            await asyncio.sleep(self.resync_seconds)
            assert self.ctx is not None
            for index, kind in ((APPS, APP), (LINKS, LINK), (STORES, STORE)):
                for namespace, name in self.ctx.world.all_keys(index):
                    self.queue.add((kind, namespace, name))

    # --- what an event affects -----------------------------------------------------------------

    def _changed(self, kind: str, body: Mapping[str, Any], event: str | None, fingerprint: Hashable) -> bool:
        """Whether an event carries a change worth reconciling (not just our own status write)."""
        meta = body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if event == "DELETED":
            self._fingerprints.pop(key, None)
            if self.ctx is not None:
                self.ctx.forget_status(meta.get("uid", ""))
            return True
        if self._fingerprints.get(key) == fingerprint:
            return False
        self._fingerprints[key] = fingerprint
        return True

    def _world(self) -> Any:
        assert self.ctx is not None, "controller used before start()"
        return self.ctx.world

    def _add_link(self, namespace: str, link: str) -> None:
        self.queue.add_after((LINK, namespace, link), LINK_BATCH_SECONDS)

    def _add_store(self, namespace: str, store: str) -> None:
        self.queue.add_after((STORE, namespace, store), STORE_BATCH_SECONDS)

    def _add_store_and_its_apps(self, namespace: str, store: str) -> None:
        self._add_store(namespace, store)
        world = self._world()
        for link_name in world.link_names_for_store(namespace, store):
            self._add_link(namespace, link_name)
            body = world.link(namespace, link_name)
            if body is not None:
                self.queue.add((APP, namespace, body["spec"].get("app", "")))

    def on_app(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        fingerprint = (meta.get("generation"), meta.get("deletionTimestamp"))
        if not self._changed(APP, body, event, fingerprint):
            return
        self.queue.add((APP, namespace, name))
        world = self._world()
        for link_name in world.link_names_for_app(namespace, name):
            self._add_link(namespace, link_name)
            link = world.link(namespace, link_name)
            if link is not None:
                self._add_store(namespace, link["spec"].get("store", ""))

    def on_link(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        spec = body.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        if not self._changed(LINK, body, event, meta.get("generation")):
            return
        targets = {(spec.get("app", ""), spec.get("store", ""))}
        previous = self._link_targets.get((namespace, name))
        if previous:
            targets.add(previous)
        if event == "DELETED":
            self._link_targets.pop((namespace, name), None)
        else:
            self._link_targets[(namespace, name)] = (spec.get("app", ""), spec.get("store", ""))
            self._add_link(namespace, name)
        world = self._world()
        for app, store in targets:
            self.queue.add((APP, namespace, app))
            self._add_store(namespace, store)
            # Links competing for the same app's labels may win or lose because of this one.
            for other in world.link_names_for_app(namespace, app):
                if other != name:
                    self._add_link(namespace, other)

    def on_store(self, event: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        fingerprint = (meta.get("generation"), meta.get("deletionTimestamp"), tuple(meta.get("finalizers") or ()))
        if not self._changed(STORE, body, event, fingerprint):
            return
        self._add_store_and_its_apps(namespace, name)

    def on_referenced(self, kind: str, event: str | None, body: Mapping[str, Any]) -> None:
        """A Secret or ConfigMap changed: reconcile whatever reads it."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for referrer_kind, referrer in self._world().referrers(kind, namespace, name):
            if referrer_kind == APP:
                self.queue.add((APP, namespace, referrer))
            else:
                self._add_store_and_its_apps(namespace, referrer)

    def on_app_inspected(self, app: tuple[str, str]) -> None:
        """The image an app waited for has been read (or could not be): render the app again."""
        self.queue.add((APP, app[0], app[1]))

    def on_deployment(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        app = (meta.get("labels") or {}).get(c.APP_LABEL)
        if app:
            self.queue.add((APP, meta["namespace"], app))

    def on_claim(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        store = (meta.get("labels") or {}).get(c.STORE_LABEL)
        if store:
            self._add_store(meta["namespace"], store)
