"""A container's environment as kubelet builds it: envFrom, then env in order, with ``$(VAR)`` expansion.

Values come from Secrets and ConfigMaps through a lookup (the node's watched cache), so this stays
pure and testable. Like kubelet, environment values are fixed when the container starts: a Secret
change reaches a running process only through a volume, never through its environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubespin.node.fields import FieldRefError, NodeFacts, field_value, resource_value
from kubespin.node.podspec import expand_references

Body = Mapping[str, Any]
#: (kind, name) → decoded data (key → text), or None when the object does not exist.
Lookup = Callable[[str, str], Mapping[str, str] | None]


class EnvError(Exception):
    """The environment cannot be built yet (a missing Secret, ConfigMap or key): the container waits.

    kubelet reports this as ``CreateContainerConfigError`` and retries; so does the local node.
    """

    reason = "CreateContainerConfigError"


def _key_ref(lookup: Lookup, kind: str, ref: Body, var: str) -> str | None:
    data = lookup(kind, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise EnvError(f"{kind.lower()} {ref['name']!r} not found (env {var}); create it")
    if ref["key"] not in data:
        if optional:
            return None
        raise EnvError(f"couldn't find key {ref['key']} in {kind} {ref['name']} (env {var})")
    return data[ref["key"]]


def build_env(pod: Body, lookup: Lookup, node: NodeFacts, pod_ip: str) -> dict[str, str]:
    """The container's environment variables (no service links: the local node has no Service IPs)."""
    container = (pod.get("spec") or {}).get("containers", [{}])[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(field)
            if not ref:
                continue
            data = lookup(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{kind.lower()} {ref['name']!r} not found (envFrom); create it")
            for key, value in data.items():
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand_references(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        value: str | None
        try:
            if "secretKeyRef" in source:
                value = _key_ref(lookup, "Secret", source["secretKeyRef"], name)
            elif "configMapKeyRef" in source:
                value = _key_ref(lookup, "ConfigMap", source["configMapKeyRef"], name)
            elif "fieldRef" in source:
                value = field_value(pod, source["fieldRef"]["fieldPath"], node, pod_ip)
            elif "resourceFieldRef" in source:
                value = resource_value(container, source["resourceFieldRef"], node)
            else:
                raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        except FieldRefError as err:
            raise EnvError(f"env {name}: {err}") from err
        if value is not None:
            env[name] = value
    return env
