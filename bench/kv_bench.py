"""Key-value get/set round trips per second through `kubespin up`, against the same operations
done directly from Python in the same run, printed as a ratio.

For each app (tests/apps/js-kv, py-kv) the shim serves label `alpha` from a real redis-server
and label `beta` from a Spin SQLite file. One client on 127.0.0.1 (httpx, keep-alive) sends
PUT /kv/<label>/<key> (a set) and GET /kv/<label>/<key> (a get) in turn; each HTTP request runs a
fresh guest instance doing one store operation. The peers do the same sets and gets directly:
redis-py against the same server, stdlib sqlite3 against a file in Spin's format (same pragmas).

Also printed: the floor, GET /kv/gamma/k (a label the component may not open: the guest runs and
answers without touching a store), so `per-op store cost = 1/ops - 1/floor` can be read off.

    .venv/bin/python bench/kv_bench.py [--iterations 300] [--apps js-kv,py-kv]

Not a test: it asserts nothing. Absolute numbers depend on the machine's load; the ratios are
measured in the same run, back to back.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.redis_server import RedisServer  # noqa: E402
from tests.shimproc import APPS, free_port  # noqa: E402

VALUE = b"v" * 64
KEYS = 100


def rate(n: int, fn: Callable[[int], object]) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def paired(n: int, through: Callable[[int], object], direct: Callable[[int], object],
           rounds: int = 5, direct_factor: int = 10) -> tuple[float, float, float]:
    """Alternate short runs of both sides so that load from other processes hits both alike.
    Returns (median ops/s through, median ops/s direct, median of the per-round ratios)."""
    for i in range(10):  # warm up connections, statement caches, the guest's code paths
        through(i)
        direct(i)
    per = max(1, n // rounds)
    results = []
    for _ in range(rounds):
        t = rate(per, through)
        d = rate(per * direct_factor, direct)
        results.append((t, d, t / d))
    return tuple(statistics.median(r[k] for r in results) for k in range(3))  # type: ignore[return-value]


def start_shim(app: Path, rc: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "kubespin", "up", "-f", str(app), "--listen", f"127.0.0.1:{port}",
           "--runtime-config-file", str(rc), "--state-dir", str(state), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kubespin up exited with {proc.returncode}")
        try:
            if httpx.get(url + "/.well-known/spin/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("kubespin up did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def direct_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
        "PRIMARY KEY (store, key))"
    )
    return conn


def host_call_rates(n: int) -> dict[str, tuple[float, float]]:
    """What the key-value factor adds per call, without HTTP or a guest: open + get through the
    host functions (label check, lease, error mapping) against the backend's own get."""
    from kubespin_shim.factors import key_value as kv
    from kubespin_shim.host.binding import CallContext
    from kubespin_shim.manifest import load_app
    from kubespin_shim.runtime_config import parse_runtime_config

    logging.getLogger("kubespin").setLevel(logging.ERROR)  # the app's unbound labels are expected here
    out: dict[str, tuple[float, float]] = {}
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="kv-hc-") as tmp_s:
        tmp = Path(tmp_s)
        app = load_app(APPS / "py-kv", work_dir=tmp / "work")
        text = f'[key_value_store.alpha]\ntype = "redis"\nurl = "{server.url(0)}"\n'
        rc = parse_runtime_config(text.encode(), tmp / "rc.toml")
        factor = kv.KeyValueFactor.from_app(app, rc, state_dir=tmp / "state")
        spec = app.components["kv"]
        for label in ("alpha", "default"):
            backend = factor.live.current.backend(label)
            assert backend is not None
            backend.store(label).set("k", VALUE)
            direct_store = backend.store(label)

            def through(i: int, lb: str = label) -> object:
                ctx = CallContext("kv")
                factor.prepare(ctx, spec)
                return kv.spin_open(ctx, lb).value.get("k")

            out[f"open+get {label}"] = paired(n, through, lambda i, s=direct_store: s.get("k"), 5, 1)[:2]
        factor.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=300, help="requests per measured operation")
    ap.add_argument("--apps", default="js-kv,py-kv")
    args = ap.parse_args()
    n = args.iterations
    rows: list[tuple[str, str, str, float, float, float, float]] = []
    with RedisServer() as redis_server, tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp_s:
        tmp = Path(tmp_s)
        rc = tmp / "runtime-config.toml"
        rc.write_text(
            f'[key_value_store.alpha]\ntype = "redis"\nurl = "{redis_server.url(0)}"\n\n'
            f'[key_value_store.beta]\ntype = "spin"\npath = "{tmp / "beta.db"}"\n'
        )
        r = redis_server.client(0)
        peer_sqlite = direct_sqlite(tmp / "peer.db")
        peers = {
            ("alpha", "set"): lambda i: r.set(f"k{i % KEYS}", VALUE),
            ("alpha", "get"): lambda i: r.get(f"k{i % KEYS}"),
            ("beta", "set"): lambda i: peer_sqlite.execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES ('beta', ?, ?) "
                "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value", (f"k{i % KEYS}", VALUE)),
            ("beta", "get"): lambda i: peer_sqlite.execute(
                "SELECT value FROM spin_key_value WHERE store = 'beta' AND key = ?", (f"k{i % KEYS}",)).fetchone(),
        }
        peer_names = {"alpha": "redis-py", "beta": "sqlite3"}
        for app in args.apps.split(","):
            proc, url = start_shim(APPS / app, rc, tmp / f"state-{app}")
            try:
                with httpx.Client(base_url=url, timeout=30) as c:

                    def check(resp: httpx.Response) -> None:
                        if resp.status_code not in (200, 404):
                            req = resp.request
                            raise RuntimeError(f"{req.method} {req.url}: {resp.status_code} {resp.text}")

                    for label in ("alpha", "beta"):
                        shim_ops = {
                            "set": lambda i, lb=label: check(c.put(f"/kv/{lb}/k{i % KEYS}", content=VALUE)),
                            "get": lambda i, lb=label: check(c.get(f"/kv/{lb}/k{i % KEYS}")),
                        }
                        for op in ("set", "get"):
                            floor, through, _ = paired(n, lambda i: c.get("/kv/gamma/k"), shim_ops[op], 5, 1)
                            _, direct, ratio = paired(n, shim_ops[op], peers[(label, op)])
                            rows.append((app, label, op, through, direct, ratio, floor))
                            print(f"{app} {label:5} {op}: shim {through:6.0f}/s (floor {floor:4.0f}/s)  "
                                  f"{peer_names[label]} {direct:7.0f}/s  ratio {ratio:.4f}", flush=True)
            finally:
                stop(proc)
        peer_sqlite.close()
    print("\nsummary: ops/s through the shim / ops/s direct from Python (median of interleaved rounds);")
    print("floor = the same guest answering without a store op (access-denied), measured alongside:")
    for app, label, op, through, direct, ratio, floor in rows:
        backend = "redis" if label == "alpha" else "spin-sqlite"
        print(f"  {app:6} {backend:11} {op}: {through:6.0f} / {direct:7.0f} = {ratio:.4f}   floor {floor:4.0f}/s")
    hc = host_call_rates(n * 20)
    print("\nin-process, no guest: the factor's host functions vs the backend called directly (ops/s):")
    for name, (through, direct) in hc.items():
        print(f"  {name:18} host function {through:8.0f}  direct {direct:8.0f}  ratio {through / direct:.3f}")


if __name__ == "__main__":
    main()
