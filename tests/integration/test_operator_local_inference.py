# ruff: noqa: F811  (pytest fixtures are imported from test_operator_support and used as arguments)
"""SpinApps that need local LLM inference are scheduled only onto capable nodes (issue 5, operator side).

Real parts: the dev cluster's kube-apiserver, `kubespin operator` as a process, a ggcr registry on
127.0.0.1 holding the SDK-built apps (py-llm lists ai_models, py-hello does not). The operator reads each
app's locked app from the registry, adds nodeSelector kubespin.dev/llm-local=true where needed, and says
in a Degraded condition when no node carries the label. Nodes here are API objects (no kubelet): what is
checked is the pod template and the conditions, not where pods land.
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubespin_operator.kube import SpinAppResource
from kubespin_shim.llm.detect import LABEL
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from tests.integration.test_operator_support import (
    Cluster,
    OperatorProcess,
    cluster,  # noqa: F401  (fixture)
    condition,
    events_for,
    free_port,
    has_condition,
    ns,  # noqa: F401  (fixture)
    spinapp,
    wait_for,
)
from tests.integration.test_registry import push
from tests.registry_server import start_registry
from tests.shimproc import built_app

pytestmark = pytest.mark.integration
RECHECK = "2"  # --llm-node-recheck-seconds: how soon a new capable node is noticed


@pytest.fixture
def no_capable_nodes(cluster: Cluster) -> Iterator[None]:
    """Nodes other tests labelled as capable are marked incapable for this test, then restored."""
    capable = [n.metadata.name for n in cluster.client.list(Node, labels={LABEL: "true"})]
    for name in capable:
        cluster.client.patch(Node, name, {"metadata": {"labels": {LABEL: "false"}}}, patch_type=PatchType.MERGE)
    yield
    for name in capable:
        with contextlib.suppress(ApiError):
            cluster.client.patch(Node, name, {"metadata": {"labels": {LABEL: "true"}}}, patch_type=PatchType.MERGE)


def pod_spec(cluster: Cluster, ns: str, name: str) -> Any:
    try:
        return cluster.client.get(Deployment, name, namespace=ns).spec.template.spec
    except ApiError:
        return None


def app_obj(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.client.get(SpinAppResource, name, namespace=ns).to_dict()


def test_apps_needing_local_inference_get_a_node_selector_and_a_clear_condition(
    cluster: Cluster, ns: str, no_capable_nodes: None, tmp_path: Path
) -> None:
    node_name = f"capable-{uuid.uuid4().hex[:6]}"
    with start_registry(tmp_path, "ggcr") as server:
        images = {
            "llm": push(built_app("py-llm"), server.ref("apps/llm", "v1")),
            "hello": push(built_app("py-hello"), server.ref("apps/hello", "v1")),
        }
        op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", "--llm-node-recheck-seconds", RECHECK)
        op.start()
        try:
            _first_operator_run(cluster, ns, images, op, node_name)
        except BaseException:
            op.kill(signal.SIGTERM)
            with contextlib.suppress(ApiError):
                cluster.client.delete(Node, node_name)
            raise
    # The registry is gone now. A restarted operator cannot read the image again, so it renders from
    # status.localInference: an edit of the app keeps the node selector (no flapping of the pod template).
    op.kill(signal.SIGKILL)
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator2.log", "--llm-node-recheck-seconds", RECHECK)
    op.start()
    try:
        cl = cluster.client
        cl.patch(
            SpinAppResource,
            "chat",
            {"spec": {"podLabels": {"touched": "yes"}}},
            namespace=ns,
            patch_type=PatchType.MERGE,
        )

        def touched() -> Any:
            template = cl.get(Deployment, "chat", namespace=ns).spec.template
            return template.spec if "touched" in (template.metadata.labels or {}) else None

        spec = wait_for(touched, what="the edited app re-rendered after the restart")
        assert spec.nodeSelector == {"disktype": "ssd", LABEL: "true"}, op.log_tail()
        chat = app_obj(cluster, ns, "chat")
        assert condition(chat, "LocalInference")["status"] == "True"
        assert condition(chat, "Degraded")["status"] == "False"
    finally:
        op.kill(signal.SIGTERM)
        with contextlib.suppress(ApiError):
            cluster.client.delete(Node, node_name)


def _first_operator_run(cluster: Cluster, ns: str, images: dict[str, str], op: OperatorProcess, node_name: str) -> None:
    cl = cluster.client
    cl.create(spinapp("chat", ns, image=images["llm"], nodeSelector={"disktype": "ssd"}))
    cl.create(
        spinapp(
            "remote",
            ns,
            image=images["llm"],
            runtimeConfig={
                "llmCompute": {
                    "type": "remote_http",
                    "options": [{"name": "url", "value": "http://llm.test"}, {"name": "auth_token", "value": "t"}],
                }
            },
        )
    )
    cl.create(spinapp("hello", ns, image=images["hello"]))
    cl.create(spinapp("lost", ns, image=f"127.0.0.1:{free_port()}/apps/nowhere:v1"))

    # The app with ai_models and a local backend: the label joins the user's own selector.
    spec = wait_for(lambda: pod_spec(cluster, ns, "chat"), what="Deployment chat")
    assert spec.nodeSelector == {"disktype": "ssd", LABEL: "true"}, op.log_tail()
    degraded = wait_for(
        lambda: has_condition(cluster, SpinAppResource, "chat", ns, "Degraded", "True", "NoLocalInferenceNode"),
        what="Degraded NoLocalInferenceNode",
    ).to_dict()
    message = condition(degraded, "Degraded")["message"]
    assert "no node is labelled kubespin.dev/llm-local=true" in message
    assert "remote_http" in message and "kubespin llm-serve" in message
    assert "llm (tiny, smollm2, all-minilm-l6-v2, absent-model)" in message
    local = condition(degraded, "LocalInference")
    assert (local["status"], local["reason"]) == ("True", "NodeSelector")
    record = degraded["status"]["localInference"]
    assert record["image"] == images["llm"] and record["digest"] == images["llm"].rsplit("@", 1)[1]
    assert record["localNodeRequired"] is True
    assert record["components"] == [
        {"component": "llm", "aiModels": ["tiny", "smollm2", "all-minilm-l6-v2", "absent-model"]}
    ]
    wait_for(
        lambda: any(
            e.reason == "NoLocalInferenceNode" and e.type == "Warning" for e in events_for(cluster, ns, "chat")
        ),
        what="Warning event NoLocalInferenceNode",
    )

    # The same app served by a remote backend, and an app without models: any node will do.
    for name, reason in (("remote", "RemoteBackend"), ("hello", "NoModels")):
        wait_for(lambda n=name, r=reason: has_condition(cluster, SpinAppResource, n, ns, "LocalInference", "False", r))
        assert not (pod_spec(cluster, ns, name).nodeSelector or {}), name
        assert condition(app_obj(cluster, ns, name), "Degraded")["status"] == "False"

    # An image that cannot be read: the app is still deployed, and the condition says why it is unknown.
    lost = wait_for(
        lambda: has_condition(cluster, SpinAppResource, "lost", ns, "LocalInference", "Unknown", "ImageNotInspected")
    ).to_dict()
    assert "cannot reach registry" in condition(lost, "LocalInference")["message"]
    assert not (wait_for(lambda: pod_spec(cluster, ns, "lost")).nodeSelector or {})

    # A node able to infer appears: the problem clears by itself, the pod template stays as it was.
    generation = cl.get(Deployment, "chat", namespace=ns).metadata.generation
    cl.create(Node(metadata=ObjectMeta(name=node_name, labels={LABEL: "true"})))
    wait_for(
        lambda: has_condition(cluster, SpinAppResource, "chat", ns, "Degraded", "False"),
        timeout=60,
        what="Degraded cleared once a capable node exists",
    )
    assert cl.get(Deployment, "chat", namespace=ns).metadata.generation == generation
