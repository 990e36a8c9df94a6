"""The SQLite factor and database sessions against real SQLite files.

Values of every type in both directions, parameter binding, guest transactions across calls,
cleanup of a request that leaves a transaction open, 3.0.0's last-insert-rowid/changes, ATTACH
rules, labels and relinking.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from kubespin_shim.factors import sqlite as sq
from kubespin_shim.host.binding import CallContext
from kubespin_shim.host.values import Err, Ok, Variant
from kubespin_shim.manifest import AppManifest, load_app
from kubespin_shim.runtime_config import RuntimeConfigError, parse_runtime_config

MANIFEST = """
spin_manifest_version = 2
[application]
name = "sqlite-test"
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "app.wasm"
sqlite_databases = ["default", "orders", "attach"]
"""


@pytest.fixture
def app(tmp_path: Path) -> AppManifest:
    d = tmp_path / "app"
    d.mkdir()
    (d / "app.wasm").write_bytes(b"")
    (d / "spin.toml").write_text(MANIFEST)
    return load_app(d, work_dir=tmp_path / "work")


def config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "runtime-config.toml"
    path.write_text(text)
    return parse_runtime_config(text.encode(), path)


def request(factor: sq.SqliteFactor, app: AppManifest) -> CallContext:
    ctx = CallContext("c")
    factor.prepare(ctx, app.components["c"])
    return ctx


def conn_v3(ctx: CallContext, label: str = "default") -> sq.ConnectionV3:
    r = sq.open_v3(ctx, label)
    assert isinstance(r, Ok), r
    # In the shim the instance's resource table and the request context live and die together;
    # here the test holds the handle, so it also holds the request (the context) alive.
    r.value.request_context = ctx
    return r.value


def rows(result: Ok | Err) -> list[list[Variant]]:
    assert isinstance(result, Ok), result
    return [r["values"] for r in result.value["rows"]]


@pytest.fixture
def factor(app: AppManifest, tmp_path: Path) -> sq.SqliteFactor:
    f = sq.SqliteFactor.from_app(app, parse_runtime_config(b""), state_dir=tmp_path / "state")
    yield f
    f.close()


def test_every_value_type_round_trips(factor: sq.SqliteFactor, app: AppManifest, tmp_path: Path) -> None:
    c = conn_v3(request(factor, app))
    assert c.execute("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)", []) == Ok(
        {"columns": [], "rows": []}
    )
    params = [
        Variant("integer", -(1 << 63)),
        Variant("real", 2.5e-300),
        Variant("text", "héllo ✓ 'quoted'; DROP TABLE t;--"),
        Variant("blob", b"\x00\x01\xff"),
        Variant("null"),
    ]
    assert c.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", params) == Ok({"columns": [], "rows": []})
    result = c.execute("SELECT i, r, s, b, n FROM t", [])
    assert result.value["columns"] == ["i", "r", "s", "b", "n"]
    assert rows(result) == [params]  # the text parameter was bound, not spliced into SQL
    assert (tmp_path / "state" / "sqlite_db.db").is_file()


def test_named_and_numbered_parameters(factor: sq.SqliteFactor, app: AppManifest) -> None:
    c = conn_v3(request(factor, app))
    out = c.execute("SELECT ?2 AS second, ?1 AS first", [Variant("integer", 1), Variant("text", "two")])
    assert out.value["columns"] == ["second", "first"]
    assert rows(out) == [[Variant("text", "two"), Variant("integer", 1)]]


def test_errors_are_io_values(factor: sq.SqliteFactor, app: AppManifest) -> None:
    c = conn_v3(request(factor, app))
    bad = c.execute("SELEC 1", [])
    assert isinstance(bad, Err) and bad.value.tag == "io" and "syntax error" in bad.value.value
    two = c.execute("SELECT 1; SELECT 2", [])
    assert isinstance(two, Err) and two.value.tag == "io" and "one statement" in two.value.value
    wrong_count = c.execute("SELECT ?", [])
    assert isinstance(wrong_count, Err) and "binding" in wrong_count.value.value.lower()
    assert rows(c.execute("SELECT 1", [])) == [[Variant("integer", 1)]]  # the connection still works


def test_last_insert_rowid_and_changes(factor: sq.SqliteFactor, app: AppManifest) -> None:
    c = conn_v3(request(factor, app))
    c.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)", [])
    c.execute("INSERT INTO r (v) VALUES ('a'), ('b'), ('c')", [])
    assert c.last_insert_rowid() == 3
    assert c.changes() == 3
    c.execute("UPDATE r SET v = 'x' WHERE id < 3", [])
    assert c.changes() == 2
    c.execute("SELECT * FROM r", [])
    assert c.changes() == 2  # a SELECT does not reset it, as in SQLite
    other = conn_v3(request(factor, app))
    other.execute("INSERT INTO r (v) VALUES ('z')", [])
    assert other.last_insert_rowid() == 4
    assert c.last_insert_rowid() == 3  # each guest connection keeps its own numbers


def test_a_transaction_spans_calls_and_is_private_until_commit(factor: sq.SqliteFactor, app: AppManifest) -> None:
    a = conn_v3(request(factor, app))
    a.execute("CREATE TABLE acc (n INTEGER)", [])
    a.execute("BEGIN", [])
    a.execute("INSERT INTO acc VALUES (1)", [])
    assert rows(a.execute("SELECT count(*) FROM acc", [])) == [[Variant("integer", 1)]]
    b = conn_v3(request(factor, app))
    assert rows(b.execute("SELECT count(*) FROM acc", [])) == [[Variant("integer", 0)]]
    a.execute("COMMIT", [])
    assert rows(b.execute("SELECT count(*) FROM acc", [])) == [[Variant("integer", 1)]]


def test_a_request_that_ends_mid_transaction_is_rolled_back(factor: sq.SqliteFactor, app: AppManifest) -> None:
    setup = conn_v3(request(factor, app))
    setup.execute("CREATE TABLE w (n INTEGER)", [])
    ctx = request(factor, app)
    c = conn_v3(ctx)
    c.execute("BEGIN IMMEDIATE", [])  # holds the write lock
    c.execute("INSERT INTO w VALUES (1)", [])
    del ctx, c  # the guest never committed nor dropped its handle; the request is over
    fresh = conn_v3(request(factor, app))
    assert fresh.execute("INSERT INTO w VALUES (2)", []) == Ok({"columns": [], "rows": []})  # lock released
    assert rows(fresh.execute("SELECT n FROM w", [])) == [[Variant("integer", 2)]]


def test_attach_of_a_file_is_denied_unless_allowed(app: AppManifest, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    rc = config(
        tmp_path,
        f'[sqlite_database.attach]\ntype = "spin"\npath = "{tmp_path}/a.db"\nallow_attach_file = true\n',
    )
    f = sq.SqliteFactor.from_app(app, rc, state_dir=tmp_path / "state")
    ctx = request(f, app)
    denied = conn_v3(ctx, "default").execute(f"ATTACH DATABASE '{other}' AS o", [])
    assert isinstance(denied, Err) and "not authorized" in denied.value.value
    assert isinstance(conn_v3(ctx, "default").execute("ATTACH DATABASE ':memory:' AS m", []), Ok)
    assert isinstance(conn_v3(ctx, "attach").execute(f"ATTACH DATABASE '{other}' AS o", []), Ok)
    f.close()


def test_label_rules(factor: sq.SqliteFactor, app: AppManifest, caplog: pytest.LogCaptureFixture) -> None:
    ctx = request(factor, app)
    assert sq.open_v2(ctx, "secret") == Err(Variant("access-denied"))
    assert sq.open_v3(ctx, "orders") == Err(Variant("no-such-database"))
    assert "'secret'" in caplog.text and "sqlite_databases" in caplog.text
    assert "[sqlite_database.orders]" in caplog.text
    v2 = sq.open_v2(ctx, "default")
    assert isinstance(v2, Ok) and type(v2.value) is sq.Connection


def test_relink_keeps_running_requests_on_the_old_database(app: AppManifest, tmp_path: Path) -> None:
    rc1 = config(tmp_path, f'[sqlite_database.orders]\ntype = "spin"\npath = "{tmp_path}/one.db"\n')
    f = sq.SqliteFactor.from_app(app, rc1, state_dir=None)
    running = conn_v3(request(f, app), "orders")
    running.execute("CREATE TABLE which (name TEXT)", [])
    running.execute("INSERT INTO which VALUES ('one')", [])
    old_db = f.live.current.backend("orders")
    rc2 = config(tmp_path, f'[sqlite_database.orders]\ntype = "spin"\npath = "{tmp_path}/two.db"\n')
    f.stage(rc2)()
    new = conn_v3(request(f, app), "orders")
    assert isinstance(new.execute("SELECT * FROM which", []), Err)  # two.db has no such table
    assert rows(running.execute("SELECT name FROM which", [])) == [[Variant("text", "one")]]
    assert old_db in f.live.open_backends()
    del running
    assert old_db not in f.live.open_backends()
    f.close()


def test_unknown_database_type_fails_at_start(app: AppManifest, tmp_path: Path) -> None:
    rc = config(tmp_path, '[sqlite_database.orders]\ntype = "postgres"\n')
    with pytest.raises(RuntimeConfigError, match=r"'orders' has unknown type 'postgres'"):
        sq.SqliteFactor.from_app(app, rc, state_dir=None)


def test_a_component_without_labels_shares_one_view_that_refuses_every_open(
    factor: sq.SqliteFactor, app: AppManifest
) -> None:
    import dataclasses

    bare = dataclasses.replace(app.components["c"], id="bare", sqlite_databases=[])
    one, two = CallContext("bare"), CallContext("bare")
    factor.prepare(one, bare)
    factor.prepare(two, bare)
    assert one.extras[sq.KEY] is two.extras[sq.KEY]  # no lease taken, nothing made per request
    assert sq.open_v3(one, "default") == Err(Variant("access-denied"))
    assert one.extras[sq.KEY].sessions == []
    # A component with labels still gets its own view (with its own lease) per request.
    assert request(factor, app).extras[sq.KEY] is not request(factor, app).extras[sq.KEY]
