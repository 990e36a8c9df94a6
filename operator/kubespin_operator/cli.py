"""`kubespin operator` and `kubespin crds`: the operator's command-line entry points."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command("operator")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    envvar="KUBECONFIG",
    help="kubeconfig file; default: in-cluster service account, else ~/.kube/config.",
)
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable). Default: all namespaces.",
)
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch all namespaces (the default).")
@click.option(
    "--shim-image",
    envvar="KUBESPIN_SHIM_IMAGE",
    default=None,
    help="Container image of the kubespin shim that app pods run. [env KUBESPIN_SHIM_IMAGE]",
)
@click.option(
    "--image-pull-policy",
    envvar="KUBESPIN_IMAGE_PULL_POLICY",
    default=None,
    type=click.Choice(["Always", "IfNotPresent", "Never"]),
)
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    metavar="URL",
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option("--workers", default=32, show_default=True, help="Concurrent reconciles.")
@click.option(
    "--resync-seconds",
    default=600.0,
    show_default=True,
    help="Reconcile everything this often as a safety net (0: never).",
)
@click.option(
    "--inspect-images/--no-inspect-images",
    envvar="KUBESPIN_INSPECT_IMAGES",
    default=True,
    show_default=True,
    help="Read each SpinApp's image (its locked app, not its Wasm) to learn which components use ai_models, "
    "and schedule apps that need local inference onto nodes labelled kubespin.dev/llm-local=true.",
)
@click.option(
    "--llm-node-recheck-seconds",
    default=30.0,
    show_default=True,
    help="How often an app that needs a node able to infer locally checks again while none exists.",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def operator_command(
    kubeconfig: str | None,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    shim_image: str | None,
    image_pull_policy: str | None,
    liveness_endpoint: str | None,
    workers: int,
    resync_seconds: float,
    inspect_images: bool,
    llm_node_recheck_seconds: float,
    verbose: bool,
) -> None:
    """Run the kubespin operator (SpinApp, KeyValueStore, StoreLink) until interrupted."""
    from kubespin_operator.runner import DEFAULT_SHIM_IMAGE, OperatorOptions, run_operator

    if all_namespaces and namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    run_operator(
        OperatorOptions(
            kubeconfig=kubeconfig,
            namespaces=list(namespaces),
            shim_image=shim_image or DEFAULT_SHIM_IMAGE,
            image_pull_policy=image_pull_policy,
            liveness_endpoint=liveness_endpoint,
            workers=workers,
            resync_seconds=resync_seconds,
            inspect_images=inspect_images,
            llm_node_recheck_seconds=llm_node_recheck_seconds,
            verbose=verbose,
        )
    )


@click.command("crds")
@click.option(
    "--write",
    "write_root",
    type=click.Path(file_okay=False),
    default=None,
    metavar="REPO_ROOT",
    help="Write crds/ and charts/kubespin/crds/ under REPO_ROOT instead of printing.",
)
@click.option(
    "--check",
    "check_root",
    type=click.Path(file_okay=False),
    default=None,
    metavar="REPO_ROOT",
    help="Exit 1 if the committed CRD files under REPO_ROOT differ from the generated ones.",
)
def crds_command(write_root: str | None, check_root: str | None) -> None:
    """Print the kubespin.dev CRDs (generated from kubespin_operator.crd_schema)."""
    from kubespin_operator.crd_files import render_all_in_one, stale_crd_files, write_crds

    if write_root:
        for path in write_crds(Path(write_root)):
            click.echo(f"wrote {os.path.relpath(path)}")
    elif check_root:
        stale = stale_crd_files(Path(check_root))
        for path in stale:
            click.echo(f"stale: {path}", err=True)
        raise SystemExit(1 if stale else 0)
    else:
        click.echo(render_all_in_one(), nl=False)
