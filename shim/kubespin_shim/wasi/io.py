"""wasi:io (error, poll, streams) in Python.

Everything that carries a wasi:io resource must live on the Python side (wasmtime-py cannot hand
its own wasi-http resources to an exported handler), so streams here are small Python objects over
a *source* (``read(n) -> bytes``, ``b""`` at end) or a *sink* (``write(bytes)``). All our sources and
sinks block, so pollables for them are always ready; clock pollables carry a deadline.

Some readiness comes from other threads (an outbound HTTP response arriving on a worker thread): such
pollables carry a ``check`` (or a ``threading.Event``), and ``poll`` sleeps on one process-wide
condition that the producing thread wakes with :func:`notify_pollers` after it changed the state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kubespin_shim.host.binding import CallContext, Interface
from kubespin_shim.host.values import Err, HostResource, HostTrap, Ok, Variant
from kubespin_shim.http.workers import about_to_block

CLOSED = Err(Variant("closed"))
MAX_CHUNK = 1 << 20  # a guest may ask for any length; we never hand out more than this at once
WRITE_BUDGET = 1 << 20  # what check-write advertises


class IoError(HostResource):
    def __init__(self, message: str) -> None:
        self.message = message

    def to_debug_string(self) -> str:
        return self.message


def failed(message: str) -> Err:
    return Err(Variant("last-operation-failed", IoError(message)))


_wakeup = threading.Condition()
# A check whose producer forgot notify_pollers() (or a plain threading.Event) is still seen this late.
_RECHECK_S = 0.05


def notify_pollers() -> None:
    """Wake threads blocked in ``poll``; call it *after* changing what a pollable's check reads,
    and never while holding a lock that a check takes (checks run under the wake-up lock)."""
    with _wakeup:
        _wakeup.notify_all()


class Pollable(HostResource):
    """Ready now; or at ``deadline_ns`` on the monotonic clock; or once ``check()`` (or ``event``) is true.

    With a check and a deadline, whichever comes first makes it ready.
    """

    def __init__(
        self,
        deadline_ns: int | None = None,
        *,
        check: Callable[[], bool] | None = None,
        event: threading.Event | None = None,
    ) -> None:
        self.deadline_ns = deadline_ns
        self.check = event.is_set if event is not None else check

    def ready(self) -> bool:
        if self.check is None:
            return self.deadline_ns is None or time.monotonic_ns() >= self.deadline_ns
        return self.check() or (self.deadline_ns is not None and time.monotonic_ns() >= self.deadline_ns)

    def block(self) -> None:
        if self.check is None:
            if self.deadline_ns is not None:
                delay = (self.deadline_ns - time.monotonic_ns()) / 1e9
                if delay > 0:
                    about_to_block()
                    time.sleep(delay)
            return
        _wait_any([self])


def _wait_any(pollables: list[Pollable]) -> list[int]:
    hinted = False
    while True:
        ready = [i for i, p in enumerate(pollables) if p.ready()]
        if ready:
            return ready
        if not hinted:
            about_to_block()  # an HTTP worker waiting here lets another take new requests
            hinted = True
        deadlines = [p.deadline_ns for p in pollables if p.deadline_ns is not None]
        timeout = (min(deadlines) - time.monotonic_ns()) / 1e9 if deadlines else None
        if all(p.check is None for p in pollables):
            assert timeout is not None  # a pollable without check or deadline is always ready
            if timeout > 0:
                time.sleep(timeout)
            continue
        wait = _RECHECK_S if timeout is None else max(0.0, min(timeout, _RECHECK_S))
        with _wakeup:
            if not any(p.check is not None and p.check() for p in pollables):
                _wakeup.wait(wait)


def poll(ctx: CallContext, pollables: list[Pollable]) -> list[int]:
    if not pollables:
        raise HostTrap("poll called with an empty list")
    return _wait_any(pollables)


class InputStream(HostResource):
    """A blocking byte source. ``source(n)`` returns up to n bytes, ``b""`` at end of stream."""

    def __init__(self, source: Callable[[int], bytes]) -> None:
        self._source = source
        self._eof = False

    @classmethod
    def of_bytes(cls, data: bytes) -> InputStream:
        view = memoryview(data)
        pos = 0

        def source(n: int) -> bytes:
            nonlocal pos
            chunk = bytes(view[pos : pos + n])
            pos += len(chunk)
            return chunk

        return cls(source)

    def read(self, n: int) -> Ok | Err:
        if self._eof:
            return CLOSED
        if n == 0:
            return Ok(b"")
        try:
            data = self._source(min(n, MAX_CHUNK))
        except OSError as e:
            return failed(str(e))
        if not data:
            self._eof = True
            return CLOSED
        return Ok(data)

    blocking_read = read

    def skip(self, n: int) -> Ok | Err:
        r = self.read(n)
        if isinstance(r, Ok):
            return Ok(len(r.value))
        return r

    blocking_skip = skip

    def subscribe(self) -> Pollable:
        return Pollable()


class OutputStream(HostResource):
    """A blocking byte sink. ``sink(data)`` writes everything or raises OSError."""

    def __init__(self, sink: Callable[[bytes], None], flush: Callable[[], None] | None = None) -> None:
        self._sink = sink
        self._flush = flush
        self.closed = False

    def check_write(self) -> Ok | Err:
        if self.closed:
            return CLOSED
        return Ok(WRITE_BUDGET)

    def write(self, data: bytes) -> Ok | Err:
        if self.closed:
            return CLOSED
        try:
            self._sink(data)
        except BrokenPipeError:
            self.closed = True
            return CLOSED
        except OSError as e:
            return failed(str(e))
        return Ok(None)

    def blocking_write_and_flush(self, data: bytes) -> Ok | Err:
        r = self.write(data)
        if isinstance(r, Ok):
            return self.flush()
        return r

    def flush(self) -> Ok | Err:
        if self.closed:
            return CLOSED
        if self._flush is not None:
            try:
                self._flush()
            except OSError as e:
                return failed(str(e))
        return Ok(None)

    blocking_flush = flush

    def subscribe(self) -> Pollable:
        return Pollable()

    def write_zeroes(self, n: int) -> Ok | Err:
        return self.write(bytes(n))

    def blocking_write_zeroes_and_flush(self, n: int) -> Ok | Err:
        return self.blocking_write_and_flush(bytes(n))

    def splice(self, src: InputStream, n: int) -> Ok | Err:
        r = src.read(n)
        if isinstance(r, Err):
            return r
        w = self.write(r.value)
        if isinstance(w, Err):
            return w
        return Ok(len(r.value))

    blocking_splice = splice


error_iface = Interface("wasi:io/error")
error_iface.resource("error", IoError, ["to-debug-string"])

poll_iface = Interface("wasi:io/poll")
poll_iface.resource("pollable", Pollable, ["ready", "block"])
poll_iface.func("poll")(poll)

streams_iface = Interface("wasi:io/streams")
streams_iface.resource(
    "input-stream", InputStream, ["read", "blocking-read", "skip", "blocking-skip", "subscribe"]
)
streams_iface.resource(
    "output-stream",
    OutputStream,
    [
        "check-write",
        "write",
        "blocking-write-and-flush",
        "flush",
        "blocking-flush",
        "subscribe",
        "write-zeroes",
        "blocking-write-zeroes-and-flush",
        "splice",
        "blocking-splice",
    ],
)

INTERFACES = [error_iface, poll_iface, streams_iface]
