"""Which SpinApps need a node that can run LLM inference locally, and what to tell their owners. Pure.

An app needs such a node when a component it runs (all of them, or those in ``spec.components``) lists
``ai_models`` and its runtime config leaves ``[llm_compute]`` local: absent (Spin's default) or
``type = "spin"``. Its pods then get the node selector ``kubespin.dev/llm-local: "true"``, the label
that the node probe (``kubespin node-probe``, a DaemonSet of the Helm chart) and ``kubespin node``
publish. The components' models come from the app artifact itself (:mod:`kubespin_shim.registry.inspect`),
so the user declares nothing twice.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubespin_shim.llm.detect import LABEL as LLM_LOCAL_LABEL
from kubespin_shim.registry.inspect import AppFacts

from kubespin_operator.conditions import FALSE, TRUE, UNKNOWN, Condition
from kubespin_operator.model import Problem

CONDITION = "LocalInference"
DOCS = "docs/llm.md"


@dataclass(frozen=True)
class LocalInferenceNeed:
    """The outcome for one app. ``models`` is empty unless ``required``."""

    required: bool
    reason: str
    message: str
    models: Mapping[str, tuple[str, ...]]


def llm_compute_type(runtime_config_toml: str) -> str | None:
    """``[llm_compute].type`` of a rendered runtime-config.toml (None when the table is absent)."""
    try:
        table = tomllib.loads(runtime_config_toml).get("llm_compute")
    except tomllib.TOMLDecodeError:
        return None
    if not isinstance(table, Mapping):
        return None
    value = table.get("type")
    return str(value) if value is not None else ""


def decide(facts: AppFacts, spec: Mapping[str, Any], runtime_config_toml: str) -> LocalInferenceNeed:
    """Whether the app's pods must run on a node labelled :data:`LLM_LOCAL_LABEL` = ``"true"``."""
    retained: Sequence[str] = spec.get("components") or ()
    models = facts.models_of(retained)
    if not models:
        return LocalInferenceNeed(False, "NoModels", "no component it runs lists ai_models", {})
    kind = llm_compute_type(runtime_config_toml)
    if kind is not None and kind != "spin":
        return LocalInferenceNeed(
            False,
            "RemoteBackend",
            f"{_describe(models)}; [llm_compute] type = {kind!r} serves them, so any node will do",
            {},
        )
    return LocalInferenceNeed(
        True,
        "NodeSelector",
        f"{_describe(models)} with local inference ([llm_compute] "
        f"{'absent' if kind is None else 'type = spin'}); its pods run only on nodes labelled {LLM_LOCAL_LABEL}=true",
        models,
    )


def _describe(models: Mapping[str, tuple[str, ...]]) -> str:
    parts = [f"{cid} ({', '.join(names)})" for cid, names in sorted(models.items())]
    return f"component{'s' if len(parts) > 1 else ''} {'; '.join(parts)} use{'' if len(parts) > 1 else 's'} ai_models"


def condition(need: LocalInferenceNeed | None, inspect_error: str | None) -> Condition:
    if need is None:
        return Condition(
            CONDITION,
            UNKNOWN,
            "ImageNotInspected",
            f"could not read the app's ai_models from its image ({inspect_error or 'not inspected yet'}); "
            "retrying. Until then its pods may run on any node",
        )
    return Condition(CONDITION, TRUE if need.required else FALSE, need.reason, need.message)


def no_capable_node(need: LocalInferenceNeed) -> Problem:
    """The Degraded problem when the app needs local inference and no node can run it."""
    return Problem(
        "NoLocalInferenceNode",
        f"{_describe(need.models)} with local inference, but no node is labelled {LLM_LOCAL_LABEL}=true, so its "
        "pods cannot be scheduled. Run the node probe on nodes that can infer (Helm value nodeProbe.enabled, "
        "`kubespin node-probe`), or serve the models remotely: set runtimeConfig.llmCompute to type remote_http "
        f"with the url and auth_token of a `kubespin llm-serve` (see {DOCS})",
    )


def node_selector(user: Mapping[str, str] | None, need: LocalInferenceNeed | None) -> dict[str, str]:
    """The pods' nodeSelector: the user's, plus the capability label when needed (the user's value of
    that label, if they set one, wins: they may have a reason)."""
    out = dict(user or {})
    if need is not None and need.required:
        out.setdefault(LLM_LOCAL_LABEL, "true")
    return out


def status_field(image: str, facts: AppFacts, need: LocalInferenceNeed) -> dict[str, Any]:
    """``status.localInference``: what was read from which image; also what a restarted operator renders
    from until it has inspected the image again (so the pod template does not flap)."""
    return {
        "image": image,
        "digest": facts.digest,
        "localNodeRequired": need.required,
        "components": [
            {"component": cid, "aiModels": list(models)} for cid, models in sorted(facts.models_of().items())
        ],
    }


def facts_from_status(image: str, status: Mapping[str, Any] | None) -> AppFacts | None:
    """The facts recorded in ``status.localInference`` for this very image, if any."""
    recorded = (status or {}).get("localInference") or {}
    if recorded.get("image") != image or not recorded.get("digest"):
        return None
    models = {
        str(entry.get("component")): tuple(str(m) for m in entry.get("aiModels") or [])
        for entry in recorded.get("components") or []
        if isinstance(entry, Mapping)
    }
    return AppFacts(image, str(recorded["digest"]), models)
