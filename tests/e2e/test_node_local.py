"""`kubespin node` as a kubelet for kubespin-shim pods: refusals, restarts, environment, its own restart.

Local mode only: these tests look at the node's processes and restart the node itself.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import psutil
import pytest

from tests.e2e import scenario
from tests.e2e.conftest import NODE_NAME
from tests.e2e.harness import REPO, Cluster, Installation, get_text, wait_for

pytestmark = pytest.mark.local_only


def pod_status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.get(ns, "pod", name).get("status") or {}


def container_status(cluster: Cluster, ns: str, app: str) -> dict[str, Any]:
    (pod,) = cluster.app_pods(ns, app)
    (status,) = pod["status"]["containerStatuses"]
    return status


def pid_of(status: dict[str, Any]) -> int:
    return int(status["containerID"].rsplit("/", 1)[1])


def raw_pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE_NAME,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "example.test/anything:1", "command": command}],
            **spec,
        },
    }


def test_pods_it_does_not_understand_are_failed_and_never_run(cluster: Cluster, ns: str, tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    cluster.apply(ns, raw_pod("shell", ["sh", "-c", f"touch {marker}"]))
    cluster.apply(
        ns,
        raw_pod(
            "pvc",
            ["kubespin", "up", "-f", str(REPO / "tests/apps/py-hello"), "--listen", "0.0.0.0:80"],
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "kvstore-x"}}],
        ),
    )
    for name, reason in (("shell", "UnsupportedCommand"), ("pvc", "UnsupportedVolume")):
        status = wait_for(
            lambda name=name: (s := pod_status(cluster, ns, name)).get("phase") == "Failed" and s,
            30,
            f"pod {name} Failed",
        )
        assert status["reason"] == reason, status
        assert status["message"]
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json"))["items"]
    assert any(e["reason"] == "UnsupportedCommand" and e["involvedObject"]["name"] == "shell" for e in events)
    assert not marker.exists(), "the node ran a command it did not understand"


def test_a_killed_shim_is_restarted_on_the_same_port(
    cluster: Cluster, ns: str, app_image: str, prompt_stores: dict[str, str]
) -> None:
    cluster.apply(ns, scenario.spinapp(app_image, checks=scenario.fast_checks()))
    (url,) = cluster.ready_urls(ns, scenario.APP_NAME, 1)
    first = container_status(cluster, ns, scenario.APP_NAME)
    os.kill(pid_of(first), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        status = container_status(cluster, ns, scenario.APP_NAME)
        return status if status["restartCount"] == 1 and status["ready"] else None

    second = wait_for(restarted, 60, "the shim restarted and Ready again")
    assert second["containerID"] != first["containerID"]
    assert second["lastState"]["terminated"]["exitCode"] == 137
    assert second["lastState"]["terminated"].get("signal") == 9
    assert get_text(f"{url}/.well-known/spin/health")[0] == 200
    (url_after,) = cluster.ready_urls(ns, scenario.APP_NAME, 1)
    assert url_after == url, "the pod keeps its port across container restarts"


def test_variables_from_secrets_and_configmaps_reach_the_app(cluster: Cluster, ns: str) -> None:
    app = REPO / "tests" / "apps" / "py-features"
    if not (app / "app.wasm").is_file():
        pytest.fail("py-features is not built: run scripts/build-test-apps", pytrace=False)
    cluster.kubectl("create", "secret", "generic", "tokens", "--from-literal=token=t0k3n", "-n", ns)
    cluster.kubectl("create", "configmap", "texts", "--from-literal=greeting=hej", "-n", ns)
    spec = scenario.spinapp(
        str(app),
        name="features",
        checks=scenario.fast_checks(),
        variables=[
            {"name": "secret_token", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "token"}}},
            {"name": "greeting", "valueFrom": {"configMapKeyRef": {"name": "texts", "key": "greeting"}}},
        ],
    )
    cluster.apply(ns, spec)
    (url,) = cluster.ready_urls(ns, "features", 1)
    assert get_text(f"{url}/variables/secret_token") == (200, "t0k3n")
    assert get_text(f"{url}/variables/greeting") == (200, "hej")


def test_node_restart_restarts_its_pods(
    cluster: Cluster, ns: str, app_image: str, prompt_stores: dict[str, str], procs: Installation
) -> None:
    cluster.apply(ns, scenario.spinapp(app_image, checks=scenario.fast_checks()))
    (url,) = cluster.ready_urls(ns, scenario.APP_NAME, 1)
    before = container_status(cluster, ns, scenario.APP_NAME)
    assert procs.node is not None
    procs.node.stop(signal.SIGTERM)
    try:
        wait_for(lambda: not psutil.pid_exists(pid_of(before)), 15, "the shim to stop with its node")
        ready = cluster.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        )
        assert ready == "False"
        assert not container_status(cluster, ns, scenario.APP_NAME)["ready"]
    finally:
        procs.node.start()

    def running_again() -> bool:
        (pod,) = cluster.app_pods(ns, scenario.APP_NAME)
        status = pod["status"]["containerStatuses"][0]
        return status["restartCount"] == 1 and cluster.ready(pod) and cluster.pod_url(pod) == url

    wait_for(running_again, 60, "the pod running again after the node restart, on its port")
    assert get_text(f"{url}/.well-known/spin/health")[0] == 200
