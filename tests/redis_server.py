"""A real ``redis-server`` for tests: free 127.0.0.1 port, temp dir, no persistence, stoppable.

Debian's ``redis-server`` is installed by ``scripts/setup``. ``stop()`` and ``start()`` can be
called again on the same port, which is how tests take a backend down and bring it back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


class RedisServerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``with RedisServer() as r: r.url(1)`` → ``redis://127.0.0.1:<port>/1``."""

    def __init__(self, port: int | None = None, binary: str = "redis-server") -> None:
        exe = shutil.which(binary)
        if exe is None:
            raise RedisServerError(f"{binary} not found on PATH: run scripts/setup (Debian package redis-server)")
        self.exe = exe
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kubespin-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--databases", "16"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RedisServerError(f"redis-server not ready on port {self.port} after {timeout}s: {self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        p = self.dir / "redis.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()
