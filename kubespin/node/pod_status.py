"""The Pod status the local node reports, built from what it knows about the one container. Pure.

Field by field this is what kubelet writes for a one-container pod: ``phase`` (kubelet's getPhase
rules for restartPolicy Always / OnFailure / Never), the conditions it owns (PodReadyToStartContainers,
Initialized, ContainersReady, Ready; PodScheduled belongs to the scheduler and is left alone by the
strategic merge patch), ``containerStatuses`` with ``state``/``lastState``/``restartCount``/``ready``/
``started``, and the IPs (127.0.0.1: every pod here answers on a loopback port of this host).
Also the restart back-off: 10 s doubling to 300 s, reset after 10 minutes of running.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

LOCAL_IP = "127.0.0.1"
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_AFTER_S = 600.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def timestamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    exit_code: int
    reason: str
    started_at: dt.datetime | None
    finished_at: dt.datetime
    message: str = ""
    signal: int | None = None
    container_id: str = ""

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": timestamp(self.started_at),
            "finishedAt": timestamp(self.finished_at),
        }
        if self.message:
            state["message"] = self.message
        if self.signal is not None:
            state["signal"] = self.signal
        if self.container_id:
            state["containerID"] = self.container_id
        return {"terminated": state}


@dataclass
class ContainerState:
    """The container as the node sees it. Exactly one of waiting / running / terminated holds."""

    name: str
    image: str
    image_id: str
    restart_count: int = 0
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str = ""
    running_since: dt.datetime | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    ready: bool = False
    started: bool = False
    container_id: str = ""

    def set_waiting(self, reason: str, message: str = "") -> None:
        self.waiting_reason, self.waiting_message = reason, message
        self.running_since = None
        self.terminated = None
        self.ready = False
        self.started = False

    def set_running(self, container_id: str) -> None:
        self.waiting_reason, self.waiting_message = None, ""
        self.running_since = now()
        self.terminated = None
        self.container_id = container_id
        self.ready = False
        self.started = False

    def set_terminated(self, term: Terminated) -> None:
        self.waiting_reason, self.waiting_message = None, ""
        self.running_since = None
        self.terminated = term
        self.last_terminated = term
        self.ready = False
        self.started = False

    def status(self) -> dict[str, Any]:
        if self.running_since is not None:
            state: dict[str, Any] = {"running": {"startedAt": timestamp(self.running_since)}}
        elif self.terminated is not None:
            state = self.terminated.as_state()
        else:
            waiting: dict[str, Any] = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_terminated.as_state()
            if self.last_terminated is not None and self.terminated is not self.last_terminated
            else {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def pod_phase(container: ContainerState, restart_policy: str, will_restart: bool) -> str:
    """kubelet's getPhase for one container."""
    if container.running_since is not None:
        return "Running"
    term = container.terminated
    if term is None:
        # Waiting: before the first start Pending; while restarting after a termination Running.
        return "Running" if container.last_terminated is not None else "Pending"
    if will_restart:
        return "Running"
    if term.exit_code == 0:
        return "Succeeded"
    return "Failed" if restart_policy in ("Never", "OnFailure") else "Running"


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


@dataclass
class Conditions:
    """Pod conditions with their transition times (kept while the status does not change)."""

    values: dict[str, tuple[bool, dt.datetime, str]] = field(default_factory=dict)

    def set(self, kind: str, status: bool, reason: str = "") -> None:
        current = self.values.get(kind)
        if current is None or current[0] != status or current[2] != reason:
            self.values[kind] = (status, now(), reason)

    def render(self) -> list[dict[str, Any]]:
        out = []
        for kind, (status, since, reason) in self.values.items():
            entry: dict[str, Any] = {
                "type": kind,
                "status": "True" if status else "False",
                "lastProbeTime": None,
                "lastTransitionTime": timestamp(since),
            }
            if reason:
                entry["reason"] = reason
            out.append(entry)
        return out


def build_status(
    container: ContainerState,
    conditions: Conditions,
    phase: str,
    start_time: dt.datetime,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The ``status`` for a strategic merge patch of the pod's status subresource."""
    ready = container.ready and phase == "Running"
    not_ready_reason = "" if ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
    conditions.set("ContainersReady", ready, not_ready_reason)
    conditions.set("Ready", ready, not_ready_reason)
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": LOCAL_IP,
        "podIPs": [{"ip": LOCAL_IP}],
        "startTime": timestamp(start_time),
        "conditions": conditions.render(),
        "containerStatuses": [container.status()],
        "reason": reason,
        "message": message,
    }
    return status


def failed_status(reason: str, message: str, start_time: dt.datetime, container: ContainerState) -> dict[str, Any]:
    """The status of a pod the node refuses to run: Failed, with the reason and a message a person can act on."""
    container.set_waiting(reason, message)
    conditions = Conditions()
    conditions.set("PodReadyToStartContainers", False)
    conditions.set("Initialized", True)
    status = build_status(container, conditions, "Failed", start_time, reason=reason, message=message)
    status.pop("podIP")
    status.pop("podIPs")
    return status


class Backoff:
    """Crash-loop back-off per container, as kubelet's ``doBackOff``: the first restart is immediate,
    then 10 s, 20 s, 40 s ... up to 300 s; a container that ran 10 minutes starts the sequence again."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, maximum: float = BACKOFF_MAX_S) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current: float | None = None

    def next_delay(self, ran_for_s: float) -> float:
        if ran_for_s >= BACKOFF_RESET_AFTER_S:
            self.current = None
        if self.current is None:
            self.current = 0.0
        elif self.current == 0.0:
            self.current = self.initial
        else:
            self.current = min(self.current * 2, self.maximum)
        return self.current
