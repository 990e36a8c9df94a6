"""`kubespin up --http-concurrency 1` as a real process: one worker runs requests, and a request that
holds it (a guest in an endless loop, a guest waiting on a slow upstream) still does not stop the
app from answering others (http/workers.py: the watch, and about_to_block in wasi:io/poll).

Each test proves the other request was answered while the long one was still in flight. Waits are
bounded: they stop a hang, they measure nothing."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.shimproc import built_app, run_shim
from tests.unit.test_outbound_upstream import Upstream

pytestmark = pytest.mark.integration


def _in_flight(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    done: list[httpx.Response] = []
    t = threading.Thread(target=lambda: done.append(call()), daemon=True)
    t.start()
    return t, done


def _upstream_has_seen(upstream: Upstream, path_prefix: str, timeout: float = 30) -> None:
    """Wait until the guest's request reached the upstream: the guest is now waiting on it."""
    deadline = time.monotonic() + timeout
    while not any(s.path.startswith(path_prefix) for s in upstream.seen):
        assert time.monotonic() < deadline, "the guest's request never reached the upstream"
        time.sleep(0.02)


def test_a_guest_in_an_endless_loop_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    args = ["--http-concurrency", "1", "--request-timeout", "8"]
    with run_shim(built_app("js-features"), tmp_path, args=args, env={"SPIN_VARIABLE_SECRET_TOKEN": "s"}) as shim:
        looping, looped = _in_flight(lambda: httpx.get(shim.url + "/loop", timeout=60))
        time.sleep(0.5)  # the loop request reaches the only worker first
        t0 = time.monotonic()
        r = httpx.get(shim.url + "/exact", timeout=30)
        answered_in = time.monotonic() - t0
        assert r.status_code == 200
        assert looping.is_alive(), "the looping request ended first: nothing was proven"
        looping.join(60)
        assert looped and looped[0].status_code == 500  # stopped at its deadline, as before
        print(f"answered in {answered_in * 1000:.0f} ms beside a looping guest")


def test_a_guest_waiting_on_a_slow_upstream_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    with Upstream() as upstream:
        env = {"SPIN_VARIABLE_UPSTREAM": upstream.authority, "SPIN_VARIABLE_REDIS_PORT": "1"}
        args = ["--http-concurrency", "1", "--state-dir", str(tmp_path / "state")]
        with run_shim(built_app("py-outbound"), tmp_path, args=args, env=env) as shim:
            slow_url = upstream.url("/slow-head?ms=4000")
            waiting, waited = _in_flight(
                lambda: httpx.post(shim.url + "/proxy", params={"url": slow_url, "method": "GET"}, timeout=60)
            )
            _upstream_has_seen(upstream, "/slow-head")  # the only worker waits on the upstream
            r = httpx.get(shim.url + "/hello", timeout=30)
            assert r.status_code == 200
            assert waiting.is_alive(), "the slow request ended first: nothing was proven"
            waiting.join(60)
            assert waited and waited[0].status_code == 200, waited and waited[0].text


def test_sigterm_lets_a_request_in_flight_finish_then_exits(tmp_path: Path) -> None:
    # What a pod being replaced gets: SIGTERM while a guest waits on a slow upstream.
    with Upstream() as upstream:
        env = {"SPIN_VARIABLE_UPSTREAM": upstream.authority, "SPIN_VARIABLE_REDIS_PORT": "1"}
        with run_shim(built_app("py-outbound"), tmp_path, args=["--state-dir", str(tmp_path / "state")],
                      env=env) as shim:
            slow_url = upstream.url("/slow-head?ms=2000")
            waiting, waited = _in_flight(
                lambda: httpx.post(shim.url + "/proxy", params={"url": slow_url, "method": "GET"}, timeout=60)
            )
            _upstream_has_seen(upstream, "/slow-head")
            shim.proc.send_signal(signal.SIGTERM)
            waiting.join(60)
            assert waited and waited[0].status_code == 200, waited and waited[0].text
            assert shim.proc.wait(30) == 0
            with pytest.raises(httpx.TransportError):
                httpx.get(shim.url + "/hello", timeout=5)


def test_shutdown_delay_keeps_serving_with_closing_responses_then_stops(tmp_path: Path) -> None:
    # A pod behind a Service: after SIGTERM it keeps answering for --shutdown-delay while the
    # endpoints update, telling keep-alive clients to reconnect; then it stops accepting and exits.
    delay = 3.0
    with run_shim(built_app("js-hello"), tmp_path, env={"KUBESPIN_SHUTDOWN_DELAY": str(delay)}) as shim:
        with httpx.Client(timeout=10) as client:
            before = client.get(shim.url + "/")
            assert before.status_code == 200 and "close" not in before.headers.get("connection", "")
            shim.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            # The handler runs when the main thread next runs Python: wait until it has (it logs after
            # switching to closing responses), or a request could still be answered the old way.
            shim.wait_for_log("--shutdown-delay")
            during = []
            while time.monotonic() - t0 < delay - 0.7:  # well inside the delay, on fresh connections too
                during.append(client.get(shim.url + "/"))
                time.sleep(0.1)
        assert during and all(r.status_code == 200 for r in during)
        assert all(r.headers.get("connection") == "close" for r in during), [r.headers for r in during]
        assert shim.proc.wait(30) == 0
        assert time.monotonic() - t0 >= delay - 0.1  # it did not stop before the delay was over
        with pytest.raises(httpx.TransportError):
            httpx.get(shim.url + "/", timeout=5)
        log = shim.log_path.read_text()
        assert "--shutdown-delay" in log and "shutdown delay over" in log, log[-2000:]


def test_shutdown_delay_is_validated(tmp_path: Path) -> None:
    from tests.shimproc import run_shim_expect_failure

    done = run_shim_expect_failure(built_app("js-hello"), tmp_path, env={"KUBESPIN_SHUTDOWN_DELAY": "-1"})
    assert done.returncode != 0 and "shutdown-delay" in done.stderr, done.stderr
