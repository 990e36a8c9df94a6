"""wasi:cli — environment, exit, stdio and terminals.

Guest stdout/stderr go to the shim's log, one record per line, tagged with the component id, as
Spin prefixes component output. The environment is the component's ``environment`` table only:
the host's own environment never leaks into a guest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import HostResource, HostTrap, Ok
from kubespin_shim.wasi.io import InputStream, OutputStream

guest_log = logging.getLogger("kubespin.guest")

ENV_KEY = "cli.environment"


class LineLogger:
    """Buffers guest bytes and emits complete lines to the log (rest on flush/close)."""

    def __init__(self, component_id: str, stream: str) -> None:
        self.component_id = component_id
        self.level = logging.INFO if stream == "stdout" else logging.WARNING
        self.stream = stream
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 64 * 1024 and b"\n" not in self.buf:
            self.flush()
            return
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            self._emit(bytes(self.buf[:nl]))
            del self.buf[: nl + 1]

    def flush(self) -> None:
        if self.buf:
            self._emit(bytes(self.buf))
            self.buf.clear()

    def _emit(self, line: bytes) -> None:
        guest_log.log(
            self.level, "[%s] %s", self.component_id, line.decode("utf-8", "replace"),
            extra={"component": self.component_id, "stream": self.stream},
        )


class StdioState:
    """Per-request stdout/stderr line buffers, flushed when the request ends."""

    def __init__(self, component_id: str) -> None:
        self.out = LineLogger(component_id, "stdout")
        self.err = LineLogger(component_id, "stderr")

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()


def stdio(ctx: CallContext) -> StdioState:
    st = ctx.extras.get("stdio")
    if st is None:
        st = ctx.extras["stdio"] = StdioState(ctx.component_id)
    return st


class TerminalInput(HostResource):
    pass


class TerminalOutput(HostResource):
    pass


environment = Interface("wasi:cli/environment")


@environment.func("get-environment")
def get_environment(ctx: CallContext) -> list[tuple[str, str]]:
    env: Mapping[str, str] = ctx.extras.get(ENV_KEY, {})
    return list(env.items())


@environment.func("get-arguments")
def get_arguments(ctx: CallContext) -> list[str]:
    return []


@environment.func("initial-cwd")
def initial_cwd(ctx: CallContext) -> str | None:
    return "/"


exit_iface = Interface("wasi:cli/exit")


class GuestExit(HostTrap):
    def __init__(self, ok: bool) -> None:
        super().__init__(f"guest called exit ({'success' if ok else 'failure'})")
        self.ok = ok


@exit_iface.func("exit")
def exit_(ctx: CallContext, status: object) -> None:
    raise GuestExit(isinstance(status, Ok))


stdin_iface = Interface("wasi:cli/stdin")
stdin_iface.func("get-stdin")(lambda ctx: InputStream.of_bytes(b""))
stdout_iface = Interface("wasi:cli/stdout")
stdout_iface.func("get-stdout")(lambda ctx: OutputStream(stdio(ctx).out.write, stdio(ctx).out.flush))
stderr_iface = Interface("wasi:cli/stderr")
stderr_iface.func("get-stderr")(lambda ctx: OutputStream(stdio(ctx).err.write, stdio(ctx).err.flush))

terminal_input = Interface("wasi:cli/terminal-input")
terminal_input.resource("terminal-input", TerminalInput)
terminal_output = Interface("wasi:cli/terminal-output")
terminal_output.resource("terminal-output", TerminalOutput)
INTERFACES = [environment, exit_iface, stdin_iface, stdout_iface, stderr_iface, terminal_input, terminal_output]
for _name in ("stdin", "stdout", "stderr"):
    _t = Interface(f"wasi:cli/terminal-{_name}")
    _t.func(f"get-terminal-{_name}")(lambda ctx: None)
    INTERFACES.append(_t)
