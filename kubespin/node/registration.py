"""The Node object and its heartbeats: what the scheduler and the node lifecycle controller read.

A kubelet registers a Node (capacity, allocatable, labels, addresses, nodeInfo), then proves it is
alive two ways: by renewing its Lease in ``kube-node-lease`` every 10 s (a quarter of the 40 s lease)
and by updating ``status.conditions`` (Ready and the pressure conditions) at least every minute. If
both go stale for the controller's grace period, the node lifecycle controller marks the node
Unknown, taints it and evicts its pods. The local node does the same writes, so a node that stops
really does go NotReady. On a clean stop it reports Ready=False itself.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from kubespin.node.fields import NodeFacts

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
STATUS_REPORT_S = 60.0

#: Set on every Node the local node registers: tools (and `kubespin apps list`) can tell it from a kubelet.
LOCAL_NODE_LABEL = "kubespin.dev/local-node"
#: The pod annotation holding the URL where the pod answers on this machine.
POD_URL_ANNOTATION = "kubespin.dev/local-url"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


def go_arch(machine: str | None = None) -> str:
    """``kubernetes.io/arch`` uses Go's names (amd64, arm64), not uname's."""
    machine = (machine or platform.machine()).lower()
    return _GOARCH.get(machine, machine)


def micro_time(value: dt.datetime | None = None) -> str:
    value = value or dt.datetime.now(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(value: dt.datetime | None = None) -> str:
    value = value or dt.datetime.now(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Capacity:
    cpu: int
    memory_bytes: int
    ephemeral_storage_bytes: int
    pods: int

    def as_resources(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpu),
            "memory": f"{self.memory_bytes // 1024}Ki",
            "ephemeral-storage": f"{self.ephemeral_storage_bytes // 1024}Ki",
            "pods": str(self.pods),
        }


def machine_capacity(state_dir: Path, max_pods: int) -> Capacity:
    """This machine's CPUs (affinity mask), memory and the disk that holds the node's state."""
    import psutil

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    state_dir.mkdir(parents=True, exist_ok=True)
    return Capacity(cpus, psutil.virtual_memory().total, shutil.disk_usage(state_dir).total, max_pods)


@dataclass
class NodeIdentity:
    name: str
    capacity: Capacity
    kubelet_version: str
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def facts(self) -> NodeFacts:
        return NodeFacts(self.name, "127.0.0.1", Decimal(self.capacity.cpu), Decimal(self.capacity.memory_bytes))

    def labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/arch": go_arch(),
            "kubernetes.io/os": "linux" if platform.system() == "Linux" else platform.system().lower(),
            "kubernetes.io/hostname": self.name,
            LOCAL_NODE_LABEL: "true",
            **self.extra_labels,
        }


def conditions(ready: bool, reason: str, message: str, since: dt.datetime) -> list[dict[str, Any]]:
    """Ready plus the pressure conditions a kubelet reports (all False: the node does not measure them)."""
    beat = _time()
    moment = _time(since)
    out = [
        {
            "type": kind,
            "status": "False",
            "reason": f"KubeletHasSufficient{what}",
            "message": f"kubespin node does not measure {what.lower()} pressure",
            "lastHeartbeatTime": beat,
            "lastTransitionTime": moment,
        }
        for kind, what in (("MemoryPressure", "Memory"), ("DiskPressure", "Disk"), ("PIDPressure", "PID"))
    ]
    out.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": beat,
            "lastTransitionTime": moment,
        }
    )
    return out


def node_manifest(identity: NodeIdentity) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": identity.name,
            "labels": identity.labels(),
            "annotations": {
                "kubespin.dev/node": "a kubespin local node (development tool): pods run as processes on "
                "this machine, not in containers",
            },
        },
        "spec": {},
    }


def node_status(identity: NodeIdentity, ready: bool, reason: str, message: str, since: dt.datetime) -> dict[str, Any]:
    resources = identity.capacity.as_resources()
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(ready, reason, message, since),
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": socket.gethostname()},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "architecture": go_arch(),
            "operatingSystem": "linux" if platform.system() == "Linux" else platform.system().lower(),
            "osImage": f"{platform.system()} {platform.release()}",
            "kernelVersion": platform.release(),
            "kubeletVersion": identity.kubelet_version,
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "kubespin-node://processes",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def lease_manifest(node_name: str, node_uid: str, acquired: dt.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": LEASE_NAMESPACE,
            # Like kubelet: the Node owns its Lease, so deleting the Node removes it.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(),
        },
    }
