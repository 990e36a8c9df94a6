"""Two versions of `kubespin up` against each other and against `wasmtime serve`, in the same run.

A change to the shim's hot path is judged against the version before it on the same machine in the
same minutes: the machine's noise (CPU steal from other guests) moves every figure from one run to
the next, and only servers measured in alternation compare. Each `--rev` is checked out into a
temporary git worktree and run with its shim on PYTHONPATH, with its C extension
built from that revision's source. Per server and connection count:
req/s of each round, the median, CPU per request, p99 and context switches per request.

    .venv/bin/python bench/versions_ab.py --rev HEAD~3 [--rev HEAD] [--app js-hello] [--rounds 4] [--duration 4]
    .venv/bin/python bench/versions_ab.py --rev HEAD~3 --cold-starts 15 [--app py-hello]

``--cold-starts N`` times N starts of each version instead (process start to the first 200, warm
compile cache, in alternation), reported as the median wall time and the median CPU of the process.

Not a test: it asserts nothing. Every request goes to 127.0.0.1, bounded by wrk's duration.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.shim_vs_wasmtime import (  # noqa: E402
    context_switches,
    process_cpu_s,
    start_kubespin,
    start_wasmtime,
    steal_ticks,
    stop,
    switches_since,
    wait_ready,
    wrk,
)
from tests.shimproc import APPS, free_port  # noqa: E402


def checkout(rev: str, into: Path) -> Path:
    """The shim package directory of ``rev``, with its own C extension built, ready to put on PYTHONPATH."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), rev], check=True)
    shim = into / "shim"
    build_extension(shim / "kubespin_shim" / "host")
    return shim


def build_extension(host: Path) -> None:
    """Compile ``host/_native.c`` in place, as pyproject.toml builds it (a revision's Python and its C
    extension go together: the extension reads attributes of the Python objects it is handed)."""
    source = host / "_native.c"
    if not source.exists():
        return
    out = host / ("_native" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    cc = str(sysconfig.get_config_var("CC") or "cc").split()
    subprocess.run(
        [*cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
         str(source), "-o", str(out)],
        check=True,
    )


def start_version(shim: Path | None, app: Path, port: int, cpus: str | None) -> subprocess.Popen[bytes]:
    if shim is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(shim)
    try:
        return start_kubespin(app, port, cpus)
    finally:
        os.environ.pop("PYTHONPATH", None)


def cold_starts(versions: dict[str, Path | None], app: Path, n: int) -> None:
    walls: dict[str, list[float]] = {name: [] for name in versions}
    cpus: dict[str, list[float]] = {name: [] for name in versions}
    steal0 = steal_ticks()
    for _ in range(n):
        for name, shim in versions.items():
            port = free_port()
            proc = start_version(shim, app, port, None)
            try:
                walls[name].append(wait_ready(f"http://127.0.0.1:{port}/", proc))
                cpus[name].append(process_cpu_s(proc.pid))
            finally:
                stop(proc)
    print(f"# {app.name}, {n} cold starts each, alternating; CPU steal during the runs: "
          f"{(steal_ticks() - steal0) / os.sysconf('SC_CLK_TCK'):.0f} s")
    for name in versions:
        print(f"{name:>12s}: cold start median {statistics.median(walls[name]) * 1000:.0f} ms"
              f" (min {min(walls[name]) * 1000:.0f}), its CPU median {statistics.median(cpus[name]) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", required=True,
                    help="a git revision; give two, or one to compare with this checkout as installed")
    ap.add_argument("--app", default="js-hello")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--connections", default="1,8")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument("--cold-starts", type=int, default=0, help="time this many starts of each version instead")
    args = ap.parse_args()
    app = APPS / args.app
    conns = [int(c) for c in args.connections.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="kubespin-ab-"))
    worktrees = []
    try:
        versions: dict[str, Path | None] = {}
        for i, rev in enumerate(args.rev):
            worktrees.append(tmp / f"v{i}")
            versions[rev] = checkout(rev, worktrees[-1])
        if len(versions) == 1:
            versions["checkout"] = None  # this working tree, as installed
        # Bytecode for every version: with PYTHONDONTWRITEBYTECODE set, a start would otherwise
        # compile each module it imports, and a cold start would time the compiler (a wheel ships .pyc).
        for shim in versions.values():
            for package in [shim] if shim is not None else [ROOT / "shim", ROOT / "kubespin"]:
                compileall.compile_dir(str(package), quiet=1)
        if args.cold_starts:
            cold_starts(versions, app, args.cold_starts)
            return
        results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
        steal0 = steal_ticks()
        for _ in range(args.rounds):
            for name in [*versions, "wasmtime"]:
                port = free_port()
                if name == "wasmtime":
                    proc = start_wasmtime(app, port, args.server_cpus or None)
                else:
                    proc = start_version(versions[name], app, port, args.server_cpus or None)
                url = f"http://127.0.0.1:{port}/"
                try:
                    wait_ready(url, proc)
                    wrk(url, 8, 1, args.load_cpus or None)  # warm-up
                    for c in conns:
                        cpu0, csw0 = process_cpu_s(proc.pid), context_switches(proc.pid)
                        out = wrk(url, c, args.duration, args.load_cpus or None)
                        n = max(out["requests"], 1)
                        results.setdefault((name, c), []).append((
                            out["rps"],
                            (process_cpu_s(proc.pid) - cpu0) / n * 1e6,
                            out["p99_ms"],
                            switches_since(proc.pid, csw0) / n,
                        ))
                finally:
                    stop(proc)
        print(f"# {args.app}, {args.rounds} rounds of {args.duration} s; CPU steal during the runs: "
              f"{(steal_ticks() - steal0) / os.sysconf('SC_CLK_TCK'):.0f} s")
        for c in conns:
            for name in [*versions, "wasmtime"]:
                rows = results[(name, c)]
                print(
                    f"c={c} {name:>12s}: req/s {' '.join(f'{r[0]:.0f}' for r in rows)}"
                    f" (median {statistics.median(r[0] for r in rows):.0f})"
                    f" | CPU/req {statistics.median(r[1] for r in rows):.0f} us"
                    f" | p99 {statistics.median(r[2] for r in rows):.1f} ms"
                    f" | context switches/req {statistics.median(r[3] for r in rows):.2f}"
                )
    finally:
        for wt in worktrees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
