"""SpinApp reconcile: read the world, render, apply, write status. Idempotent and level-based: the
outcome depends only on the objects as they are now, never on which event triggered it."""

from __future__ import annotations

import asyncio
import logging

from kubespin_shim.registry.inspect import AppFacts
from lightkube import ApiError

from kubespin_operator import constants as c
from kubespin_operator.context import Context
from kubespin_operator.linking import bindings_for_app, link_problems
from kubespin_operator.local_inference import (
    LLM_LOCAL_LABEL,
    decide,
    facts_from_status,
    no_capable_node,
    status_field,
)
from kubespin_operator.local_inference import (
    condition as local_inference_condition,
)
from kubespin_operator.model import ObjectData, Problem
from kubespin_operator.render import referenced_objects, render_app
from kubespin_operator.status import app_status

log = logging.getLogger(__name__)


async def reconcile_app(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.world.app(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        if body is not None:
            ctx.forget_status(body["metadata"].get("uid", ""))
        # Owner references make the API server's garbage collector remove what was rendered.
        for kind in ("Deployment", "Service"):
            ctx.kube.forget(kind, namespace, name)
        ctx.kube.forget("Secret", namespace, c.runtime_config_secret_name(name))
        return None
    spec = body.get("spec") or {}

    seed = ctx.world.links(namespace, ctx.world.link_names_for_app(namespace, name))
    linkset = ctx.world.linkset_around(namespace, seed)
    links = list(linkset.links.values())
    stores = ctx.world.stores_for(namespace, links)
    apps = ctx.world.apps_for(namespace, links)
    apps[name] = spec

    secret_names, cm_names = referenced_objects(spec)
    for store in stores.values():
        secret_names |= store.referenced_secrets()
    secrets, configmaps = await ctx.read_objects(namespace, secret_names, cm_names)

    bindings, outcomes = bindings_for_app(name, linkset, apps, stores, secrets)
    image = str(spec.get("image") or "")
    auth = pull_secret_documents(namespace, spec, secrets)
    facts, inspect_error = await _app_facts(ctx, namespace, name, body, image, auth)
    requeue: float | None = None
    result = render_app(
        body,
        bindings,
        secrets,
        configmaps,
        ctx.render_config,
        (lambda toml: decide(facts, spec, toml)) if facts is not None else None,
    )
    result.problems.extend(link_problems(outcomes))
    need = result.local_inference
    if need is not None and need.required and not await ctx.nodes_with({LLM_LOCAL_LABEL: "true"}):
        result.problems.append(no_capable_node(need))
        requeue = ctx.no_node_recheck
    if not result.blocked:
        # Applied concurrently: a pod that starts before its Secret exists waits for the volume, and the
        # three independent round trips would otherwise add up in apply -> Deployment latency.
        manifests = [m for m in (result.secret, result.service, result.deployment) if m is not None]
        applied = await asyncio.gather(*(ctx.kube.apply(m) for m in manifests), return_exceptions=True)
        for manifest, outcome in zip(manifests, applied, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if isinstance(outcome, ApiError) and outcome.status.code in (400, 422):
                result.problems.append(rejected(manifest["kind"], outcome))
            else:
                raise outcome  # transient: the work queue retries with backoff

    deployment = ctx.world.deployment(namespace, name)
    if deployment is None and not result.blocked and not (body.get("status") or {}).get("conditions"):
        # Just created: the Deployment's watch event follows at once and reconciles again with real
        # replica counts, so skip writing a "pending" status that would be replaced a moment later.
        return requeue
    inspected = ctx.inspector is not None and bool(image) and not result.blocked
    extra = [local_inference_condition(need, inspect_error)] if inspected else []
    status = app_status(body, bindings, result.problems, deployment, extra_conditions=extra)
    if inspected:
        # None removes a stale record (merge patch); the record is what a restarted operator renders from.
        status["localInference"] = status_field(image, facts, need) if facts and need else None
    old_status = ctx.previous_status(body)
    if await ctx.write_status(c.SPINAPP_KIND, body, status):
        await ctx.event_on_transition(body, old_status.get("conditions"), status["conditions"], "Degraded", "True")
        await _link_events(ctx, body, old_status.get("keyValueStores") or [], status["keyValueStores"])
    return requeue


def pull_secret_documents(namespace: str, spec: dict, secrets: ObjectData) -> list[tuple[str, bytes]]:
    """The Docker configs in the app's imagePullSecrets, for reading its image as its pods will."""
    docs = []
    for ref in spec.get("imagePullSecrets") or []:
        data = secrets.get(ref.get("name", "")) or {}
        for key in (".dockerconfigjson", ".dockercfg"):
            if key in data:
                docs.append((f"Secret {namespace}/{ref['name']} ({key})", data[key].encode()))
    return docs


async def _app_facts(
    ctx: Context, namespace: str, name: str, body: dict, image: str, auth: list[tuple[str, bytes]]
) -> tuple[AppFacts | None, str | None]:
    """What the app's image says about its ai_models: (facts, why they are missing or stale).

    From the inspector's cache; else, after an operator restart, from status.localInference for the same
    image (so the pod template does not change while the image is read again); else, for an app rendered
    for the first time, after a short wait, so its first pods already land on nodes that can run them."""
    if ctx.inspector is None or not image:
        return None, None
    key = (namespace, name)
    inspection = ctx.inspector.get(image, auth, key)
    if inspection is None or inspection.facts is None:
        recorded = facts_from_status(image, ctx.previous_status(body))
        if recorded is not None:
            return recorded, inspection.error if inspection else None
        if inspection is None and ctx.world.deployment(namespace, name) is None:
            inspection = await ctx.inspector.wait(image, auth, key, ctx.inspect_wait)
    if inspection is None:
        return None, "not inspected yet"
    return inspection.facts, inspection.error


async def _link_events(ctx: Context, body: dict, before: list[dict], after: list[dict]) -> None:
    old = {b["label"]: b.get("store") for b in before}
    new = {b["label"]: b.get("store") for b in after}
    for label in sorted(old.keys() | new.keys()):
        if old.get(label) == new.get(label):
            continue
        if label not in old:
            reason, message = "Linked", f"label {label!r} bound to KeyValueStore {new[label]}"
        elif label not in new:
            reason, message = "Unlinked", f"label {label!r} no longer bound (was KeyValueStore {old[label]})"
        else:
            reason, message = "Relinked", f"label {label!r} moved from KeyValueStore {old[label]} to {new[label]}"
        await ctx.kube.post_event(body, "Normal", reason, message)


def rejected(kind: str, err: ApiError) -> Problem:
    """The API server refused a rendered object: input only a person can fix (e.g. an invalid volume)."""
    return Problem(
        "Rejected",
        f"the API server rejected the {kind} rendered from this object: {err.status.message}; fix the spec",
        blocking=True,
    )
