# ruff: noqa: F811  (pytest fixtures are imported from test_operator_support and used as arguments)
"""Level-based: kill the operator at any point, change the world while it is down, restart it, and it
converges with no duplicate objects and no lost link. Also: --namespace limits what it touches."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from kubespin_operator import constants as c
from kubespin_operator.kube import LinkResource, SpinAppResource
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Secret, Service
from lightkube.types import PatchType
from test_operator_support import (  # noqa: F401  (fixtures)
    Cluster,
    OperatorProcess,
    cluster,
    kv_tables,
    link,
    ns,
    redis_url,
    spinapp,
    store,
    wait_for,
)

pytestmark = pytest.mark.integration
MANAGED = {c.MANAGED_BY_LABEL: c.MANAGED_BY_VALUE}


def managed_names(cluster: Cluster, ns: str) -> dict[str, list[str]]:
    return {
        kind.__name__: sorted(o.metadata.name for o in cluster.client.list(kind, namespace=ns, labels=MANAGED))
        for kind in (Deployment, Service, Secret)
    }


def expected_names(apps: list[str]) -> dict[str, list[str]]:
    return {
        "Deployment": sorted(apps),
        "Service": sorted(apps),
        "Secret": sorted(c.runtime_config_secret_name(a) for a in apps),
    }


def test_kill_change_restart_converges(cluster: Cluster, ns: str, redis_url: str, tmp_path: Path) -> None:
    cl = cluster.client
    url_a, url_b = f"{redis_url}/8", f"{redis_url}/9"
    log = tmp_path / "operator.log"
    op = OperatorProcess(cluster.kubeconfig, log).start()
    try:
        cl.create(store("a", ns, redis={"url": url_a}))
        cl.create(store("b", ns, redis={"url": url_b}))
        apps = [f"app{i}" for i in range(5)]
        for app in apps:
            cl.create(spinapp(app, ns))
            cl.create(link(f"{app}-kv", ns, app, "kv", "a"))
        for app in apps:
            wait_for(lambda app=app: kv_tables(cluster, ns, app) == {"kv": {"type": "redis", "url": url_a}}, what=app)
    finally:
        op.kill(signal.SIGKILL)

    # While the operator is down: relink, unlink, add, delete.
    cl.patch(LinkResource, "app0-kv", {"spec": {"store": "b"}}, namespace=ns, patch_type=PatchType.MERGE)
    cl.delete(LinkResource, "app1-kv", namespace=ns)
    cl.create(spinapp("app5", ns))
    cl.create(link("app5-kv", ns, "app5", "kv", "b"))
    cl.delete(SpinAppResource, "app4", namespace=ns)

    op = OperatorProcess(cluster.kubeconfig, log).start()
    try:
        wait_for(lambda: kv_tables(cluster, ns, "app0") == {"kv": {"type": "redis", "url": url_b}}, what="relink")
        wait_for(lambda: kv_tables(cluster, ns, "app1") == {}, what="unlink")
        wait_for(lambda: kv_tables(cluster, ns, "app5") == {"kv": {"type": "redis", "url": url_b}}, what="new")
        for app in ("app2", "app3"):
            assert kv_tables(cluster, ns, app) == {"kv": {"type": "redis", "url": url_a}}, "link lost on restart"
        alive = ["app0", "app1", "app2", "app3", "app5"]
        wait_for(lambda: managed_names(cluster, ns) == expected_names(alive), timeout=60, what="no duplicates")

        # Kill it in the middle of a burst, restart, and everything still converges exactly once.
        burst = [f"burst{i}" for i in range(20)]
        for app in burst:
            cl.create(spinapp(app, ns))
            cl.create(link(f"{app}-kv", ns, app, "kv", "a"))
    finally:
        time.sleep(0.3)
        op.kill(signal.SIGKILL)

    op = OperatorProcess(cluster.kubeconfig, log).start()
    try:
        wait_for(
            lambda: managed_names(cluster, ns) == expected_names(alive + burst), timeout=90, what="burst converged"
        )
        for app in burst:
            wait_for(lambda app=app: kv_tables(cluster, ns, app) == {"kv": {"type": "redis", "url": url_a}}, what=app)
    finally:
        op.kill(signal.SIGTERM)
    text = log.read_text(errors="replace")
    failures = [line for line in text.splitlines() if "failed" in line and "reconcile of" in line]
    if "Traceback" in text:
        at = text.index("Traceback")
        raise AssertionError(f"operator logged a traceback: {failures[:3]}\n{text[max(0, at - 600) : at + 3000]}")


def test_namespace_flag_limits_the_operator(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    other = f"t-{uuid.uuid4().hex[:8]}"
    cluster.client.create(Namespace(metadata=ObjectMeta(name=other)))
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", "--namespace", ns).start()
    try:
        cluster.client.create(spinapp("watched", ns))
        cluster.client.create(spinapp("ignored", other))
        wait_for(lambda: cluster.client.get(Deployment, "watched", namespace=ns), what="watched app rendered")
        time.sleep(2)  # give a wrongly-scoped operator time to act on the other namespace
        with pytest.raises(ApiError) as err:
            cluster.client.get(Deployment, "ignored", namespace=other)
        assert err.value.status.code == 404
    finally:
        op.kill(signal.SIGTERM)
        cluster.client.delete(Namespace, other)
