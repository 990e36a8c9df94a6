"""Pod Events as kubelet posts them (Started, Killing, Unhealthy, BackOff, FailedMount, Failed).

``kubectl describe pod`` is where a person looks first when a pod does not run; the local node
posts the same reasons there. Posting is best effort, in the background, with bounded concurrency:
an API hiccup must never delay a container start or a status update.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

log = logging.getLogger("kubespin.node.events")
COMPONENT = "kubespin-node"


class EventRecorder:
    def __init__(self, client: AsyncClient, node_name: str, concurrency: int = 4) -> None:
        self.client = client
        self.node_name = node_name
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def pod_event(self, pod: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = pod.get("metadata") or {}
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
        ref = ObjectReference(
            apiVersion="v1",
            kind="Pod",
            name=meta.get("name"),
            namespace=meta.get("namespace"),
            uid=meta.get("uid"),
            resourceVersion=meta.get("resourceVersion"),
            fieldPath=f"spec.containers{{{container}}}",
        )
        stamp = dt.datetime.now(dt.UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", namespace=meta.get("namespace")),
            involvedObject=ref,
            reason=reason,
            message=message[:1024],
            type=event_type,
            source=EventSource(component=COMPONENT, host=self.node_name),
            firstTimestamp=stamp,
            lastTimestamp=stamp,
            count=1,
            reportingComponent=COMPONENT,
            reportingInstance=self.node_name,
        )
        task = asyncio.create_task(self._post(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event: Event) -> None:
        async with self._slots:
            try:
                await self.client.create(event)
            except (ApiError, OSError) as err:
                log.debug("could not post event %s: %s", event.reason, err)
            except Exception as err:  # an Event is never worth a crash
                log.debug("could not post event %s: %s", event.reason, err)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
