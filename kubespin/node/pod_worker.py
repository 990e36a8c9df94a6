"""One pod on the local node: its port, its volumes, its shim process, its probes and its status.

The lifecycle follows kubelet's for a one-container pod:

1. plan the pod (``podspec.plan_pod``); a pod the node does not understand is reported Failed with
   the reason and never started;
2. give it a loopback port (kept across container restarts, and across node restarts through the
   pod's ``kubespin.dev/local-url`` annotation);
3. set up its volumes and environment from the watched Secrets/ConfigMaps; a missing input makes the
   container wait (FailedMount / CreateContainerConfigError) and is retried when the input appears;
4. start ``kubespin up`` with the rewritten arguments as a process in its own session, logs under
   ``<pod dir>/logs``; run the startup/readiness/liveness probes;
5. when the process exits (or liveness fails and the node kills it) restart it per ``restartPolicy``
   with crash-loop back-off;
6. when the pod is deleted: SIGTERM to the process group, SIGKILL after the grace period, final status,
   then delete the Pod object with grace period 0 (the kubelet's last word), and remove the pod dir.

While it runs, a change to a referenced Secret/ConfigMap rewrites the volumes with the atomic
``..data`` swap, so the running shim sees a new runtime config without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Pod, ServiceAccountToken
from lightkube.types import PatchType

from kubespin.node.env import EnvError, build_env
from kubespin.node.events import EventRecorder
from kubespin.node.fields import NodeFacts
from kubespin.node.objects import Key, ObjectCache
from kubespin.node.pod_status import (
    Backoff,
    Conditions,
    ContainerState,
    Terminated,
    build_status,
    failed_status,
    now,
    pod_phase,
    should_restart,
)
from kubespin.node.podspec import PodPlan, ProbePlan, UnsupportedPod, plan_pod, rewrite_env, shim_argv
from kubespin.node.probes import ProbeTracker, probe_once
from kubespin.node.registration import POD_URL_ANNOTATION
from kubespin.node.volumes import PodVolumes, VolumeError

log = logging.getLogger("kubespin.node.pod")

PR_SET_PDEATHSIG = 1
RETRY_SETUP_S = 5.0
RESYNC_S = 60.0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the node process dies, so no shim outlives its node."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class PortAllocator:
    """Loopback ports handed to pods; a port stays with its pod until the pod is gone."""

    def __init__(self) -> None:
        self.in_use: set[int] = set()

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket() as sock:
            # As the shim's server does: connections of a previous shim in TIME_WAIT do not block it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def allocate(self, preferred: int | None = None) -> int:
        if preferred and preferred not in self.in_use and self._free(preferred):
            self.in_use.add(preferred)
            return preferred
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self.in_use:
                self.in_use.add(port)
                return port
        raise RuntimeError("no free port on 127.0.0.1")

    def release(self, port: int | None) -> None:
        if port is not None:
            self.in_use.discard(port)


@dataclass
class NodeContext:
    """What every pod worker shares with the node."""

    client: AsyncClient
    node_name: str
    facts: NodeFacts
    objects: ObjectCache
    events: EventRecorder
    http: httpx.AsyncClient
    pods_dir: Path
    kubespin_argv: list[str]
    base_env: Mapping[str, str]
    ports: PortAllocator = field(default_factory=PortAllocator)
    refusals: dict[str, float] = field(default_factory=dict)


def local_url(pod: Mapping[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(POD_URL_ANNOTATION)


def _port_from_url(url: str | None) -> int | None:
    if not url:
        return None
    _, _, port = url.rstrip("/").rpartition(":")
    return int(port) if port.isdigit() else None


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.pod: Mapping[str, Any] = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.pod_dir = ctx.pods_dir / self.uid
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        self.container = ContainerState(
            name=container.get("name", ""),
            image=container.get("image", ""),
            image_id="kubespin-node://local-kubespin",
        )
        self.conditions = Conditions()
        self.start_time = now()
        self.port: int | None = None
        self.plan: PodPlan | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.phase_override: tuple[str, str | None, str | None] | None = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._delete_after_stop = False
        self._gone = False
        self._inputs_changed = asyncio.Event()
        self._liveness_failed = asyncio.Event()
        self._started = asyncio.Event()
        self._dirty = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._tokens: dict[tuple[str | None, int], tuple[str, float, float]] = {}
        self._last_status: dict[str, Any] | None = None
        self._will_restart = True
        self._grace_cap = float("inf")
        self.task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    # --- control from the agent ----------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._status_writer(), name=f"status {self.namespace}/{self.name}")
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    def update(self, pod: Mapping[str, Any]) -> None:
        """A newer version of the Pod object (from the watch)."""
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.request_stop("deleted", delete=True)

    def request_stop(self, reason: str, *, delete: bool, gone: bool = False) -> None:
        """Stop the container. ``delete``: then delete the Pod object (it has a deletionTimestamp);
        ``gone``: the Pod object no longer exists, so only local state is removed."""
        if not self._stop.is_set():
            self._stop_reason = reason
        self._delete_after_stop = self._delete_after_stop or delete
        self._gone = self._gone or gone
        self._stop.set()

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    # --- main lifecycle -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            await self._kill(grace=2.0)
            raise
        except Exception as err:
            log.exception("pod %s/%s: unexpected error", self.namespace, self.name)
            self.ctx.events.pod_event(self.pod, "Warning", "NodeError", f"kubespin node error: {err}")
            await self._kill(grace=self._grace())
        finally:
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            self._unsubscribe.clear()
            self.ctx.ports.release(self.port)
        if self._delete_after_stop and not self._gone:
            await self._finish_deletion()
        elif self._gone:
            if self._writer is not None:
                self._writer.cancel()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            log.info("pod %s/%s: stopped (%s)", self.namespace, self.name, self._stop_reason)

    async def _lifecycle(self) -> None:
        try:
            plan = self.plan = plan_pod(self.pod)
        except UnsupportedPod as refusal:
            await self._refuse(refusal)
            return
        self.port = self.ctx.ports.allocate(_port_from_url(local_url(self.pod)))
        self._restore_restart_count()
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        (self.pod_dir / "rootfs").mkdir(exist_ok=True)
        volumes = PodVolumes(self.pod_dir, plan.volumes)
        keys = self._subscribe(plan)
        await self.ctx.objects.wait_synced(keys, timeout=10.0)
        await self._annotate_url()
        self.conditions.set("PodScheduled", True)
        self.conditions.set("Initialized", True)
        self.conditions.set("PodReadyToStartContainers", True)
        self._publish()

        backoff = Backoff()
        resync = asyncio.create_task(self._resync_volumes(volumes))
        try:
            while not self._stop.is_set():
                argv_env = await self._prepare(plan, volumes)
                if argv_env is None:
                    continue
                argv, env = argv_env
                ran_for, exit_status = await self._run_container(plan, argv, env)
                if self._stop.is_set() or exit_status is None:
                    break
                self._will_restart = should_restart(plan.restart_policy, exit_status.exit_code)
                self.container.set_terminated(exit_status)
                self._publish()
                if not self._will_restart:
                    break
                delay = backoff.next_delay(ran_for)
                if delay > 0:
                    self.container.set_waiting(
                        "CrashLoopBackOff",
                        f"back-off {delay:.0f}s restarting failed container={plan.container} "
                        f"pod={self.name}_{self.namespace}({self.uid})",
                    )
                    self.ctx.events.pod_event(self.pod, "Warning", "BackOff", "Back-off restarting failed container")
                    self._publish()
                    await self._wait_stop(delay)
                if not self._stop.is_set():
                    self.container.restart_count += 1
        finally:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync
        if not self._stop.is_set():
            # Terminal (restartPolicy said no): stay until the pod is deleted.
            await self._stop.wait()

    async def _refuse(self, refusal: UnsupportedPod) -> None:
        """Report Failed. Pods of one owner are refused at most once a minute after the first few,
        so a ReplicaSet cannot turn one unrunnable template into a storm of Failed pods."""
        owner = next(iter((self.pod.get("metadata") or {}).get("ownerReferences") or []), {}).get("uid", self.uid)
        hold = self.ctx.refusals.get(owner, 0.0)
        if hold:
            self.container.set_waiting(refusal.reason, refusal.message)
            self._publish()
            await self._wait_stop(hold)
        self.ctx.refusals[owner] = min(max(hold * 2, 1.0), 60.0)
        if self._stop.is_set():
            return
        log.warning("pod %s/%s refused: %s: %s", self.namespace, self.name, refusal.reason, refusal.message)
        self.phase_override = ("Failed", refusal.reason, refusal.message)
        self._will_restart = False
        self.ctx.events.pod_event(self.pod, "Warning", refusal.reason, refusal.message)
        self._publish()
        await self._stop.wait()

    def _restore_restart_count(self) -> None:
        """After a node restart the pod's container is started again: count it as a restart."""
        for status in (self.pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == self.container.name:
                previous = int(status.get("restartCount", 0))
                state = status.get("state") or {}
                was_started = bool(state.get("running") or state.get("terminated") or status.get("lastState"))
                self.container.restart_count = previous + (1 if was_started else 0)

    def _subscribe(self, plan: PodPlan) -> list[Key]:
        secrets, configmaps = plan.references()
        keys: list[Key] = [("Secret", self.namespace, n) for n in sorted(secrets)]
        keys += [("ConfigMap", self.namespace, n) for n in sorted(configmaps)]
        for key in keys:
            self._unsubscribe.append(self.ctx.objects.subscribe(key, self._on_input_change))
        return keys

    def _on_input_change(self, _key: Key) -> None:
        self._inputs_changed.set()

    # --- inputs: volumes, tokens, environment ---------------------------------------------------

    def _raw_lookup(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return self.ctx.objects.get((kind, self.namespace, name))

    def _text_lookup(self, kind: str, name: str) -> Mapping[str, str] | None:
        import base64

        obj = self._raw_lookup(kind, name)
        if obj is None:
            return None
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _token(self, audience: str | None, expiration: int) -> str:
        entry = self._tokens.get((audience, expiration))
        if entry is None:
            raise VolumeError(f"no ServiceAccount token for audience {audience!r} yet")
        return entry[0]

    async def _refresh_tokens(self, plan: PodPlan) -> None:
        """Bound ServiceAccount tokens for projected volumes; renewed at 80% of their lifetime, as kubelet does."""
        wanted: set[tuple[str | None, int]] = set()
        for volume in plan.volumes.values():
            for source in (volume.get("projected") or {}).get("sources") or []:
                if sat := source.get("serviceAccountToken"):
                    wanted.add((sat.get("audience"), int(sat.get("expirationSeconds", 3600))))
        for audience, expiration in wanted:
            entry = self._tokens.get((audience, expiration))
            if entry is not None and time.time() < entry[1] + 0.8 * (entry[2] - entry[1]):
                continue
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {"namespace": self.namespace},
                "spec": {
                    "expirationSeconds": expiration,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
                    **({"audiences": [audience]} if audience else {}),
                },
            }
            try:
                response = await self.ctx.client.create(
                    ServiceAccountToken.from_dict(request), name=plan.service_account, namespace=self.namespace
                )
            except ApiError as err:
                raise VolumeError(
                    f"cannot get a token for ServiceAccount {plan.service_account}: {err.status.message}"
                ) from err
            token = response.status.token
            issued = time.time()
            self._tokens[(audience, expiration)] = (token, issued, issued + expiration)

    async def _prepare(self, plan: PodPlan, volumes: PodVolumes) -> tuple[list[str], dict[str, str]] | None:
        """Volumes and environment, or None after waiting (inputs missing, or stopping)."""
        assert self.port is not None
        self._inputs_changed.clear()
        try:
            await self._refresh_tokens(plan)
            volumes.sync(self.pod, self._raw_lookup, self.ctx.facts, "127.0.0.1", self._token)
            env = build_env(self.pod, self._text_lookup, self.ctx.facts, "127.0.0.1")
            dirs = volumes.directories()
            rootfs = self.pod_dir / "rootfs"
            argv = [*self.ctx.kubespin_argv, *shim_argv(plan, dirs, rootfs, self.port, env)]
            env = rewrite_env(plan, env, dirs, rootfs, self.port)
        except (VolumeError, EnvError) as err:
            reason = "ContainerCreating" if isinstance(err, VolumeError) else EnvError.reason
            if self.container.waiting_message != str(err):
                self.ctx.events.pod_event(self.pod, "Warning", getattr(err, "reason", reason), str(err))
            self.container.set_waiting(reason, str(err))
            self._publish()
            await self._wait_stop(RETRY_SETUP_S, also=self._inputs_changed)
            return None
        except UnsupportedPod as refusal:
            await self._refuse(refusal)
            return None
        return argv, env

    async def _resync_volumes(self, volumes: PodVolumes) -> None:
        """Rewrite volumes when an input changes (and every minute, for tokens and missed events)."""
        assert self.plan is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inputs_changed.wait(), RESYNC_S)
            self._inputs_changed.clear()
            try:
                await self._refresh_tokens(self.plan)
                changed = volumes.sync(self.pod, self._raw_lookup, self.ctx.facts, "127.0.0.1", self._token)
            except VolumeError as err:
                log.warning("pod %s/%s: volume update failed: %s", self.namespace, self.name, err)
                continue
            if changed:
                log.info("pod %s/%s: updated volumes %s", self.namespace, self.name, ", ".join(changed))

    # --- the process ----------------------------------------------------------------------------

    def _process_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {**self.ctx.base_env, "HOSTNAME": self.name, **env}

    async def _run_container(
        self, plan: PodPlan, argv: list[str], env: dict[str, str]
    ) -> tuple[float, Terminated | None]:
        """Start the shim and wait for it to end (exit, liveness kill, or stop); None when never started."""
        logs = self.pod_dir / "logs" / plan.container
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"{self.container.restart_count}.log"
        with log_file.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._process_env(env),
                    cwd=str(self.pod_dir / "rootfs"),
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as err:
                self.container.set_waiting("RunContainerError", f"cannot start {argv[0]}: {err}")
                self._publish()
                await self._wait_stop(RETRY_SETUP_S)
                return 0.0, None
        self.proc = proc
        (self.pod_dir / "pid").write_text(f"{proc.pid}\n")
        started = time.monotonic()
        started_at = now()
        self.container.set_running(f"kubespin-node://{proc.pid}")
        self._liveness_failed.clear()
        self._started.clear()
        self.ctx.events.pod_event(self.pod, "Normal", "Started", f"Started container {plan.container} (pid {proc.pid})")
        log.info("pod %s/%s: started pid %d on 127.0.0.1:%s", self.namespace, self.name, proc.pid, self.port)
        self._publish()

        probes = [asyncio.create_task(self._probe_startup(plan.startup))]
        if plan.readiness is not None:
            probes.append(asyncio.create_task(self._probe_loop("Readiness", plan.readiness)))
        else:
            probes.append(asyncio.create_task(self._ready_when_started()))
        if plan.liveness is not None:
            probes.append(asyncio.create_task(self._probe_loop("Liveness", plan.liveness)))

        exited = asyncio.create_task(proc.wait())
        stop = asyncio.create_task(self._stop.wait())
        liveness = asyncio.create_task(self._liveness_failed.wait())
        try:
            await asyncio.wait({exited, stop, liveness}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*probes, stop, liveness):
                task.cancel()
            await asyncio.gather(*probes, stop, liveness, return_exceptions=True)
        reason_override = None
        if not exited.done():
            if self._stop.is_set():
                self.ctx.events.pod_event(self.pod, "Normal", "Killing", f"Stopping container {plan.container}")
            else:
                reason_override = "Error"
                self.ctx.events.pod_event(
                    self.pod,
                    "Normal",
                    "Killing",
                    f"Container {plan.container} failed liveness probe, will be restarted",
                )
            await self._kill(grace=self._grace())
        code = await exited
        self.proc = None
        (self.pod_dir / "pid").unlink(missing_ok=True)
        signum = -code if code < 0 else None
        exit_code = 128 + signum if signum else code
        term = Terminated(
            exit_code=exit_code,
            reason=reason_override or ("Completed" if exit_code == 0 else "Error"),
            started_at=started_at,
            finished_at=now(),
            signal=signum,
            container_id=self.container.container_id,
            message=self._log_tail(log_file) if exit_code != 0 else "",
        )
        if self._stop.is_set():
            self.container.set_terminated(term)
            self._will_restart = False
            self._publish()
        log.info("pod %s/%s: pid %d exited with %s", self.namespace, self.name, proc.pid, exit_code)
        return time.monotonic() - started, term

    @staticmethod
    def _log_tail(path: Path, limit: int = 2048) -> str:
        """kubelet's terminationMessagePolicy FallbackToLogsOnError: the log tail as the message."""
        try:
            data = path.read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode(errors="replace").strip()

    def _grace(self) -> float:
        meta = self.pod.get("metadata") or {}
        if meta.get("deletionGracePeriodSeconds") is not None:
            grace = float(meta["deletionGracePeriodSeconds"])
        else:
            grace = self.plan.grace_period_s if self.plan else 30.0
        return min(grace, self._grace_cap)

    async def _kill(self, grace: float) -> None:
        """SIGTERM to the shim's process group, SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0.0) or 0.01)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    # --- probes ---------------------------------------------------------------------------------

    async def _probe_startup(self, plan: ProbePlan | None) -> None:
        if plan is None:
            self._mark_started()
            return
        tracker = ProbeTracker(plan)
        await asyncio.sleep(plan.initial_delay_s)
        while True:
            assert self.port is not None
            outcome = await probe_once(plan, self.port, self.ctx.http)
            tracker.record(outcome)
            if tracker.result is True:
                self._mark_started()
                return
            if tracker.result is False:
                self.ctx.events.pod_event(self.pod, "Warning", "Unhealthy", f"Startup probe failed: {outcome.detail}")
                self._liveness_failed.set()
                return
            await asyncio.sleep(plan.period_s)

    def _mark_started(self) -> None:
        self.container.started = True
        self._started.set()
        self._publish()

    async def _ready_when_started(self) -> None:
        await self._started.wait()
        self.container.ready = True
        self._publish()

    async def _probe_loop(self, kind: str, plan: ProbePlan) -> None:
        await self._started.wait()
        tracker = ProbeTracker(plan)
        await asyncio.sleep(plan.initial_delay_s)
        while True:
            assert self.port is not None
            outcome = await probe_once(plan, self.port, self.ctx.http)
            changed = tracker.record(outcome)
            if not outcome.ok:
                self.ctx.events.pod_event(self.pod, "Warning", "Unhealthy", f"{kind} probe failed: {outcome.detail}")
            if kind == "Readiness" and changed:
                self.container.ready = bool(tracker.result)
                self._publish()
            if kind == "Liveness" and tracker.result is False:
                self._liveness_failed.set()
                return
            # Until the first success, kubelet probes readiness at the period too; no faster path here.
            await asyncio.sleep(plan.period_s)

    # --- status ---------------------------------------------------------------------------------

    def _publish(self) -> None:
        self._dirty.set()

    def current_status(self) -> dict[str, Any]:
        if self.phase_override is not None:
            phase, reason, message = self.phase_override
            return failed_status(reason or "Failed", message or "", self.start_time, self.container)
        restart_policy = self.plan.restart_policy if self.plan else "Always"
        phase = pod_phase(self.container, restart_policy, self._will_restart)
        if self._delete_after_stop and self.proc is None and self.container.terminated is not None:
            # Terminating: kubelet moves a deleted pod to a terminal phase once its containers stopped.
            phase = "Succeeded" if self.container.terminated.exit_code == 0 else "Failed"
        return build_status(self.container, self.conditions, phase, self.start_time)

    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._write_status()
            await asyncio.sleep(0.05)  # coalesce bursts (start → started → ready)

    async def _write_status(self) -> None:
        status = self.current_status()
        if status == self._last_status:
            return
        try:
            await self.ctx.client.patch(
                Pod.Status, self.name, {"status": status}, namespace=self.namespace, patch_type=PatchType.STRATEGIC
            )
            self._last_status = status
        except ApiError as err:
            if err.status.code == 404:
                self._last_status = status
                self.request_stop("pod gone", delete=False, gone=True)
                return
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, err.status.message)
            await asyncio.sleep(1.0)
            self._dirty.set()
        except Exception as err:
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, err)
            await asyncio.sleep(1.0)
            self._dirty.set()

    async def _annotate_url(self) -> None:
        url = f"http://127.0.0.1:{self.port}"
        if local_url(self.pod) == url:
            return
        patch = {"metadata": {"annotations": {POD_URL_ANNOTATION: url}}}
        with contextlib.suppress(ApiError):
            await self.ctx.client.patch(Pod, self.name, patch, namespace=self.namespace, patch_type=PatchType.MERGE)

    async def _wait_stop(self, seconds: float, also: asyncio.Event | None = None) -> None:
        waits = [asyncio.create_task(self._stop.wait())]
        if also is not None:
            waits.append(asyncio.create_task(also.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _finish_deletion(self) -> None:
        """Final status, then delete the Pod object for good (grace 0), then forget the pod dir."""
        await self._write_status()
        if self._writer is not None:
            self._writer.cancel()
        with contextlib.suppress(ApiError):
            await self.ctx.client.delete(Pod, self.name, namespace=self.namespace, grace_period=0)
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        log.info("pod %s/%s: stopped (%s) and deleted", self.namespace, self.name, self._stop_reason)

    async def shutdown(self, grace_cap: float) -> None:
        """Node shutdown: stop the process (not the pod), report it not ready, keep the Pod object."""
        if self._writer is not None:
            self._writer.cancel()
        self._grace_cap = grace_cap
        self.request_stop("node shutdown", delete=False)
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=grace_cap + 5)
            except TimeoutError:
                self.task.cancel()
        await self._kill(grace=0)
        self.container.ready = False
        self._will_restart = True
        with contextlib.suppress(Exception):
            restart_policy = self.plan.restart_policy if self.plan else "Always"
            status = build_status(
                self.container, self.conditions, pod_phase(self.container, restart_policy, True), self.start_time
            )
            await self.ctx.client.patch(
                Pod.Status, self.name, {"status": status}, namespace=self.namespace, patch_type=PatchType.STRATEGIC
            )
