"""SQLite statements per second through `kubespin up`, against the same statements run directly
with stdlib sqlite3 from Python in the same run, printed as a ratio.

The guest is tests/apps/py-kv (spin-sdk 3.4.1, fermyon:spin/sqlite@2.0.0): one client on
127.0.0.1 POSTs /sqlite/execute with a parameterised INSERT or a SELECT by primary key; each
request runs a fresh guest instance that opens the `default` database and executes one
statement. The peer runs the same statements with sqlite3 on a file with the same pragmas (WAL,
synchronous=NORMAL, autocommit). Short rounds of both sides are interleaved so that load from
other processes hits both alike; medians are printed.

The floor is POST /sqlite/secret/execute: the same guest, refused access-denied before any
statement runs. The last section measures the factor's host functions in-process (open + execute
without a guest) against sqlite3 directly: what the host layer itself adds per statement.

    .venv/bin/python bench/sqlite_bench.py [--iterations 200]

Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.kv_bench import paired, start_shim, stop  # noqa: E402
from tests.shimproc import APPS  # noqa: E402

SCHEMA = "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)"
INSERT = "INSERT INTO bench (v, n) VALUES (?, ?)"
SELECT = "SELECT v, n FROM bench WHERE id = ?"
ROWS = 100


def body(sql: str, params: list[list[object]]) -> bytes:
    return json.dumps({"sql": sql, "params": params}).encode()


def direct(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(SCHEMA)
    for i in range(ROWS):
        conn.execute(INSERT, (f"row {i}", i))
    return conn


def host_call_rates(n: int) -> dict[str, tuple[float, float]]:
    from kubespin_shim.factors import sqlite as sq
    from kubespin_shim.host.binding import CallContext
    from kubespin_shim.host.values import Variant
    from kubespin_shim.manifest import load_app
    from kubespin_shim.runtime_config import parse_runtime_config

    logging.getLogger("kubespin").setLevel(logging.ERROR)
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sqlite-hc-") as tmp_s:
        tmp = Path(tmp_s)
        app = load_app(APPS / "py-kv", work_dir=tmp / "work")
        factor = sq.SqliteFactor.from_app(app, parse_runtime_config(b""), state_dir=tmp / "state")
        spec = app.components["kv"]
        peer = direct(tmp / "peer.db")
        setup = CallContext("kv")
        factor.prepare(setup, spec)
        conn = sq.open_v2(setup, "default").value
        conn.execute(SCHEMA, [])
        for i in range(ROWS):
            conn.execute(INSERT, [Variant("text", f"row {i}"), Variant("integer", i)])

        def through(i: int) -> object:
            ctx = CallContext("kv")
            factor.prepare(ctx, spec)
            return sq.open_v2(ctx, "default").value.execute(SELECT, [Variant("integer", i % ROWS + 1)])

        def peer_select(i: int) -> object:
            return peer.execute(SELECT, (i % ROWS + 1,)).fetchall()

        out["open+SELECT by id"] = paired(n, through, peer_select, 5, 1)[:2]
        peer.close()
        factor.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    n = args.iterations
    rows = []
    with tempfile.TemporaryDirectory(prefix="sqlite-bench-") as tmp_s:
        tmp = Path(tmp_s)
        rc = tmp / "runtime-config.toml"
        rc.write_text("")
        peer = direct(tmp / "peer.db")
        proc, url = start_shim(APPS / "py-kv", rc, tmp / "state")
        try:
            with httpx.Client(base_url=url, timeout=30) as c:

                def post(path: str, data: bytes) -> None:
                    r = c.post(path, content=data)
                    if r.status_code != 200 and not (path.startswith("/sqlite/secret") and r.status_code == 500):
                        raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")

                post("/sqlite/execute", body(SCHEMA, []))
                for i in range(ROWS):
                    post("/sqlite/execute", body(INSERT, [["text", f"row {i}"], ["integer", i]]))
                ops = {
                    "INSERT": (
                        lambda i: post("/sqlite/execute", body(INSERT, [["text", f"v{i}"], ["integer", i]])),
                        lambda i: peer.execute(INSERT, (f"v{i}", i)),
                    ),
                    "SELECT by id": (
                        lambda i: post("/sqlite/execute", body(SELECT, [["integer", i % ROWS + 1]])),
                        lambda i: peer.execute(SELECT, (i % ROWS + 1,)).fetchall(),
                    ),
                }
                floor_op = lambda i: post("/sqlite/secret/execute", body(SELECT, [["integer", 1]]))  # noqa: E731
                for name, (through_op, direct_op) in ops.items():
                    floor, through, _ = paired(n, floor_op, through_op, 5, 1)
                    _, direct_rate, ratio = paired(n, through_op, direct_op)
                    rows.append((name, through, direct_rate, ratio, floor))
                    print(f"py-kv {name:13}: shim {through:6.0f}/s (floor {floor:4.0f}/s)  "
                          f"sqlite3 {direct_rate:7.0f}/s  ratio {ratio:.4f}", flush=True)
        finally:
            stop(proc)
            peer.close()
    print("\nsummary: statements/s through the shim / statements/s with sqlite3 directly (median of rounds):")
    for name, through, direct_rate, ratio, floor in rows:
        print(f"  py-kv {name:13}: {through:6.0f} / {direct_rate:7.0f} = {ratio:.4f}   floor {floor:4.0f}/s")
    print("\nin-process, no guest: the factor's host functions vs sqlite3 directly (statements/s):")
    for name, (through, direct_rate) in host_call_rates(n * 20).items():
        print(f"  {name:18} host function {through:8.0f}  direct {direct_rate:8.0f}  ratio {through / direct_rate:.3f}")


if __name__ == "__main__":
    main()
