"""The Helm chart: parses, ships the generated CRDs, and its ClusterRole grants what the operator uses and
no more. With a `helm` binary (PATH or $KUBESPIN_HELM) it is also rendered and linted by Helm itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubespin_operator.rbac import grants_of, required_grants

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubespin"


def without_template_lines(text: str) -> str:
    """The template with every line holding a Helm action removed: enough to parse static parts."""
    return "\n".join(line for line in text.splitlines() if "{{" not in line)


def test_chart_metadata_and_values_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "kubespin"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["shim"]["image"] and values["operator"]["image"]


def test_cluster_role_is_least_privilege() -> None:
    role = yaml.safe_load(without_template_lines((CHART / "templates" / "clusterrole.yaml").read_text()))
    assert role["kind"] == "ClusterRole"
    granted = grants_of(role["rules"])
    assert not any("*" in triple for triple in granted), "no wildcards"
    assert granted == required_grants()


def test_operator_deployment_passes_the_shim_image() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    assert "- kubespin\n            - operator" in text
    assert "name: KUBESPIN_SHIM_IMAGE" in text and ".Values.shim.image" in text
    assert "type: Recreate" in text


def _helm() -> str | None:
    return os.environ.get("KUBESPIN_HELM") or shutil.which("helm")


@pytest.mark.skipif(_helm() is None, reason="no helm binary (set KUBESPIN_HELM); static checks above still ran")
def test_helm_template_renders_valid_manifests() -> None:
    helm = _helm()
    assert helm is not None
    subprocess.run([helm, "lint", str(CHART)], check=True, capture_output=True)
    out = subprocess.run(
        [
            helm,
            "template",
            "ks",
            str(CHART),
            "--namespace",
            "kubespin-system",
            "--include-crds",
            "--set",
            "shim.image=example.test/shim:1",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == 3
    for kind in ("ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"):
        assert kind in kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBESPIN_SHIM_IMAGE", "value": "example.test/shim:1"} in env
