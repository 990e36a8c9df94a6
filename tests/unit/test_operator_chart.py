"""The Helm chart: parses, ships the generated CRDs, and its ClusterRole grants what the operator uses and
no more; the node-probe DaemonSet runs `kubespin node-probe` with its own ServiceAccount allowed nodes
get + patch only. With a `helm` binary (PATH or $KUBESPIN_HELM) it is also rendered and linted by Helm itself."""

from __future__ import annotations

import os
import re
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


NODE_PROBE_NAME = '{{ printf "%s-node-probe" .Release.Name | trunc 63 | trimSuffix "-" }}'


def _node_probe_docs() -> dict[str, dict]:
    """The static parts of the node-probe templates, by kind."""
    docs: dict[str, dict] = {}
    for name in ("node-probe-daemonset.yaml", "node-probe-rbac.yaml"):
        text = (CHART / "templates" / name).read_text()
        lines = text.strip().splitlines()
        # the whole file is switched off by nodeProbe.enabled=false
        assert lines[0] == "{{- if .Values.nodeProbe.enabled }}" and lines[-1] == "{{- end }}", name
        for doc in yaml.safe_load_all(without_template_lines(text)):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def _name_expressions(name: str) -> list[str]:
    """Every `name: {{ ... }}` expression of a template (names are Helm expressions, not static text)."""
    return re.findall(r"name: (\{\{.*?\}\})", (CHART / "templates" / name).read_text())


def test_node_probe_values() -> None:
    probe = yaml.safe_load((CHART / "values.yaml").read_text())["nodeProbe"]
    assert probe["enabled"] is True
    assert isinstance(probe["intervalSeconds"], int) and probe["intervalSeconds"] >= 1
    assert probe["resources"]["requests"] and probe["resources"]["limits"]["memory"]
    assert isinstance(probe["tolerations"], list)
    assert probe["image"] == ""  # empty: the operator's image


def test_node_probe_cluster_role_grants_nodes_get_and_patch_only() -> None:
    docs = _node_probe_docs()
    assert grants_of(docs["ClusterRole"]["rules"]) == {("", "nodes", "get"), ("", "nodes", "patch")}
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole"}  # + name below
    assert [s["kind"] for s in binding["subjects"]] == ["ServiceAccount"]
    # ServiceAccount, ClusterRole, binding, roleRef, subject and the DaemonSet's serviceAccountName: one name
    names = _name_expressions("node-probe-rbac.yaml")
    assert names == [NODE_PROBE_NAME] * 5
    text = (CHART / "templates" / "node-probe-daemonset.yaml").read_text()
    assert f"serviceAccountName: {NODE_PROBE_NAME}" in text
    # its own account, never the operator's
    assert "kubespin.serviceAccountName" not in text + (CHART / "templates" / "node-probe-rbac.yaml").read_text()


def test_node_probe_daemonset_runs_the_probe_on_every_linux_node() -> None:
    ds = _node_probe_docs()["DaemonSet"]
    text = (CHART / "templates" / "node-probe-daemonset.yaml").read_text()
    assert f"name: {NODE_PROBE_NAME}" in text
    pod = ds["spec"]["template"]
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "kubespin-node-probe"}  # + instance (a Helm expression)
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "kubespin-node-probe"
    # the operator Deployment selects app.kubernetes.io/name=kubespin-operator: it must not match these pods
    assert "kubespin.labels" not in text
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["kubespin", "node-probe"]  # + --interval={{ ... }}
    assert "- --interval={{ .Values.nodeProbe.intervalSeconds }}" in text
    assert "image: {{ default .Values.operator.image .Values.nodeProbe.image | quote }}" in text
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["KUBESPIN_CACHE"]["value"].startswith("/tmp/")  # the only writable path
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "toYaml .Values.nodeProbe.resources" in text and "with .Values.nodeProbe.tolerations" in text


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
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert ds["metadata"]["name"] == "ks-node-probe"
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ks-node-probe"
    assert pod["containers"][0]["command"] == ["kubespin", "node-probe", "--interval=600"]
    assert pod["containers"][0]["image"] == dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert roles["ks-node-probe"]["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "ks-node-probe")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ks-node-probe", "namespace": "kubespin-system"}]


@pytest.mark.skipif(_helm() is None, reason="no helm binary (set KUBESPIN_HELM); static checks above still ran")
def test_helm_template_without_the_node_probe() -> None:
    helm = _helm()
    assert helm is not None
    out = subprocess.run(
        [helm, "template", "ks", str(CHART), "--set", "nodeProbe.enabled=false"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    assert not any("node-probe" in name for _, name in names)
    assert ("Deployment", "ks-operator") in names
