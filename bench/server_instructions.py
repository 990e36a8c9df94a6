"""User-space instructions per request through the whole server: `kubespin up` against `wasmtime serve`.

Wall-clock and CPU-time ratios (bench/shim_vs_wasmtime.py) move with a shared machine's load;
instruction counts do not. Each server runs the same WASI-only component under valgrind's callgrind;
after a warm-up of N1 requests the counters are dumped, then N2 more requests are sent over one
keep-alive connection and dumped again: the second dump divided by N2 is one request's user-space
work, HTTP included, start-up excluded. Kernel work (page faults of each fresh instance, sockets),
about half of each server's CPU time, is not counted, and is much the same for both.

    .venv/bin/python bench/server_instructions.py [--app js-hello] [--requests 20,200]
    .venv/bin/python bench/server_instructions.py --http-only   # the shim's HTTP layer alone

``--http-only`` runs the shim's HttpServer with a handler that answers at once (js-hello's response,
no wasm): what the HTTP/1.1 front end and its worker pool cost per request by themselves.

Needs valgrind (`apt-get install valgrind`). `wasmtime serve` runs on demand under valgrind (its
pooling allocator cannot reserve its address space there). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.shim_vs_wasmtime import wasmtime_cli
from tests.shimproc import APPS, free_port


def send(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"the server answered {resp.status}")
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            send(port, 1)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"no answer on port {port} after {timeout}s")


def instructions_per_request(cmd: list[str], port: int, warmup: int, n: int, work: Path) -> float:
    out = work / f"callgrind.{port}.out"
    env = {**os.environ, "SPIN_VARIABLE_SECRET_TOKEN": "bench"}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_ready(port, proc)
        send(port, warmup)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120)
        send(port, n)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(work.glob(f"callgrind.{port}.out.*"), key=lambda p: int(p.suffix[1:]))
    if len(dumps) < 2:
        raise RuntimeError(f"callgrind wrote {len(dumps)} dumps, expected 2")
    found = re.search(r"^totals: (\d+)", dumps[1].read_text(errors="replace"), re.M)
    if not found:
        raise RuntimeError(f"no totals in {dumps[1]}")
    return int(found.group(1)) / n


# The shim's HTTP server alone, answering like js-hello without running any wasm (--http-only).
HTTP_ONLY = """
import logging, sys
sys.path.insert(0, {shim!r})
logging.disable(logging.CRITICAL)
from kubespin_shim.http.server import HttpServer

def handler(ex):
    ex.start(200, [("content-type", b"text/plain"), ("content-length", b"22")])
    ex.write(b"hello from javascript\\n")
    ex.finish(None)

HttpServer("127.0.0.1", int(sys.argv[1]), handler, concurrency=1).serve_forever()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default="js-hello")
    ap.add_argument("--requests", default="20,200", help="N1,N2: warm-up and measured requests")
    ap.add_argument("--http-only", action="store_true", help="the shim's HTTP server alone, no wasm")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install valgrind")
    warmup, n = (int(x) for x in args.requests.split(","))
    if args.http_only:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "http_only.py"
            script.write_text(HTTP_ONLY.format(shim=str(Path(__file__).resolve().parent.parent / "shim")))
            port = free_port()
            per_request = instructions_per_request([sys.executable, str(script), str(port)], port, warmup, n, Path(tmp))
        print(f"the shim's HTTP layer alone: {per_request / 1e3:.1f} K user-space instructions per request")
        return
    app = APPS / args.app
    wasm = next(app.glob("*.wasm"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        p1, p2 = free_port(), free_port()
        kubespin = [
            sys.executable,
            "-m",
            "kubespin",
            "up",
            "-f",
            str(app),
            "--listen",
            f"127.0.0.1:{p1}",
            "--log-level",
            "warning",
        ]
        wasmtime = [wasmtime_cli(), "serve", "-Scli", "--addr", f"127.0.0.1:{p2}", str(wasm)]
        ours = instructions_per_request(kubespin, p1, warmup, n, work)
        peer = instructions_per_request(wasmtime, p2, warmup, n, work)
    print(
        f"{args.app}: kubespin up {ours / 1e6:.2f} M, wasmtime serve {peer / 1e6:.2f} M user-space instructions "
        f"per request; ratio (wasmtime / kubespin) {peer / ours:.2f}"
    )


if __name__ == "__main__":
    main()
