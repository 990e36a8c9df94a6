"""The byte pipe between guests and worker threads, and pollables that wait on other threads."""

from __future__ import annotations

import threading
import time

import pytest
from kubespin_shim.host.binding import CallContext
from kubespin_shim.outbound.pipe import BytePipe, PipeClosed, PipeFailed
from kubespin_shim.wasi.io import Pollable, poll


def test_reads_see_writes_in_order_then_end() -> None:
    pipe = BytePipe(capacity=16)
    assert pipe.read_nowait(10) == b""  # nothing yet: not the end
    assert not pipe.readable()
    pipe.write(b"hello ")
    pipe.write(b"world")
    assert pipe.readable()
    assert pipe.read_nowait(3) == b"hel"
    assert pipe.read(100) == b"lo "
    assert pipe.read(100) == b"world"
    pipe.close()
    assert pipe.read_nowait(10) is None
    assert pipe.read(10) is None


def test_writer_waits_while_full_and_resumes_when_read() -> None:
    pipe = BytePipe(capacity=4)
    pipe.write(b"abcd")
    done = threading.Event()

    def writer() -> None:
        pipe.write(b"efgh")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.2), "a full pipe must hold the writer back"
    assert pipe.read(2) == b"ab"
    assert done.wait(2)
    t.join()
    assert pipe.read(100) == b"cd"
    assert pipe.read(100) == b"efgh"
    with pytest.raises(TimeoutError):
        pipe.write(b"ijklm")
        pipe.write(b"x", timeout=0.05)


def test_reader_leaving_releases_a_blocked_writer() -> None:
    pipe = BytePipe(capacity=1)
    pipe.write(b"a")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            pipe.write(b"b")
        except PipeClosed as e:
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    pipe.close_reader()
    t.join(2)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], BrokenPipeError)


def test_abort_reaches_the_reader_after_buffered_data() -> None:
    pipe = BytePipe()
    pipe.write(b"partial")
    pipe.abort("code", "upstream went away")
    assert pipe.read(100) == b"partial"
    with pytest.raises(PipeFailed) as info:
        pipe.read(100)
    assert info.value.error == "code"
    pipe2 = BytePipe()
    pipe2.close()
    pipe2.abort("code", "too late")  # a finished stream stays finished
    assert pipe2.read(1) is None


def test_poll_wakes_when_another_thread_writes() -> None:
    pipe = BytePipe()
    ctx = CallContext("test")
    clock = Pollable(time.monotonic_ns() + 5_000_000_000)  # a 5 s timer that must not win
    data = Pollable(check=pipe.readable)
    threading.Timer(0.1, pipe.write, args=(b"x",)).start()
    t0 = time.monotonic()
    assert poll(ctx, [clock, data]) == [1]
    assert time.monotonic() - t0 < 1.0


def test_poll_with_event_and_deadline() -> None:
    ctx = CallContext("test")
    event = threading.Event()
    t0 = time.monotonic()
    assert poll(ctx, [Pollable(event=event), Pollable(time.monotonic_ns() + 100_000_000)]) == [1]
    assert 0.09 < time.monotonic() - t0 < 1.0
    threading.Timer(0.05, event.set).start()  # a plain Event (no notify): seen within the recheck period
    pollable = Pollable(event=event)
    pollable.block()
    assert pollable.ready()
    assert Pollable().ready()  # the old meaning stays: no deadline, no check -> ready now
