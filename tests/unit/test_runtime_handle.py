"""ComponentRuntime.handle in-process, on a real JS app, through both of its implementations: one call
into the C extension (``_native.run_guest``) and the ctypes calls it replaces. Both must give the
same outcome: a response, a trap, an instantiation refused by the memory limit, an argument that
cannot be lowered; and the runtime must serve on after each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubespin_shim.cli import build_server
from kubespin_shim.http.types import IncomingRequest, ResponseOutparam
from kubespin_shim.runtime import ComponentRuntime, Outcome

APP = Path(__file__).resolve().parents[1] / "apps" / "js-features"


class Recorder:
    """The response channel (http/server.py's Exchange) as a record."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, bytes]] = []
        self.body = bytearray()
        self.finished = False

    def start(self, status: int, headers: list[tuple[str, bytes]]) -> None:
        self.status, self.headers = status, list(headers)

    def write(self, data: bytes) -> None:
        self.body += data

    def finish(self, trailers: object) -> None:
        self.finished = True

    def fail(self, reason: str) -> None: ...

    def flush(self) -> None: ...


def make_runtime(path: str, monkeypatch: pytest.MonkeyPatch) -> ComponentRuntime:
    """js-features' component, linked as `kubespin up` links it, under the host path in force."""
    if not (APP / "app.wasm").exists():
        pytest.skip("tests/apps not built (scripts/build-test-apps)")
    monkeypatch.setenv("SPIN_VARIABLE_SECRET_TOKEN", "t")
    server, app = build_server(
        source=str(APP), host="127.0.0.1", port=0, runtime_config_file=None, state_dir=None, cli_variables=[],
        components_to_retain=[], request_timeout=5.0, max_instance_memory=None,
    )
    server.shutdown()
    rt = app.runtimes["features"]
    assert (rt._run_guest is not None) == (path == "c")
    return rt


@pytest.fixture
def runtime(each_host_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ComponentRuntime]:
    yield make_runtime(each_host_path, monkeypatch)


def get(rt: ComponentRuntime, path: str) -> tuple[Outcome, Recorder]:
    sink = Recorder()
    req = IncomingRequest("GET", path, "HTTP", "localhost", [("host", b"localhost")], lambda n: b"")
    return rt.handle(req, ResponseOutparam(sink)), sink


def test_a_request_is_answered_and_timed(runtime: ComponentRuntime) -> None:
    outcome, sink = get(runtime, "/env")
    assert not outcome.trapped, outcome.message
    assert sink.status == 200 and sink.finished
    assert json.loads(sink.body)["APP_MODE"] == "test"
    assert 0 < outcome.instantiate_s < 5 and 0 < outcome.handle_s < 5


def test_a_trap_is_reported_and_the_next_request_is_served(runtime: ComponentRuntime) -> None:
    outcome, sink = get(runtime, "/trap")  # wasi:cli/exit with an error: the instance ends mid-request
    assert outcome.trapped and not outcome.deadline_exceeded and not outcome.pool_exhausted
    assert "guest called exit (failure)" in outcome.message, outcome.message
    assert outcome.instantiate_s > 0 and outcome.handle_s == 0.0  # timed only when the call completes
    outcome, sink = get(runtime, "/env")
    assert not outcome.trapped and sink.status == 200


def test_an_instance_over_the_memory_limit_never_runs(runtime: ComponentRuntime) -> None:
    runtime.max_memory = 64 * 1024  # one page: StarlingMonkey's initial memory is far larger
    outcome, sink = get(runtime, "/env")
    assert outcome.trapped and not outcome.deadline_exceeded
    assert outcome.handle_s == 0.0 and sink.status == 0  # the guest never ran
    runtime.max_memory = None
    outcome, sink = get(runtime, "/env")
    assert not outcome.trapped and sink.status == 200


def test_an_argument_that_cannot_be_lowered_fails_cleanly(runtime: ComponentRuntime) -> None:
    sink = Recorder()
    with pytest.raises(AttributeError, match="resource_id"):
        runtime.handle("not a resource", ResponseOutparam(sink))  # type: ignore[arg-type]
    assert sink.status == 0
    outcome, sink = get(runtime, "/env")  # the store was torn down; the runtime serves on
    assert not outcome.trapped and sink.status == 200


def undropped_after_one_request(rt: ComponentRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The types of the objects still in the request's resource table when its store is gone."""
    seen = []
    real = rt.new_context

    def recording():  # type: ignore[no-untyped-def]
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(rt, "new_context", recording)
    outcome, sink = get(rt, "/env")
    assert not outcome.trapped and sink.status == 200
    return sorted(type(o).__name__ for o in seen[0].table.values())


def test_both_paths_leave_the_same_handles_undropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C path forgets a dropped handle itself when its object has nothing to close, and leaves
    the rest to the Python destructor; what the guest did not drop must be the same either way."""
    from tests.host_paths import host_path

    left = {}
    for name in ("c", "python"):
        with host_path(name):
            left[name] = undropped_after_one_request(make_runtime(name, monkeypatch), monkeypatch)
    assert left["c"] == left["python"]
    # dropped by the guest: the pollable and the output stream (nothing to close: forgotten in C),
    # the outgoing body (its close() runs in Python), the response (given to response-outparam.set)
    assert not {"Pollable", "OutputStream", "OutgoingBody", "OutgoingResponse"} & set(left["c"]), left
    assert left["c"], "the JS SDK leaves the request and its headers undropped: the table was not read"


def test_request_headers_are_made_once_and_only_if_the_guest_reads_them() -> None:
    made: list[int] = []

    def make() -> list[tuple[str, bytes]]:
        made.append(1)
        return [("host", b"example.com"), ("spin-path-info", b"/")]

    req = IncomingRequest("PATCH", "/", "HTTP", "example.com", make, lambda n: b"")
    assert made == [] and req.method() == ("patch", None)
    first, second = req.headers(), req.headers()
    assert made == [1]
    assert first.entries() == second.entries() == [("host", b"example.com"), ("spin-path-info", b"/")]
    assert first.immutable and IncomingRequest("BREW", "/", "HTTP", None, [], lambda n: b"").method() == (
        "other", "BREW")


def test_compiled_host_functions_are_called_from_c_without_their_invokers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under run_guest a compiled host function runs from _native.host_call by its C plans (entry.native);
    its generated Python invoker is only for the first call and for the ctypes path."""
    from kubespin_shim.host import binding

    from tests.host_paths import host_path

    with host_path("c"):
        first = len(binding._ENTRIES)  # entries are kept for the process: take this runtime's
        rt = make_runtime("c", monkeypatch)
        assert not get(rt, "/env")[0].trapped  # compiles what the request calls
        compiled = [e for e in binding._ENTRIES[first:] if e.invoke is not None]
        assert compiled and all(e.native is not None for e in compiled)

        def refuse(ctx: object, args: int, results: int) -> None:
            raise AssertionError("the Python invoker ran")

        for e in compiled:
            monkeypatch.setattr(e, "invoke", refuse)
        outcome, sink = get(rt, "/env")
        assert not outcome.trapped, outcome.message
        assert sink.status == 200 and json.loads(sink.body)["APP_MODE"] == "test"
