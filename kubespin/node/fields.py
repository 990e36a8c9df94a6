"""The downward API: ``fieldRef`` and ``resourceFieldRef`` values, as kubelet computes them.

Used for ``env[].valueFrom`` and for ``downwardAPI`` volume items (kubelet shares one implementation
between them too). Pure functions of the Pod, the node's facts and the pod's IP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lightkube.utils.quantity import parse_quantity

Body = Mapping[str, Any]
_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class FieldRefError(ValueError):
    """A fieldRef or resourceFieldRef the local node cannot resolve (the message names the path)."""


@dataclass(frozen=True)
class NodeFacts:
    """What the downward API may reveal about the node: its name, IP and allocatable resources."""

    name: str
    host_ip: str
    cpu: Decimal
    memory: Decimal


def _format_map(values: Mapping[str, str]) -> str:
    # kubelet's FormatMap: sorted `key="value"` lines, values %q-quoted.
    return "\n".join(f'{k}="{_go_quote(v)}"' for k, v in sorted(values.items()))


def _go_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")


def field_value(pod: Body, path: str, node: NodeFacts, pod_ip: str) -> str:
    """The value of ``fieldRef.fieldPath`` (the paths kubelet supports for env and volumes)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", node.name),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": node.host_ip,
        "status.hostIPs": node.host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return str(simple[path])
    if path == "metadata.labels":
        return _format_map(meta.get("labels") or {})
    if path == "metadata.annotations":
        return _format_map(meta.get("annotations") or {})
    if match := _SUBSCRIPT.fullmatch(path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise FieldRefError(f"fieldRef {path!r} is not supported")


def resource_value(container: Body, ref: Body, node: NodeFacts) -> str:
    """``resourceFieldRef``: a limit or request of the container, node allocatable when no limit is set."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise FieldRefError(f"resourceFieldRef {resource!r} is not supported")
    declared = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if declared is not None:
        amount = parse_quantity(str(declared))
    elif name == "cpu":
        amount = node.cpu if kind == "limits" else Decimal(0)
    elif name == "memory":
        amount = node.memory if kind == "limits" else Decimal(0)
    else:
        amount = Decimal(0)
    divisor = parse_quantity(str(ref.get("divisor") or "1")) or Decimal(1)
    # kubelet rounds up to the divisor (ConvertResourceCPUToString and friends).
    return str(math.ceil(amount / divisor))
