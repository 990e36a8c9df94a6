"""`kubespin node`: the command line of the local node (a development tool)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import click

DEFAULT_STATE_DIR = ".kubespin-node"


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--label")
        out[key] = val
    return out


@click.command("node")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    envvar="KUBECONFIG",
    help="kubeconfig of the cluster to join (e.g. the devcluster's). [env KUBECONFIG]",
)
@click.option("--name", default=None, help="Node name. Default: kubespin-<hostname>.")
@click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Pod directories (volumes, logs) live under DIR/pods/<uid>.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra node label (repeatable).")
@click.option("--max-pods", default=110, show_default=True, help="Reported pod capacity.")
@click.option(
    "--llm-label/--no-llm-label",
    default=True,
    show_default=True,
    help="Probe local inference support and publish it as the kubespin.dev/llm-local label.",
)
@click.option(
    "--pass-env", multiple=True, metavar="NAME", help="Also pass this variable of the node's environment to shims."
)
@click.option(
    "--shutdown-grace", default=10.0, show_default=True, help="Seconds each shim gets to stop when the node stops."
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def node_command(
    kubeconfig: str | None,
    name: str | None,
    state_dir: Path,
    labels: tuple[str, ...],
    max_pods: int,
    llm_label: bool,
    pass_env: tuple[str, ...],
    shutdown_grace: float,
    verbose: bool,
) -> None:
    """A local node for development and tests (NOT a kubelet, not for production).

    Registers a Node, keeps it Ready (Lease + status heartbeats), and runs the pods scheduled to it
    whose single container runs `kubespin up ...` as processes on this machine: env and valueFrom,
    Secret/ConfigMap/emptyDir/projected volumes as files kept up to date with kubelet's atomic
    `..data` swap, one 127.0.0.1 port per pod (the pod's `kubespin.dev/local-url` annotation),
    probes, restarts with back-off, SIGTERM/SIGKILL on deletion. Container paths are rewritten to
    the pod's directory: there is no container and no isolation. Anything else is marked Failed
    with a reason, never run. Stop with Ctrl-C or SIGTERM: the shims stop with it.
    """
    import asyncio

    from kubespin.cli_logging import configure
    from kubespin.node.agent import NodeAgent, NodeError, NodeOptions

    configure(verbose)
    node_name = name or f"kubespin-{socket.gethostname().lower()}"
    options = NodeOptions(
        name=node_name,
        kubeconfig=kubeconfig,
        state_dir=state_dir.resolve(),
        max_pods=max_pods,
        labels=_labels(labels),
        llm_label=llm_label,
        pass_env=pass_env,
        shutdown_grace_s=shutdown_grace,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(NodeAgent(options).run())
    except NodeError as err:
        raise click.ClickException(str(err)) from None
