"""The key-value factor's host functions, called the way the binding layer calls them.

Label rules, error values, CAS/batch semantics and live relinking with real backends (SQLite
files, a real redis-server). The canonical-ABI side of these functions is exercised by the real
guests in tests/integration/test_shim_kv.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubespin_shim.factors import key_value as kv
from kubespin_shim.host.binding import CallContext
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.manifest import AppManifest, load_app
from kubespin_shim.runtime_config import RuntimeConfigError, parse_runtime_config

from tests.redis_server import RedisServer

MANIFEST = """
spin_manifest_version = 2
[application]
name = "kv-test"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "app.wasm"
key_value_stores = ["default", "alpha", "beta"]
"""


@pytest.fixture
def app(tmp_path: Path) -> AppManifest:
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(MANIFEST)
    return load_app(d, work_dir=tmp_path / "work")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "runtime-config.toml"
    path.write_text(text)
    return parse_runtime_config(text.encode(), path)


def request(factor: kv.KeyValueFactor, app: AppManifest) -> CallContext:
    ctx = CallContext("c")
    factor.prepare(ctx, app.components["c"])
    return ctx


def opened(result: Ok | Err) -> kv.SpinStore:
    assert isinstance(result, Ok), result
    return result.value


def test_default_store_lives_in_the_state_dir(app: AppManifest, tmp_path: Path) -> None:
    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=None)
    ctx = request(factor, app)
    store = opened(kv.spin_open(ctx, "default"))
    assert store.set("k", b"v") == Ok()
    assert store.get("k") == Ok(b"v")
    assert store.get("nope") == Ok(None)
    assert store.exists("k") == Ok(True)
    assert store.get_keys() == Ok(["k"])
    assert store.delete("k") == Ok()
    assert (app.base_dir / ".spin" / "sqlite_key_value.db").is_file()  # Spin's default location
    factor.close()


def test_label_rules(app: AppManifest, caplog: pytest.LogCaptureFixture) -> None:
    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=None)
    ctx = request(factor, app)
    assert kv.spin_open(ctx, "gamma") == Err(Variant("access-denied"))
    assert kv.wasi_open(ctx, "gamma") == Err(Variant("access-denied"))
    assert kv.spin_open(ctx, "alpha") == Err(Variant("no-such-store"))
    assert kv.wasi_open(ctx, "alpha") == Err(Variant("no-such-store"))
    text = caplog.text
    assert "'gamma'" in text and "access-denied" in text and "key_value_stores" in text
    assert "[key_value_store.alpha]" in text
    assert "'beta'" in text  # unbound labels are logged when the config is applied
    factor.close()


def test_store_table_full_and_close_frees_a_slot(app: AppManifest) -> None:
    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=None)
    ctx = request(factor, app)
    stores = [opened(kv.spin_open(ctx, "default")) for _ in range(kv.STORE_TABLE_CAPACITY)]
    assert kv.spin_open(ctx, "default") == Err(Variant("store-table-full"))
    assert kv.wasi_open(ctx, "default") == Err(Variant("other", "too many stores open"))
    stores[0].close()
    assert isinstance(kv.spin_open(ctx, "default"), Ok)
    factor.close()


def test_wasi_list_keys_cas_and_batch(app: AppManifest) -> None:
    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=None)
    ctx = request(factor, app)
    bucket = opened(kv.wasi_open(ctx, "default"))
    assert kv.wasi_set_many(ctx, bucket, [("a", b"1"), ("b", b"2"), ("c", b"3")]) == Ok()
    assert bucket.list_keys(None) == Ok({"keys": ["a", "b", "c"], "cursor": None})
    assert bucket.list_keys("a") == Ok({"keys": ["b", "c"], "cursor": None})
    assert kv.wasi_get_many(ctx, bucket, ["c", "x"]) == Ok([("c", b"3"), ("x", None)])
    assert kv.wasi_delete_many(ctx, bucket, ["a", "b"]) == Ok()
    assert kv.wasi_increment(ctx, bucket, "n", 41) == Ok(41)
    assert kv.wasi_increment(ctx, bucket, "c", 1).value.tag == "other"  # b"3" is not a Spin counter

    cas = opened(kv.wasi_cas_new(ctx, bucket, "c"))
    assert cas.current() == Ok(b"3")
    bucket.set("c", b"changed-meanwhile")
    failed = kv.wasi_swap(ctx, cas, b"mine")
    assert isinstance(failed, Err) and failed.value.tag == "cas-failed"
    retry = failed.value.value
    assert isinstance(retry, kv.Cas) and retry.expected == b"changed-meanwhile"  # a handle at the latest value
    assert kv.wasi_swap(ctx, retry, b"mine") == Ok()
    assert bucket.get("c") == Ok(b"mine")

    fresh = opened(kv.wasi_cas_new(ctx, bucket, "new-key"))
    assert kv.wasi_swap(ctx, fresh, b"created") == Ok()  # absent at new(): swap creates it
    factor.close()


def test_unknown_backend_type_fails_at_start(app: AppManifest, tmp_path: Path) -> None:
    rc = config(tmp_path, '[key_value_store.alpha]\ntype = "etcd"\n')
    with pytest.raises(RuntimeConfigError, match=r"'alpha' has unknown type 'etcd'"):
        kv.KeyValueFactor.from_app(app, rc, state_dir=None)


def test_a_refused_reload_keeps_the_previous_bindings(app: AppManifest, tmp_path: Path) -> None:
    good = config(tmp_path, f'[key_value_store.alpha]\ntype = "spin"\npath = "{tmp_path}/a.db"\n')
    factor = kv.KeyValueFactor.from_app(app, good, state_dir=None)
    bad = config(tmp_path, '[key_value_store.alpha]\ntype = "nope"\n')
    with pytest.raises(RuntimeConfigError):
        factor.stage(bad)
    ctx = request(factor, app)
    assert isinstance(kv.spin_open(ctx, "alpha"), Ok)
    factor.close()


def test_relink_new_requests_see_new_store_in_flight_requests_finish_on_old(
    app: AppManifest, tmp_path: Path
) -> None:
    rc1 = config(tmp_path, f'[key_value_store.alpha]\ntype = "spin"\npath = "{tmp_path}/one.db"\n')
    factor = kv.KeyValueFactor.from_app(app, rc1, state_dir=None)
    default_before = factor.live.current.backend("default")
    setup = request(factor, app)
    opened(kv.spin_open(setup, "alpha")).set("k", b"from-one")
    del setup

    in_flight = request(factor, app)  # started before the relink
    old_store = opened(kv.spin_open(in_flight, "alpha"))
    old_backend = factor.live.current.backend("alpha")

    rc2 = config(tmp_path, f'[key_value_store.alpha]\ntype = "spin"\npath = "{tmp_path}/two.db"\n')
    factor.stage(rc2)()
    new = request(factor, app)
    assert opened(kv.spin_open(new, "alpha")).get("k") == Ok(None)  # the new store is empty
    assert old_store.get("k") == Ok(b"from-one")  # the running request still reads the old one
    late_open = opened(kv.spin_open(in_flight, "alpha"))  # and opens from its own generation
    assert late_open.get("k") == Ok(b"from-one")
    assert factor.live.current.backend("default") is default_before  # unchanged labels keep their backend
    assert old_backend in factor.live.open_backends()

    del in_flight, old_store, late_open
    # no gc.collect(): reference counting frees the request at once
    assert old_backend not in factor.live.open_backends()  # closed after its last request
    assert old_backend.pool.open_connections == 0  # type: ignore[attr-defined]
    factor.close()


def test_relink_to_another_redis_database(app: AppManifest, tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.client(7).flushdb()
    redis_server.client(8).flushdb()
    redis_server.client(7).set("k", b"seven")
    redis_server.client(8).set("k", b"eight")
    rc = config(tmp_path, f'[key_value_store.alpha]\ntype = "redis"\nurl = "{redis_server.url(7)}"\n')
    factor = kv.KeyValueFactor.from_app(app, rc, state_dir=None)
    assert opened(kv.spin_open(request(factor, app), "alpha")).get("k") == Ok(b"seven")
    rc = config(tmp_path, f'[key_value_store.alpha]\ntype = "redis"\nurl = "{redis_server.url(8)}"\n')
    factor.stage(rc)()
    assert opened(kv.spin_open(request(factor, app), "alpha")).get("k") == Ok(b"eight")
    factor.close()


def test_redis_down_returns_other_and_recovers(app: AppManifest, tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        rc = config(tmp_path, f'[key_value_store.alpha]\ntype = "redis"\nurl = "{server.url(0)}"\n')
        factor = kv.KeyValueFactor.from_app(app, rc, state_dir=None)
        store = opened(kv.spin_open(request(factor, app), "alpha"))
        assert store.set("k", b"v") == Ok()
        server.stop()
        down = opened(kv.spin_open(request(factor, app), "alpha")).get("k")  # opening never needs the server
        assert isinstance(down, Err) and down.value.tag == "other"
        assert f"127.0.0.1:{server.port}" in down.value.value and "unreachable" in down.value.value
        server.start()
        assert opened(kv.spin_open(request(factor, app), "alpha")).set("k", b"back") == Ok()
        factor.close()
    finally:
        server.cleanup()


def test_unusable_state_dir_does_not_stop_the_app_but_a_bad_configured_path_does(
    app: AppManifest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=blocker / "state")
    assert "'default'" in caplog.text and "--state-dir" in caplog.text
    failed = opened(kv.spin_open(request(factor, app), "default")).get("k")
    assert isinstance(failed, Err) and failed.value.tag == "other" and "not-a-dir" in failed.value.value
    factor.close()

    rc = config(tmp_path, f'[key_value_store.alpha]\ntype = "spin"\npath = "{blocker}/sub/alpha.db"\n')
    with pytest.raises(RuntimeConfigError, match=r"key_value_store\.alpha\.path: failed to create"):
        kv.KeyValueFactor.from_app(app, rc, state_dir=tmp_path / "state")


def test_label_warnings_are_logged_once_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from kubespin_shim.kv.warnings import LabelWarnings

    w = LabelWarnings(logging.getLogger("test.labels"), limit=3)
    for i in range(10):
        for _ in range(2):
            w.warn_once("c", f"label-{i}", "denied", f"denied label-{i}")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["denied label-0", "denied label-1", "denied label-2",
                        "more than 3 distinct label problems: not logging further ones"]


def test_a_component_without_labels_shares_one_view_that_refuses_every_open(app: AppManifest) -> None:
    import dataclasses

    factor = kv.KeyValueFactor.from_app(app, parse_runtime_config(b""), state_dir=None)
    bare = dataclasses.replace(app.components["c"], id="bare", key_value_stores=[])
    one, two = CallContext("bare"), CallContext("bare")
    factor.prepare(one, bare)
    factor.prepare(two, bare)
    assert one.extras[kv.KEY] is two.extras[kv.KEY]  # no lease taken, nothing made per request
    assert kv.spin_open(one, "default") == Err(Variant("access-denied"))
    assert kv.wasi_open(two, "default") == Err(Variant("access-denied"))
    assert one.extras[kv.KEY].open_stores == 0
    # A component with labels still gets its own view (with its own lease) per request.
    assert request(factor, app).extras[kv.KEY] is not request(factor, app).extras[kv.KEY]
    factor.close()
