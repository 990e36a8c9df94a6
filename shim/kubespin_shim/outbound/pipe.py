"""A bounded byte pipe between a guest (on the request thread) and a worker thread.

Outbound HTTP needs bodies that flow while both sides run: the guest writes its request body
*after* ``outgoing-handler.handle`` returned, while a worker thread sends it; the worker receives
the response body while the guest reads it. ``queue.Queue`` would do for chunks, but the guest
side needs more: a non-blocking read that says "nothing yet" (WASI ``read``), readiness for
``pollable``s, an end-of-stream, an error that the reader sees in place of data, and a way for the
reader to walk away so a blocked writer stops. Written here because it is that small combination.

Writers block while ``capacity`` bytes are buffered (back-pressure), never forever: a reader that
closes, or an ``abort`` from either side, wakes them.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from kubespin_shim.http.workers import about_to_block
from kubespin_shim.wasi.io import notify_pollers


class PipeClosed(BrokenPipeError):
    """The reader is gone: nothing written now will ever be read."""


class PipeFailed(Exception):
    """The writer failed; ``error`` is what the reader should report (an error-code value)."""

    def __init__(self, error: object, message: str) -> None:
        super().__init__(message)
        self.error = error


class BytePipe:
    def __init__(self, capacity: int = 1 << 20) -> None:
        self.capacity = capacity
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._failure: PipeFailed | None = None
        self._reader_closed = False
        self._cond = threading.Condition()
        self.bytes_written = 0

    # ---- writer side

    def write(self, data: bytes, timeout: float | None = None) -> None:
        """Append ``data`` (whole), waiting while the pipe is full. Raises PipeClosed, TimeoutError."""
        if not data:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._size >= self.capacity and not self._reader_closed and self._failure is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("the reader did not take the data in time")
                about_to_block()
                self._cond.wait(remaining)
            if self._reader_closed:
                raise PipeClosed("the reading side closed the stream")
            if self._failure is not None:
                raise PipeClosed(str(self._failure))
            if self._eof:
                raise PipeClosed("the stream was already finished")
            self._chunks.append(bytes(data))
            self._size += len(data)
            self.bytes_written += len(data)
            self._cond.notify_all()
        notify_pollers()

    def close(self) -> None:
        """End of stream: the reader gets what is buffered, then EOF."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        notify_pollers()

    def abort(self, error: object, message: str) -> None:
        """Fail the stream: the reader gets ``PipeFailed`` after what is buffered, writers ``PipeClosed``."""
        with self._cond:
            if self._failure is None and not self._eof:
                self._failure = PipeFailed(error, message)
            self._cond.notify_all()
        notify_pollers()

    @property
    def reader_closed(self) -> bool:
        return self._reader_closed

    def writable(self) -> bool:
        with self._cond:
            return self._size < self.capacity or self._reader_closed or self._failure is not None

    # ---- reader side

    def read_nowait(self, n: int) -> bytes | None:
        """Up to ``n`` bytes; ``b""`` when nothing is buffered yet; None at end. Raises PipeFailed."""
        with self._cond:
            data = self._take(n)
        if data:
            notify_pollers()
        return data

    def read(self, n: int, timeout: float | None = None) -> bytes | None:
        """Up to ``n`` bytes, waiting for some; None at end. Raises PipeFailed, TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                data = self._take(n)
                if data != b"":
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no data arrived in time")
                about_to_block()
                self._cond.wait(remaining)
        notify_pollers()
        return data

    def _take(self, n: int) -> bytes | None:
        if self._chunks:
            first = self._chunks[0]
            if len(first) <= n:
                self._chunks.popleft()
                out = first
            else:
                out, self._chunks[0] = first[:n], first[n:]
            self._size -= len(out)
            self._cond.notify_all()
            return out
        if self._failure is not None:
            raise self._failure
        if self._eof:
            return None
        return b""

    def readable(self) -> bool:
        """Something to read, the end, or an error: what a reader's pollable waits for."""
        with self._cond:
            return bool(self._chunks) or self._eof or self._failure is not None

    def close_reader(self) -> None:
        """The reader is gone: drop the buffer and make writers fail instead of waiting."""
        with self._cond:
            self._reader_closed = True
            self._chunks.clear()
            self._size = 0
            self._cond.notify_all()
        notify_pollers()
