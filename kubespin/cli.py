"""The `kubespin` command line: one entry point, each subcommand loads only what it needs.

The shim (``kubespin up``) and the operator (``kubespin operator``) never import each other;
this module dispatches to them lazily so that a shim pod does not pay for the operator's imports.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kubespin")
def cli() -> None:
    """Run Spin WebAssembly apps on Kubernetes."""


def _register() -> None:
    from kubespin_shim.cli import up

    cli.add_command(up)
    from kubespin_shim.registry.cli import registry

    cli.add_command(registry)
    from kubespin_shim.llm.serve_cli import llm_detect, llm_serve

    cli.add_command(llm_serve)
    cli.add_command(llm_detect)
    from kubespin.devcluster import devcluster

    cli.add_command(devcluster)
    from kubespin_operator.cli import crds_command, operator_command

    cli.add_command(operator_command)
    cli.add_command(crds_command)
    from kubespin.node.cli import node_command

    cli.add_command(node_command)
    from kubespin.cloud_cli.commands import COMMANDS as CLOUD_COMMANDS

    for command in CLOUD_COMMANDS:
        cli.add_command(command)


def main() -> None:
    _register()
    cli()


def kubectl_plugin() -> None:
    main()
