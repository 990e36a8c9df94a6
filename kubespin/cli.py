"""The `kubespin` command line: one entry point, each subcommand loads only what it needs.

The shim (``kubespin up``) and the operator (``kubespin operator``) never import each other. Commands
are resolved lazily (click's documented lazy-group pattern): ``kubespin up`` in a pod imports the
shim only, not the operator, the dev cluster or the CLI clients, which keeps its cold start short.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute" of the click command that implements it
LAZY_COMMANDS: dict[str, str] = {
    "up": "kubespin_shim.cli:up",
    "registry": "kubespin_shim.registry.cli:registry",
    "llm-serve": "kubespin_shim.llm.serve_cli:llm_serve",
    "llm-detect": "kubespin_shim.llm.serve_cli:llm_detect",
    "devcluster": "kubespin.devcluster:devcluster",
    "operator": "kubespin_operator.cli:operator_command",
    "crds": "kubespin_operator.cli:crds_command",
    "node": "kubespin.node.cli:node_command",
    "node-probe": "kubespin.node_probe:node_probe_command",
}
# the links-and-labels commands (kv, link, unlink, apps) come as a list from one module
CLOUD_COMMANDS_MODULE = "kubespin.cloud_cli.commands"
CLOUD_COMMAND_NAMES = ("kv", "link", "unlink", "apps")


def _load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS, *CLOUD_COMMAND_NAMES])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return _load(LAZY_COMMANDS[cmd_name])
        if cmd_name in CLOUD_COMMAND_NAMES:
            commands: Any = importlib.import_module(CLOUD_COMMANDS_MODULE).COMMANDS
            return next((c for c in commands if c.name == cmd_name), None)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kubespin")
def cli() -> None:
    """Run Spin WebAssembly apps on Kubernetes."""


def main() -> None:
    cli()


def kubectl_plugin() -> None:
    """`kubectl spin ...`: the links-and-labels commands (and the rest) as a kubectl plugin."""
    cli(prog_name="kubectl spin")
