# ruff: noqa: F811  (pytest fixtures are imported from test_operator_support and used as arguments)
"""The operator works under exactly the ClusterRole the Helm chart grants (kubespin_operator.rbac, which
a unit test compares with the chart): it runs as a ServiceAccount with a bound token, not as admin."""

from __future__ import annotations

import contextlib
import signal
import uuid
from pathlib import Path

import pytest
import yaml
from kubespin_operator import constants as c
from kubespin_operator.kube import LinkResource, StoreResource
from kubespin_operator.rbac import REQUIRED
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding
from test_operator_support import (  # noqa: F401  (fixtures)
    Cluster,
    OperatorProcess,
    cluster,
    has_condition,
    kv_tables,
    link,
    ns,
    redis_url,
    spinapp,
    store,
    wait_for,
)

pytestmark = pytest.mark.integration


def service_account_kubeconfig(cluster: Cluster, namespace: str, name: str, out: Path) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl("-n", namespace, "create", "token", name, "--duration=1h").stdout.strip()
    (cluster_entry,) = admin["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster_entry["name"], "user": name}}],
        "current-context": name,
    }
    out.write_text(yaml.safe_dump(config))
    return out


def test_operator_runs_with_the_chart_cluster_role(cluster: Cluster, ns: str, redis_url: str, tmp_path: Path) -> None:
    cl = cluster.client
    role_name = f"kubespin-test-{uuid.uuid4().hex[:6]}"
    cl.create(ServiceAccount(metadata=ObjectMeta(name="kubespin-operator", namespace=ns)))
    cl.create(
        ClusterRole(
            metadata=ObjectMeta(name=role_name),
            rules=[PolicyRule(apiGroups=[g], resources=[r], verbs=list(v)) for g, r, v in REQUIRED],
        )
    )
    cl.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=role_name),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role_name),
            subjects=[Subject(kind="ServiceAccount", name="kubespin-operator", namespace=ns)],
        )
    )
    kubeconfig = service_account_kubeconfig(cluster, ns, "kubespin-operator", tmp_path / "sa.kubeconfig")
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log").start()
    try:
        cl.create(store("s", ns, redis={"url": f"{redis_url}/10"}))
        cl.create(spinapp("app", ns))
        cl.create(link("l", ns, "app", "kv", "s"))
        wait_for(lambda: kv_tables(cluster, ns, "app") == {"kv": {"type": "redis", "url": f"{redis_url}/10"}})
        wait_for(lambda: has_condition(cluster, LinkResource, "l", ns, "Ready", "True", "Bound"))
        wait_for(lambda: has_condition(cluster, StoreResource, "s", ns, "Ready", "True"))
        secret = cl.get(Secret, c.runtime_config_secret_name("app"), namespace=ns)
        assert c.FIELD_MANAGER in {entry.manager for entry in secret.metadata.managedFields or []}
        cl.delete(StoreResource, "s", namespace=ns)
        wait_for(lambda: has_condition(cluster, StoreResource, "s", ns, "DeletionBlocked", "True"))
        cl.delete(LinkResource, "l", namespace=ns)

        def gone() -> bool:
            try:
                cl.get(StoreResource, "s", namespace=ns)
            except ApiError as err:
                return err.status.code == 404
            return False

        wait_for(gone, what="finalizer removed under the chart's RBAC")
        # RBAC denials only: writes into other tests' namespaces that are being deleted are refused too.
        denied = [
            line
            for line in op.log_text().splitlines()
            if "forbidden" in line.lower() and "being terminated" not in line
        ]
        assert not denied, denied[:3]
    finally:
        op.kill(signal.SIGTERM)
        for res in (ClusterRoleBinding, ClusterRole):
            with contextlib.suppress(ApiError):
                cl.delete(res, role_name)
