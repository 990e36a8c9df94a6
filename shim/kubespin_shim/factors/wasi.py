"""The WASI factor: environment and read-only files per component, plus all WASI p2 interfaces."""

from __future__ import annotations

from kubespin_shim.host.binding import CallContext
from kubespin_shim.manifest import ComponentSpec
from kubespin_shim.wasi import cli, clocks, filesystem, io, sockets
from kubespin_shim.wasi.filesystem import FileTree


class WasiFactor:
    name = "wasi"
    interfaces = [*io.INTERFACES, *cli.INTERFACES, *clocks.INTERFACES, *filesystem.INTERFACES, *sockets.INTERFACES]

    def __init__(self) -> None:
        self._trees: dict[str, FileTree] = {}

    def configure(self, component: ComponentSpec) -> None:
        """Walk the component's file mounts once, at startup."""
        self._trees[component.id] = FileTree.from_mounts(
            (m.guest_path, m.host_path, m.is_dir) for m in component.files
        )

    def prepare(self, ctx: CallContext, component: ComponentSpec) -> None:
        ctx.extras[cli.ENV_KEY] = component.environment
        ctx.extras[filesystem.FILES_KEY] = self._trees.get(component.id)
