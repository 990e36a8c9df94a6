"""The threads that serve connections: a small pool sized to the CPUs, fed by one epoll.

Why not a thread per connection (what the shim did first): with eight busy keep-alive connections
on one CPU, eight threads took the GIL from each other, and each slept in ``recv`` between requests,
about one context switch per request and a p99 of ~45 ms against ~14 ms for ``wasmtime serve``
(docs/performance.md). Here a worker that finishes a request takes the next connection that has
bytes waiting, without sleeping, the way an event loop batches ready sockets, and only as many
workers run requests as there are CPUs (``target``).

How it stays live when a request holds its worker for long (an endless loop until its deadline, a
slow client, an outbound call, an inference): such a worker is marked *blocked*, stops counting
against the target, and a spare worker is released in its place (a parked one, or a new thread, up
to ``max_workers``), as Go's runtime hands the processor of a thread stuck in a system call to
another thread. Code that knows it is about to wait (outbound I/O, timers, inference) says so with
:func:`about_to_block`. For everything else a watch checks every ``MONITOR_S`` whether any worker is
waiting for work and whether any request was taken or finished since its last look; when neither,
the workers serving requests are marked blocked. When a blocked request ends, more workers run
than the target and the next one to finish a request parks.

The watch is a C thread (host/_native.c) that never takes the GIL and writes an eventfd on a stall;
without the extension, a Python thread does the same with the GIL, 50 times a second.

Connections are registered one-shot: one worker owns a connection from the moment epoll hands it
out until it is armed again, so its bytes are read and answered in order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("kubespin.shim.http")

MONITOR_S = 0.02  # how often the watch looks for a stalled pool
IDLE_TIMEOUT_S = 60.0  # an idle keep-alive connection is closed after this long
MAX_PARKED = 64  # spare workers kept parked; more exit
POLL_S = 1.0  # a worker waiting for work wakes this often to notice a stop
_ARMED = select.EPOLLIN | select.EPOLLONESHOT

S = TypeVar("S")


class Connection(Generic[S]):
    """An accepted socket and the server's state for it (its parser)."""

    __slots__ = ("addr", "fd", "last_active", "owned", "sock", "state")

    def __init__(self, sock: socket.socket, addr: tuple[object, ...], state: S) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.state = state
        self.owned = False  # a worker is serving it (it is not armed in epoll)
        self.last_active = time.monotonic()


class _Worker:
    """A worker thread's state, read by the pool under its lock."""

    __slots__ = ("blocked", "serving")

    def __init__(self) -> None:
        self.serving = False  # inside serve()
        self.blocked = False  # known to wait for long in this request: not counted as running


_current = threading.local()


def about_to_block() -> None:
    """Called by code that is about to wait for long (I/O, a timer, an inference) on a pool worker:
    the worker stops counting as running until its request ends, and a spare is released now rather
    than when the watch notices. A no-op on any other thread, and after the first call in a request."""
    worker: _Worker | None = getattr(_current, "worker", None)
    if worker is not None and worker.serving and not worker.blocked:
        _current.pool.mark_blocked([worker])


class _PythonWatch:
    """The watch without the C extension: counters under a lock, looked at from a Python thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0
        self._progress = 0
        self._seen = -1
        self._next_look = time.monotonic() + MONITOR_S
        self._stop = threading.Event()

    def waiting(self, delta: int) -> None:
        """A worker starts (+1) or stops (-1) waiting for work, or (0) ends a request; all but +1
        count as progress."""
        with self._lock:
            self._waiting += delta
            if delta <= 0:
                self._progress += 1

    def progress(self) -> None:
        self.waiting(0)

    def wait_for_stall(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self._stop.wait(max(0.0, min(end, self._next_look) - now)):
                return False
            now = time.monotonic()
            if now >= self._next_look:
                self._next_look = now + MONITOR_S
                with self._lock:
                    stalled = self._waiting <= 0 and self._progress == self._seen
                    self._seen = self._progress
                if stalled:
                    return True
            if now >= end:
                return False

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        pass


class _NativeWatch:
    """The watch as a C thread (host/_native.c): the same counters as atomics, the same test every
    MONITOR_S, without the GIL; a stall is written to an eventfd that :meth:`wait_for_stall` reads."""

    def __init__(self, mod: object) -> None:
        self._mod = mod
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._handle = mod.start_watch(self._fd, MONITOR_S)  # type: ignore[attr-defined]
        self.waiting = functools.partial(mod.watch_waiting, self._handle)  # type: ignore[attr-defined]
        self.progress = functools.partial(mod.watch_waiting, self._handle, 0)  # type: ignore[attr-defined]
        self._stopped = False

    def wait_for_stall(self, timeout: float) -> bool:
        if not self._poll.poll(timeout * 1000) or self._stopped:
            return False
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)
        return not self._stopped

    def stop(self) -> None:
        self._stopped = True
        self._mod.stop(self._handle)  # type: ignore[attr-defined]
        os.eventfd_write(self._fd, 1)  # wakes wait_for_stall

    def close(self) -> None:
        """After stop(), once nothing waits in wait_for_stall."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a Kubernetes CPU
    limit: cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded up.

    The affinity alone is every CPU of the node in a pod limited to one or two, and a pool that
    runs that many requests at once only makes them take the GIL from each other."""
    cpus = len(os.sched_getaffinity(0))
    quota = period = None
    with contextlib.suppress(OSError, ValueError):
        q, _, per = (cgroup_root / "cpu.max").read_text().partition(" ")
        if q != "max":
            quota, period = int(q), int(per)
    if quota is None:
        for v1 in ("cpu", "cpu,cpuacct"):
            with contextlib.suppress(OSError, ValueError):
                q1 = int((cgroup_root / v1 / "cpu.cfs_quota_us").read_text())
                if q1 > 0:
                    quota, period = q1, int((cgroup_root / v1 / "cpu.cfs_period_us").read_text())
                break
    if quota and period:
        cpus = min(cpus, max(1, -(-quota // period)))
    return cpus


def _new_watch() -> _PythonWatch | _NativeWatch:
    from kubespin_shim.host import native

    mod = native.module()
    return _PythonWatch() if mod is None else _NativeWatch(mod)


class WorkerPool(Generic[S]):
    """Serves connections with ``serve(conn) -> keep``, called when ``conn`` has bytes to read.

    ``serve`` runs on a worker that owns the connection; it returns True to keep the connection
    (it is armed again for its next bytes) or False to have it closed.
    """

    def __init__(
        self, serve: Callable[[Connection[S]], bool], *, target: int | None = None, max_workers: int = 512
    ) -> None:
        self._serve = serve
        self.target = max(1, target or usable_cpus())
        self.max_workers = max(self.target, max_workers)
        self.watch: _PythonWatch | _NativeWatch = _PythonWatch()  # the real one comes with start()
        self._ep = select.epoll()
        self._conns: dict[int, Connection[S]] = {}
        self._lock = threading.Lock()
        self._unparked = threading.Condition(self._lock)
        self._request_ended = threading.Condition(self._lock)
        self._stopping = False
        # under _lock:
        self._active = 0  # workers not parked: waiting for work or serving
        self._blocked = 0  # active workers marked blocked: the pool runs active - blocked at once
        self._workers: set[_Worker] = set()
        self._parked = 0
        self._releases = 0  # parked workers told to go on, not yet awake
        self._monitor = threading.Thread(target=self._monitor_loop, name="http-pool-monitor", daemon=True)

    # ---- the server's side

    def start(self) -> None:
        self.watch = _new_watch()
        with self._lock:
            for _ in range(self.target):
                self._active += 1
                _start_thread(self._work)
        self._monitor.start()

    def add(self, sock: socket.socket, addr: tuple[object, ...], state: S) -> None:
        conn = Connection(sock, addr, state)
        with self._lock:
            if self._stopping:
                _close(conn)
                return
            self._conns[conn.fd] = conn
        try:
            self._ep.register(conn.fd, _ARMED)
        except (OSError, ValueError):  # stopped meanwhile: stop() closed it, or the epoll is gone
            with self._lock:
                if self._conns.get(conn.fd) is conn:
                    del self._conns[conn.fd]
            _close(conn)

    def __len__(self) -> int:
        return len(self._conns)

    def stop(self) -> None:
        """Stop taking work: idle connections are closed and parked workers leave; a request being
        served runs to its end, then its connection is closed. Workers waiting for work leave at
        their next POLL_S wake-up."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._unparked.notify_all()
        self._close_idle(idle_since=None)
        self.watch.stop()
        if self._monitor.is_alive():
            self._monitor.join(5)
        self.watch.close()

    def wait_for_requests(self, timeout: float) -> int:
        """After stop(): wait up to ``timeout`` seconds for the requests being served to end. Returns
        how many are still running (0: all ended)."""
        with self._lock:
            self._request_ended.wait_for(lambda: self._serving_locked() == 0, timeout)
            return self._serving_locked()

    def _serving_locked(self) -> int:
        return sum(w.serving for w in self._workers)

    # ---- releasing and parking spare workers

    def mark_blocked(self, workers: list[_Worker] | None = None) -> None:
        """``workers`` (by default: every worker serving a request) wait for long: each stops
        counting as running, and a spare is released in its place."""
        with self._lock:
            for w in self._workers if workers is None else workers:
                if w.serving and not w.blocked:
                    w.blocked = True
                    self._blocked += 1
                    self._release_spare_locked()

    def _release_spare_locked(self) -> None:
        if self._stopping or self._active >= self.max_workers:
            return
        self._active += 1
        if self._parked:
            self._parked -= 1
            self._releases += 1
            self._unparked.notify()
        else:
            _start_thread(self._work)

    def _stay(self) -> bool:
        """After a request: park (or leave, past MAX_PARKED) when more workers run than the target.
        False: this worker leaves, and is no longer counted active."""
        if self._active - self._blocked <= self.target and not self._stopping:  # unlocked: the common case
            return True
        with self._lock:
            if self._stopping:
                self._active -= 1
                return False
            if self._active - self._blocked <= self.target:
                return True
            self._active -= 1
            if self._parked >= MAX_PARKED:
                return False
            self._parked += 1
            while self._releases == 0 and not self._stopping:
                self._unparked.wait()
            if self._releases == 0:  # stopping
                self._parked -= 1
                return False
            self._releases -= 1  # _release_spare_locked counted this worker active again
            return True

    # ---- a worker

    def _work(self) -> None:
        me = _Worker()
        _current.pool = self
        _current.worker = me
        with self._lock:
            self._workers.add(me)
        try:
            while True:
                if not self._serve_next(me):
                    with self._lock:
                        self._active -= 1
                    return
                if not self._stay():
                    return
        except Exception:  # a bug here: log it, and let the watch release a replacement
            log.exception("an HTTP worker failed")
            with self._lock:
                self._active -= 1
        finally:
            with self._lock:
                self._workers.discard(me)

    def _serve_next(self, me: _Worker) -> bool:
        """Wait up to POLL_S for a connection with bytes to read, and serve it. False: stopping."""
        if self._stopping:
            return False
        watch = self.watch
        watch.waiting(1)
        try:
            events = self._ep.poll(POLL_S, 1)
        finally:
            watch.waiting(-1)
        if not events:
            return True
        with self._lock:
            conn = self._conns.get(events[0][0])
            if conn is None or conn.owned:
                return True  # closed meanwhile, or a stale event for a reused descriptor
            conn.owned = True
        keep = False
        me.serving = True
        try:
            keep = self._serve(conn)
        except Exception:
            log.exception("connection from %s failed", conn.addr)
        watch.progress()
        with self._lock:
            me.serving = False
            if self._stopping:
                self._request_ended.notify_all()
            if me.blocked:
                me.blocked = False
                self._blocked -= 1
            if keep and not self._stopping:
                conn.last_active = time.monotonic()
                conn.owned = False
                try:
                    self._ep.modify(conn.fd, _ARMED)
                    return True
                except OSError:
                    conn.owned = True
            self._conns.pop(conn.fd, None)
        _forget(self._ep, conn)
        return True

    # ---- the monitor: releases a spare on a stall, closes idle connections

    def _monitor_loop(self) -> None:
        next_sweep = time.monotonic()
        while not self._stopping:
            try:
                if self.watch.wait_for_stall(max(0.0, next_sweep - time.monotonic())):
                    self.mark_blocked()  # no request ended or started for a while: those running are stuck
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + min(1.0, IDLE_TIMEOUT_S / 4)
                    self._close_idle(idle_since=now - IDLE_TIMEOUT_S)
            except Exception:  # a bug here must not end the watch for good
                log.exception("the HTTP worker pool's monitor failed; going on")
                time.sleep(MONITOR_S)

    def _close_idle(self, idle_since: float | None) -> None:
        """Close the connections no worker holds that were last active before ``idle_since`` (all
        of them for None)."""
        with self._lock:
            idle = [
                c
                for c in self._conns.values()
                if not c.owned and (idle_since is None or c.last_active < idle_since)
            ]
            for c in idle:
                c.owned = True
                del self._conns[c.fd]
        for c in idle:
            _forget(self._ep, c)


def _start_thread(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="http-worker", daemon=True).start()


def _forget(ep: select.epoll, conn: Connection[object]) -> None:
    with contextlib.suppress(OSError, ValueError):
        ep.unregister(conn.fd)
    _close(conn)


def _close(conn: Connection[object]) -> None:
    with contextlib.suppress(OSError):
        conn.sock.close()
