"""The `kubespin` entry point resolves every command, and `kubespin up` loads only the shim."""

from __future__ import annotations

import subprocess
import sys

from kubespin.cli import CLOUD_COMMAND_NAMES, LAZY_COMMANDS, cli


def test_every_command_resolves() -> None:
    for name in [*LAZY_COMMANDS, *CLOUD_COMMAND_NAMES]:
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None, name
        assert command.name == name


def test_up_does_not_import_the_operator_or_dev_tools() -> None:
    code = (
        "import sys; from kubespin.cli import cli; cli.get_command(None, 'up');"
        "heavy = [m for m in ('kubespin_operator', 'kopf', 'lightkube', 'kubespin.devcluster', 'kubespin.node')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
