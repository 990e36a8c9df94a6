"""Pure status builders for the three kinds. Messages never contain credentials: Redis URLs and
Secret values are not part of any input here except through `Binding`, whose URL is never read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubespin_operator import constants as c
from kubespin_operator.conditions import FALSE, TRUE, UNKNOWN, Condition, merge_conditions
from kubespin_operator.linking import BOUND, CONFLICT, LinkOutcome
from kubespin_operator.model import Binding, Body, Problem
from kubespin_operator.render import selector_string


def _problem_condition(problems: list[Problem]) -> Condition:
    if not problems:
        return Condition("Degraded", FALSE, "AsExpected", "no problems found with the input")
    return Condition("Degraded", TRUE, problems[0].reason, "; ".join(p.message for p in problems))


def desired_replicas(spec: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> int:
    if spec.get("enableAutoscaling"):
        return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    return int(spec.get("replicas", 1))


def app_status(
    body: Body,
    bindings: list[Binding],
    problems: list[Problem],
    deployment: Mapping[str, Any] | None,
    now: str | None = None,
    extra_conditions: Iterable[Condition] = (),
) -> dict[str, Any]:
    """SpinApp status from the input problems, the effective bindings and the Deployment as observed."""
    meta = body["metadata"]
    spec = body.get("spec") or {}
    generation = int(meta.get("generation", 1))
    blocked = any(p.blocking for p in problems)
    dstatus = (deployment or {}).get("status") or {}
    desired = desired_replicas(spec, deployment)
    ready_replicas = int(dstatus.get("readyReplicas", 0))
    available = int(dstatus.get("availableReplicas", 0))
    updated = int(dstatus.get("updatedReplicas", 0))
    observed = deployment is not None and int(dstatus.get("observedGeneration", 0)) >= int(
        (deployment.get("metadata") or {}).get("generation", 0)
    )

    if blocked:
        first = next(p for p in problems if p.blocking)
        ready = Condition("Ready", FALSE, first.reason, f"not applied: {first.message}")
        progressing = Condition("Progressing", FALSE, "Blocked", "fix the input reported in Degraded")
    elif deployment is None:
        ready = Condition("Ready", FALSE, "DeploymentPending", "the Deployment has not been observed yet")
        progressing = Condition("Progressing", TRUE, "Creating", "creating the Deployment")
    elif not observed or updated < desired or available < desired:
        ready = Condition(
            "Ready",
            FALSE,
            "DeploymentUnavailable",
            f"{available} of {desired} replicas available ({ready_replicas} ready, {updated} updated)",
        )
        progressing = Condition("Progressing", TRUE, "RollingOut", f"waiting for {desired} updated, available replicas")
    else:
        ready = Condition("Ready", TRUE, "DeploymentAvailable", f"{available} of {desired} replicas available")
        progressing = Condition("Progressing", FALSE, "Complete", "the Deployment is up to date")

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(
            (body.get("status") or {}).get("conditions"),
            [ready, progressing, _problem_condition(problems), *extra_conditions],
            generation,
            now,
        ),
        "replicas": int(dstatus.get("replicas", 0)),
        "readyReplicas": ready_replicas,
        "selector": selector_string(meta["name"]),
        "runtimeConfigSecret": c.runtime_config_secret_name(meta["name"]),
        "keyValueStores": [
            {"label": b.label, "store": b.store, "storeLink": b.link, "backend": b.backend.kind} for b in bindings
        ],
    }
    return status


def link_status(body: Body, outcome: LinkOutcome, now: str | None = None) -> dict[str, Any]:
    generation = int(body["metadata"].get("generation", 1))
    conditions = [
        Condition("Ready", TRUE if outcome.bound else FALSE, outcome.reason, outcome.message),
        Condition(
            "Conflict",
            TRUE if outcome.reason == CONFLICT else FALSE,
            CONFLICT if outcome.reason == CONFLICT else "NoConflict",
            outcome.message if outcome.reason == CONFLICT else "no other link binds this app and label",
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions((body.get("status") or {}).get("conditions"), conditions, generation, now),
    }
    status["boundStore"] = outcome.binding.store if outcome.binding else ""
    return status


def store_status(
    body: Body,
    backend_kind: str,
    linked: Iterable[tuple[str, str, str]],
    ready: Condition,
    problems: list[Problem],
    deleting_links: list[str],
    now: str | None = None,
) -> dict[str, Any]:
    """KeyValueStore status. `linked` holds (app, label, link) of the links bound to the store."""
    generation = int(body["metadata"].get("generation", 1))
    conditions = [ready, _problem_condition(problems)]
    if body["metadata"].get("deletionTimestamp"):
        if deleting_links:
            conditions.append(
                Condition(
                    "DeletionBlocked",
                    TRUE,
                    "StillLinked",
                    f"deletion waits until these StoreLinks are deleted: {', '.join(sorted(deleting_links))}",
                )
            )
        else:
            conditions.append(Condition("DeletionBlocked", FALSE, "NoLinks", "no StoreLink points here"))
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions((body.get("status") or {}).get("conditions"), conditions, generation, now),
        "backend": backend_kind,
        "linkedApps": [{"app": a, "label": lbl, "storeLink": ln} for a, lbl, ln in sorted(linked)],
    }
    if backend_kind == "spin":
        status["persistentVolumeClaim"] = c.store_pvc_name(body["metadata"]["name"])
    return status


def unknown_ready(message: str) -> Condition:
    return Condition("Ready", UNKNOWN, "Checking", message)


__all__ = ["BOUND", "app_status", "link_status", "store_status", "unknown_ready"]
