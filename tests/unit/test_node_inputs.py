"""Environment and volume contents as kubelet would build them, from Secrets/ConfigMaps/the pod itself."""

from __future__ import annotations

import base64
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kubespin.node.env import EnvError, build_env
from kubespin.node.fields import NodeFacts
from kubespin.node.volumes import PodVolumes, VolumeError, payload_for

NODE = NodeFacts("n1", "127.0.0.1", Decimal(2), Decimal(8 * 2**30))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("Secret", "creds"): {"data": {"token": b64("s3cret"), "url": b64("redis://x")}},
    ("ConfigMap", "settings"): {"data": {"mode": "test", "level": "debug"}, "binaryData": {"blob": b64("\x00\x01")}},
}


def raw(kind: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, name))


def text(kind: str, name: str) -> dict[str, str] | None:
    obj = raw(kind, name)
    if obj is None:
        return None
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
    return obj["data"]


def pod(env: list[dict[str, Any]] | None = None, env_from: list[dict[str, Any]] | None = None, **res: Any) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"b": "2", "a": "1"}},
        "spec": {
            "nodeName": "n1",
            "serviceAccountName": "sa",
            "containers": [{"name": "spin", "env": env or [], "envFrom": env_from or [], "resources": res}],
        },
    }


def test_env_in_order_with_value_from_and_expansion() -> None:
    env = build_env(
        pod(
            env=[
                {"name": "SPIN_VARIABLE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "COMBINED", "value": "$(MODE)-$(POD)-$$(MODE)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            ],
            env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}],
            limits={"memory": "128Mi"},
        ),
        text,
        NODE,
        "127.0.0.1",
    )
    assert env["SPIN_VARIABLE_TOKEN"] == "s3cret"
    assert env["MODE"] == "test"
    # POD is defined after COMBINED, so it stays unexpanded (Kubernetes expands only earlier names).
    assert env["COMBINED"] == "test-$(POD)-$(MODE)"
    assert (env["POD"], env["IP"], env["NODE"], env["LBL"], env["MEM"]) == ("p", "127.0.0.1", "n1", "1", "128")
    assert env["CM_level"] == "debug"
    assert "OPT" not in env


@pytest.mark.parametrize(
    "ref",
    [{"secretKeyRef": {"name": "missing", "key": "k"}}, {"configMapKeyRef": {"name": "settings", "key": "nokey"}}],
)
def test_missing_inputs_make_the_container_wait(ref: dict[str, Any]) -> None:
    with pytest.raises(EnvError) as err:
        build_env(pod(env=[{"name": "X", "valueFrom": ref}]), text, NODE, "127.0.0.1")
    assert "X" in str(err.value)


def test_resource_limit_defaults_to_node_allocatable() -> None:
    env = build_env(
        pod(env=[{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]), text, NODE, ""
    )
    assert env["CPU"] == "2"


def test_secret_and_configmap_payloads_with_items_and_modes() -> None:
    p = pod()
    secret = payload_for({"name": "v", "secret": {"secretName": "creds", "defaultMode": 0o400}}, p, raw, NODE, "")
    assert secret is not None
    assert {k: (v.data, v.mode) for k, v in secret.items()} == {
        "token": (b"s3cret", 0o400),
        "url": (b"redis://x", 0o400),
    }
    cm = payload_for(
        {"name": "v", "configMap": {"name": "settings", "items": [{"key": "blob", "path": "bin/blob", "mode": 0o600}]}},
        p,
        raw,
        NODE,
        "",
    )
    assert cm is not None and {k: (v.data, v.mode) for k, v in cm.items()} == {"bin/blob": (b"\x00\x01", 0o600)}
    with pytest.raises(VolumeError):
        payload_for({"name": "v", "secret": {"secretName": "missing"}}, p, raw, NODE, "")
    assert payload_for({"name": "v", "secret": {"secretName": "missing", "optional": True}}, p, raw, NODE, "") == {}


def test_projected_service_account_volume() -> None:
    from tests.unit.test_node_podspec import SA_VOLUME

    OBJECTS[("ConfigMap", "kube-root-ca.crt")] = {"data": {"ca.crt": "PEM"}}
    try:
        asked: list[tuple[str | None, int]] = []

        def tokens(audience: str | None, expiration: int) -> str:
            asked.append((audience, expiration))
            return "jwt"

        payload = payload_for(SA_VOLUME, pod(), raw, NODE, "127.0.0.1", tokens)
    finally:
        del OBJECTS[("ConfigMap", "kube-root-ca.crt")]
    assert payload is not None
    assert {k: v.data for k, v in payload.items()} == {"token": b"jwt", "ca.crt": b"PEM", "namespace": b"ns"}
    assert payload["token"].mode == 0o600 and payload["ca.crt"].mode == 420
    assert asked == [(None, 3607)]


def test_downward_api_labels_file_is_kubelets_format() -> None:
    payload = payload_for(
        {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        pod(),
        raw,
        NODE,
        "",
    )
    assert payload is not None and payload["labels"].data == b'a="1"\nb="2"'


def test_pod_volumes_follow_changes_with_the_data_swap(tmp_path: Path) -> None:
    volumes = PodVolumes(
        tmp_path,
        {"rc": {"name": "rc", "secret": {"secretName": "creds"}}, "scratch": {"name": "scratch", "emptyDir": {}}},
    )
    assert volumes.sync(pod(), raw, NODE, "") == ["rc"]
    rc_dir = volumes.directory("rc")
    assert rc_dir == tmp_path / "volumes" / "kubernetes.io~secret" / "rc"
    assert (rc_dir / "url").read_text() == "redis://x"
    assert volumes.directory("scratch").is_dir()
    first = os.readlink(rc_dir / "..data")
    assert volumes.sync(pod(), raw, NODE, "") == []
    OBJECTS[("Secret", "creds")]["data"]["url"] = b64("redis://y")
    try:
        assert volumes.sync(pod(), raw, NODE, "") == ["rc"]
    finally:
        OBJECTS[("Secret", "creds")]["data"]["url"] = b64("redis://x")
    assert os.readlink(rc_dir / "..data") != first
    assert (rc_dir / "url").read_text() == "redis://y"
