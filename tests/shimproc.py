"""Test helpers: run `kubespin up` as a real process and talk HTTP to it (import from tests.shimproc)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
KUBESPIN = [sys.executable, "-m", "kubespin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def built_app(name: str) -> Path:
    """The directory of a test app whose wasm has been built; fails (not skips) when it has not."""
    app = APPS / name
    manifest = app / "spin.toml"
    assert manifest.is_file(), f"no test app {name!r} at {app}"
    if not any(app.rglob("*.wasm")):
        pytest.fail(f"test app {name} is not built: run scripts/build-test-apps", pytrace=False)
    return app


@dataclass
class Shim:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the shim has logged ``text``; fail the test with the log if it does not in time."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not logged in {timeout}s:\n{self.log()}"
            time.sleep(0.02)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]


def write_atomically(path: Path, text: str) -> None:
    """What `kubectl cp`, editors and config tools do: write a temp file, then rename over."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def run_server(
    cmd: Sequence[str],
    *,
    name: str,
    health_url: str,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
    ready_timeout: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a kubespin server process, wait until ``health_url`` answers 200, stop it afterwards.

    A process that exits or is not ready in time fails the test with its log.
    """
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(list(cmd), stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} not ready after {ready_timeout}s:\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def run_shim(
    app: Path | str,
    tmp_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
) -> Iterator[Shim]:
    port = free_port()
    log_path = tmp_path / f"shim-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_")}
    full_env.update(env or {})
    url = f"http://127.0.0.1:{port}"
    cmd = [*KUBESPIN, "up", "-f", str(app), "--listen", f"127.0.0.1:{port}", *args]
    with run_server(
        cmd, name="kubespin up", health_url=f"{url}/.well-known/spin/health", log_path=log_path,
        env=full_env, cwd=tmp_path, ready_timeout=ready_timeout,
    ) as proc:
        yield Shim(proc, url, log_path)


def run_shim_expect_failure(
    app: Path | str,
    tmp_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `kubespin up` expecting it to refuse to start; returns its exit code and output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_")}
    full_env.update(env or {})
    cmd = [*KUBESPIN, "up", "-f", str(app), "--listen", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=tmp_path, timeout=timeout)


def copy_app(name: str, dest: Path) -> Path:
    src = built_app(name)
    out = dest / name
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    return out
