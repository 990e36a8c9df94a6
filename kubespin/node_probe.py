"""`kubespin node-probe`: publish this node's local-inference capability on its Node, for the scheduler.

Runs as a DaemonSet (charts/kubespin/templates/node-probe-daemonset.yaml), one pod per node, in the
image the app pods run. It asks the shim's own decision (:func:`kubespin_shim.llm.detect.
detect_local_support`: architecture, C library, and a subprocess that loads a tiny model with
llama-cpp-python) and writes it as the label ``kubespin.dev/llm-local=true|false`` plus a reason
annotation onto the Node named by the downward API (``NODE_NAME``). The operator schedules the pods of
SpinApps that need local inference with ``nodeSelector: {kubespin.dev/llm-local: "true"}``.

Why a long-running pod rather than a Job: labels are not sticky. A person, a node-management tool or a
re-registering kubelet (``--node-labels`` replaces what it owns) can remove or change the label, and a
DaemonSet pod that stays up re-asserts it every ``--interval`` seconds at the cost of one GET.

Errors: a Node that does not exist and a request RBAC forbids are configuration mistakes, reported at
once with what to check (exit 1; a DaemonSet pod then restarts with back-off and the message stays in
``kubectl logs --previous``). Transient errors (connection refused, timeouts, 429, 5xx) are retried a
bounded number of times; the long-running mode then tries again on a shorter cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from kubespin_shim.llm.detect import LocalSupport
    from lightkube import AsyncClient

log = logging.getLogger("kubespin.node_probe")

FIELD_MANAGER = "kubespin-node-probe"
DEFAULT_INTERVAL_S = 600.0
DEFAULT_ATTEMPTS = 5
#: Back-off between attempts of one publication: 0.5 s, 1 s, 2 s, ... at most this.
MAX_BACKOFF_S = 8.0
#: After a publication failed all its attempts, the long-running mode tries again this soon
#: (or after ``--interval``, whichever is shorter) instead of leaving the node unlabelled that long.
FAILED_CYCLE_RETRY_S = 60.0
REQUEST_TIMEOUT_S = 10.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class NodeProbeError(RuntimeError):
    """The probe cannot publish the label; the message says what to check."""


class NodeNotFound(NodeProbeError):
    """The Node named by --node-name / NODE_NAME does not exist."""


class NotPermitted(NodeProbeError):
    """The API server refused the credentials (401) or RBAC forbids the request (403)."""


class ApiUnavailable(NodeProbeError):
    """Transient errors outlasted the bounded retries."""


@dataclass(frozen=True)
class ProbeOptions:
    node_name: str
    kubeconfig: str | None = None
    once: bool = False
    interval_s: float = DEFAULT_INTERVAL_S
    attempts: int = DEFAULT_ATTEMPTS


def transport_errors() -> tuple[type[Exception], ...]:
    """Connection-level errors of lightkube's HTTP stack (httpx2 since lightkube 1.0; httpx before)."""
    found: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).TransportError)
    return tuple(found)


def permanent_error(err: Exception, node_name: str) -> NodeProbeError | None:
    """The typed error for a failure that retrying cannot fix, or None for a transient one."""
    from lightkube import ApiError

    if isinstance(err, ApiError):
        code = err.status.code or 0
        message = err.status.message or str(err)
        if code == 404:
            return NodeNotFound(
                f"Node {node_name!r} does not exist: --node-name (or NODE_NAME, set from the pod's "
                "spec.nodeName by the chart) must name a Node in `kubectl get nodes`"
            )
        if code in (401, 403):
            return NotPermitted(
                f"the API server refused to read or patch Node {node_name!r} ({code}: {message}); the probe's "
                "ServiceAccount needs a ClusterRole granting get and patch on nodes (the chart's "
                "<release>-node-probe ClusterRole and binding)"
            )
        if code in TRANSIENT_STATUS:
            return None
        return NodeProbeError(f"the API server rejected the label patch on Node {node_name!r} ({code}: {message})")
    if isinstance(err, transport_errors()):
        return None
    return NodeProbeError(f"unexpected error talking to the API server: {type(err).__name__}: {err}")


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    node_name: str,
    attempts: int,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """``op()`` with up to ``attempts`` tries on transient errors (exponential back-off); a permanent
    error is raised at once as its typed :class:`NodeProbeError`."""
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            await sleep(min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF_S))
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            typed = permanent_error(err, node_name)
            if typed is not None:
                raise typed from err
            last = err
            log.debug("attempt %d/%d on node %s failed: %s", attempt + 1, attempts, node_name, err)
    raise ApiUnavailable(
        f"cannot reach the API server to label Node {node_name!r} after {attempts} attempt(s): "
        f"{type(last).__name__}: {last}; check the cluster and the kubeconfig (in a pod: the ServiceAccount "
        "token and KUBERNETES_SERVICE_HOST)"
    ) from last


async def publish(client: AsyncClient, node_name: str, support: LocalSupport) -> str | None:
    """Make Node ``node_name`` carry the label and annotation for ``support``.

    Returns None when it already did (no write), else the label's previous value (``""`` when absent),
    so the caller can say when it restored a label that someone removed or changed.
    """
    from lightkube.resources.core_v1 import Node

    from kubespin.llm_node_label import LABEL, is_published, patch_llm_label

    node = await client.get(Node, node_name)
    metadata = node.to_dict().get("metadata") or {}
    if is_published(metadata, support):
        return None
    previous = (metadata.get("labels") or {}).get(LABEL, "")
    await patch_llm_label(client, node_name, support)
    return previous


async def detect_in_background() -> LocalSupport:
    """:func:`detect_local_support` in a daemon thread: its probe subprocess may take up to a minute, and a
    SIGTERM meanwhile must end the process at once (``asyncio.to_thread``'s pool would be joined at exit)."""
    from kubespin_shim.llm.detect import detect_local_support

    loop = asyncio.get_running_loop()
    future: asyncio.Future[LocalSupport] = loop.create_future()

    def settle(result: LocalSupport | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def work() -> None:
        result: LocalSupport | None = None
        error: BaseException | None = None
        try:
            result = detect_local_support()
        except BaseException as err:
            error = err
        with contextlib.suppress(RuntimeError):  # the loop is closed: a signal ended the process meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="llm-detect", daemon=True).start()
    return await future


def make_client(kubeconfig: str | None) -> AsyncClient:
    """In-cluster config by default (the pod's ServiceAccount), ``--kubeconfig`` for development."""
    from lightkube import AsyncClient, ConfigError, KubeConfig

    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    except ConfigError as err:
        where = kubeconfig or "in-cluster ServiceAccount, $KUBECONFIG or ~/.kube/config"
        raise NodeProbeError(f"no usable Kubernetes configuration ({where}): {err}") from err
    except OSError as err:
        raise NodeProbeError(f"cannot read --kubeconfig {kubeconfig}: {err.strerror or err}") from err
    return AsyncClient(config=config, field_manager=FIELD_MANAGER, timeout=REQUEST_TIMEOUT_S)


async def run(options: ProbeOptions) -> None:
    """Publish once, then (unless ``once``) re-assert every ``interval_s`` until cancelled (SIGTERM)."""
    from kubespin.llm_node_label import LABEL

    client = make_client(options.kubeconfig)
    try:
        support = await detect_in_background()
        label = f"{LABEL}={support.label_value}"
        log.info("decision: %s: %s", label, support.reason)
        published = False
        while True:
            wait = options.interval_s
            try:
                previous = await with_retries(
                    lambda: publish(client, options.node_name, support),
                    node_name=options.node_name,
                    attempts=options.attempts,
                )
            except ApiUnavailable as err:
                if options.once:
                    raise
                wait = min(options.interval_s, FAILED_CYCLE_RETRY_S)
                log.warning("%s; trying again in %.0f s", err, wait)
            else:
                if previous is None:
                    level = logging.DEBUG if published else logging.INFO
                    log.log(level, "node %s: %s (already set)", options.node_name, label)
                elif not published:
                    log.info("node %s: %s", options.node_name, label)
                else:
                    was = f"was {previous!r}" if previous else "was removed"
                    log.info("node %s: %s restored (%s)", options.node_name, label, was)
                published = True
            if options.once:
                return
            await asyncio.sleep(wait)
    finally:
        await client.close()


async def run_until_signalled(options: ProbeOptions) -> bool:
    """:func:`run` with SIGTERM/SIGINT cancelling it; True when a signal ended it (a clean stop)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def stop(sig: int) -> None:
        signalled.append(sig)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await run(options)
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if signalled:
        log.info("stopping on %s", signal.Signals(signalled[0]).name)
    return bool(signalled)


@click.command("node-probe")
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    default=None,
    help="The Node to label. [env NODE_NAME; the chart sets it from spec.nodeName]",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="kubeconfig for development. Default: in-cluster ServiceAccount, then $KUBECONFIG, ~/.kube/config.",
)
@click.option("--once", is_flag=True, help="Publish once and exit (0 on success).")
@click.option(
    "--interval",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_INTERVAL_S,
    show_default=True,
    help="Seconds between re-assertions of the label (long-running mode).",
)
@click.option(
    "--attempts",
    type=click.IntRange(min=1),
    default=DEFAULT_ATTEMPTS,
    show_default=True,
    help="Tries per publication on transient API errors (connection, timeout, 429, 5xx).",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging (every re-assertion, every retry).")
def node_probe_command(
    node_name: str | None, kubeconfig: str | None, once: bool, interval: float, attempts: int, verbose: bool
) -> None:
    """Label this node kubespin.dev/llm-local=true|false (can it run local LLM inference?).

    The decision is the shim's own (`kubespin llm-detect` prints it with its facts); its reason goes
    into the annotation kubespin.dev/llm-local-reason, shown by `kubectl describe node`. Runs in the
    chart's node-probe DaemonSet; stays up and re-asserts the label every --interval seconds unless
    --once. Stops cleanly on SIGTERM.
    """
    from kubespin.cli_logging import configure

    configure(verbose)
    if not verbose:
        # detect_local_support() logs its decision for a shim ("llm calls ... return runtime-error");
        # here the decision is logged once, as the label it becomes.
        logging.getLogger("kubespin.shim.llm").setLevel(logging.ERROR)
    if not node_name:
        raise click.UsageError(
            "no node to label: pass --node-name or set NODE_NAME (in a pod, from the downward API: "
            "valueFrom.fieldRef.fieldPath: spec.nodeName)"
        )
    options = ProbeOptions(node_name, kubeconfig, once, interval, attempts)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_until_signalled(options))
    except NodeProbeError as err:
        raise click.ClickException(str(err)) from None
