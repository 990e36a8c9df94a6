"""Pod phase, conditions and container status as kubelet reports them; back-off; probes against real sockets."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from kubespin.node.pod_status import (
    Backoff,
    Conditions,
    ContainerState,
    Terminated,
    build_status,
    failed_status,
    now,
    pod_phase,
    should_restart,
)
from kubespin.node.podspec import ProbePlan
from kubespin.node.probes import ProbeOutcome, ProbeTracker, probe_once


def container() -> ContainerState:
    return ContainerState(name="spin", image="img", image_id="id")


def term(code: int) -> Terminated:
    return Terminated(exit_code=code, reason="Error" if code else "Completed", started_at=now(), finished_at=now())


def test_phase_follows_kubelets_rules() -> None:
    c = container()
    assert pod_phase(c, "Always", True) == "Pending"
    c.set_running("kubespin-node://1")
    assert pod_phase(c, "Always", True) == "Running"
    c.set_terminated(term(1))
    assert pod_phase(c, "Always", True) == "Running"
    c.set_waiting("CrashLoopBackOff")
    assert pod_phase(c, "Always", True) == "Running", "restarting after a termination is Running"
    c = container()
    c.set_terminated(term(0))
    assert pod_phase(c, "OnFailure", False) == "Succeeded"
    c.set_terminated(term(2))
    assert pod_phase(c, "Never", False) == "Failed"
    assert should_restart("Always", 0) and should_restart("OnFailure", 1)
    assert not should_restart("OnFailure", 0) and not should_restart("Never", 1)


def test_status_shape_ready_and_last_state() -> None:
    c = container()
    c.set_running("kubespin-node://1")
    c.set_terminated(term(137))
    c.restart_count = 1
    c.set_running("kubespin-node://2")
    c.started = c.ready = True
    conditions = Conditions()
    conditions.set("PodScheduled", True)
    status = build_status(c, conditions, "Running", now())
    assert status["podIP"] == "127.0.0.1" and status["podIPs"] == [{"ip": "127.0.0.1"}]
    (cs,) = status["containerStatuses"]
    assert cs["ready"] is True and cs["restartCount"] == 1 and "running" in cs["state"]
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    kinds = {x["type"]: x["status"] for x in status["conditions"]}
    assert kinds["Ready"] == kinds["ContainersReady"] == "True"
    c.ready = False
    status = build_status(c, conditions, "Running", now())
    ready = next(x for x in status["conditions"] if x["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"


def test_failed_status_names_the_reason() -> None:
    status = failed_status("UnsupportedCommand", "only kubespin up", now(), container())
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "UnsupportedCommand",
        "only kubespin up",
    )
    assert "podIP" not in status


def test_backoff_sequence() -> None:
    b = Backoff()
    assert [b.next_delay(1.0) for _ in range(7)] == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0]
    assert b.next_delay(601.0) == 0.0, "a container that ran 10 minutes starts over"


def test_tracker_thresholds() -> None:
    tracker = ProbeTracker(ProbePlan("http", success_threshold=2, failure_threshold=3))
    ok, bad = ProbeOutcome(True, ""), ProbeOutcome(False, "x")
    assert not tracker.record(ok) and tracker.result is None
    assert tracker.record(ok) and tracker.result is True
    assert not tracker.record(bad) and not tracker.record(bad) and tracker.result is True
    assert tracker.record(bad) and tracker.result is False


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = {"/ok": 200, "/redirect": 302, "/fail": 503}.get(self.path, 404)
        if self.path == "/slow":
            import time

            time.sleep(0.5)
            code = 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_probes_against_a_real_server(server: int) -> None:
    async def run() -> list[bool]:
        async with httpx.AsyncClient() as client:
            results = []
            for path in ("/ok", "/redirect", "/fail", "/slow"):
                plan = ProbePlan("http", path=path, timeout_s=0.2)
                results.append((await probe_once(plan, server, client)).ok)
            results.append((await probe_once(ProbePlan("tcp"), server, client)).ok)
            with __import__("socket").socket() as s:
                s.bind(("127.0.0.1", 0))
                closed = s.getsockname()[1]
            results.append((await probe_once(ProbePlan("tcp", timeout_s=0.5), closed, client)).ok)
            return results

    assert asyncio.run(run()) == [True, True, False, False, True, False]
