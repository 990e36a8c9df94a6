"""The Secrets and ConfigMaps the node's pods reference, each followed by its own watch.

This is kubelet's default ``Watch`` change-detection strategy: one single-object watch
(``fieldSelector=metadata.name=<name>``) per referenced object, shared by every pod that references
it and stopped when the last such pod is gone. It needs only ``get/list/watch`` on the named objects,
never a namespace-wide list of Secrets, and a change is seen as soon as the API server sends it,
which is what makes a StoreLink edit reach a running shim in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.types import OnErrorAction, OnErrorResult

log = logging.getLogger("kubespin.node.objects")

Key = tuple[str, str, str]  # (kind, namespace, name)
Listener = Callable[[Key], None]
RESOURCES: dict[str, Any] = {"Secret": Secret, "ConfigMap": ConfigMap}


def _retry(_err: Exception, count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(0.2 * count, 5.0))


@dataclass
class _Entry:
    obj: dict[str, Any] | None = None
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: dict[int, Listener] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class ObjectCache:
    """Reference-counted single-object watches. ``get`` returns the object as a dict (None if absent)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._entries: dict[Key, _Entry] = {}
        self._next_id = 0

    def subscribe(self, key: Key, listener: Listener) -> Callable[[], None]:
        """Follow ``key``; ``listener(key)`` runs on every change. Returns the unsubscribe function."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            entry.task = asyncio.create_task(self._follow(key, entry), name=f"watch {key}")
        self._next_id += 1
        token = self._next_id
        entry.listeners[token] = listener

        def unsubscribe() -> None:
            entry.listeners.pop(token, None)
            if not entry.listeners and self._entries.get(key) is entry:
                del self._entries[key]
                if entry.task is not None:
                    entry.task.cancel()

        return unsubscribe

    async def wait_synced(self, keys: list[Key], timeout: float) -> None:
        """Wait until each key has been read once (present or known absent), at most ``timeout``."""
        waits = [self._entries[k].synced.wait() for k in keys if k in self._entries]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)

    def get(self, key: Key) -> Mapping[str, Any] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.obj

    async def _follow(self, key: Key, entry: _Entry) -> None:
        kind, namespace, name = key
        resource = RESOURCES[kind]
        while True:
            try:
                listing = self.client.list(resource, namespace=namespace, fields={"metadata.name": name})
                items = [item async for item in listing]
                self._set(key, entry, items[0].to_dict() if items else None)
                entry.synced.set()
                watch = self.client.watch(
                    resource,
                    namespace=namespace,
                    fields={"metadata.name": name},
                    resource_version=listing.resourceVersion,
                    on_error=_retry,
                )
                async for event, obj in watch:
                    self._set(key, entry, None if event == "DELETED" else obj.to_dict())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a watch must not die: log, wait, list again
                log.warning("watch of %s %s/%s failed (%s); retrying", kind, namespace, name, err)
                await asyncio.sleep(1.0)

    def _set(self, key: Key, entry: _Entry, obj: dict[str, Any] | None) -> None:
        old = entry.obj
        same_version = (
            old is not None
            and obj is not None
            and old.get("metadata", {}).get("resourceVersion") == obj.get("metadata", {}).get("resourceVersion")
        )
        if same_version:
            return
        if old is None and obj is None and entry.synced.is_set():
            return
        entry.obj = obj
        for listener in list(entry.listeners.values()):
            try:
                listener(key)
            except Exception:
                log.exception("listener for %s failed", key)

    async def close(self) -> None:
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        self._entries.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
