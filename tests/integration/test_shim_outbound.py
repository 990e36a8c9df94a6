"""Outbound networking through `kubespin up` as a real process, with guests built by spin-sdk 3.4.1:
outbound HTTP to a real HTTP server on 127.0.0.1, Redis to a real redis-server, requests to the app
itself and local service chaining, all under `allowed_outbound_hosts` (tests/apps/py-outbound).

The `outbound` component's allow-list is templated: `http://{{ upstream }}` and
`redis://127.0.0.1:{{ redis_port }}`, resolved from SPIN_VARIABLE_* set here, so every allowed call
in this file also proves template resolution. `restricted` runs the same wasm with no allowed hosts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.shimproc import Shim, built_app, copy_app, run_shim, run_shim_expect_failure
from tests.unit.test_outbound_upstream import Upstream, pattern

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def shim(upstream: Upstream, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    tmp = tmp_path_factory.mktemp("outbound")
    env = {"SPIN_VARIABLE_UPSTREAM": upstream.authority, "SPIN_VARIABLE_REDIS_PORT": str(redis_server.port)}
    with run_shim(built_app("py-outbound"), tmp, args=["--state-dir", str(tmp / "state")], env=env) as s:
        yield s


def test_streamed_megabyte_both_ways(shim: Shim, upstream: Upstream) -> None:
    data = pattern(1 << 20)
    chunks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))  # the client streams too
    t0 = time.perf_counter()
    with shim.client() as c:
        r = c.post("/proxy", params={"url": upstream.url("/echo")}, content=chunks)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    print(f"1 MiB client -> guest -> upstream -> guest -> client: {elapsed:.2f} s")
    assert r.headers["x-received-length"] == str(len(data))
    assert r.headers["x-received-sha256"] == hashlib.sha256(data).hexdigest()
    assert r.content == data
    seen = [s for s in upstream.seen if s.path == "/echo"][-1]
    assert seen.body_length == len(data)
    assert dict(seen.headers)["host"] == upstream.authority


def test_sdk_send_through_the_templated_allow_list(shim: Shim, upstream: Upstream) -> None:
    with shim.client() as c:
        r = c.get("/send", params={"url": upstream.url("/greeting?x=1")})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["status"] == 200
    assert reply["body"] == "hello from upstream /greeting\n"
    assert reply["headers"]["content-type"] == "text/plain"


def test_denied_host_gets_the_error_and_the_log_names_the_fix(shim: Shim, upstream: Upstream) -> None:
    other_port = upstream.port + 1 if upstream.port < 65535 else upstream.port - 1
    with shim.client() as c:
        r = c.get("/send", params={"url": f"http://127.0.0.1:{other_port}/"})
        restricted = c.get("/restricted/send", params={"url": upstream.url("/x")})
    assert (r.status_code, r.text) == (502, "error: http-request-denied\n")
    assert (restricted.status_code, restricted.text) == (502, "error: http-request-denied\n")
    log = shim.log()
    assert f"add \"http://127.0.0.1:{other_port}\" to allowed_outbound_hosts of component 'outbound'" in log, log[
        -3000:
    ]
    assert f"add \"http://{upstream.authority}\" to allowed_outbound_hosts of component 'restricted'" in log
    assert not any(s.path == "/x" for s in upstream.seen)


def test_request_to_the_app_itself(shim: Shim) -> None:
    with shim.client() as c:
        allowed = c.get("/self")
        denied = c.get("/restricted/self")
    assert allowed.status_code == 200, allowed.text
    inner = json.loads(allowed.json()["body"])
    assert inner["hello"] == "py-outbound"
    assert inner["headers"]["spin-matched-route"] == "/..."  # routed by the app's own router
    assert inner["headers"]["host"] == "localhost"
    assert (denied.status_code, denied.text) == (502, "error: http-request-denied\n")
    assert "add \"http://self\" to allowed_outbound_hosts of component 'restricted'" in shim.log()


def test_service_chaining_is_in_process_with_spins_synthetic_route(shim: Shim) -> None:
    with shim.client() as c:
        r = c.get("/chain")
    assert r.status_code == 200, r.text
    inner = json.loads(r.json()["body"])
    assert inner["path"] == "/hello?via=chain"
    headers = inner["headers"]
    assert headers["spin-matched-route"] == "/..."
    assert headers["spin-raw-component-route"] == "/..."
    assert headers["spin-component-route"] == ""
    assert headers["spin-path-info"] == "/hello"
    assert headers["spin-client-addr"] == "0.0.0.0:0"
    assert "host" not in headers  # the *.spin.internal Host is stripped, as Spin does


def test_first_byte_timeout_from_request_options(shim: Shim, upstream: Upstream) -> None:
    with shim.client() as c:
        r = c.post(
            "/proxy", params={"url": upstream.url("/slow-head?ms=3000"), "method": "GET", "first_byte_ms": "300"}
        )
    assert (r.status_code, r.text) == (502, "error: connection-read-timeout\n")


def test_template_value_decides_and_refusals_are_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        env = {"SPIN_VARIABLE_UPSTREAM": f"127.0.0.1:{port}"}
        state = ["--state-dir", str(tmp_path / "state")]
        with run_shim(built_app("py-outbound"), tmp_path, args=state, env=env) as s, s.client() as c:
            refused = c.get("/send", params={"url": f"http://127.0.0.1:{port}/"})
            status = c.get("/proxy", params={"url": f"http://127.0.0.1:{port}/", "method": "GET"})
    assert (refused.status_code, refused.text) == (502, "error: connection-refused\n")
    assert (status.status_code, status.text) == (502, "error: connection-refused\n")


def test_redis_through_the_guest(shim: Shim, redis_server: RedisServer) -> None:
    with shim.client() as c:
        r = c.get("/redis", params={"addr": redis_server.url(2), "key": "conv:42"})
        denied = c.get("/redis/open", params={"addr": "redis://127.0.0.1:1"})
        restricted = c.get("/restricted/redis/open", params={"addr": redis_server.url(2)})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["get"] == "v1"
    assert report["get_missing"] is None
    assert report["incr"] == [1, 2]
    assert report["incr_text"] == "error: type-error"
    assert (report["sadd"], report["srem"], report["smembers"]) == (3, 1, ["a", "c"])
    assert report["sadd_wrong_type"] == "error: type-error"
    assert report["execute"] == {
        "incrby": [["int64", 7]],
        "get": [["binary", "v1"]],
        "get_missing": [["nil", None]],
        "ping": [["status", "PONG"]],
        "smembers": ["a", "c"],
    }
    assert report["execute_bad"].startswith("error: other: unknown command")
    assert (report["publish"], report["del"], report["get_after_del"]) == ("ok", 3, None)
    assert redis_server.client(2).exists("conv:42", "conv:42:n", "conv:42:s") == 0
    assert denied.text == "error: invalid-address\n"
    assert restricted.text == "error: invalid-address\n"
    assert "add \"redis://127.0.0.1:1\" to allowed_outbound_hosts of component 'outbound'" in shim.log()


@pytest.mark.parametrize(
    ("app", "body"), [("py-features", "hello from python\n"), ("js-features", "hello from javascript\n")]
)
def test_features_apps_chain_to_their_private_component(app: str, body: str, tmp_path: Path) -> None:
    """spin-sdk's http.send (Python) and fetch() of componentize-js (JS, wasi:http@0.2.3). The JS guest
    traps without an authority on its incoming request: chained requests carry `<id>.spin.internal`."""
    args = ["--state-dir", str(tmp_path / "state")]
    with run_shim(built_app(app), tmp_path, args=args, env={"SPIN_VARIABLE_SECRET_TOKEN": "s"}) as s, s.client() as c:
        r = c.get("/chain")
    assert (r.status_code, r.text) == (200, body)


def test_invalid_allowed_host_fails_at_start_naming_component_and_entry(tmp_path: Path) -> None:
    app = copy_app("py-outbound", tmp_path)
    manifest = app / "spin.toml"
    manifest.write_text(manifest.read_text().replace('"http://self",', '"http://self", "http://example.com:99999",'))
    result = run_shim_expect_failure(app, tmp_path)
    assert result.returncode != 0
    assert "component 'outbound'" in result.stderr, result.stderr
    assert "http://example.com:99999" in result.stderr
    assert 'Invalid allowed host port "99999"' in result.stderr
    shutil.rmtree(app)


def test_selected_component_cannot_chain_to_unselected_ones(tmp_path: Path) -> None:
    args = ["--component-id", "outbound", "--state-dir", str(tmp_path / "state")]
    result = run_shim_expect_failure(built_app("py-outbound"), tmp_path, args=args)
    assert result.returncode != 0
    assert "cannot use wildcard service chaining" in result.stderr, result.stderr


def test_outbound_call_cost(shim: Shim, upstream: Upstream) -> None:
    """Prints what an outbound call adds: medians of a guest request with and without one, and of the
    same upstream request made directly (all through one keep-alive client, same run)."""

    def median_ms(call: object, n: int = 20) -> float:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = call()  # type: ignore[operator]
            samples.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
        return statistics.median(samples)

    with shim.client() as c, httpx.Client() as direct:
        plain = median_ms(lambda: c.get("/hello"))
        outbound = median_ms(lambda: c.get("/send", params={"url": upstream.url("/x")}))
        chained = median_ms(lambda: c.get("/chain"))
        upstream_only = median_ms(lambda: direct.get(upstream.url("/x")))
    print(
        f"median ms: guest without outbound {plain:.1f}, guest + outbound HTTP {outbound:.1f}, "
        f"guest + chained guest {chained:.1f}, upstream alone {upstream_only:.1f}"
    )
