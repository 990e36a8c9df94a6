# ruff: noqa: F811  (pytest fixtures are imported from test_operator_support and used as arguments)
"""`kubespin node-probe` as a real process against the dev cluster's API server.

The Nodes here are plain API objects (created unschedulable, so no test's pod lands on them): the probe
only reads and patches Node metadata, which is all a real kubelet's Node needs from it. The label must
be what :func:`detect_local_support` decides on this machine (``true`` with llama-cpp-python installed;
required under ``KUBESPIN_REQUIRE_LLM``), and the probe must run with exactly the chart's ClusterRole.
The kubespin CRDs are not needed here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubespin_shim.llm.detect import detect_local_support
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.core_v1 import NodeSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Node, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding
from test_operator_rbac import service_account_kubeconfig
from test_operator_support import (
    REPO,
    Cluster,
    free_port,
    ns,  # noqa: F401  (fixture; uses this module's cluster)
    wait_for,
)

from kubespin.llm_node_label import LABEL, REASON_ANNOTATION

pytestmark = pytest.mark.integration

PROBE = [sys.executable, "-m", "kubespin", "node-probe"]
CHART_RBAC = REPO / "charts" / "kubespin" / "templates" / "node-probe-rbac.yaml"
KEEP_LABEL = "example.test/keep"
KEEP_ANNOTATION = "example.test/note"


@pytest.fixture(scope="module")
def cluster(devcluster: Any) -> Cluster:
    """The session's dev cluster as is: the probe needs Nodes and RBAC, not the kubespin CRDs."""
    kubeconfig = Path(devcluster.kubeconfig)
    return Cluster(kubeconfig, Client(config=KubeConfig.from_file(kubeconfig), field_manager="kubespin-tests"))


@pytest.fixture
def node(cluster: Cluster) -> Iterator[str]:
    """A Node object with a label and an annotation of someone else's that the probe must keep."""
    name = f"probe-{uuid.uuid4().hex[:8]}"
    cluster.client.create(
        Node(
            metadata=ObjectMeta(name=name, labels={KEEP_LABEL: "yes"}, annotations={KEEP_ANNOTATION: "mine"}),
            spec=NodeSpec(unschedulable=True),
        )
    )
    yield name
    with contextlib.suppress(ApiError):
        cluster.client.delete(Node, name)


def node_meta(cluster: Cluster, name: str) -> tuple[dict[str, str], dict[str, str]]:
    meta = cluster.client.get(Node, name).metadata
    return dict(meta.labels or {}), dict(meta.annotations or {})


def run_probe(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROBE, *args], capture_output=True, text=True, timeout=timeout, check=False)


def expected_label() -> str:
    support = detect_local_support()
    if os.environ.get("KUBESPIN_REQUIRE_LLM"):
        assert support.supported, f"KUBESPIN_REQUIRE_LLM is set but this machine cannot run local inference: {support}"
    return support.label_value


def test_once_publishes_the_shims_decision_and_keeps_other_metadata(cluster: Cluster, node: str) -> None:
    proc = run_probe("--once", "--node-name", node, "--kubeconfig", str(cluster.kubeconfig))
    assert proc.returncode == 0, proc.stderr
    labels, annotations = node_meta(cluster, node)
    want = expected_label()
    assert labels[LABEL] == want
    support = detect_local_support()
    reason = annotations[REASON_ANNOTATION]
    # Same decision, same facts; only the probe's measured seconds may differ between the two processes.
    assert reason.split(" (probe ")[0] == support.reason.split(" (probe ")[0]
    assert f"{support.facts.arch}/{support.facts.libc}" in reason
    assert labels[KEEP_LABEL] == "yes" and annotations[KEEP_ANNOTATION] == "mine"
    assert f"node {node}: {LABEL}={want}" in proc.stderr  # logged once, with the node


def test_local_inference_turned_off_publishes_false_with_the_reason(cluster: Cluster, node: str) -> None:
    env = {**os.environ, "KUBESPIN_LLM_LOCAL": "off"}
    proc = subprocess.run(
        [*PROBE, "--once", "--node-name", node, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    labels, annotations = node_meta(cluster, node)
    assert labels[LABEL] == "false"
    assert "turned off (KUBESPIN_LLM_LOCAL=off)" in annotations[REASON_ANNOTATION]


def test_a_missing_node_is_an_error_that_names_it(cluster: Cluster) -> None:
    missing = f"no-such-node-{uuid.uuid4().hex[:6]}"
    proc = run_probe("--once", "--verbose", "--node-name", missing, "--kubeconfig", str(cluster.kubeconfig))
    assert proc.returncode == 1
    assert f"Error: Node '{missing}' does not exist" in proc.stderr
    assert "attempt 1/" not in proc.stderr, "a missing Node is not retried"


def _service_account(cluster: Cluster, ns: str, tmp_path: Path, rules: list[PolicyRule] | None) -> Path:
    """A ServiceAccount bound (when ``rules`` is given) to a ClusterRole with those rules; its kubeconfig."""
    cluster.client.create(ServiceAccount(metadata=ObjectMeta(name="node-probe", namespace=ns)))
    if rules is not None:
        role = f"{ns}-node-probe"
        cluster.client.create(ClusterRole(metadata=ObjectMeta(name=role), rules=rules))
        cluster.client.create(
            ClusterRoleBinding(
                metadata=ObjectMeta(name=role),
                roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
                subjects=[Subject(kind="ServiceAccount", name="node-probe", namespace=ns)],
            )
        )
    return service_account_kubeconfig(cluster, ns, "node-probe", tmp_path / "sa.kubeconfig")


def _cleanup_role(cluster: Cluster, ns: str) -> None:
    for kind in (ClusterRoleBinding, ClusterRole):
        with contextlib.suppress(ApiError):
            cluster.client.delete(kind, f"{ns}-node-probe")


def chart_node_probe_rules() -> list[PolicyRule]:
    """The rules of the chart's node-probe ClusterRole (template lines with Helm actions left out)."""
    text = "\n".join(line for line in CHART_RBAC.read_text().splitlines() if "{{" not in line)
    (role,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ClusterRole"]
    return [PolicyRule(**rule) for rule in role["rules"]]


def test_runs_with_exactly_the_chart_cluster_role(cluster: Cluster, ns: str, node: str, tmp_path: Path) -> None:
    kubeconfig = _service_account(cluster, ns, tmp_path, chart_node_probe_rules())
    try:
        proc = run_probe("--once", "--node-name", node, "--kubeconfig", str(kubeconfig))
        assert proc.returncode == 0, proc.stderr
        labels, _ = node_meta(cluster, node)
        assert labels[LABEL] == expected_label()
    finally:
        _cleanup_role(cluster, ns)


def test_rbac_forbidden_says_which_permission_is_missing(cluster: Cluster, ns: str, node: str, tmp_path: Path) -> None:
    kubeconfig = _service_account(cluster, ns, tmp_path, None)  # no binding at all
    proc = run_probe("--once", "--node-name", node, "--kubeconfig", str(kubeconfig))
    assert proc.returncode == 1
    assert "refused to read or patch Node" in proc.stderr and "(403:" in proc.stderr
    assert "get and patch on nodes" in proc.stderr
    labels, _ = node_meta(cluster, node)
    assert LABEL not in labels


def test_an_unreachable_api_server_fails_after_bounded_retries(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    kubeconfig = tmp_path / "closed.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    proc = run_probe("--once", "--attempts", "3", "--node-name", "any", "--kubeconfig", str(kubeconfig))
    assert proc.returncode == 1
    assert "cannot reach the API server to label Node 'any' after 3 attempt(s)" in proc.stderr


def test_long_running_mode_restores_a_removed_label_and_stops_on_sigterm(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "node-probe.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*PROBE, "--interval", "1", "--node-name", node, "--kubeconfig", str(cluster.kubeconfig)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        want = expected_label()
        opposite = "false" if want == "true" else "true"
        wait_for(lambda: node_meta(cluster, node)[0].get(LABEL) == want, timeout=120, what="the first label")
        cluster.kubectl("label", "node", node, f"{LABEL}-")
        assert LABEL not in node_meta(cluster, node)[0]
        wait_for(lambda: node_meta(cluster, node)[0].get(LABEL) == want, timeout=30, what="the label restored")
        cluster.kubectl("label", "--overwrite", "node", node, f"{LABEL}={opposite}")
        wait_for(lambda: node_meta(cluster, node)[0].get(LABEL) == want, timeout=30, what="a changed label reset")
        restored = (f"{LABEL}={want} restored (was removed)", f"{LABEL}={want} restored (was {opposite!r})")
        wait_for(lambda: all(m in log_path.read_text() for m in restored), timeout=10, what="restorations logged")
        assert proc.poll() is None, f"the probe exited:\n{log_path.read_text()}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log_path.read_text()
        text = log_path.read_text()
        assert "stopping on SIGTERM" in text and "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
