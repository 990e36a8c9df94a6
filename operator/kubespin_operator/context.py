"""What a reconcile needs besides its key: the cluster view, the writer and the operator's configuration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubespin_operator.app_inspector import AppInspector
from kubespin_operator.conditions import find, same_status
from kubespin_operator.kube import Kube
from kubespin_operator.model import ObjectData
from kubespin_operator.render import RenderConfig
from kubespin_operator.world import World


@dataclass
class Context:
    world: World
    kube: Kube
    render_config: RenderConfig
    redis_timeout: float = 1.0
    #: How often a store's backend is checked again while it is reachable / unreachable.
    store_recheck_ready: float = 60.0
    store_recheck_unready: float = 5.0
    #: Status last written per object uid: the index may not have seen our own write yet.
    written_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Reads SpinApp images for their ai_models (None: image inspection is turned off).
    inspector: AppInspector | None = None
    #: How long a reconcile of a new app waits for its image's first inspection before rendering.
    inspect_wait: float = 3.0
    #: How long the list of nodes able to infer locally is reused, and how often an app that needs one
    #: while none exists is checked again.
    nodes_ttl: float = 10.0
    no_node_recheck: float = 30.0
    _nodes_cache: dict[tuple[tuple[str, str], ...], tuple[float, list[str]]] = field(default_factory=dict)

    async def nodes_with(self, labels: Mapping[str, str]) -> list[str]:
        """Names of the Nodes carrying ``labels``, from one list call per ``nodes_ttl`` seconds."""
        key = tuple(sorted(labels.items()))
        cached = self._nodes_cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.nodes_ttl:
            return cached[1]
        names = await self.kube.node_names(labels)
        self._nodes_cache[key] = (now, names)
        return names

    def previous_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        uid = body["metadata"].get("uid", "")
        return self.written_status.get(uid) or dict(body.get("status") or {})

    async def write_status(self, kind: str, body: Mapping[str, Any], status: dict[str, Any]) -> bool:
        """Patch the status unless it would change nothing; returns whether it wrote."""
        if same_status(self.previous_status(body), status):
            return False
        meta = body["metadata"]
        await self.kube.patch_status(kind, meta["namespace"], meta["name"], status)
        self.written_status[meta.get("uid", "")] = status
        return True

    def forget_status(self, uid: str) -> None:
        self.written_status.pop(uid, None)

    async def read_objects(
        self, namespace: str, secrets: Iterable[str], configmaps: Iterable[str] = ()
    ) -> tuple[ObjectData, ObjectData]:
        """Decoded data of the named Secrets and ConfigMaps that exist (missing ones are left out)."""
        secret_names = sorted(set(secrets))
        cm_names = sorted(set(configmaps))
        results = await asyncio.gather(
            *(self.kube.read_data("Secret", namespace, n) for n in secret_names),
            *(self.kube.read_data("ConfigMap", namespace, n) for n in cm_names),
        )
        secret_data = {n: d for n, d in zip(secret_names, results[: len(secret_names)], strict=True) if d is not None}
        cm_data = {n: d for n, d in zip(cm_names, results[len(secret_names) :], strict=True) if d is not None}
        return secret_data, cm_data

    async def event_on_transition(
        self,
        body: Mapping[str, Any],
        old_conditions: Any,
        new_conditions: Any,
        cond_type: str,
        bad_status: str,
    ) -> None:
        """Post an Event when a condition turns bad or its reason/message changes while bad, and a
        Normal Event when it recovers. Nothing is posted for an unchanged condition (no Event spam on
        restarts or periodic checks)."""
        old = find(old_conditions, cond_type)
        new = find(new_conditions, cond_type)
        if new is None:
            return
        key = lambda cnd: (cnd.get("status"), cnd.get("reason"), cnd.get("message")) if cnd else None  # noqa: E731
        if key(old) == key(new):
            return
        if new.get("status") == bad_status:
            await self.kube.post_event(body, "Warning", new.get("reason", cond_type), new.get("message", ""))
        elif old is not None and old.get("status") == bad_status:
            await self.kube.post_event(body, "Normal", new.get("reason", cond_type), new.get("message", ""))
