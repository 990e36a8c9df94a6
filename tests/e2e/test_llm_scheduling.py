"""An app that infers locally waits for a capable node, then runs and infers on it (issue 5, operator side).

Everything is real: the operator reads the app's ai_models (from its spin.toml, as the dev node runs apps
from their paths), kube-scheduler keeps the pod Pending while no node is labelled
kubespin.dev/llm-local=true, and once the node carries the label the pod is scheduled, started by
`kubespin node`, and answers an inference from llama.cpp (the tiny random-weight model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubespin_shim.llm.detect import LABEL

from tests.e2e import scenario
from tests.e2e.conftest import NODE_NAME
from tests.e2e.harness import Cluster, wait_for
from tests.fixtures.llm import make_models_dir, require_llm
from tests.shimproc import copy_app

pytestmark = pytest.mark.local_only


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def test_an_llm_app_waits_for_a_capable_node_then_infers_on_it(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    require_llm()
    app = copy_app("py-llm", tmp_path)
    make_models_dir(app / ".spin", smollm2=False, embeddings=False)  # Spin's default: .spin/ai-models
    cluster.apply(ns, scenario.spinapp(str(app), name="chat", checks=scenario.fast_checks()))

    degraded = wait_for(
        lambda: (
            (c := condition(cluster.get(ns, "spinapp", "chat"), "Degraded")).get("reason") == "NoLocalInferenceNode"
            and c
        ),
        60,
        "Degraded NoLocalInferenceNode (the node has no kubespin.dev/llm-local label)",
    )
    assert "kubespin llm-serve" in degraded["message"]
    (pod,) = wait_for(lambda: cluster.app_pods(ns, "chat"), 30, "the chat pod")
    assert pod["spec"]["nodeSelector"] == {LABEL: "true"}
    assert not pod["spec"].get("nodeName") and pod["status"]["phase"] == "Pending"

    try:
        cluster.kubectl("label", "node", NODE_NAME, f"{LABEL}=true", "--overwrite")
        (url,) = cluster.ready_urls(ns, "chat", 1, timeout=120)
        reply = httpx.post(f"{url}/infer/tiny?max_tokens=4", content=b"Hello", timeout=60)
        assert reply.status_code == 200, reply.text
        assert json.loads(reply.text)["generated_tokens"] >= 1
        wait_for(
            lambda: condition(cluster.get(ns, "spinapp", "chat"), "Degraded").get("status") == "False",
            90,
            "Degraded cleared by the operator's recheck",
        )
    finally:
        cluster.kubectl("label", "node", NODE_NAME, f"{LABEL}-", check=False)
