"""The local node's reading of a Pod: what it runs, how paths and ports are rewritten, what it refuses.

Pods are built from the operator's own renderer (the contract between the two), plus the projected
ServiceAccount volume that the API server's admission adds to every pod.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubespin_operator import constants as c
from kubespin_operator.render import RenderConfig, render_deployment

from kubespin.node.podspec import (
    OCI_REFERENCE,
    UnsupportedPod,
    expand_references,
    host_path,
    parse_shim_argv,
    plan_pod,
    rewrite_env,
    shim_argv,
)

SA_VOLUME = {
    "name": "kube-api-access-abcde",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ],
    },
}


def operator_pod(image: str = "/apps/chat", **spec: Any) -> dict[str, Any]:
    """A pod as the ReplicaSet controller creates it from the operator's Deployment."""
    app = {
        "apiVersion": c.API_VERSION,
        "kind": "SpinApp",
        "metadata": {"name": "chat", "namespace": "ns1", "uid": "app-uid"},
        "spec": {"image": image, **spec},
    }
    template = render_deployment(app, [], RenderConfig(shim_image="example.test/kubespin:1"))["spec"]["template"]
    pod_spec = copy.deepcopy(template["spec"])
    pod_spec["volumes"].append(SA_VOLUME)
    pod_spec["containers"][0]["volumeMounts"].append(
        {"name": SA_VOLUME["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}
    )
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec["nodeName"] = "n1"
    return {
        "metadata": {
            "name": "chat-abc",
            "namespace": "ns1",
            "uid": "pod-uid",
            "labels": template["metadata"]["labels"],
        },
        "spec": pod_spec,
    }


def test_operator_pod_is_understood() -> None:
    plan = plan_pod(operator_pod(variables=[{"name": "greeting", "value": "hi"}]))
    assert plan.listen_port == c.HTTP_PORT
    assert [a.name for a in plan.shim_args] == ["source", "listen", "runtime_config_file"]
    assert plan.readiness is not None and plan.readiness.path == c.HEALTH_PATH
    assert plan.readiness.initial_delay_s == 10 and plan.readiness.failure_threshold == 3
    assert plan.liveness is not None
    assert plan.restart_policy == "Always"
    secrets, configmaps = plan.references()
    assert secrets == {"chat-runtime-config"} and configmaps == {"kube-root-ca.crt"}


def test_paths_and_port_are_rewritten_under_the_pod_dir(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    plan = plan_pod(operator_pod(image=str(app)))
    dirs = {name: tmp_path / "pod" / "volumes" / name for name in plan.volumes}
    argv = shim_argv(plan, dirs, tmp_path / "pod" / "rootfs", 43210, {})
    assert argv == [
        "up",
        "-f",
        str(app),
        "--listen",
        "127.0.0.1:43210",
        "--runtime-config-file",
        str(dirs[c.RUNTIME_CONFIG_VOLUME] / c.RUNTIME_CONFIG_KEY),
    ]
    env = rewrite_env(plan, {"SPIN_HTTP_LISTEN_ADDR": "0.0.0.0:80", "X": "1"}, dirs, tmp_path, 43210)
    assert env == {"SPIN_HTTP_LISTEN_ADDR": "127.0.0.1:43210", "X": "1"}


def test_state_dir_outside_mounts_goes_to_the_pods_rootfs(tmp_path: Path) -> None:
    pod = operator_pod(image=str(tmp_path))
    pod["spec"]["containers"][0]["command"] += ["--state-dir", "/var/lib/spin"]
    plan = plan_pod(pod)
    argv = shim_argv(plan, {n: tmp_path / n for n in plan.volumes}, tmp_path / "rootfs", 1, {})
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "rootfs" / "var/lib/spin")


def test_longest_mount_wins_and_subpath_applies(tmp_path: Path) -> None:
    from kubespin.node.podspec import MountPlan

    mounts = [MountPlan("a", "/etc"), MountPlan("b", "/etc/kubespin", sub_path="x")]
    dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
    assert host_path("/etc/kubespin/rc.toml", mounts, dirs) == tmp_path / "b" / "x" / "rc.toml"
    assert host_path("/etc/other", mounts, dirs) == tmp_path / "a" / "other"
    assert host_path("/etc", mounts, dirs) == tmp_path / "a"
    assert host_path("/etcetera/x", mounts, dirs) is None


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["sh", "-c", "kubespin up"], "UnsupportedCommand"),
        (["kubespin", "operator"], "UnsupportedCommand"),
        ([], "UnsupportedCommand"),
        (["kubespin", "up", "--evil", "x"], "UnsupportedArgument"),
        (["kubespin", "up", "positional"], "UnsupportedArgument"),
        (["kubespin", "up", "-f"], "UnsupportedArgument"),
    ],
)
def test_commands_it_does_not_understand_are_refused(argv: list[str], reason: str) -> None:
    with pytest.raises(UnsupportedPod) as err:
        parse_shim_argv(argv)
    assert err.value.reason == reason


def test_option_spellings_come_from_the_shim() -> None:
    args = parse_shim_argv(["/usr/local/bin/kubespin", "up", "--from=/a", "--variable", "x=1", "--variable", "y=2"])
    assert [(a.name, a.value) for a in args] == [("source", "/a"), ("variables", "x=1"), ("variables", "y=2")]


def _refusal(pod: dict[str, Any]) -> UnsupportedPod:
    with pytest.raises(UnsupportedPod) as err:
        plan_pod(pod)
    return err.value


def test_pod_shapes_it_does_not_run() -> None:
    pod = operator_pod()
    pod["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    assert _refusal(pod).reason == "UnsupportedPodSpec"

    pod = operator_pod()
    pod["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "kvstore-x"}})
    refusal = _refusal(pod)
    assert refusal.reason == "UnsupportedVolume" and "Redis" in refusal.message

    pod = operator_pod()
    pod["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["true"]}}
    assert _refusal(pod).reason == "UnsupportedProbe"

    pod = operator_pod()
    pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = 9090
    assert _refusal(pod).reason == "UnsupportedProbe"


def test_app_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kubespin.node.podspec as podspec

    def argv_for(image: str) -> list[str]:
        plan = plan_pod(operator_pod(image=image))
        return shim_argv(plan, {n: tmp_path / n for n in plan.volumes}, tmp_path, 1, {})

    assert argv_for(str(tmp_path))[2] == str(tmp_path)
    for image, reason in [
        ("/does/not/exist", "AppNotFound"),
        ("relative/../path!", "UnsupportedImage"),
        ("https://example.test/app.wasm", "UnsupportedImage"),
    ]:
        with pytest.raises(UnsupportedPod) as err:
            argv_for(image)
        assert err.value.reason == reason, image
    monkeypatch.setattr(podspec, "registry_pull_available", lambda: False)
    with pytest.raises(UnsupportedPod) as err:
        argv_for("ghcr.io/example/chat:v1")
    assert err.value.reason == "ImagePullUnsupported"
    monkeypatch.setattr(podspec, "registry_pull_available", lambda: True)
    assert argv_for("127.0.0.1:5000/chat@sha256:" + "a" * 64)[2] == "127.0.0.1:5000/chat@sha256:" + "a" * 64


@pytest.mark.parametrize(
    "ref", ["ghcr.io/example/chat:v1", "localhost:5000/a/b", "chat", "reg.test/x@sha256:" + "0" * 64]
)
def test_oci_reference_grammar_accepts(ref: str) -> None:
    assert OCI_REFERENCE.match(ref)


@pytest.mark.parametrize("ref", ["/abs/path", "UPPER/case", "a b", "x:tag:tag"])
def test_oci_reference_grammar_rejects(ref: str) -> None:
    assert not OCI_REFERENCE.match(ref)


def test_variable_expansion() -> None:
    assert expand_references("$(A)-$(B)-$$(A)-$(MISSING)", {"A": "1", "B": "2"}) == "1-2-$(A)-$(MISSING)"


def test_pull_secret_paths_in_the_environment_are_rewritten(tmp_path: Path) -> None:
    pod = operator_pod(image=str(tmp_path), imagePullSecrets=[{"name": "regcred"}])
    plan = plan_pod(pod)
    dirs = {n: tmp_path / n for n in plan.volumes}
    env_in = {e["name"]: e["value"] for e in plan.env if "value" in e}
    assert env_in["KUBESPIN_REGISTRY_AUTH"].endswith("/regcred/.dockerconfigjson")
    env = rewrite_env(plan, env_in, dirs, tmp_path / "rootfs", 1)
    (volume,) = [n for n in plan.volumes if n.startswith("kubespin-pull-secret")]
    assert env["KUBESPIN_REGISTRY_AUTH"] == str(dirs[volume] / ".dockerconfigjson")
    with pytest.raises(UnsupportedPod):
        rewrite_env(plan, {**env_in, "KUBESPIN_REGISTRY_AUTH": "/root/.docker/config.json"}, dirs, tmp_path, 1)
