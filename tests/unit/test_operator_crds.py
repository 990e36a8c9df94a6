"""The committed CRD YAML is what crd_schema.py generates, and the schemas are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubespin_operator.crd_files import CRD_DIRS, render_crd_yaml, stale_crd_files
from kubespin_operator.crd_schema import all_crds

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_equal_generated() -> None:
    stale = stale_crd_files(REPO)
    assert not stale, f"regenerate with `kubespin crds --write .`: {[str(p) for p in stale]}"


def test_every_crd_dir_holds_exactly_the_generated_files() -> None:
    for folder in CRD_DIRS:
        names = {p.name for p in (REPO / folder).glob("*.yaml")}
        assert names == set(render_crd_yaml())


def _assert_structural(schema: dict[str, Any], path: str) -> None:
    """Every node has a type (or is an int-or-string / preserve-unknown node), as apiextensions requires."""
    if schema.get("x-kubernetes-int-or-string"):
        return
    assert "type" in schema, f"{path} has no type"
    for name, sub in (schema.get("properties") or {}).items():
        _assert_structural(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        _assert_structural(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        _assert_structural(schema["additionalProperties"], f"{path}{{}}")


def test_schemas_are_structural_and_yaml_roundtrips() -> None:
    for name, text in render_crd_yaml().items():
        doc = yaml.safe_load(text)
        assert doc == all_crds()[name]
        (version,) = doc["spec"]["versions"]
        _assert_structural(version["schema"]["openAPIV3Schema"], doc["spec"]["names"]["kind"])


def test_spinapp_is_a_superset_of_spinkube_field_names() -> None:
    spinapp = all_crds()["kubespin.dev_spinapps.yaml"]
    (version,) = spinapp["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spinkube = {
        "executor",
        "image",
        "imagePullSecrets",
        "checks",
        "replicas",
        "enableAutoscaling",
        "runtimeConfig",
        "volumes",
        "volumeMounts",
        "variables",
        "serviceAnnotations",
        "deploymentAnnotations",
        "podAnnotations",
        "podLabels",
        "resources",
        "components",
    }
    extra = {"invocationLimits", "serviceAccountName", "nodeSelector", "tolerations", "affinity"}
    assert spinkube | extra <= set(spec)
    assert set(spec["runtimeConfig"]["properties"]) == {
        "loadFromSecret",
        "keyValueStores",
        "sqliteDatabases",
        "llmCompute",
    }
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert [col["name"] for col in version["additionalPrinterColumns"]][:2] == ["Ready", "Desired"]
