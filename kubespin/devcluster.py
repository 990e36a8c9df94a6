"""`kubespin devcluster`: a real Kubernetes control plane on 127.0.0.1, from locally built binaries.

Why: the operator's integration tests need a real API server (validation, RBAC, watches, owner
reference garbage collection, Deployments that produce ReplicaSets and Pods), and this project's
machines have no container runtime for kind. So `scripts/build-k8s` compiles etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubectl from the Go modules, and this module runs them
as plain background processes: certificates from `devcluster_certs`, logs and pid files in DIR.
There is no kubelet: Pods get created and stay Pending.

Python API (tests): ``DevCluster(path).up()`` / ``.down()`` / ``.status()``, ``binaries_dir()``.
Heavy imports (cryptography, psutil, yaml) are deferred so that `kubespin up` (the shim) does not
pay for them just because this command is registered.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import subprocess

    import psutil

    from kubespin.devcluster_certs import ClusterPKI

REPO_ROOT = Path(__file__).resolve().parents[1]
WRAPPER_GO_MOD = REPO_ROOT / "tools" / "k8s" / "go.mod"
BUILD_SCRIPT = "scripts/build-k8s"

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KUBECTL = "kubectl"
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
"""Start order; `down` stops them in reverse."""
REQUIRED_BINARIES = (*COMPONENTS, KUBECTL)

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FALLBACK_ADVERTISE_ADDRESS = "192.0.2.10"
"""TEST-NET-1, used when the host has no non-loopback IPv4. kube-apiserver refuses a loopback
advertise address and, without one, looks for a default route (absent on some of our machines).
With `--endpoint-reconciler-type=none` the address is never dialled, so it need not be routable."""

DEFAULT_UP_TIMEOUT_S = 180.0
DEFAULT_STOP_GRACE_S = 15.0
CONTEXT_NAME = "kubespin-devcluster"


class DevClusterError(RuntimeError):
    """Something a person must act on: missing binaries, a component that failed to start, a busy dir."""


class MissingBinariesError(DevClusterError):
    """The control plane binaries have not been built (or not for the pinned version)."""


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
    """Where the control plane binaries are: $KUBESPIN_K8S_BIN, else the build cache of the pinned version.

    Without a checkout (no tools/k8s/go.mod), the newest version in the cache that has every binary.
    """
    if override := os.environ.get("KUBESPIN_K8S_BIN"):
        return Path(override)
    base = cache_root() / "k8s"
    if version := pinned_k8s_version():
        return base / version / "bin"
    candidates = [
        d / "bin" for d in base.glob("v*") if all((d / "bin" / b).is_file() for b in REQUIRED_BINARIES)
    ]
    if candidates:
        return max(candidates, key=lambda p: _version_key(p.parent.name))
    return base / "unknown" / "bin"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    bin_dir = bin_dir or binaries_dir()
    return [b for b in REQUIRED_BINARIES if not os.access(bin_dir / b, os.X_OK)]


def require_binaries(bin_dir: Path) -> None:
    missing = missing_binaries(bin_dir)
    if missing:
        raise MissingBinariesError(
            f"missing control plane binaries in {bin_dir}: {', '.join(missing)}. "
            f"Build them with `{BUILD_SCRIPT}` (needs Go >= 1.26; the first build takes about half an "
            f"hour on 2 cores, later runs reuse the cache), or point KUBESPIN_K8S_BIN at a directory "
            f"that has them."
        )


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free on 127.0.0.1 right now (held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def _choose_ports(previous: dict[str, int] | None) -> Ports:
    """Reuse the last run's ports when all are free (the kubeconfig stays valid), else fresh ones."""
    names = list(Ports.__dataclass_fields__)
    if previous and set(previous) == set(names) and all(_port_is_free(p) for p in previous.values()):
        return Ports(**previous)
    return Ports(*_free_ports(len(names)))


def _advertise_address() -> str:
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return addr.address
    return FALLBACK_ADVERTISE_ADDRESS


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


class DevCluster:
    """A control plane whose whole state (certs, etcd data, logs, pids, kubeconfig) lives in one directory."""

    def __init__(self, directory: str | os.PathLike[str], bin_dir: Path | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.bin_dir = bin_dir or binaries_dir()
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # Layout -----------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig: `export KUBECONFIG=<this>`."""
        return self.dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    def pid_file(self, component: str) -> Path:
        return self.dir / "run" / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def _files(self, component: str) -> Any:
        from kubespin.devcluster_processes import ProcessFiles

        return ProcessFiles(component, self.pid_file(component), self.log_file(component))

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def ports(self) -> Ports:
        state = self._read_state()
        if "ports" not in state:
            raise DevClusterError(
                f"{self.dir} holds no dev cluster (no {self.state_file.name}); run `up` first"
            )
        return Ports(**state["ports"])

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    # Status -----------------------------------------------------------------------------------
    def _process(self, component: str) -> psutil.Process | None:
        from kubespin.devcluster_processes import find_process

        return find_process(self._files(component), component, str(self.dir))

    def status(self) -> ClusterStatus:
        from kubespin.devcluster_processes import read_pid

        result = ClusterStatus()
        for name in COMPONENTS:
            proc = self._process(name)
            result.components.append(ComponentStatus(name, read_pid(self.pid_file(name)), proc is not None))
        apiserver = self._process(APISERVER)
        if apiserver is not None:
            with contextlib.suppress(OSError, ssl.SSLError, http.client.HTTPException, DevClusterError):
                result.apiserver_ready = self._https_get(self.ports.apiserver, "/readyz")[0] == 200
        return result

    # Up ---------------------------------------------------------------------------------------
    def up(
        self, timeout_s: float = DEFAULT_UP_TIMEOUT_S, log: Callable[[str], None] | None = None
    ) -> DevCluster:
        """Start the control plane (or confirm it is already up) and wait until it serves Pods.

        Ready means: apiserver /readyz, controller-manager and scheduler /healthz, and the `default`
        ServiceAccount in namespace `default` (proof that controllers run, and needed before any Pod
        passes the ServiceAccount admission plugin). On failure everything started is stopped again
        and the error carries the log tail of the component that failed.
        """
        say = log or (lambda _msg: None)
        require_binaries(self.bin_dir)
        current = self.status()
        if current.all_running:
            say(f"already running in {self.dir}; waiting for ready")
            self._wait_ready(time.monotonic() + timeout_s)
            return self
        if not current.none_running:
            running = ", ".join(c.name for c in current.components if c.running)
            raise DevClusterError(
                f"dev cluster in {self.dir} is partly running ({running}); "
                f"run `kubespin devcluster down --dir {self.dir}` first"
            )
        deadline = time.monotonic() + timeout_s
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        advertise = state.get("advertise_address") or _advertise_address()
        pki = self._ensure_pki(advertise, say)
        ports = _choose_ports(state.get("ports"))
        self.state_file.write_text(
            json.dumps(
                {
                    "ports": ports.as_dict(),
                    "advertise_address": advertise,
                    "bin_dir": str(self.bin_dir),
                    "k8s_version": pinned_k8s_version(),
                },
                indent=2,
            )
            + "\n"
        )
        self._write_kubeconfigs(pki, ports)
        try:
            self._start(ETCD, self._etcd_args(ports))
            self._wait_for(deadline, ETCD, "etcd /health", lambda: self._etcd_healthy(ports))
            say(f"etcd ready on 127.0.0.1:{ports.etcd_client}")
            self._start(APISERVER, self._apiserver_args(pki, ports, advertise))
            self._wait_for(
                deadline,
                APISERVER,
                "kube-apiserver /readyz",
                lambda: self._https_get(ports.apiserver, "/readyz")[0] == 200,
            )
            say(f"kube-apiserver ready on {self.server_url}")
            self._start(CONTROLLER_MANAGER, self._controller_manager_args(pki, ports))
            self._start(SCHEDULER, self._scheduler_args(pki, ports))
            self._wait_ready(deadline)
            say("kube-controller-manager and kube-scheduler healthy; default ServiceAccount exists")
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    def _ensure_pki(self, advertise: str, say: Callable[[str], None]) -> ClusterPKI:
        from kubespin.devcluster_certs import ClusterPKI, create_pki

        pki = ClusterPKI(self.pki_dir)
        if pki.complete():
            return pki
        say(f"generating CA, serving and client certificates in {self.pki_dir}")
        return create_pki(self.pki_dir, advertise_address=advertise, service_ip=SERVICE_IP)

    def _start(self, component: str, args: list[str]) -> None:
        from kubespin.devcluster_processes import start_background

        self._children[component] = start_background(
            self.bin_dir / component, args, self._files(component), cwd=self.dir
        )

    def _wait_ready(self, deadline: float) -> None:
        ports = self.ports
        self._wait_for(
            deadline,
            APISERVER,
            "kube-apiserver /readyz",
            lambda: self._https_get(ports.apiserver, "/readyz")[0] == 200,
        )
        self._wait_for(
            deadline,
            CONTROLLER_MANAGER,
            "kube-controller-manager /healthz",
            lambda: self._https_get(ports.controller_manager, "/healthz", client_cert=False)[0] == 200,
        )
        self._wait_for(
            deadline,
            SCHEDULER,
            "kube-scheduler /healthz",
            lambda: self._https_get(ports.scheduler, "/healthz", client_cert=False)[0] == 200,
        )
        self._wait_for(
            deadline,
            CONTROLLER_MANAGER,
            "ServiceAccount default/default (serviceaccount controller)",
            lambda: (
                self._https_get(ports.apiserver, "/api/v1/namespaces/default/serviceaccounts/default")[0]
                == 200
            ),
        )

    def _wait_for(self, deadline: float, component: str, what: str, check: Callable[[], bool]) -> None:
        """Poll `check` until true; fail at once if any started component died, or at the deadline."""
        delay = 0.05
        while True:
            for name in COMPONENTS:
                child = self._children.get(name)
                if child is not None and child.poll() is not None:
                    raise self._start_failure(name, f"{name} exited with code {child.returncode}")
            with contextlib.suppress(OSError, ssl.SSLError, http.client.HTTPException):
                if check():
                    return
            if time.monotonic() >= deadline:
                raise self._start_failure(component, f"timed out waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _start_failure(self, component: str, reason: str) -> DevClusterError:
        from kubespin.devcluster_processes import log_tail

        log_file = self.log_file(component)
        return DevClusterError(f"{reason}. Last lines of {log_file}:\n{log_tail(log_file)}")

    # Down -------------------------------------------------------------------------------------
    def down(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> list[str]:
        """Stop every component (SIGTERM, SIGKILL after `grace_s`); return the names that were running.

        etcd goes last, so the apiserver can finish its in-flight writes during its own shutdown.
        """
        from kubespin.devcluster_processes import stop_processes

        stopped: list[str] = []
        for group in ((SCHEDULER, CONTROLLER_MANAGER, APISERVER), (ETCD,)):
            procs = {}
            for name in group:
                proc = self._process(name)
                if proc is not None:
                    procs[name] = proc
            stop_processes(list(procs.values()), grace_s)
            for name in group:
                child = self._children.pop(name, None)
                if child is not None:
                    with contextlib.suppress(Exception):
                        child.wait(timeout=5)
                self.pid_file(name).unlink(missing_ok=True)
            stopped.extend(procs)
        return stopped

    # Component flags --------------------------------------------------------------------------
    def _etcd_args(self, ports: Ports) -> list[str]:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            "--name=devcluster",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            # A dev cluster's data is disposable; fsync costs seconds per test run on slow disks.
            "--unsafe-no-fsync=true",
        ]

    def _apiserver_args(self, pki: ClusterPKI, ports: Ports, advertise: str) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--advertise-address={advertise}",
            # No kubelet and one apiserver: nothing should write the `kubernetes` Endpoints, and the
            # lease reconciler would probe the advertise address.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.pki_dir}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
        ]

    def _kubeconfig_path(self, component: str) -> Path:
        return self.dir / "kubeconfigs" / f"{component}.kubeconfig"

    def _controller_manager_args(self, pki: ClusterPKI, ports: Ports) -> list[str]:
        kubeconfig = self._kubeconfig_path(CONTROLLER_MANAGER)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--tls-cert-file={pki.components_serving.cert}",
            f"--tls-private-key-file={pki.components_serving.key}",
            "--leader-elect=false",
            # Like kubeadm: each controller acts as its own ServiceAccount under bootstrap RBAC,
            # so the operator's tests see the same permissions a real cluster has.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
        ]

    def _scheduler_args(self, pki: ClusterPKI, ports: Ports) -> list[str]:
        kubeconfig = self._kubeconfig_path(SCHEDULER)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--tls-cert-file={pki.components_serving.cert}",
            f"--tls-private-key-file={pki.components_serving.key}",
            "--leader-elect=false",
        ]

    # Kubeconfigs and HTTP ---------------------------------------------------------------------
    def _write_kubeconfigs(self, pki: ClusterPKI, ports: Ports) -> None:
        server = f"https://127.0.0.1:{ports.apiserver}"
        targets = [
            (self.kubeconfig, pki.admin, "kubespin-admin"),
            (
                self._kubeconfig_path(CONTROLLER_MANAGER),
                pki.controller_manager,
                "system:kube-controller-manager",
            ),
            (self._kubeconfig_path(SCHEDULER), pki.scheduler, "system:kube-scheduler"),
        ]
        for path, pair, user in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_kubeconfig(path, server, pki.ca.cert.read_bytes(), pair.cert_pem(), pair.key_pem(), user)

    def _ssl_context(self, client_cert: bool) -> ssl.SSLContext:
        from kubespin.devcluster_certs import ClusterPKI

        pki = ClusterPKI(self.pki_dir)
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        if client_cert:
            ctx.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        return ctx

    def _https_get(self, port: int, path: str, client_cert: bool = True) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=5, context=self._ssl_context(client_cert)
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
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


def _write_kubeconfig(path: Path, server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> None:
    import yaml

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT_NAME, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


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
        f"(binaries {cluster.bin_dir})",
        err=True,
    )
    click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    click.echo(f"# then: {cluster.bin_dir / KUBECTL} get namespaces", err=True)
    click.echo(
        f"# logs in {cluster.dir / 'logs'}; stop with: kubespin devcluster down --dir {directory}", err=True
    )


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
    """Stop every component of the control plane. Certs and etcd data stay for the next `up`."""
    started = time.monotonic()
    with _cli_errors():
        stopped = DevCluster(directory).down(grace_s=grace_s)
    what = ", ".join(stopped) if stopped else "nothing was running"
    click.echo(f"devcluster: stopped {what} in {time.monotonic() - started:.1f} s", err=True)


@devcluster.command("status")
@dir_option
def status_command(directory: Path) -> None:
    """Show which components run, and whether the apiserver is ready. Exit code 1 unless all are up."""
    cluster = DevCluster(directory)
    status = cluster.status()
    for comp in status.components:
        state = f"running (pid {comp.pid})" if comp.running else "stopped"
        click.echo(f"{comp.name:24} {state}")
    click.echo(f"{'apiserver /readyz':24} {'ok' if status.apiserver_ready else 'not ready'}")
    if status.all_running:
        click.echo(f"export KUBECONFIG={cluster.kubeconfig}")
    sys.exit(0 if status.all_running and status.apiserver_ready else 1)
