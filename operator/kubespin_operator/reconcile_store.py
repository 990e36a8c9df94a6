"""KeyValueStore reconcile: the backend (a PVC for spin stores), readiness, linked apps, and the
finalizer that holds deletion while StoreLinks still point at the store."""

from __future__ import annotations

import logging
from typing import Any

from lightkube import ApiError

from kubespin_operator import constants as c
from kubespin_operator.conditions import FALSE, TRUE, Condition
from kubespin_operator.context import Context
from kubespin_operator.linking import evaluate_link
from kubespin_operator.model import InvalidSpec, Problem, RedisBackend, StoreView, resolve_backend
from kubespin_operator.reconcile_app import rejected
from kubespin_operator.redis_health import ping
from kubespin_operator.render import render_store_pvc
from kubespin_operator.status import store_status

log = logging.getLogger(__name__)


async def reconcile_store(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.world.store(namespace, name)
    if body is None:
        return None
    store = StoreView.from_body(body)
    finalizers = body["metadata"].get("finalizers") or []
    pointing = ctx.world.links(namespace, ctx.world.link_names_for_store(namespace, name))
    pointing = [link for link in pointing if link.store == name]

    if store.deleting:
        if not pointing:
            if c.STORE_FINALIZER in finalizers:
                await ctx.kube.set_finalizer(c.STORE_KIND, namespace, name, present=False)
            ctx.forget_status(store.uid)
            return None
    elif c.STORE_FINALIZER not in finalizers:
        await ctx.kube.set_finalizer(c.STORE_KIND, namespace, name, present=True)

    secrets, _ = await ctx.read_objects(namespace, store.referenced_secrets())
    problems: list[Problem] = []
    recheck: float | None = None
    try:
        backend = resolve_backend(store, secrets)
    except InvalidSpec as err:
        backend = None
        problems.append(Problem(err.reason, err.message))
        ready = Condition("Ready", FALSE, err.reason, err.message)
    if isinstance(backend, RedisBackend):
        failure = await ping(backend.url, ctx.redis_timeout)
        if failure is None:
            ready = Condition("Ready", TRUE, "Reachable", "the operator reached Redis (PING)")
            recheck = ctx.store_recheck_ready
        else:
            ready = Condition("Ready", FALSE, "Unreachable", failure)
            recheck = ctx.store_recheck_unready
    elif backend is not None:
        try:
            ready = await _ensure_claim(ctx, body, store)
        except ApiError as err:
            if err.status.code not in (400, 422):
                raise
            problem = rejected("PersistentVolumeClaim", err)
            problems.append(problem)
            ready = Condition("Ready", FALSE, problem.reason, problem.message)

    linkset = ctx.world.linkset_around(namespace, pointing)
    links = list(linkset.links.values())
    apps = ctx.world.apps_for(namespace, links)
    stores = ctx.world.stores_for(namespace, links)
    linked = []
    for link in pointing:
        outcome = evaluate_link(link, linkset, apps, stores, secrets)
        if outcome.bound:
            linked.append((link.app, link.label, link.name))

    status = store_status(
        body, store.backend_kind, linked, ready, problems, [link.name for link in pointing] if store.deleting else []
    )
    old = ctx.previous_status(body)
    if await ctx.write_status(c.STORE_KIND, body, status):
        await ctx.event_on_transition(body, old.get("conditions"), status["conditions"], "Ready", "False")
        await ctx.event_on_transition(body, old.get("conditions"), status["conditions"], "DeletionBlocked", "True")
    return recheck


async def _ensure_claim(ctx: Context, body: dict[str, Any], store: StoreView) -> Condition:
    """Apply the claim and report whether it is bound (PVC events re-trigger this reconcile)."""
    claim_name = c.store_pvc_name(store.name)
    await ctx.kube.apply(render_store_pvc(body, store))
    phase = await ctx.kube.claim_phase(store.namespace, claim_name)
    if phase == "Bound":
        return Condition("Ready", TRUE, "ClaimBound", f"PersistentVolumeClaim {claim_name} is bound")
    return Condition(
        "Ready",
        FALSE,
        "ClaimPending",
        f"PersistentVolumeClaim {claim_name} is not bound yet (phase {phase or 'unknown'}); it needs a "
        "matching PersistentVolume or a provisioner for its StorageClass",
    )
