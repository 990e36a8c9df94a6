"""The local node's main loop: register, heartbeat, follow the pods bound here, one worker per pod.

Level-based like a kubelet: the pod list (``spec.nodeName=<node>``) is the truth. A watch delivers
changes as they happen; a full list every ``RESYNC_S`` seconds catches anything a broken watch lost
(pods that vanished, pods that appeared). A node restart finds its pods again and starts them anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import OnErrorAction, OnErrorResult, PatchType

from kubespin.node.events import EventRecorder
from kubespin.node.objects import ObjectCache
from kubespin.node.pod_worker import NodeContext, PodWorker
from kubespin.node.registration import (
    LEASE_NAMESPACE,
    LEASE_RENEW_S,
    STATUS_REPORT_S,
    NodeIdentity,
    lease_manifest,
    machine_capacity,
    micro_time,
    node_manifest,
    node_status,
)

log = logging.getLogger("kubespin.node")

RESYNC_S = 30.0
FIELD_MANAGER = "kubespin-node"
#: Environment a shim process gets from the node (a container gets nothing from its host but these
#: matter here: where Python finds its code (the shim must be the node's own kubespin) and caches).
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "KUBESPIN_CACHE", "KUBESPIN_WORK_DIR")


@dataclass
class NodeOptions:
    name: str
    kubeconfig: str | None
    state_dir: Path
    max_pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)
    llm_label: bool = True
    pass_env: tuple[str, ...] = ()
    shutdown_grace_s: float = 10.0


class NodeError(RuntimeError):
    """The node cannot start (no API server, no permission to register): the message says what to check."""


def _retry(_err: Exception, count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RETRY, sleep=min(0.2 * count, 5.0))


def kubespin_command() -> list[str]:
    """How to run this installation's `kubespin` (the shim the node runs is the node's own version)."""
    return [sys.executable, "-m", "kubespin"]


class NodeAgent:
    def __init__(self, options: NodeOptions) -> None:
        self.options = options
        self.workers: dict[str, PodWorker] = {}
        self._stopping = asyncio.Event()
        self._ready_since = dt.datetime.now(dt.UTC)
        self._identity: NodeIdentity | None = None
        self._node_uid = ""
        self._lease_acquired = dt.datetime.now(dt.UTC)
        self._status_dirty = asyncio.Event()
        self.ctx: NodeContext | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- setup ----------------------------------------------------------------------------------

    def _client(self) -> AsyncClient:
        path = self.options.kubeconfig
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        return AsyncClient(config=config, field_manager=FIELD_MANAGER, timeout=30)

    async def _kubelet_version(self, client: AsyncClient) -> str:
        """The API server's version, marked as ours (components parse nodeInfo.kubeletVersion as semver)."""
        try:
            # lightkube has no /version call; its httpx client is already configured for the server.
            response = await client._client._client.get("/version")  # type: ignore[attr-defined]
            version = str(response.json().get("gitVersion", "v0.0.0")).split("+")[0]
        except Exception:
            version = "v0.0.0"
        return f"{version}-kubespin-node" if "-" not in version else f"{version}.kubespin-node"

    async def register(self, client: AsyncClient) -> None:
        """Create (or take over) the Node, report Ready, start the Lease."""
        opts = self.options
        labels = dict(opts.labels)
        self._identity = NodeIdentity(
            name=opts.name,
            capacity=machine_capacity(opts.state_dir, opts.max_pods),
            kubelet_version=await self._kubelet_version(client),
            extra_labels=labels,
        )
        manifest = node_manifest(self._identity)
        try:
            node = await client.create(Node.from_dict(manifest))
            log.info("registered node %s", opts.name)
        except ApiError as err:
            if err.status.code != 409:
                raise
            node = await client.patch(Node, opts.name, {"metadata": manifest["metadata"]}, patch_type=PatchType.MERGE)
            log.info("node %s exists; taking it over", opts.name)
        self._node_uid = node.metadata.uid
        self._ready_since = dt.datetime.now(dt.UTC)
        await self._report_status(client, ready=True)
        await self._renew_lease(client)

    async def _report_status(self, client: AsyncClient, ready: bool, reason: str = "", message: str = "") -> None:
        assert self._identity is not None
        status = node_status(
            self._identity,
            ready,
            reason or ("KubeletReady" if ready else "KubeletNotReady"),
            message or ("kubespin local node is posting ready status" if ready else "kubespin local node stopped"),
            self._ready_since,
        )
        await client.patch(Node.Status, self.options.name, {"status": status}, patch_type=PatchType.STRATEGIC)

    async def _renew_lease(self, client: AsyncClient) -> None:
        name = self.options.name
        try:
            await client.patch(
                Lease,
                name,
                {"spec": {"holderIdentity": name, "renewTime": micro_time()}},
                namespace=LEASE_NAMESPACE,
                patch_type=PatchType.MERGE,
            )
        except ApiError as err:
            if err.status.code != 404:
                raise
            manifest = lease_manifest(name, self._node_uid, self._lease_acquired)
            await client.create(Lease.from_dict(manifest))

    async def _heartbeat(self, client: AsyncClient) -> None:
        last_status = asyncio.get_running_loop().time()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_dirty.wait(), LEASE_RENEW_S)
            try:
                await self._renew_lease(client)
                now = asyncio.get_running_loop().time()
                if self._status_dirty.is_set() or now - last_status >= STATUS_REPORT_S:
                    self._status_dirty.clear()
                    await self._report_status(client, ready=True)
                    last_status = now
            except Exception as err:
                log.warning("heartbeat failed (%s); retrying in %.0f s", err, LEASE_RENEW_S)

    async def _llm_label(self, client: AsyncClient) -> None:
        """Publish the shim's local-inference decision as a node label (and its reason as an annotation)
        once known (its probe may take a while): the same keys `kubespin node-probe` writes on real nodes."""
        try:
            from kubespin_shim.llm.detect import LABEL, detect_local_support

            from kubespin.llm_node_label import patch_llm_label
        except ImportError:
            return
        support = await asyncio.to_thread(detect_local_support)
        log.info("%s=%s (%s)", LABEL, support.label_value, support.reason)
        assert self._identity is not None
        self._identity.extra_labels = {**self._identity.extra_labels, LABEL: support.label_value}
        with contextlib.suppress(ApiError):
            await patch_llm_label(client, self.options.name, support)

    # --- pods -----------------------------------------------------------------------------------

    def _wants(self, pod: Mapping[str, Any]) -> bool:
        meta = pod.get("metadata") or {}
        if meta.get("uid") in self.workers:
            return True
        phase = (pod.get("status") or {}).get("phase")
        return phase not in ("Succeeded", "Failed") or bool(meta.get("deletionTimestamp"))

    def _on_pod(self, event: str, pod: Mapping[str, Any]) -> None:
        assert self.ctx is not None
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if event == "DELETED":
            if worker is not None:
                worker.request_stop("pod deleted from the API", delete=False, gone=True)
            return
        if worker is None:
            if not self._wants(pod):
                return
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                # Terminal and being deleted: nothing runs; finish the deletion as kubelet would.
                task = asyncio.create_task(self._delete_terminal(pod))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return
            worker = self.workers[uid] = PodWorker(self.ctx, pod)
            worker.start()
            if worker.task is not None:
                worker.task.add_done_callback(lambda _t, uid=uid: self.workers.pop(uid, None))
            log.info("pod %s/%s bound here; starting", pod["metadata"]["namespace"], pod["metadata"]["name"])
        worker.update(pod)

    async def _delete_terminal(self, pod: Mapping[str, Any]) -> None:
        assert self.ctx is not None
        if not pod["metadata"].get("deletionTimestamp"):
            return
        with contextlib.suppress(ApiError):
            await self.ctx.client.delete(
                Pod, pod["metadata"]["name"], namespace=pod["metadata"]["namespace"], grace_period=0
            )

    async def _follow_pods(self, client: AsyncClient) -> None:
        fields = {"spec.nodeName": self.options.name}
        while not self._stopping.is_set():
            try:
                listing = client.list(Pod, namespace=ALL_NS, fields=fields)
                pods = [p.to_dict() async for p in listing]
                seen = {p["metadata"]["uid"] for p in pods}
                for uid, worker in list(self.workers.items()):
                    if uid not in seen:
                        worker.request_stop("pod no longer exists", delete=False, gone=True)
                for pod in pods:
                    self._on_pod("MODIFIED", pod)
                self._cleanup_orphan_dirs(seen)
                watch = client.watch(
                    Pod,
                    namespace=ALL_NS,
                    fields=fields,
                    resource_version=listing.resourceVersion,
                    server_timeout=int(RESYNC_S),
                    on_error=_retry,
                )
                # lightkube's watch reconnects by itself forever; end it to list again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESYNC_S):
                        async for event, obj in watch:
                            self._on_pod(event, obj.to_dict())
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("pod watch failed (%s); listing again", err)
                await asyncio.sleep(1.0)

    def _cleanup_orphan_dirs(self, live_uids: set[str]) -> None:
        """Pod dirs of pods that are gone (left by a node that was killed): stop stray shims, remove."""
        assert self.ctx is not None
        pods_dir = self.ctx.pods_dir
        if not pods_dir.is_dir():
            return
        for pod_dir in pods_dir.iterdir():
            if pod_dir.name in live_uids or pod_dir.name in self.workers:
                continue
            kill_stray_process(pod_dir)
            import shutil

            shutil.rmtree(pod_dir, ignore_errors=True)

    # --- run ------------------------------------------------------------------------------------

    async def run(self) -> None:
        opts = self.options
        pods_dir = opts.state_dir / "pods"
        pods_dir.mkdir(parents=True, exist_ok=True)
        for pod_dir in pods_dir.iterdir():
            kill_stray_process(pod_dir)
        client = self._client()
        base_env = {k: os.environ[k] for k in (*PASSED_ENV, *opts.pass_env) if k in os.environ}
        async with httpx.AsyncClient() as http:
            try:
                await self.register(client)
            except ApiError as err:
                raise NodeError(f"the API server refused to register node {opts.name}: {err.status.message}") from err
            except Exception as err:
                raise NodeError(
                    f"cannot register node {opts.name} ({type(err).__name__}: {err}); is the cluster up and the "
                    "kubeconfig right? (`kubespin devcluster up` prints `export KUBECONFIG=...`)"
                ) from err
            assert self._identity is not None
            objects = ObjectCache(client)
            events = EventRecorder(client, opts.name)
            self.ctx = NodeContext(
                client=client,
                node_name=opts.name,
                facts=self._identity.facts(),
                objects=objects,
                events=events,
                http=http,
                pods_dir=pods_dir,
                kubespin_argv=kubespin_command(),
                base_env=base_env,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
            tasks = [
                asyncio.create_task(self._heartbeat(client)),
                asyncio.create_task(self._follow_pods(client)),
            ]
            if opts.llm_label:
                tasks.append(asyncio.create_task(self._llm_label(client)))
            log.info("node %s ready; pods run under %s", opts.name, pods_dir)
            await self._stopping.wait()
            log.info("stopping: %d pod(s)", len(self.workers))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(
                *(w.shutdown(opts.shutdown_grace_s) for w in list(self.workers.values())), return_exceptions=True
            )
            with contextlib.suppress(Exception):
                await self._report_status(
                    client, ready=False, reason="KubeletNotReady", message="kubespin node stopped"
                )
            await events.close()
            await objects.close()
            await client.close()
        log.info("node %s stopped", opts.name)


def kill_stray_process(pod_dir: Path) -> None:
    """A shim left running by a node that died without its children (pid file + command line check)."""
    import psutil

    pid_file = pod_dir / "pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
        proc = psutil.Process(pid)
        if "kubespin" in " ".join(proc.cmdline()) and str(pod_dir) in " ".join([*proc.cmdline(), proc.cwd()]):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
