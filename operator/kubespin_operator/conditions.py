"""Status conditions in the metav1.Condition shape that `kubectl wait` and Argo CD understand.

lastTransitionTime changes only when a condition's status changes, so that repeated reconciles of an
unchanged world write nothing new.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Iterable[Mapping[str, Any]] | None,
    wanted: Iterable[Condition],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The new conditions list: wanted conditions, keeping each one's transition time if unchanged."""
    before = {p.get("type"): p for p in previous or []}
    stamp = now or now_rfc3339()
    out: list[dict[str, Any]] = []
    for cond in wanted:
        old = before.get(cond.type)
        changed = old is None or old.get("status") != cond.status
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),
                "observedGeneration": generation,
            }
        )
    return out


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def same_status(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a status patch would change nothing (ignoring transition times)."""
    if old is None:
        return False

    def strip(status: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(status)
        out["conditions"] = [
            {k: v for k, v in cond.items() if k != "lastTransitionTime"} for cond in status.get("conditions") or []
        ]
        return out

    return strip(old) == strip(new)
