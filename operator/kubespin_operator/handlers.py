"""kopf registrations: indexes (the cache) and event handlers (which only tell the controller what
changed). All registrations go into an explicit registry, so several operators can live in one process
and nothing depends on import side effects.

Every handler is `async def` on purpose: kopf runs plain functions in a thread pool, but the controller's
work queue is asyncio and must only be touched from the event loop (and a thread hop per event would
also cost CPU for what is a dictionary update)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from kubespin_operator import constants as c
from kubespin_operator.app_inspector import AppInspector
from kubespin_operator.context import Context
from kubespin_operator.controller import Controller
from kubespin_operator.kube import Kube
from kubespin_operator.render import RenderConfig, referenced_objects
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
    slim_body,
)

SPINAPPS = (c.GROUP, c.VERSION, c.SPINAPP_PLURAL)
STORES_RES = (c.GROUP, c.VERSION, c.STORE_PLURAL)
LINKS_RES = (c.GROUP, c.VERSION, c.LINK_PLURAL)
MANAGED = {c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE}


def register(
    registry: kopf.OperatorRegistry,
    controller: Controller,
    *,
    make_kube: Callable[[], Kube],
    render_config: RenderConfig,
    redis_timeout: float = 1.0,
    inspect_images: bool = True,
    llm_node_recheck_seconds: float = 30.0,
    login: Callable[..., Any] | None = None,
) -> None:
    """Register every handler of the operator into `registry`."""

    if login is not None:
        kopf.on.login(registry=registry)(login)

    # --- indexes: kopf lists every indexed kind before any event handler runs -------------------

    @kopf.index(*SPINAPPS, id=APPS, registry=registry)
    async def index_apps(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): slim_body(body)}

    @kopf.index(*LINKS_RES, id=LINKS, registry=registry)
    async def index_links(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): slim_body(body)}

    @kopf.index(*LINKS_RES, id=LINKS_BY_APP, registry=registry)
    async def index_links_by_app(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
        return {(namespace, spec.get("app", "")): name}

    @kopf.index(*LINKS_RES, id=LINKS_BY_STORE, registry=registry)
    async def index_links_by_store(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
        return {(namespace, spec.get("store", "")): name}

    @kopf.index(*STORES_RES, id=STORES, registry=registry)
    async def index_stores(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): slim_body(body)}

    @kopf.index(*SPINAPPS, id=APP_REFS, registry=registry)
    async def index_app_refs(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
        secrets, configmaps = referenced_objects(spec)
        keys = [("Secret", namespace, s) for s in secrets] + [("ConfigMap", namespace, m) for m in configmaps]
        return dict.fromkeys(keys, name)

    @kopf.index(*STORES_RES, id=STORE_REFS, registry=registry)
    async def index_store_refs(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
        ref = ((spec.get("redis") or {}).get("urlFrom") or {}).get("secretKeyRef") or {}
        return {("Secret", namespace, ref["name"]): name} if ref.get("name") else {}

    @kopf.index("apps", "v1", "deployments", id=DEPLOYMENTS, labels=MANAGED, registry=registry)
    async def index_deployments(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        app = labels.get(c.APP_LABEL)
        if not app:
            return {}
        return {
            (namespace, app): {
                "metadata": {"generation": body["metadata"].get("generation", 0)},
                "spec": {"replicas": (body.get("spec") or {}).get("replicas")},
                "status": dict(body.get("status") or {}),
            }
        }

    # --- lifecycle -----------------------------------------------------------------------------

    @kopf.on.startup(registry=registry)
    async def start(**kwargs: Any) -> None:
        ctx = Context(
            world=World(kwargs),
            kube=make_kube(),
            render_config=render_config,
            redis_timeout=redis_timeout,
            inspector=AppInspector(controller.on_app_inspected) if inspect_images else None,
            no_node_recheck=llm_node_recheck_seconds,
            nodes_ttl=min(10.0, llm_node_recheck_seconds / 3),
        )
        controller.start(ctx)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()
        if controller.ctx is not None:
            if controller.ctx.inspector is not None:
                await controller.ctx.inspector.close()
            await controller.ctx.kube.close()

    # --- events: tell the controller what changed ------------------------------------------------

    @kopf.on.event(*SPINAPPS, registry=registry)
    async def app_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_app(type, body)

    @kopf.on.event(*LINKS_RES, registry=registry)
    async def link_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_link(type, body)

    @kopf.on.event(*STORES_RES, registry=registry)
    async def store_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_store(type, body)

    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_referenced("Secret", type, body)

    @kopf.on.event("", "v1", "configmaps", registry=registry)
    async def configmap_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.on_referenced("ConfigMap", type, body)

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    async def deployment_event(body: kopf.Body, **_: Any) -> None:
        controller.on_deployment(body)

    @kopf.on.event("", "v1", "persistentvolumeclaims", labels=MANAGED, registry=registry)
    async def claim_event(body: kopf.Body, **_: Any) -> None:
        controller.on_claim(body)
