"""The worker pool behind the HTTP server (http/workers.py): a few workers serve many connections,
and a request that holds its worker for long never stops the others from being served.

Every test runs one worker (``concurrency=1``), the case where a stall would show, over real loopback
sockets, once with the C watch and once with the Python one (``each_host_path``). Waits are bounded
by TIMEOUT: they stop a hang, they do not measure anything.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubespin_shim.http import workers
from kubespin_shim.http.server import Exchange, HttpServer
from kubespin_shim.http.workers import about_to_block

TIMEOUT = 10.0


class Server:
    def __init__(self, handler: Callable[[Exchange], None], **kw: object) -> None:
        self.http = HttpServer("127.0.0.1", 0, handler, **kw)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        self.addr = self.http.address[:2]

    def get(self, path: str, sock: socket.socket | None = None) -> bytes:
        """One GET on ``sock`` (kept open) or on a new connection; the response body."""
        s = sock or socket.create_connection(self.addr, timeout=TIMEOUT)
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += _recv(s)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(v for n, _, v in (ln.partition(b": ") for ln in head.split(b"\r\n"))
                              if n.lower() == b"content-length"))
            while len(body) < length:
                body += _recv(s)
            return body
        finally:
            if sock is None:
                s.close()

    def stop(self) -> None:
        self.http.shutdown()
        self.thread.join(TIMEOUT)


def _recv(s: socket.socket) -> bytes:
    chunk = s.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk


def _answer(ex: Exchange, body: bytes) -> None:
    ex.respond_simple(200, body)


@pytest.fixture
def no_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch never fires within a test: what stays live does so without it."""
    monkeypatch.setattr(workers, "MONITOR_S", 3600.0)


@pytest.fixture
def hold() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()  # never leave a worker stuck behind a failed test


def _holding_handler(release: threading.Event, entered: threading.Event, *, hint: bool) -> Callable[[Exchange], None]:
    def handler(ex: Exchange) -> None:
        if ex.request.target == "/hold":
            entered.set()
            if hint:
                about_to_block()
            release.wait(TIMEOUT)  # a worker stuck like an endless loop, or a slow outbound call
        _answer(ex, ex.request.target.encode())

    return handler


def _start_hold(srv: Server) -> threading.Thread:
    t = threading.Thread(target=srv.get, args=("/hold",), daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("hint", [False, True], ids=["noticed-by-the-watch", "said-by-about_to_block"])
def test_a_request_that_holds_its_worker_does_not_stop_the_others(
    each_host_path: str, hold: threading.Event, hint: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a hint only the watch can free the place; with one, the watch is off, so only
    # about_to_block() can.
    if hint:
        monkeypatch.setattr(workers, "MONITOR_S", 3600.0)
    entered = threading.Event()
    srv = Server(_holding_handler(hold, entered, hint=hint), concurrency=1)
    try:
        held = _start_hold(srv)
        assert entered.wait(TIMEOUT)
        assert srv.get("/other") == b"/other"
        assert held.is_alive()  # answered while the long request still held its worker
    finally:
        hold.set()
        srv.stop()


def test_the_spare_parks_again_when_the_long_request_ends(
    each_host_path: str, hold: threading.Event, no_watch: None
) -> None:
    # about_to_block() releases exactly one spare; the watch is off so that a slow machine's pauses
    # cannot release more and change the counts below
    entered = threading.Event()
    srv = Server(_holding_handler(hold, entered, hint=True), concurrency=1)
    pool = srv.http._pool
    try:
        held = _start_hold(srv)
        assert entered.wait(TIMEOUT)
        assert srv.get("/other") == b"/other"
        assert pool._active == 2  # the stuck worker and the released spare
        hold.set()
        held.join(TIMEOUT)
        with socket.create_connection(srv.addr, timeout=TIMEOUT) as s:
            deadline = time.monotonic() + TIMEOUT
            while pool._active > 1 and time.monotonic() < deadline:
                assert srv.get("/after", sock=s) == b"/after"  # a worker parks after its next request
        assert pool._active == 1
        assert pool._parked == 1
    finally:
        srv.stop()


def test_a_client_that_sends_half_a_head_holds_no_worker(each_host_path: str, no_watch: None) -> None:
    srv = Server(lambda ex: _answer(ex, b"ok"), concurrency=1)
    try:
        with socket.create_connection(srv.addr, timeout=TIMEOUT) as slow:
            slow.sendall(b"GET /slow HTTP/1.1\r\nHo")  # and nothing more, for now
            assert srv.get("/fast") == b"ok"
            slow.sendall(b"st: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += _recv(slow)
            assert data.startswith(b"HTTP/1.1 200")
    finally:
        srv.stop()


def test_one_worker_serves_many_keep_alive_connections_in_turn(each_host_path: str, no_watch: None) -> None:
    srv = Server(lambda ex: _answer(ex, ex.request.target.encode()), concurrency=1)
    socks = [socket.create_connection(srv.addr, timeout=TIMEOUT) for _ in range(32)]
    try:
        for round_ in range(3):
            for i, s in enumerate(socks):
                s.sendall(f"GET /{round_}/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            for i, s in enumerate(socks):  # all 32 were sent before any answer was read
                data = b""
                while not data.endswith(f"/{round_}/{i}".encode()):
                    data += _recv(s)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_a_handler_that_raises_closes_its_connection_and_the_pool_serves_on(each_host_path: str) -> None:
    def handler(ex: Exchange) -> None:
        if ex.request.target == "/bug":
            raise RuntimeError("a bug in the handler")
        _answer(ex, b"fine")

    srv = Server(handler, concurrency=1)
    try:
        with socket.create_connection(srv.addr, timeout=TIMEOUT) as s:
            s.sendall(b"GET /bug HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536) == b""  # closed, nothing half-written
        assert srv.get("/next") == b"fine"
    finally:
        srv.stop()


def test_no_more_workers_than_the_limit(each_host_path: str, hold: threading.Event) -> None:
    entered = threading.Event()
    srv = Server(_holding_handler(hold, entered, hint=True), concurrency=1, max_connections=2)
    pool = srv.http._pool
    try:
        held = [_start_hold(srv), _start_hold(srv)]
        deadline = time.monotonic() + TIMEOUT
        while pool._active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time for the watch to try (and be refused) a third worker
        assert pool._active == 2
        hold.set()
        for t in held:
            t.join(TIMEOUT)
            assert not t.is_alive()
    finally:
        srv.stop()


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _pool_threads() -> int:
    return sum(t.name.startswith("http-") for t in threading.enumerate())


def test_stopping_closes_idle_connections_and_ends_every_thread(each_host_path: str) -> None:
    deadline = time.monotonic() + workers.POLL_S + TIMEOUT
    while _pool_threads() and time.monotonic() < deadline:
        time.sleep(0.05)  # earlier tests' workers leave at their next poll wake-up
    before = _threads()
    srv = Server(lambda ex: _answer(ex, b"ok"), concurrency=2)
    idle = socket.create_connection(srv.addr, timeout=TIMEOUT)
    try:
        assert srv.get("/", sock=idle) == b"ok"
        srv.stop()
        assert idle.recv(1) == b""  # the server closed the idle keep-alive connection
        deadline = time.monotonic() + workers.POLL_S + TIMEOUT
        while _threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _threads() == before  # workers, the monitor and the C watch (no Python name) all ended
    finally:
        idle.close()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, None),  # no cgroup limit: the affinity
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),  # a limit of 1.5 CPUs: two requests at once
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_usable_cpus_follows_a_kubernetes_cpu_limit(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert workers.usable_cpus(tmp_path) == (affinity if expected is None else min(affinity, expected))


def test_shutdown_lets_the_requests_in_flight_finish(each_host_path: str, hold: threading.Event) -> None:
    entered = threading.Event()
    srv = Server(_holding_handler(hold, entered, hint=False), concurrency=1)
    answers: list[bytes] = []
    held = threading.Thread(target=lambda: answers.append(srv.get("/hold")), daemon=True)
    held.start()
    assert entered.wait(TIMEOUT)
    srv.http.shutdown()
    with pytest.raises(OSError):
        srv.get("/new")  # no new connections once stopping
    assert srv.http.wait_for_requests(0.2) == 1  # still running: reported, not cut off
    hold.set()
    assert srv.http.wait_for_requests(TIMEOUT) == 0
    held.join(TIMEOUT)
    assert answers == [b"/hold"]  # the request in flight got its whole answer
    srv.thread.join(TIMEOUT)
