"""The local-inference decision as Node metadata: one label for the scheduler, one annotation for people.

Shared by ``kubespin node-probe`` (the DaemonSet that labels real kubelets' Nodes) and ``kubespin node``
(the development node, which labels its own Node), so both publish the same keys from the same
decision (:mod:`kubespin_shim.llm.detect`). The label says *whether* (the operator's nodeSelector
matches ``kubespin.dev/llm-local: "true"``); the annotation says *why*, so that
``kubectl describe node`` explains a ``false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubespin_shim.llm.detect import LABEL, LocalSupport, node_labels
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

#: Annotation with the decision's reason (one line, at most :data:`MAX_REASON_CHARS` characters).
REASON_ANNOTATION = "kubespin.dev/llm-local-reason"
#: Enough for every reason :func:`kubespin_shim.llm.detect.decide` writes plus an import error's first
#: line; far below the API server's 256 KiB limit on all annotations of an object together.
MAX_REASON_CHARS = 512

__all__ = [
    "LABEL",
    "MAX_REASON_CHARS",
    "REASON_ANNOTATION",
    "is_published",
    "llm_label_patch",
    "one_line",
    "patch_llm_label",
]


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def llm_label_patch(support: LocalSupport) -> dict[str, Any]:
    """The merge patch for the Node: the label and the reason annotation, and no other key, so that it
    never disturbs labels and annotations that kubelet, cloud controllers or people own."""
    return {
        "metadata": {
            "labels": node_labels(support),
            "annotations": {REASON_ANNOTATION: one_line(support.reason)},
        }
    }


def is_published(metadata: Mapping[str, Any] | None, support: LocalSupport) -> bool:
    """Whether a Node's ``metadata`` already carries exactly what :func:`llm_label_patch` would write."""
    meta = metadata or {}
    wanted = llm_label_patch(support)["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return all(labels.get(k) == v for k, v in wanted["labels"].items()) and all(
        annotations.get(k) == v for k, v in wanted["annotations"].items()
    )


async def patch_llm_label(client: AsyncClient, node_name: str, support: LocalSupport) -> Node:
    """Write :func:`llm_label_patch` onto Node ``node_name`` (a JSON merge patch: only those two keys).

    Raises lightkube's ``ApiError`` as it comes (404: no such Node, 403: RBAC); callers decide what an
    error means for them (the dev node ignores it, ``kubespin node-probe`` retries or reports it).
    """
    return await client.patch(Node, node_name, llm_label_patch(support), patch_type=PatchType.MERGE)
