"""Status builders: conditions for `kubectl wait` and Argo CD, stable transition times."""

from __future__ import annotations

from typing import Any

from kubespin_operator.conditions import Condition, find, merge_conditions, same_status
from kubespin_operator.model import Binding, Problem, RedisBackend
from kubespin_operator.status import app_status

APP = {
    "apiVersion": "kubespin.dev/v1alpha1",
    "kind": "SpinApp",
    "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 4},
    "spec": {"image": "x", "replicas": 2},
}


def deployment(ready: int, available: int, updated: int = 2, observed: int = 7, generation: int = 7) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": observed,
            "replicas": 2,
            "readyReplicas": ready,
            "availableReplicas": available,
            "updatedReplicas": updated,
        },
    }


def test_ready_when_every_desired_replica_is_available() -> None:
    status = app_status(APP, [], [], deployment(2, 2), now="T1")
    assert find(status["conditions"], "Ready")["status"] == "True"
    assert find(status["conditions"], "Progressing")["status"] == "False"
    assert find(status["conditions"], "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 4
    assert all(cond["observedGeneration"] == 4 for cond in status["conditions"])
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)


def test_not_ready_while_rolling_out_or_unobserved() -> None:
    assert find(app_status(APP, [], [], deployment(1, 1))["conditions"], "Ready")["status"] == "False"
    stale = deployment(2, 2, observed=6)
    assert find(app_status(APP, [], [], stale)["conditions"], "Ready")["reason"] == "DeploymentUnavailable"
    assert find(app_status(APP, [], [], None)["conditions"], "Ready")["reason"] == "DeploymentPending"


def test_blocking_problem_reports_degraded_and_not_ready() -> None:
    problems = [Problem("UnknownExecutor", "spec.executor 'x' is not known", blocking=True)]
    status = app_status(APP, [], problems, deployment(2, 2))
    degraded = find(status["conditions"], "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "UnknownExecutor")
    assert find(status["conditions"], "Ready")["status"] == "False"


def test_bindings_are_listed_per_label_without_urls() -> None:
    binding = Binding("promptstore", "case-a", "link-1", RedisBackend("redis://:pw@h:1"))
    status = app_status(APP, [binding], [], deployment(2, 2))
    assert status["keyValueStores"] == [
        {"label": "promptstore", "store": "case-a", "storeLink": "link-1", "backend": "redis"}
    ]
    assert "pw" not in repr(status)


def test_transition_time_changes_only_with_status() -> None:
    first = merge_conditions([], [Condition("Ready", "False", "A", "m")], 1, now="T1")
    same = merge_conditions(first, [Condition("Ready", "False", "B", "m2")], 2, now="T2")
    flipped = merge_conditions(same, [Condition("Ready", "True", "C", "m3")], 2, now="T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1"
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_same_status_ignores_transition_times_only() -> None:
    a = {"conditions": merge_conditions([], [Condition("Ready", "True", "R", "m")], 1, now="T1"), "x": 1}
    b = {"conditions": merge_conditions([], [Condition("Ready", "True", "R", "m")], 1, now="T9"), "x": 1}
    assert same_status(a, b)
    assert not same_status(a, {**b, "x": 2})
    assert not same_status(None, b)
