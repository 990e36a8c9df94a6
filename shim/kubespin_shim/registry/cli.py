"""``kubespin registry push|pull``: Spin apps to and from OCI registries (``spin registry`` for kubespin)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

_AUTH_HELP = (
    "Docker config.json or Kubernetes .dockerconfigjson to take credentials from (repeatable); "
    "also KUBESPIN_REGISTRY_AUTH, then $DOCKER_CONFIG/config.json or ~/.docker/config.json."
)
_INSECURE_HELP = (
    "Talk plain HTTP to this registry. Loopback registries (127.0.0.1, localhost) always use plain "
    "HTTP; others only with this flag or when listed in KUBESPIN_INSECURE_REGISTRIES."
)


def _fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


@click.group("registry")
def registry() -> None:
    """Push Spin apps to OCI registries and pull them (the format of `spin registry push`)."""


@registry.command("push")
@click.argument("app", type=click.Path(exists=True, path_type=Path))
@click.argument("reference")
@click.option("--insecure", is_flag=True, help=_INSECURE_HELP)
@click.option("--registry-auth", "auth_files", multiple=True, type=click.Path(dir_okay=False), help=_AUTH_HELP)
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Manifest annotation (repeatable); overrides the ones inferred from the app.")
@click.option("--log-level", envvar="KUBESPIN_LOG_LEVEL", default="warning", show_default=True)
def push_command(
    app: Path, reference: str, insecure: bool, auth_files: tuple[str, ...], annotations: tuple[str, ...], log_level: str
) -> None:
    """Push the Spin app APP (a spin.toml or its directory) to REFERENCE (host[:port]/repo[:tag]).

    APP may also be an OCI image layout directory holding one image, which is copied byte for byte.
    Prints the pushed reference with its digest on stdout; run it with `kubespin up -f`.
    """
    from kubespin_shim.cli import configure_logging
    from kubespin_shim.errors import ShimError
    from kubespin_shim.registry.push import push_app, push_layout

    configure_logging(log_level)
    parsed = {}
    for item in annotations:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--annotation")
        parsed[key] = value
    is_layout = (app / "oci-layout").is_file() and (app / "index.json").is_file()
    if is_layout and parsed:
        raise click.BadParameter("an OCI layout is pushed as is; it takes no annotations", param_hint="--annotation")
    try:
        if is_layout:
            result = push_layout(app, reference, insecure=insecure, auth_files=auth_files)
        else:
            result = push_app(app, reference, insecure=insecure, auth_files=auth_files, annotations=parsed)
    except ShimError as e:
        raise _fail(e) from None
    click.echo(
        f"Pushed {result.layers} layers in {result.seconds:.2f} s "
        f"({result.blobs_uploaded} uploaded, {result.bytes_uploaded} bytes; {result.blobs_skipped} already there)",
        err=True,
    )
    click.echo(str(result.reference))


@registry.command("pull")
@click.argument("reference")
@click.option("--insecure", is_flag=True, help=_INSECURE_HELP)
@click.option("--registry-auth", "auth_files", multiple=True, type=click.Path(dir_okay=False), help=_AUTH_HELP)
@click.option("--pull-policy", type=click.Choice(["Always", "IfNotPresent", "Never"], case_sensitive=False),
              default=None, help="As kubelet's imagePullPolicy (default: Always for :latest, else IfNotPresent; "
              "env KUBESPIN_PULL_POLICY).")
@click.option("--log-level", envvar="KUBESPIN_LOG_LEVEL", default="warning", show_default=True)
def pull_command(
    reference: str, insecure: bool, auth_files: tuple[str, ...], pull_policy: str | None, log_level: str
) -> None:
    """Pull the Spin app at REFERENCE into the local cache, verified by digest.

    Prints the digest-pinned reference on stdout and the cached OCI layout's path on stderr;
    `kubespin up -f REFERENCE` does the same pull before serving.
    """
    from kubespin_shim.cli import configure_logging
    from kubespin_shim.errors import ShimError
    from kubespin_shim.registry.pull import pull_app

    configure_logging(log_level)
    try:
        result = pull_app(reference, insecure=insecure, auth_files=auth_files, policy=pull_policy)
    except ShimError as e:
        raise _fail(e) from None
    how = "from the cache, no network" if result.requests == 0 else f"{result.requests} registry requests"
    click.echo(
        f"Pulled in {result.seconds:.2f} s ({how}, {result.bytes_downloaded} bytes downloaded) "
        f"into {result.layout_dir}",
        err=True,
    )
    click.echo(str(result.reference))
    sys.stdout.flush()
