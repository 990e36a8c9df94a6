"""`kubespin up` as a real process serving the feature-probe apps built by the real Spin SDKs
(tests/apps/py-features: spin-sdk 3.4.1 + componentize-py 0.17.2; js-features:
@spinframework/build-tools 1.0.7). Every assertion goes through HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.shimproc import APPS, Shim, built_app, copy_app, run_shim, run_shim_expect_failure

APPS_UNDER_TEST = ["py-features", "js-features"]
SECRET = {"SPIN_VARIABLE_SECRET_TOKEN": "s3cret"}


@pytest.fixture(scope="module", params=APPS_UNDER_TEST)
def shim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    app = built_app(request.param)
    tmp = tmp_path_factory.mktemp(request.param)
    with run_shim(app, tmp, args=["--request-timeout", "2"], env=SECRET) as s:
        s.app_name = request.param  # type: ignore[attr-defined]
        yield s


def get_json(shim: Shim, path: str, **kw: object) -> dict:
    r = httpx.get(shim.url + path, timeout=30, **kw)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()


def test_spin_request_headers_match_spin(shim: Shim) -> None:
    port = shim.url.rsplit(":", 1)[1]
    body = get_json(
        shim,
        "/headers/a/b?x=1&y=two",
        headers={"host": f"example.test:{port}", "x-custom": "v1", "spin-client-addr": "6.6.6.6:1"},
    )
    h = body["headers"]
    assert h["spin-full-url"] == f"http://example.test:{port}/headers/a/b?x=1&y=two"
    assert h["spin-path-info"] == "/a/b"
    assert h["spin-matched-route"] == "/headers/..."
    assert h["spin-raw-component-route"] == "/headers/..."
    assert h["spin-component-route"] == "/headers"
    assert h["spin-base-path"] == "/"
    assert h["spin-client-addr"].startswith("127.0.0.1:")  # the client's spoofed value was dropped
    spin_names = {n for n in h if n.startswith("spin-")}
    assert spin_names == {
        "spin-full-url", "spin-path-info", "spin-matched-route", "spin-raw-component-route",
        "spin-component-route", "spin-base-path", "spin-client-addr",
    }
    assert h["x-custom"] == "v1"
    assert body["authority"] == f"example.test:{port}"
    assert body["method"] == "GET"
    assert body["path_with_query"] == "/headers/a/b?x=1&y=two"


def test_path_parameter_and_exact_routes(shim: Shim) -> None:
    body = get_json(shim, "/users/42")
    assert body["id"] == "42"
    assert httpx.get(shim.url + "/exact").text == "exact\n"
    # an exact route does not match longer paths; nothing else does either
    assert httpx.get(shim.url + "/exact/more").status_code == 404
    assert httpx.get(shim.url + "/no-such-route").status_code == 404


def test_private_component_is_unreachable_from_outside(shim: Shim) -> None:
    # the private `hello` component has no route: only /chain (service chaining) reaches it
    r = httpx.get(shim.url + "/", timeout=10)
    assert r.status_code == 404
    assert "hello from" not in r.text


def test_body_echo_streams_5mb(shim: Shim) -> None:
    data = os.urandom(5 * 1024 * 1024)
    r = httpx.post(shim.url + "/echo", content=data, headers={"content-type": "application/x-test"}, timeout=60)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-test"
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()


def test_chunked_request_body_echo(shim: Shim) -> None:
    chunks = [os.urandom(1000 + i) for i in range(20)]
    r = httpx.post(shim.url + "/echo", content=iter(chunks), timeout=30)
    assert r.status_code == 200
    assert r.content == b"".join(chunks)


def test_variables_defaults_env_and_secret(shim: Shim) -> None:
    report = get_json(shim, "/variables")
    assert report["spin"]["greeting"] == {"value": "hello"}
    assert report["spin"]["secret_token"] == {"value": "s3cret"}
    if "wasi_config" in report:
        assert report["wasi_config"]["greeting"] == {"value": "hello"}
    undefined = httpx.get(shim.url + "/variables/not_declared")
    assert undefined.status_code == 500
    assert "undefined" in undefined.text


def test_files_are_read_only_mounts(shim: Shim) -> None:
    app_dir = APPS / shim.app_name  # type: ignore[attr-defined]
    expected = (app_dir / "assets" / "hello.txt").read_bytes()
    r = httpx.get(shim.url + "/files/hello.txt")
    assert r.status_code == 200 and r.content == expected
    assert httpx.get(shim.url + "/files/missing.txt").status_code == 404
    # the guest cannot climb out of its mounts
    escape = httpx.get(shim.url + "/files/..%2F..%2F..%2Fetc%2Fpasswd")
    assert escape.status_code in (404, 500)
    assert b"root:" not in escape.content


def test_environment_is_the_manifests_only(shim: Shim) -> None:
    env = get_json(shim, "/env")
    assert env.get("APP_MODE") == "test"
    assert "PATH" not in env and "SPIN_VARIABLE_SECRET_TOKEN" not in env


def test_guest_stdout_and_stderr_reach_the_log(shim: Shim) -> None:
    assert httpx.get(shim.url + "/log").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = shim.log()
        if "line on stdout" in log and "line on stderr" in log:
            break
        time.sleep(0.1)
    lines = [ln for ln in shim.log().splitlines() if "line on std" in ln]
    assert len(lines) >= 2
    assert all("[features]" in ln for ln in lines), lines


@pytest.mark.parametrize("kind", ["abort", "exit", "raise"])
def test_trap_gives_500_and_shim_keeps_serving(shim: Shim, kind: str) -> None:
    r = httpx.get(shim.url + f"/trap?kind={kind}", timeout=30)
    assert r.status_code == 500
    assert httpx.get(shim.url + "/exact").status_code == 200


def test_endless_loop_is_stopped_at_the_deadline(shim: Shim) -> None:
    t0 = time.monotonic()
    r = httpx.get(shim.url + "/loop", timeout=60)
    assert r.status_code == 500
    assert time.monotonic() - t0 < 30  # deadline is 2 s; generous bound only guards a hang
    assert "deadline" in shim.log()
    assert httpx.get(shim.url + "/exact").status_code == 200


def test_random_and_clocks(shim: Shim) -> None:
    a = httpx.get(shim.url + "/random").text.strip()
    b = httpx.get(shim.url + "/random").text.strip()
    assert len(a) == 32 and a != b
    t = get_json(shim, "/time")
    assert abs(t["wall_ms"] - time.time() * 1000) < 60_000


def test_keep_alive_reuses_the_connection(shim: Shim) -> None:
    with httpx.Client(base_url=shim.url, timeout=30) as client:
        addrs = {client.get("/headers/x").json()["headers"]["spin-client-addr"] for _ in range(5)}
    assert len(addrs) == 1  # one TCP connection served all five requests


def test_health_endpoint(shim: Shim) -> None:
    r = httpx.get(shim.url + "/.well-known/spin/health")
    assert r.status_code == 200 and r.text == "OK"


def test_malformed_request_gets_400(shim: Shim) -> None:
    import socket

    host, port = shim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert httpx.get(shim.url + "/exact").status_code == 200


# ------------------------------------------------------------------------------------------
# start-up behaviour (one process per case)


@pytest.mark.parametrize("app_name", APPS_UNDER_TEST)
def test_missing_required_variable_fails_at_start(app_name: str, tmp_path: Path) -> None:
    result = run_shim_expect_failure(built_app(app_name), tmp_path)
    assert result.returncode != 0
    assert "secret_token" in result.stderr


@pytest.mark.parametrize("app_name", APPS_UNDER_TEST)
def test_variable_flag_overrides_default(app_name: str, tmp_path: Path) -> None:
    with run_shim(built_app(app_name), tmp_path, args=["--variable", "greeting=bonjour"], env=SECRET) as s:
        assert httpx.get(s.url + "/variables/greeting").text == "bonjour"


def test_component_id_retains_only_named_components(tmp_path: Path) -> None:
    with run_shim(built_app("py-features"), tmp_path, args=["--component-id", "hello"], env=SECRET) as s:
        assert httpx.get(s.url + "/exact").status_code == 404
    env = {**SECRET, "SPIN_COMPONENTS_TO_RETAIN": "features,hello"}
    with run_shim(built_app("py-features"), tmp_path, env=env) as s:
        assert httpx.get(s.url + "/exact").status_code == 200


def test_retaining_a_component_without_its_chained_target_fails_at_start(tmp_path: Path) -> None:
    # as Spin: `features` may chain to `hello` (allowed_outbound_hosts), so it cannot run without it
    result = run_shim_expect_failure(
        built_app("py-features"), tmp_path, env={**SECRET, "SPIN_COMPONENTS_TO_RETAIN": "features"}
    )
    assert result.returncode != 0 and "hello" in result.stderr


def test_unknown_component_id_fails_at_start(tmp_path: Path) -> None:
    result = run_shim_expect_failure(built_app("py-features"), tmp_path, args=["--component-id", "nope"], env=SECRET)
    assert result.returncode != 0 and "nope" in result.stderr


def test_max_instance_memory_is_enforced(tmp_path: Path) -> None:
    # 2 MiB cannot hold a CPython guest; the request fails, the shim stays up
    env = {**SECRET, "SPIN_MAX_INSTANCE_MEMORY": str(2 * 1024 * 1024)}
    with run_shim(built_app("py-features"), tmp_path, env=env) as s:
        assert httpx.get(s.url + "/exact", timeout=30).status_code == 500
        assert httpx.get(s.url + "/.well-known/spin/health").status_code == 200


def test_broken_manifest_fails_with_file_and_key(tmp_path: Path) -> None:
    app = copy_app("py-hello", tmp_path)
    manifest = app / "spin.toml"
    manifest.write_text(manifest.read_text().replace("[application]", "[application]\nbogus_key = 1", 1))
    result = run_shim_expect_failure(app, tmp_path)
    assert result.returncode != 0
    assert "spin.toml" in result.stderr and "bogus_key" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_start_uses_the_compile_cache(tmp_path: Path) -> None:
    env = {"KUBESPIN_CACHE": str(tmp_path / "cache")}
    t0 = time.monotonic()
    with run_shim(built_app("py-hello"), tmp_path, env=env):
        cold = time.monotonic() - t0
    assert list((tmp_path / "cache" / "compiled").glob("*.cwasm"))
    t1 = time.monotonic()
    with run_shim(built_app("py-hello"), tmp_path, env=env) as s:
        warm = time.monotonic() - t1
        assert "compiled" not in s.log()  # nothing was compiled on the second start
    print(f"start to ready: cold {cold:.2f}s, with compile cache {warm:.2f}s")


def test_json_payload_shapes(shim: Shim) -> None:
    # /headers returns entries in order; multi-valued headers survive
    r = httpx.get(shim.url + "/headers/x", headers=[("x-multi", "a"), ("x-multi", "b")])
    entries = r.json()["header_entries"]
    values = [v for n, v in entries if n == "x-multi"]
    # the Python guest reads wasi:http fields as they are; the JS guest goes through the Fetch API's
    # Headers, which joins repeated fields with ", " — either way both values arrive in order
    assert values in (["a", "b"], ["a, b"])
    json.dumps(entries)


def test_registry_flags_are_accepted_for_local_apps(tmp_path: Path) -> None:
    # --registry-auth / --insecure only matter for registry references, but must not break a local app
    auth = tmp_path / "config.json"
    auth.write_text('{"auths": {}}')
    with run_shim(built_app("js-hello"), tmp_path, args=["--insecure", "--registry-auth", str(auth)]) as s:
        assert httpx.get(s.url + "/").text == "hello from javascript\n"


def test_a_full_instance_pool_answers_503_and_recovers(tmp_path: Path) -> None:
    """With the pool on and one slot (Spin's SPIN_WASMTIME_INSTANCE_COUNT), a second request while a guest
    loops gets 503 + Retry-After, not a 500 or a hang; once the slot frees, requests succeed again."""
    from kubespin_shim import engine as eng

    pool = {"SPIN_WASMTIME_POOLING": "1", "SPIN_WASMTIME_INSTANCE_COUNT": "1"}
    if not eng.address_space_available(eng.pool_reservation_bytes(eng.pooling_settings(pool) or {})):
        pytest.skip("no address space for the instance pool on this machine")
    env = {**SECRET, **pool}
    with run_shim(built_app("js-features"), tmp_path, args=["--request-timeout", "3"], env=env) as s:
        assert httpx.get(s.url + "/exact", timeout=30).status_code == 200
        import threading

        loop_statuses: list[int] = []

        def hold_the_slot() -> None:  # /loop runs until the 3 s deadline; retried if it met a busy pool
            while not loop_statuses or loop_statuses[-1] == 503:
                loop_statuses.append(httpx.get(s.url + "/loop", timeout=60).status_code)

        looping = threading.Thread(target=hold_the_slot)
        looping.start()
        try:
            deadline = time.monotonic() + 20
            busy = None
            while time.monotonic() < deadline and looping.is_alive():
                r = httpx.get(s.url + "/exact", timeout=30)
                if r.status_code == 503:
                    busy = r
                    break
                time.sleep(0.05)
            assert busy is not None, f"no 503 while the only instance slot was taken:\n{s.log()}"
            assert busy.headers["retry-after"] == "1"
        finally:
            looping.join(60)
        assert loop_statuses[-1] == 500  # the loop itself ended at its deadline
        assert httpx.get(s.url + "/exact", timeout=30).status_code == 200
        assert "no instance slot free" in s.log() and "SPIN_WASMTIME_INSTANCE_COUNT" in s.log()
