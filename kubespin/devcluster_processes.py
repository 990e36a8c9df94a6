"""Background processes of a dev cluster: start with a log and a pid file, find them again, stop them.

Why pid files and psutil: `kubespin devcluster up` exits and leaves the control plane running, so
`down` (another process, maybe much later) must find the processes from files alone. A pid can be
reused by an unrelated process after a reboot or a crash, so a pid only counts as ours when the
process runs the expected binary with the cluster directory in its arguments. psutil does the
cross-platform part (cmdline, waiting for processes that are not our children, zombies).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessFiles:
    """Where one component's pid and log live."""

    name: str
    pid_file: Path
    log_file: Path


def start_background(
    binary: Path, args: Sequence[str], files: ProcessFiles, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `binary` detached from our terminal (own session), output appended to its log file.

    The own session keeps Ctrl-C in the shell that ran `up` from killing the cluster, and lets the
    processes outlive the `kubespin` command that started them.
    """
    files.log_file.parent.mkdir(parents=True, exist_ok=True)
    files.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with files.log_file.open("ab") as log:
        log.write(
            f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {binary} {' '.join(args)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    files.pid_file.write_text(f"{proc.pid}\n")
    return proc


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def find_process(files: ProcessFiles, binary_name: str, marker: str) -> psutil.Process | None:
    """The live process recorded in `files.pid_file`, if it is still the one we started.

    `marker` is a string that must occur in its command line (the cluster directory), so that a
    recycled pid, or the same binary run for another cluster, is never taken for ours.
    """
    pid = read_pid(files.pid_file)
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if not cmdline or Path(cmdline[0]).name != binary_name:
        return None
    if not any(marker in arg for arg in cmdline[1:]):
        return None
    return proc


def _gone(proc: psutil.Process) -> bool:
    """True once `proc` has exited. A zombie counts as exited: its parent (init, or whoever adopted
    it after `kubespin devcluster up` returned) may reap it late or never, but it holds no port,
    file or memory any more."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process is gone; return those still alive at the deadline.

    psutil.wait_procs is not enough: for a process that is not our child it polls pid existence,
    which stays true for an unreaped zombie. Our own children are reaped here (Popen would do it
    later too, but a zombie child would otherwise linger until then).
    """
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        for proc in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, os.WNOHANG)
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def stop_processes(procs: Sequence[psutil.Process], grace_s: float) -> list[psutil.Process]:
    """SIGTERM `procs`, wait up to `grace_s`, SIGKILL what is left; return the ones that needed SIGKILL."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    alive = _wait_gone(procs, grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if alive:
        still = _wait_gone(alive, 5)
        if still:
            pids = ", ".join(str(p.pid) for p in still)
            raise ProcessLingersError(f"processes {pids} survived SIGKILL; check them with `ps -p {pids}`")
    return alive


class ProcessLingersError(RuntimeError):
    """A process did not exit even after SIGKILL (uninterruptible sleep, or another user's process)."""


def log_tail(log_file: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages: what a person needs to see why a start failed."""
    try:
        with log_file.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log_file})"
    return "\n".join(text.splitlines()[-lines:])
