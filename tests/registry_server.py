"""Test helper: a real OCI registry server on a free 127.0.0.1 port (import from tests.registry_server).

Two servers, built by scripts/build-registry from their Go modules:

* ``ggcr``: go-containerregistry's in-memory registry; starts in milliseconds, logs one line per
  request (used to count what a pull sends), no authentication.
* ``distribution``: the CNCF reference registry with filesystem storage under the test's tmp dir
  (so a test can tamper with a stored blob) and optional htpasswd users (real Basic auth).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-registry"
_GGCR_REQUEST = re.compile(r"^\S+ \S+ (GET|HEAD|PUT|POST|PATCH|DELETE) (/v2/\S*)", re.M)


def registry_binary(kind: str) -> Path:
    """The built server binary; fails (not skips) with the command to build it when it is missing."""
    path = Path(subprocess.run([str(BUILD_SCRIPT), "--print-path", kind], check=True, capture_output=True,
                               text=True).stdout.strip())
    if not path.is_file():
        pytest.fail(f"registry server {kind!r} is not built ({path}): run scripts/build-registry", pytrace=False)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RegistryServer:
    kind: str
    address: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log_path: Path
    storage: Path | None  # distribution's filesystem root

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.address}/{repository}:{tag}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far (ggcr logs each one)."""
        assert self.kind == "ggcr", "only the ggcr server logs every request"
        return _GGCR_REQUEST.findall(self.log())

    def blob_data_file(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        assert self.storage is not None, "only the distribution server stores blobs on disk"
        hex_digest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def start_registry(tmp_path: Path, kind: str = "ggcr", users: dict[str, str] | None = None) -> Iterator[RegistryServer]:
    """Run a registry server until the block ends. ``users`` (distribution only) turns on htpasswd auth."""
    binary = registry_binary(kind)
    work = tmp_path / f"registry-{kind}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    log_path = work / "server.log"
    storage = None
    if kind == "ggcr":
        assert not users, "go-containerregistry's registry has no authentication; use kind='distribution'"
        cmd = [str(binary), "-port", "0"]
    else:
        storage = work / "data"
        port = _free_port()
        config = work / "config.yml"
        auth = ""
        if users:
            import bcrypt

            htpasswd = work / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                for user, password in users.items()
            ))
            auth = f"auth: {{htpasswd: {{realm: kubespin-test, path: {htpasswd}}}}}\n"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}, secret: kubespin-test-secret}}\n" + auth
        )
        cmd = [str(binary), "serve", str(config)]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 30
        address = None
        while address is None:
            if proc.poll() is not None:
                raise AssertionError(f"registry {kind} exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"registry {kind} not ready after 30 s:\n{log_path.read_text()}")
            if kind == "ggcr":
                found = re.search(r"serving on port (\d+)", log_path.read_text())
                address = f"127.0.0.1:{found.group(1)}" if found else None
            else:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                        address = f"127.0.0.1:{port}"
            if address is None:
                time.sleep(0.05)
        server = RegistryServer(kind, address, proc, log_path, storage)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
