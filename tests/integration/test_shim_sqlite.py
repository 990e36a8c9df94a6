"""SQLite through `kubespin up` as a real process, with the py-kv guest (spin-sdk 3.4.1, which
calls fermyon:spin/sqlite@2.0.0) and real SQLite files. Every assertion goes through HTTP."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.shimproc import copy_app, run_shim, run_shim_expect_failure

pytestmark = pytest.mark.integration


def app_with_databases(tmp_path: Path, labels: list[str]) -> Path:
    """py-kv with its `sqlite_databases` replaced (the built wasm is reused)."""
    app = copy_app("py-kv", tmp_path / "apps")
    manifest = app / "spin.toml"
    text = manifest.read_text()
    assert 'sqlite_databases = ["default"]' in text
    manifest.write_text(text.replace('sqlite_databases = ["default"]', f"sqlite_databases = {json.dumps(labels)}"))
    return app


def execute(c, label: str, sql: str, params: list | None = None):  # type: ignore[no-untyped-def]
    path = "/sqlite/execute" if label == "default" else f"/sqlite/{label}/execute"
    return c.post(path, content=json.dumps({"sql": sql, "params": params or []}).encode())


def test_every_value_type_and_parameters(tmp_path: Path) -> None:
    app = app_with_databases(tmp_path, ["default"])
    with run_shim(app, tmp_path, ["--state-dir", str(tmp_path / "state")]) as shim, shim.client() as c:
        demo = c.get("/sqlite")
        assert demo.status_code == 200, demo.text
        assert demo.json() == {
            "columns": ["id", "i", "r", "t", "b", "n"],
            "rows": [[["integer", 1], ["integer", 42], ["real", 2.5], ["text", "text ✓"], ["blob", "00ff"],
                      ["null", None]]],
        }
        assert len(c.get("/sqlite").json()["rows"]) == 2  # the table persists between requests

        hostile = "x'); DROP TABLE probe; --"
        params = [["integer", -(2**63)], ["real", -1.25e-10], ["text", hostile], ["blob", "00010203ff"], ["null", None]]
        r = execute(c, "default", "INSERT INTO probe (i, r, t, b, n) VALUES (?, ?, ?, ?, ?) RETURNING id, t", params)
        assert r.status_code == 200, r.text
        assert r.json() == {"columns": ["id", "t"], "rows": [[["integer", 3], ["text", hostile]]]}
        back = execute(c, "default", "SELECT i, r, t, b, n FROM probe WHERE id = ?", [["integer", 3]]).json()
        assert back["rows"] == [params]  # bound, not spliced: the table is still there
        typed = execute(c, "default", "SELECT typeof(?), typeof(?), typeof(?), typeof(?), typeof(?)", params).json()
        assert [v[1] for v in typed["rows"][0]] == ["integer", "real", "text", "blob", "null"]

        bad = execute(c, "default", "SELEC nothing")
        assert bad.status_code == 500 and bad.text.startswith("io: ") and "syntax error" in bad.text
        constraint = execute(c, "default", "INSERT INTO probe (id) VALUES (1)")
        assert constraint.status_code == 500 and "UNIQUE constraint failed" in constraint.text
    # Spin's default location, a plain SQLite file any tool can read
    with sqlite3.connect(tmp_path / "state" / "sqlite_db.db") as db:
        assert db.execute("SELECT count(*) FROM probe").fetchone() == (3,)


def test_label_rules_and_a_configured_database(tmp_path: Path) -> None:
    app = app_with_databases(tmp_path, ["default", "orders"])
    with run_shim(app, tmp_path, ["--state-dir", str(tmp_path / "state")]) as shim, shim.client() as c:
        assert c.get("/sqlite/secret").text.strip() == "access-denied"
        assert c.get("/sqlite/orders").text.strip() == "no-such-database"
        log = shim.log()
    assert "[sqlite_database.orders]" in log and "'secret'" in log

    rc = tmp_path / "conf" / "runtime-config.toml"
    rc.parent.mkdir()
    rc.write_text('[sqlite_database.orders]\ntype = "spin"\npath = "data/orders.db"\n')
    args = ["--state-dir", str(tmp_path / "state"), "--runtime-config-file", str(rc)]
    with run_shim(app, tmp_path, args) as shim, shim.client() as c:
        assert c.get("/sqlite/orders").status_code == 200
        assert execute(c, "orders", "SELECT count(*) FROM probe").json()["rows"] == [[["integer", 1]]]
    # Spin resolves a database's relative path against the working directory (the shim ran in tmp_path)
    assert (tmp_path / "data" / "orders.db").is_file()
    assert not (tmp_path / "conf" / "data").exists()


def test_relink_a_database_without_restart(tmp_path: Path) -> None:
    app = app_with_databases(tmp_path, ["default", "orders"])
    for name in ("one", "two"):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute("CREATE TABLE which (name TEXT)")
            db.execute("INSERT INTO which VALUES (?)", (name,))
    rc = tmp_path / "runtime-config.toml"
    rc.write_text(f'[sqlite_database.orders]\ntype = "spin"\npath = "{tmp_path}/one.db"\n')
    args = ["--state-dir", str(tmp_path / "state"), "--runtime-config-file", str(rc)]
    with run_shim(app, tmp_path, args) as shim, shim.client() as c:
        assert execute(c, "orders", "SELECT name FROM which").json()["rows"] == [[["text", "one"]]]
        tmp = rc.with_suffix(".new")
        tmp.write_text(f'[sqlite_database.orders]\ntype = "spin"\npath = "{tmp_path}/two.db"\n')
        tmp.replace(rc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = execute(c, "orders", "SELECT name FROM which").json()["rows"]
            if rows == [[["text", "two"]]]:
                break
            assert rows == [[["text", "one"]]]
            time.sleep(0.05)
        else:
            pytest.fail(f"the relink to two.db was not applied:\n{shim.log()}")


def test_unknown_database_type_fails_at_start(tmp_path: Path) -> None:
    app = app_with_databases(tmp_path, ["default", "orders"])
    rc = tmp_path / "runtime-config.toml"
    rc.write_text('[sqlite_database.orders]\ntype = "libsql"\nurl = "https://db.example"\ntoken = "t"\n')
    out = run_shim_expect_failure(app, tmp_path, ["--runtime-config-file", str(rc)])
    assert out.returncode != 0
    assert "'orders' has type 'libsql', which Spin knows but kubespin does not support" in out.stderr, out.stderr
