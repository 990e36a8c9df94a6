"""The operator's writes to the Kubernetes API, through lightkube's async client.

kopf does the watching (and its indexes are the operator's cache); this module does the writing:
server-side apply of rendered objects, status patches, finalizer changes and Events. lightkube is
used because it speaks server-side apply and status subresources directly, with small dependencies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Event, Node, PersistentVolumeClaim, Secret, Service
from lightkube.types import PatchType

from kubespin_operator import constants as c
from kubespin_operator.model import decode_secret_data

log = logging.getLogger(__name__)

SpinAppResource = create_namespaced_resource(c.GROUP, c.VERSION, c.SPINAPP_KIND, c.SPINAPP_PLURAL)
StoreResource = create_namespaced_resource(c.GROUP, c.VERSION, c.STORE_KIND, c.STORE_PLURAL)
LinkResource = create_namespaced_resource(c.GROUP, c.VERSION, c.LINK_KIND, c.LINK_PLURAL)

KIND_RESOURCES: dict[str, Any] = {
    "Deployment": Deployment,
    "Service": Service,
    "Secret": Secret,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    c.SPINAPP_KIND: SpinAppResource,
    c.STORE_KIND: StoreResource,
    c.LINK_KIND: LinkResource,
}


def load_kubeconfig(path: str | None) -> KubeConfig:
    """An explicit kubeconfig file, else $KUBECONFIG / ~/.kube/config, else the in-cluster account."""
    if path:
        return KubeConfig.from_file(path)
    if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
        return KubeConfig.from_env()
    return KubeConfig.from_service_account()


def _digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


class Kube:
    """Writes on behalf of the operator. Skips applies whose rendered content it already applied, so that
    a quiet cluster costs no API writes; after a restart the cache is empty and everything is applied once
    (server-side apply of unchanged content changes nothing on the server)."""

    def __init__(self, client: AsyncClient, *, event_concurrency: int = 8) -> None:
        self.client = client
        self._applied: dict[tuple[str, str, str], str] = {}
        self.writes = 0
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._event_slots = asyncio.Semaphore(event_concurrency)

    async def close(self) -> None:
        """Wait briefly for Events still being posted, then close the connection pool."""
        if self._event_tasks:
            await asyncio.wait(self._event_tasks, timeout=5)
        await self.client.close()

    async def apply(self, manifest: Mapping[str, Any], *, force_write: bool = False) -> Any | None:
        """Server-side apply; returns the server's object, or None if this content was already applied."""
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["namespace"], meta["name"])
        digest = _digest(manifest)
        if not force_write and self._applied.get(key) == digest:
            return None
        resource = KIND_RESOURCES[manifest["kind"]]
        obj = await self.client.patch(
            resource,
            meta["name"],
            dict(manifest),
            namespace=meta["namespace"],
            patch_type=PatchType.APPLY,
            field_manager=c.FIELD_MANAGER,
            force=True,
        )
        self.writes += 1
        self._applied[key] = digest
        return obj

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._applied.pop((kind, namespace, name), None)

    async def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        resource = KIND_RESOURCES[kind]
        try:
            await self.client.patch(
                resource.Status,
                name,
                {"status": dict(status)},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
            self.writes += 1
        except ApiError as err:
            if err.status.code == 404:  # deleted meanwhile: nothing to report on
                return
            raise

    async def set_finalizer(self, kind: str, namespace: str, name: str, present: bool) -> None:
        """Add or drop the store finalizer with server-side apply: other finalizers are left alone."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if present:
            meta["finalizers"] = [c.STORE_FINALIZER]
        body = {"apiVersion": c.API_VERSION, "kind": kind, "metadata": meta}
        try:
            await self.client.patch(
                KIND_RESOURCES[kind],
                name,
                body,
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=f"{c.FIELD_MANAGER}-finalizer",
                force=True,
            )
            self.writes += 1
        except ApiError as err:
            if err.status.code != 404:
                raise

    async def claim_phase(self, namespace: str, name: str) -> str | None:
        try:
            claim = await self.client.get(PersistentVolumeClaim, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return claim.status.phase if claim.status else None

    async def node_names(self, labels: Mapping[str, str]) -> list[str]:
        """Names of the Nodes that carry all of ``labels`` (one list call; names only are kept)."""
        return sorted([node.metadata.name async for node in self.client.list(Node, labels=dict(labels))])

    async def read_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded data of a Secret or ConfigMap, or None when it does not exist."""
        try:
            if kind == "Secret":
                secret = await self.client.get(Secret, name, namespace=namespace)
                return decode_secret_data({"data": secret.data or {}, "stringData": secret.stringData or {}})
            cm = await self.client.get(ConfigMap, name, namespace=namespace)
            return dict(cm.data or {})
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise

    async def post_event(self, involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the object, as `kubectl describe` shows them. Never carries credentials:
        callers pass messages built from names and reasons only."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = Event(
            metadata=ObjectMeta(generateName=f"{meta['name']}.", namespace=meta["namespace"]),
            involvedObject=ObjectReference(
                apiVersion=involved.get("apiVersion", c.API_VERSION),
                kind=involved["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
            ),
            reason=reason,
            message=message[:1024],
            type=event_type,
            source=EventSource(component=c.FIELD_MANAGER),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=c.FIELD_MANAGER,
        )
        try:
            async with self._event_slots:
                await self.client.create(event)
        except Exception as err:  # events are best effort: never fail anything for one
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err)
